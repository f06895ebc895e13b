"""Reference gradient sums and LLM-Pruner Taylor importance scores, for the tests of
Sources/Calibration/GradientPass.swift and Sources/Pruning/TaylorScores.swift.

Usage:  python3 scripts/reference/taylor_reference.py
        (torch CPU, one thread; float64 throughout; rerunning rewrites the same bytes)

Models:
  tiny_uniform   Tests/Fixtures/model/tiny_uniform.safetensors (tiny_model.py: 2 layers, C 64, D 16,
                 4 heads / 2 KV heads (GQA), F 96, V 97, biases on every projection, untied head)
  tiny_mha       written here, Tests/Fixtures/taylor/tiny_mha.safetensors: a PruneKit model file like
                 tiny_model.py's (F32 weights from tiny_model.make_weights, already float32-rounded;
                 metadata format "prunekit-model", config JSON): 2 layers, C 32, D 8, heads [4, 4],
                 KV heads [4, 4] (multi-head: H == Hkv), F [40, 24], V 53, no biases, untied head,
                 rope theta 10000, rms eps 1e-5, max positions 64 (tiny_model.base's key set).

Windows: N = 3 windows of T = 12 token ids, torch.randint(0, V) with a seeded Generator. The loss of
window n, l_n, is the mean over positions t = 0 .. T-2 of cross-entropy(logits[t], token[t+1]), with
tiny_model.forward in float64 from the model file's float32 weights. One backward per window:
  G_sum = sum_n grad_W l_n        S_sum = sum_n (grad_W l_n)^2
for every linear weight (q, k, v, o, gate, up, down `.weight`; not biases, norms, embeddings).
These mirror LLM-Pruner's hf_prune.py (horseee/LLM-Pruner): its weight.grad is the gradient of the
batch-mean loss over equal windows, = G_sum / N; its acc_grad accumulates grad_n^2 / N, = S_sum / N.

Writes Tests/Fixtures/taylor/<model>_taylor.safetensors (save_sorted), metadata format
"prunekit-stats", samples "3", gradients "second", grad_dtype "F32", gradient_loss "next-token
cross-entropy, mean per window" (what StatisticsFile checks), with tensors
  tokens                                              I64 [3, 12]
  model.layers.{l}.{self_attn|mlp}.{x}_proj.weight.grad_sum      F32 [out, in]  G_sum (Swift's
  model.layers.{l}.{self_attn|mlp}.{x}_proj.weight.grad_sq_sum   F32 [out, in]  S_sum  StatNames)
  exact.<either name above>                           F64  the same before rounding to float32
  score.{order}.{granularity}.{reduce}.{l}.attention  F64 [H*D]
  score.{order}.{granularity}.{reduce}.{l}.mlp        F64 [F]
for order in first, second, mix; granularity in vector, element; reduce in sum, mean, max, prod, first.
The scores are computed from the F32 sums (as float64), exactly the values Swift reads, and the F32
weights: G = grad_sum / N, Hs = grad_sq_sum / N,
  salience  first: s = W*G     second: s = W*Hs*W     mix: s = W*G - 0.5*W*Hs*W
  per coupled weight, rows of an output projection (q, k, v, gate, up):
            vector: |s.sum(1)|    element: |s|.sum(1)     (LLM-Pruner's 'vectorize' / 'param_*')
  columns of an input projection (o, down):
            vector: |s.sum(0)|    element: |s|.sum(0)
  MLP channel j: stack [gate rows, up rows, down columns] (the root, gate_proj, first)
  attention channel c in 0 .. H*D: stack [q rows, k rows, v rows, o columns] when H == Hkv, else
            [q rows, o columns] (GQA: a KV head's rows belong to several query heads)
  reduced over the stack as TaylorImportance._reduce: sum, mean, max, prod, first (= the root's).
Checks before writing: a central finite difference of sum_n l_n agrees with G_sum (1e-7 relative)
on elements of one weight per model, and the float32 rounding of the sums is within 1e-6 relative.
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
OUT = os.path.join(ROOT, "Tests", "Fixtures", "taylor")
MODEL_DIR = os.path.join(ROOT, "Tests", "Fixtures", "model")
PRODUCER = "scripts/reference/taylor_reference.py"
N, T = 3, 12
ORDERS = ["first", "second", "mix"]
GRANULARITIES = ["vector", "element"]
REDUCTIONS = ["sum", "mean", "max", "prod", "first"]
F = torch.nn.functional


def write_mha():
    """tiny_mha's model file, as tiny_model.write writes its model files (without the _ref file)."""
    cfg = tiny_model.base(hidden_size=32, num_hidden_layers=2, head_dim=8, head_counts=[4, 4],
                          kv_head_counts=[4, 4], ffn_widths=[40, 24], vocab_size=53, tie_word_embeddings=False)
    W = tiny_model.make_weights(cfg, set(), torch.Generator().manual_seed(31))
    entries = {k: v.float().numpy() for k, v in W.items()}
    meta = {"format": "prunekit-model", "config": json.dumps(cfg, sort_keys=True), "producer": PRODUCER}
    save_sorted(entries, os.path.join(OUT, "tiny_mha.safetensors"), meta)
    return W


