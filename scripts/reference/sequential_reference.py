"""Reference for sequential pruning (`calibrate --sequential`, Sources/Pruning/Sequential.swift): the
official Wanda-sp loop, written in torch float64 from CASIA-IVA-Lab/FLAP lib/prune.py `prune_wanda_sp`
on the tiny model, not from the Swift code.

  python3 scripts/reference/sequential_reference.py

The official loop, per decoder layer l (inps = the calibration windows' hidden states):
  1. forward hooks on o_proj and down_proj (WrappedGPT.add_batch, one window per call): scaler_row_j,
     the running mean over windows of ||x_j||^2 (= sum over all rows of x_j^2 / N), while the dense
     layer runs on every window (its outputs are overwritten below);
  2. W_metric = (|W| * sqrt(scaler_row)).mean(axis=0) per consumer column; o_proj's summed per head
     (`reshape(-1, head_dim).sum(dim=1)`); threshold = sort(metric)[int(ratio * units)], keep >= it;
  3. `compress` removes what the masks drop;
  4. outs[j] = layer(inps[j]) with the pruned layer; inps, outs = outs, inps ("the pruned output as
     input to the next layer").
PruneKit's units and budget where the official code has none for this model: attention units are KV
groups (the tiny model is grouped-query: 4 heads on 2 KV heads; a group's score is the sum of its
heads'), and the fraction removed per layer is UL-UM's (docs/DESIGN.md "The plan"): q = P*T_l/T_kinds,l
of the pruned kinds' parameters, threshold index int(q * units). Case "lsq" also refits o_proj and
down_proj after slicing, by FASP's least squares on the layer's own (sequential) inputs:
W' = W G[:, K] (G[K, K] + lam I)^-1, G = sum over rows of x x^T, lam = damp * mean(diag G[K, K]).

Writes Tests/Fixtures/sequential/:
  windows.safetensors   tokens [6, 16] (I64): the calibration windows (calibrate --tokens)
  reference.json        per case: the arguments, and per layer kept_heads, kept_kv_heads, kept_channels
  logits.safetensors    per case, {case}: the pruned model's logits [2, 19, V] (F64) on the tokens of
                        Tests/Fixtures/model/tiny_uniform_ref.safetensors
"""
import json, math, os, sys
import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from safetensors import safe_open

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tiny_model as tm  # noqa: E402  (the plain-torch decoder: rms, rope, lin, forward)

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
fixtures = os.path.join(root, "Tests", "Fixtures")
out = os.path.join(fixtures, "sequential")
CASES = {
    "mlp": {"metric": "wanda-sp", "ratio": 0.3, "prune": "mlp", "restore": None},
    "lsq": {"metric": "wanda-sp", "ratio": 0.5, "prune": "attention,mlp", "restore": "lsq", "damp": 0.01},
}


def load_model(name):
    path = os.path.join(fixtures, "model", name + ".safetensors")
    with safe_open(path, "np") as f:
        cfg = json.loads(f.metadata()["config"])
    W = {k: torch.from_numpy(v.astype(np.float64)) for k, v in load_file(path).items()}
    return W, cfg


