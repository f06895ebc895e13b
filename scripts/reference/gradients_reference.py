"""Reference gradients for the backward-pass tests, computed with torch autograd on the CPU.

Usage:  python3 scripts/reference/gradients_reference.py [kernels] [models] [smollm2]
        (all three when no argument; torch 2.13 CPU, transformers 5.x; one torch thread)

Inputs are float32 (exactly what the Swift code reads); the expected gradients are F64, computed by
autograd in float64 from those float32 values, except in smollm2_grad (float32 model, see there).
The forward math is reused, not re-derived: RoPE angles from tiny_model.inv_freq (float32), the
model forward is tiny_model.forward, SmolLM2 and its WikiText-2 tokens come from model_reference.
Outputs in Tests/Fixtures/backward/ (uncompressed safetensors, written with save_sorted):

kernels.safetensors: per case a prefix `<case>.`; `dout` is a random float32 upstream gradient
shaped like the output, and each `d<input>` (F64) is the gradient of sum(out * dout).
  rmsnorm.{0,1}   x [5,48] / [3,37], weight [C] (1 + 0.3 randn), eps F64 [1] (1e-5 / 1e-6);
                  out = weight * x * rsqrt(mean(x^2) + eps) per row. dx, dweight.
  rope.default    x [T=7, H=3, D=16], start I64 [1] = 0, theta F64 [1] = 10000. dx.
  rope.start      the same at positions start = 100 .. 106.
  rope.llama3     D=16, theta 500000, positions 0..6, llama3 scaling: factor, low_freq_factor,
                  high_freq_factor, original_max_position_embeddings (F64 [1] each; 8, 1, 4, 64).
                  rotate_half: out[i] = x[i] cos - x[i+D/2] sin, out[i+D/2] = x[i+D/2] cos + x[i] sin,
                  angle = float32(position) * float32 inv_freq (tiny_model.inv_freq), cos/sin in
                  float32, then cast to double. dx.
  attn.gqa37      q [T=37, H=4, D=16], k, v [37, Hkv=2, 16]; causal GQA (query head h uses KV head
                  h // (H/Hkv)), scores q.k / sqrt(D), key j <= query i, softmax over keys,
                  out [T, H, D] = p.v. dq, dk, dv.
  attn.gqa200     T=200, H=6, Hkv=2, D=8.    attn.mha20  T=20, H=Hkv=3, D=8.
  attn.narrow     T=23, H=4, Hkv=2, D=16, widths I64 [2] = [16, 5]; q [T,H,D], k [T,Hkv,D], v [T,21]
                  (KV head g's values at columns off_g .. off_g+w_g, off_g = sum of earlier widths);
                  out [T, rep*sum(w)] = [T, 42], query head h = g*rep + j writes p_h.v_g at columns
                  rep*off_g + j*w_g. dq, dk, dv.
  swiglu          gate [300] (4 randn), up [300]; out = silu(gate) * up. dgate, dup.
  linear          x [9,12], weight [7,12], bias [7]; out = x W^T + b. dx, dweight, dbias.
  xent            normed [11,24] (randn), w [50,24] (0.3 randn), targets I64 [11] (-1 at positions 3 and 10: not
                  counted); loss F64 [1] = mean over the 9 counted positions of the cross-entropy of
                  logits = normed w^T. No dout: dnormed, dw are the gradients of the loss itself.

model_<name>.safetensors, name in tiny_uniform, tiny_nonuniform (Tests/Fixtures/model/<name>): the
model file's float32 weights as float64, tokens I64 [2,19] (from <name>_ref.safetensors),
loss F64 [1] = mean over both windows and positions 0..17 of the next-token cross-entropy (each
window separately, 2*18 terms) with tiny_model.forward in float64, and grad.<parameter> F64 for
every tensor of the model file, same name and shape (zero-size ones included; the tied model's
embedding gradient includes the head's contribution).

smollm2_grad.safetensors: SmolLM2-135M-Instruct from the GGUF (model_reference.load(), float32,
then eager attention, eval) on one window: the first 128 ids of model_reference.ids_of(tok,
"wikitext2"), i.e. the GGUF tokenizer on the WikiText-2 test text, no BOS (the tokenizer adds
none; datasets.json bos_added false). loss = model(ids, labels=ids).loss (mean next-token CE over
127 positions, float32), then backward in float32.
  tokens I64 [128], loss F64 [1],
  per parameter (transformers' names; the head is tied, so only model.embed_tokens.weight):
  norm.<name>   F64 [1]     Frobenius norm of the whole gradient (float64 from the float32 gradient)
  index.<name>  I64 [k]     sorted row indices: for 2-D tensors 0, the last and EXTRA_ROWS others
                            from numpy RandomState(i) (i = the tensor's position in
                            named_parameters(), from 0), plus for the embedding the first 4
                            distinct token ids of the window; for 1-D tensors [0]
  rows.<name>   F32 [k, in] those rows of the gradient (1-D tensors: the whole gradient, [1, n])
  loss64, norm64.<name>, rows64.<name>   the same in float64 arithmetic (tiny_model.forward on the
                same weights; rows64 rounded to F32 for size): how far float32 itself is from exact
"""
import json
import os
import sys