def load(path):
    with safe_open(path, "pt") as f:
        cfg = json.loads(f.metadata()["config"])
        W = {k: f.get_tensor(k).double() for k in f.keys()}
    return cfg, W


def linear_names(cfg):
    return [f"model.layers.{l}.{p}.weight" for l in range(cfg["num_hidden_layers"]) for p in tiny_model.PROJ]


def window_loss(W, cfg, tokens):
    logits, _ = tiny_model.forward(W, cfg, tokens)
    return F.cross_entropy(logits[:-1], tokens[1:])  # mean over the T-1 positions


def gradient_sums(W, cfg, tokens):
    names = linear_names(cfg)
    Wg = dict(W)
    for k in names:
        Wg[k] = W[k].clone().requires_grad_()
    G = {k: torch.zeros_like(W[k]) for k in names}
    S = {k: torch.zeros_like(W[k]) for k in names}
    losses = []
    for n in range(N):  # one backward per window
        loss = window_loss(Wg, cfg, tokens[n])
        gs = torch.autograd.grad(loss, [Wg[k] for k in names])
        for k, g in zip(names, gs):
            G[k] += g
            S[k] += g * g
        losses.append(loss.item())
    return {k: v.numpy() for k, v in G.items()}, {k: v.numpy() for k, v in S.items()}, losses


def check_finite_difference(W, cfg, tokens, G, name, h=1e-5):
    """Central difference of sum_n l_n in float64 on the 4 largest-|G| elements of one weight."""
    g = G[name]
    worst = 0.0
    for flat in np.argsort(-np.abs(g), axis=None, kind="stable")[:4]:
        i, j = np.unravel_index(flat, g.shape)
        vals = []
        for sign in (1, -1):
            Wp = dict(W)
            Wp[name] = W[name].clone()
            Wp[name][i, j] += sign * h
            with torch.no_grad():
                vals.append(sum(window_loss(Wp, cfg, tokens[n]).item() for n in range(N)))
        fd = (vals[0] - vals[1]) / (2 * h)
        rel = abs(fd - g[i, j]) / abs(g[i, j])
        assert rel < 1e-7, (name, i, j, fd, g[i, j], rel)
        worst = max(worst, rel)
    print(f"  finite difference of {name} (4 elements, |G| up to {np.abs(g).max():.3g}): max rel err {worst:.2e}")


# ----------------------------------------------------------- scores, in TaylorImportance's style

def salience(W, grad, acc_grad, order):
    s = W * grad
    if order == "second":
        s = W * acc_grad * W
    elif order == "mix":
        s = s - 0.5 * W * acc_grad * W
    return s


def out_channels(s, granularity):  # Linear out_channels: rows
    return np.abs(s.sum(1)) if granularity == "vector" else np.abs(s).sum(1)


def in_channels(s, granularity):  # Linear in_channels: columns
    return np.abs(s.sum(0)) if granularity == "vector" else np.abs(s).sum(0)


def _reduce(group_imp, reduce):
    if reduce == "sum":
        return group_imp.sum(0)
    if reduce == "mean":
        return group_imp.mean(0)
    if reduce == "max":
        return group_imp.max(0)
    if reduce == "prod":
        return np.prod(group_imp, axis=0)
    if reduce == "first":
        return group_imp[0]
    raise NotImplementedError(reduce)