def layer_forward(W, cfg, l, x, taps=None):
    """One decoder layer on one window x [T, C]; taps(name, input) sees o_proj's and down_proj's inputs."""
    p = f"model.layers.{l}."
    C, D = cfg["hidden_size"], cfg["head_dim"]
    H, Hkv = cfg["head_counts"][l], cfg["kv_head_counts"][l]
    T = x.shape[0]
    h = tm.rms(x, W[p + "input_layernorm.weight"], cfg["rms_norm_eps"])
    q = tm.rope(tm.lin(W, p + "self_attn.q_proj", h).view(T, H, D), cfg)
    k = tm.rope(tm.lin(W, p + "self_attn.k_proj", h).view(T, Hkv, D), cfg)
    v = tm.lin(W, p + "self_attn.v_proj", h).view(T, Hkv, D)
    k, v = k.repeat_interleave(H // Hkv, dim=1), v.repeat_interleave(H // Hkv, dim=1)
    s = torch.einsum("thd,shd->hts", q, k) / math.sqrt(D)
    s = s.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
    a = torch.einsum("hts,shd->thd", s.softmax(-1), v).reshape(T, H * D)
    if taps: taps("self_attn.o_proj", a)
    x = x + tm.lin(W, p + "self_attn.o_proj", a)
    h = tm.rms(x, W[p + "post_attention_layernorm.weight"], cfg["rms_norm_eps"])
    m = torch.nn.functional.silu(tm.lin(W, p + "mlp.gate_proj", h)) * tm.lin(W, p + "mlp.up_proj", h)
    if taps: taps("mlp.down_proj", m)
    return x + tm.lin(W, p + "mlp.down_proj", m)


def fraction(cfg, l, kinds):
    """UL-UM's per-layer fraction of units removed (every layer pruned, every projection biased)."""
    C, D = cfg["hidden_size"], cfg["head_dim"]
    H, Hkv, F = cfg["head_counts"][l], cfg["kv_head_counts"][l], cfg["ffn_widths"][l]
    g = H // Hkv
    group_cost = g * D * (2 * C + 1) + D * (2 * C + 2)  # q rows + o columns of g heads, k and v rows (biased)
    attention = Hkv * group_cost + C                      # with o_proj's bias
    mlp = F * (3 * C + 2) + C                             # gate/up rows (biased), down columns, down's bias
    prunable = (attention if "attention" in kinds else 0) + (mlp if "mlp" in kinds else 0)
    return lambda ratio: min(1.0, ratio * (attention + mlp) / prunable)


def keep_at_least(scores, index):
    t = torch.sort(scores)[0][index]
    return (scores >= t).nonzero().flatten().tolist()


def lsq(Wc, G, kept, damp):
    Gk = G[kept][:, kept]
    lam = damp * Gk.diagonal().mean()
    A = Gk + lam * torch.eye(len(kept), dtype=torch.float64)
    return Wc @ G[:, kept] @ torch.linalg.inv(A)


def run_case(W0, cfg0, windows, case):
    W, cfg = dict(W0), json.loads(json.dumps(cfg0))
    C, D, N = cfg["hidden_size"], cfg["head_dim"], windows.shape[0]
    inps = [W["model.embed_tokens.weight"][windows[j]] for j in range(N)]
    plans = []
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        scaler = {n: torch.zeros(W[p + n + ".weight"].shape[1], dtype=torch.float64)
                  for n in ("self_attn.o_proj", "mlp.down_proj")}
        gram = {n: torch.zeros(len(s), len(s), dtype=torch.float64) for n, s in scaler.items()}
        seen = {n: 0 for n in scaler}

        def taps(name, x):  # WrappedGPT.add_batch, one window (one sample) per call
            scaler[name] *= seen[name] / (seen[name] + 1)
            seen[name] += 1
            scaler[name] += torch.linalg.norm(x, dim=0) ** 2 / seen[name]
            gram[name] += x.T @ x
        for j in range(N):
            layer_forward(W, cfg, l, inps[j], taps)

        q = fraction(cfg, l, case["prune"])(case["ratio"])
        H, Hkv, F = cfg["head_counts"][l], cfg["kv_head_counts"][l], cfg["ffn_widths"][l]
        g = H // Hkv
        metric = {n: (W[p + n + ".weight"].abs() * scaler[n].sqrt()[None, :]).mean(axis=0) for n in scaler}
        heads, kv = list(range(H)), list(range(Hkv))
        if "attention" in case["prune"]:
            group = metric["self_attn.o_proj"].reshape(-1, D).sum(dim=1).reshape(Hkv, g).sum(dim=1)
            kv = keep_at_least(group, int(q * Hkv))
            heads = [h for h in range(H) if h // g in kv]
        channels = list(range(F))
        if "mlp" in case["prune"]:
            channels = keep_at_least(metric["mlp.down_proj"], int(q * F))
        plans.append({"kept_heads": heads, "kept_kv_heads": kv, "kept_channels": channels})

        # compress: rows of q, k, v, gate, up (and their biases), columns of o and down.
        dims = lambda units: [u * D + d for u in units for d in range(D)]
        Wd = {n: W[p + n + ".weight"] for n in tm.PROJ}
        for n, rows in (("self_attn.q_proj", dims(heads)), ("self_attn.k_proj", dims(kv)),
                        ("self_attn.v_proj", dims(kv)), ("mlp.gate_proj", channels), ("mlp.up_proj", channels)):
            W[p + n + ".weight"] = W[p + n + ".weight"][rows]
            if p + n + ".bias" in W: W[p + n + ".bias"] = W[p + n + ".bias"][rows]
        for n, cols in (("self_attn.o_proj", dims(heads)), ("mlp.down_proj", channels)):
            W[p + n + ".weight"] = W[p + n + ".weight"][:, cols]
            if case["restore"] == "lsq" and len(cols) < Wd[n].shape[1]:
                W[p + n + ".weight"] = lsq(Wd[n], gram[n], cols, case["damp"])
        cfg["head_counts"][l], cfg["kv_head_counts"][l], cfg["ffn_widths"][l] = len(heads), len(kv), len(channels)

        inps = [layer_forward(W, cfg, l, inps[j]) for j in range(N)]  # the pruned output feeds layer l+1
    return W, cfg, plans


def main():
    os.makedirs(out, exist_ok=True)
    W, cfg = load_model("tiny_uniform")
    gen = torch.Generator().manual_seed(11)
    windows = torch.randint(0, cfg["vocab_size"], (6, 16), generator=gen)
    save_file({"tokens": windows.numpy().astype(np.int64)}, os.path.join(out, "windows.safetensors"))
    test = torch.from_numpy(load_file(os.path.join(fixtures, "model", "tiny_uniform_ref.safetensors"))["tokens"])
    reference, logits = {}, {}
    for name, case in CASES.items():
        Wp, cfgp, plans = run_case(W, cfg, windows, case)
        reference[name] = {"args": case, "layers": plans}
        logits[name] = torch.stack([tm.forward(Wp, cfgp, test[s])[0] for s in range(test.shape[0])]).numpy()
        print(name, [(len(x["kept_kv_heads"]), len(x["kept_channels"])) for x in plans])
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(reference, f, indent=2, sort_keys=True)
        f.write("\n")
    save_file(logits, os.path.join(out, "logits.safetensors"), metadata={"producer": "scripts/reference/sequential_reference.py"})


if __name__ == "__main__":
    main()