import numpy as np
import torch
from safetensors import safe_open

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tiny_model  # noqa: E402  (its work is under `if __name__ == "__main__"`)
from reference_common import ROOT, save_sorted  # noqa: E402

torch.set_num_threads(1)
OUT = os.path.join(ROOT, "Tests", "Fixtures", "backward")
MODEL_DIR = os.path.join(ROOT, "Tests", "Fixtures", "model")
META = {"producer": "scripts/reference/gradients_reference.py"}
# Random rows per 2-D SmolLM2 gradient besides the first and the last. One keeps the fixture
# directory near its ~3 MB budget (30 layers x 7 matrices x rows of 576 or 1536 floats: each row
# per matrix costs ~0.6 MB in all); 4 would make smollm2_grad.safetensors ~3.8 MB by itself.
EXTRA_ROWS = 1
F = torch.nn.functional


def f32(a):
    return a.detach().float().contiguous().numpy()


def f64(a):
    return a.detach().double().contiguous().numpy()


def grads(fn, inputs, dout=None):
    """Float64 autograd of sum(fn(*inputs) * dout) (or of fn itself when dout is None) with respect
    to every input, the inputs being float32 tensors promoted exactly to float64."""
    xs = [x.double().requires_grad_() for x in inputs]
    out = fn(*xs)
    target = out if dout is None else (out * dout.double()).sum()
    return out, torch.autograd.grad(target, xs)


# ---------------------------------------------------------------------------------------- kernels