def scores(Wnp, grad, acc_grad, cfg, out):
    for l in range(cfg["num_hidden_layers"]):
        H, Hkv = cfg["head_counts"][l], cfg["kv_head_counts"][l]
        p = f"model.layers.{l}."

        def s_of(proj, order):
            k = p + proj + ".weight"
            return salience(Wnp[k], grad[k], acc_grad[k], order)

        for order in ORDERS:
            for gran in GRANULARITIES:
                attn = [out_channels(s_of("self_attn.q_proj", order), gran)]  # the root first
                if H == Hkv:
                    attn += [out_channels(s_of("self_attn.k_proj", order), gran),
                             out_channels(s_of("self_attn.v_proj", order), gran)]
                attn.append(in_channels(s_of("self_attn.o_proj", order), gran))
                mlp = [out_channels(s_of("mlp.gate_proj", order), gran),
                       out_channels(s_of("mlp.up_proj", order), gran),
                       in_channels(s_of("mlp.down_proj", order), gran)]
                attn, mlp = np.stack(attn), np.stack(mlp)
                assert attn.shape == (4 if H == Hkv else 2, H * cfg["head_dim"]), attn.shape
                assert mlp.shape == (3, cfg["ffn_widths"][l]), mlp.shape
                for reduce in REDUCTIONS:
                    key = f"score.{order}.{gran}.{reduce}.{l}"
                    out[key + ".attention"] = np.ascontiguousarray(_reduce(attn, reduce), dtype=np.float64)
                    out[key + ".mlp"] = np.ascontiguousarray(_reduce(mlp, reduce), dtype=np.float64)
                    assert np.isfinite(out[key + ".attention"]).all() and np.isfinite(out[key + ".mlp"]).all()


def fixture(name, model_path, seed, fd_weight):
    cfg, W = load(model_path)
    V = cfg["vocab_size"]
    tokens = torch.randint(0, V, (N, T), generator=torch.Generator().manual_seed(seed))
    G, S, losses = gradient_sums(W, cfg, tokens)
    print(name, "window losses", losses)
    check_finite_difference(W, cfg, tokens, G, fd_weight)
    t = {"tokens": tokens.numpy().astype(np.int64)}
    grad, acc_grad, worst = {}, {}, 0.0
    for k in linear_names(cfg):
        for suffix, exact in ((".grad_sum", G[k]), (".grad_sq_sum", S[k])):
            r = exact.astype(np.float32)
            nz = exact != 0
            assert nz.all() and np.isfinite(r).all(), (k, suffix)
            rel = np.abs(r.astype(np.float64) - exact)[nz] / np.abs(exact[nz])
            worst = max(worst, rel.max())
            assert rel.max() < 1e-6, (k, suffix, rel.max())
            t[k + suffix] = r
            t["exact." + k + suffix] = np.ascontiguousarray(exact, dtype=np.float64)
        grad[k] = t[k + ".grad_sum"].astype(np.float64) / N       # LLM-Pruner's weight.grad
        acc_grad[k] = t[k + ".grad_sq_sum"].astype(np.float64) / N  # LLM-Pruner's acc_grad
    print(f"  float32 rounding of the sums: max rel err {worst:.2e}")
    Wnp = {k: W[k].numpy() for k in linear_names(cfg)}
    scores(Wnp, grad, acc_grad, cfg, t)
    meta = {"format": "prunekit-stats", "samples": str(N), "gradients": "second", "grad_dtype": "F32",
            "gradient_loss": "next-token cross-entropy, mean per window", "producer": PRODUCER}
    save_sorted(t, os.path.join(OUT, f"{name}_taylor.safetensors"), meta)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    W = write_mha()
    cfg_mha, W_back = load(os.path.join(OUT, "tiny_mha.safetensors"))
    cfg_uni, _ = load(os.path.join(MODEL_DIR, "tiny_uniform.safetensors"))
    assert set(cfg_mha) == set(cfg_uni), set(cfg_mha) ^ set(cfg_uni)
    assert set(W) == set(W_back) and all(torch.equal(W[k], W_back[k]) for k in W)
    fixture("tiny_uniform", os.path.join(MODEL_DIR, "tiny_uniform.safetensors"), 211,
            "model.layers.0.self_attn.k_proj.weight")
    fixture("tiny_mha", os.path.join(OUT, "tiny_mha.safetensors"), 212,
            "model.layers.1.mlp.down_proj.weight")
    for f in sorted(os.listdir(OUT)):
        print(f, os.path.getsize(os.path.join(OUT, f)))