def kernels():
    gen = torch.Generator().manual_seed(2024)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float32) * scale).contiguous()

    t = {}

    def case(name, inputs, fn, out_shape, extra=None):
        dout = randn(*out_shape)
        out, gs = grads(fn, list(inputs.values()), dout)
        assert tuple(out.shape) == tuple(out_shape), (name, out.shape)
        for k, v in inputs.items():
            t[f"{name}.{k}"] = f32(v)
        for k, v in (extra or {}).items():
            t[f"{name}.{k}"] = v
        t[f"{name}.dout"] = f32(dout)
        for k, g in zip(inputs, gs):
            t[f"{name}.d{k}"] = f64(g)

    for i, (T, C, eps) in enumerate([(5, 48, 1e-5), (3, 37, 1e-6)]):
        inputs = {"x": randn(T, C, scale=2.0), "weight": 1 + randn(C, scale=0.3)}
        case(f"rmsnorm.{i}", inputs, lambda x, w, eps=eps: tiny_model.rms(x, w, eps), (T, C),
             {"eps": np.array([eps], dtype=np.float64)})

    def rope_at(x, cfg, start):
        # tiny_model.rope with positions start.. : angle = float32 position * float32 inv_freq.
        T, half = x.shape[0], x.shape[-1] // 2
        pos = torch.arange(start, start + T, dtype=torch.float32)
        ang = pos[:, None] * tiny_model.inv_freq(cfg)[None, :]
        emb = torch.cat([ang, ang], dim=-1)
        cos, sin = emb.cos().double()[:, None, :], emb.sin().double()[:, None, :]
        rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rot * sin

    llama3 = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": 64}
    for name, theta, start, scaling in [("default", 10000.0, 0, None), ("start", 10000.0, 100, None),
                                        ("llama3", 500000.0, 0, llama3)]:
        T, H, D = 7, 3, 16
        cfg = {"head_dim": D, "rope_theta": theta, "rope_scaling": scaling}
        x = randn(T, H, D)
        if start == 0:  # same angles as the model forward
            assert torch.equal(rope_at(x.double(), cfg, 0), tiny_model.rope(x.double(), cfg))
        extra = {"start": np.array([start], dtype=np.int64), "theta": np.array([theta], dtype=np.float64)}
        for k, v in (scaling or {}).items():
            extra[k] = np.array([v], dtype=np.float64)
        case(f"rope.{name}", {"x": x}, lambda x, cfg=cfg, start=start: rope_at(x, cfg, start), (T, H, D), extra)

    def probs(q, k):  # q [T,H,D], k [T,Hkv,D] -> p [H, T, T]
        T, H, D = q.shape
        k = k.repeat_interleave(H // k.shape[1], dim=1)
        s = torch.einsum("thd,shd->hts", q, k) / np.sqrt(D)
        s = s.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
        return s.softmax(-1)

    def attention(q, k, v):
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
        return torch.einsum("hts,shd->thd", probs(q, k), v)

    for name, T, H, Hkv, D in [("gqa37", 37, 4, 2, 16), ("gqa200", 200, 6, 2, 8), ("mha20", 20, 3, 3, 8)]:
        case(f"attn.{name}", {"q": randn(T, H, D), "k": randn(T, Hkv, D), "v": randn(T, Hkv, D)},
             attention, (T, H, D))  # tiny_model.forward's attention einsums, rope aside

    T, H, Hkv, D, widths = 23, 4, 2, 16, [16, 5]
    rep, offs = H // Hkv, [sum(widths[:g]) for g in range(Hkv)]

    def narrow(q, k, v):
        p = probs(q, k)
        cols = []
        for g in range(Hkv):
            for j in range(rep):
                cols.append(p[g * rep + j] @ v[:, offs[g]:offs[g] + widths[g]])
        return torch.cat(cols, dim=1)  # head h = g*rep + j at rep*offs[g] + j*widths[g]

    case("attn.narrow", {"q": randn(T, H, D), "k": randn(T, Hkv, D), "v": randn(T, sum(widths))},
         narrow, (T, rep * sum(widths)), {"widths": np.array(widths, dtype=np.int64)})

    case("swiglu", {"gate": randn(300, scale=4.0), "up": randn(300)}, lambda g, u: F.silu(g) * u, (300,))
    case("linear", {"x": randn(9, 12), "weight": randn(7, 12), "bias": randn(7)},
         lambda x, w, b: x @ w.T + b, (9, 7))

    normed, w = randn(11, 24), randn(50, 24, scale=0.3)
    targets = torch.randint(0, 50, (11,), generator=gen)
    targets[3] = targets[10] = -1
    loss, (dn, dw) = grads(lambda n, w: F.cross_entropy(n @ w.T, targets, ignore_index=-1), [normed, w])
    manual = -torch.log_softmax(normed.double() @ w.double().T, -1)[targets >= 0].gather(
        1, targets[targets >= 0, None]).mean()
    assert abs(manual.item() - loss.item()) < 1e-14
    t.update({"xent.normed": f32(normed), "xent.w": f32(w), "xent.targets": targets.numpy().astype(np.int64),
              "xent.loss": np.array([loss.item()], dtype=np.float64), "xent.dnormed": f64(dn), "xent.dw": f64(dw)})
    print("xent loss", loss.item())

    save_sorted(t, os.path.join(OUT, "kernels.safetensors"), META)


# ----------------------------------------------------------------------------------- tiny models

def model(name):
    with safe_open(os.path.join(MODEL_DIR, name + ".safetensors"), "pt") as f:
        cfg = json.loads(f.metadata()["config"])
        W = {k: f.get_tensor(k).double().requires_grad_() for k in f.keys()}
    with safe_open(os.path.join(MODEL_DIR, name + "_ref.safetensors"), "pt") as f:
        tokens, ref_loss = f.get_tensor("tokens"), f.get_tensor("loss")
    assert tokens.shape == (2, 19)
    total, per_window = 0.0, []
    for s in range(2):
        logits, _ = tiny_model.forward(W, cfg, tokens[s])
        nll = F.cross_entropy(logits[:-1], tokens[s, 1:], reduction="sum")
        per_window.append(nll.item() / 18)
        total = total + nll
    loss = total / 36
    err = max(abs(a - b) for a, b in zip(per_window, ref_loss.tolist()))
    assert err < 1e-12, (name, per_window, ref_loss)
    print(name, "per-window loss", per_window, "equals the _ref.safetensors loss to", err, "; loss", loss.item())
    gs = torch.autograd.grad(loss, list(W.values()), allow_unused=True)
    t = {"tokens": tokens.numpy().astype(np.int64), "loss": np.array([loss.item()], dtype=np.float64)}
    for (k, w), g in zip(W.items(), gs):
        t["grad." + k] = f64(torch.zeros_like(w) if g is None else g)
    save_sorted(t, os.path.join(OUT, f"model_{name}.safetensors"), {**META, "model": name})


# ------------------------------------------------------------------------------------------ SmolLM2

def smollm2():
    import model_reference
    tok, m = model_reference.load()
    m.set_attn_implementation("eager")
    assert m.config._attn_implementation == "eager"
    m.eval()
    ids = model_reference.ids_of(tok, "wikitext2")[:128]
    first = json.load(open(os.path.join(MODEL_DIR, "datasets.json")))["wikitext2"]
    assert ids[:16] == first["first"] and not first["bos_added"] and ids[0] != tok.bos_token_id
    x = torch.tensor([ids])
    out = m(x, labels=x)
    manual = F.cross_entropy(out.logits[0, :-1].double(), x[0, 1:])
    print("smollm2 loss (transformers, float32)", out.loss.item(), "manual float64 CE on its logits",
          manual.item(), "diff", out.loss.item() - manual.item())
    out.loss.backward()
    params = list(m.named_parameters())
    assert m.lm_head.weight is m.model.embed_tokens.weight and "lm_head.weight" not in dict(params)
    t = {"tokens": np.asarray(ids, dtype=np.int64), "loss": np.array([out.loss.item()], dtype=np.float64)}
    biggest = (0.0, "")
    for i, (name, p) in enumerate(params):
        g = p.grad.detach()
        t["norm." + name] = np.array([g.double().norm().item()], dtype=np.float64)
        if g.dim() == 1:
            idx, rows = np.array([0], dtype=np.int64), g[None, :]
        else:
            n = g.shape[0]
            pick = {0, n - 1, *np.random.RandomState(i).choice(np.arange(1, n - 1), EXTRA_ROWS, replace=False).tolist()}
            if name == "model.embed_tokens.weight":
                pick |= set(list(dict.fromkeys(ids))[:4])
            idx = np.array(sorted(pick), dtype=np.int64)
            rows = g[torch.from_numpy(idx)]
        t["index." + name], t["rows." + name] = idx, f32(rows)
        biggest = max(biggest, (g.abs().max().item(), name))
    print("smollm2 max |grad| %.6g in %s" % biggest)
    # The same gradients in float64 (tiny_model.py's plain forward: transformers' RMSNorm runs in
    # float32 whatever the model's dtype): how far float32 arithmetic itself is from the exact
    # gradient, so that a test can hold another float32 implementation to the same distance.
    hc = m.config
    cfg = {"hidden_size": hc.hidden_size, "head_dim": hc.hidden_size // hc.num_attention_heads,
           "num_hidden_layers": hc.num_hidden_layers, "head_counts": [hc.num_attention_heads] * hc.num_hidden_layers,
           "kv_head_counts": [hc.num_key_value_heads] * hc.num_hidden_layers, "rms_norm_eps": hc.rms_norm_eps,
           "rope_theta": hc.rope_parameters["rope_theta"] if getattr(hc, "rope_parameters", None) else hc.rope_theta,
           "rope_scaling": None, "tie_word_embeddings": True}
    W = {name: p.detach().double().requires_grad_() for name, p in params}
    logits64, _ = tiny_model.forward(W, cfg, x[0])
    loss64 = F.cross_entropy(logits64[:-1], x[0, 1:])
    loss64.backward()
    print("smollm2 loss float64", loss64.item())
    t["loss64"] = np.array([loss64.item()], dtype=np.float64)
    for name, p in params:
        g = W[name].grad
        t["norm64." + name] = np.array([g.norm().item()], dtype=np.float64)
        idx = torch.from_numpy(t["index." + name])
        t["rows64." + name] = f32(g[None, :] if g.dim() == 1 else g[idx])
    save_sorted(t, os.path.join(OUT, "smollm2_grad.safetensors"), {**META, "model": "SmolLM2-135M-Instruct"})


if __name__ == "__main__":
    what = sys.argv[1:] or ["kernels", "models", "smollm2"]
    os.makedirs(OUT, exist_ok=True)
    if "kernels" in what:
        kernels()
    if "models" in what:
        model("tiny_uniform")
        model("tiny_nonuniform")
    if "smollm2" in what:
        smollm2()
    for f in sorted(os.listdir(OUT)):
        print(f, os.path.getsize(os.path.join(OUT, f)))
