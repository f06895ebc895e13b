"""References for the channel importance scores (Sources/Pruning/Scores.swift), computed in numpy
float64 from the committed calibration statistics and the model weights.

  python3 scripts/reference/score_reference.py [tiny] [smollm2]

With no argument both files are produced, in Tests/Fixtures/score/:
  tiny_scores.safetensors     weights Tests/Fixtures/model/tiny_uniform.safetensors,
                              statistics Tests/Fixtures/calibrate/tiny_uniform_stats.safetensors
  smollm2_scores.safetensors  weights from the SmolLM2-135M-Instruct Q4_1 GGUF (scripts/fetch-model.sh,
                              env PRUNEKIT_MODEL overrides) loaded with transformers in float32,
                              statistics Tests/Fixtures/calibrate/smollm2_stats.safetensors
                              (layers 0, 1, 15, 29 only)

Inputs per decoder layer l and consumer P in {self_attn.o_proj, mlp.down_proj}: the consumer weight
W [rows, cols] (o_proj [C, H*D], down_proj [C, F]; HF layout, out x in), from the statistics file
sumsq_j = sum over all N*T calibration rows of x_j^2 and fluc_j (`.fluctuation`), and N = the number
of calibration windows (rows of `windows`). The official code feeds the windows one at a time, so:
  FLAP/Wanda WrappedGPT.scaler_row = BiasGPT.scaler_inp = s_j = sumsq_j / N
    (s <- s*n/(n+1) + ||x_window,j||^2/(n+1) summed over windows n = 0..N-1),
  FLAP BiasGPT.fluc_inp = fluc_j.

Output tensors (F64), for each metric M and each layer l present in the statistics, the per-column
score vector as the official code holds it just before the per-head reshape / standardisation /
thresholding (one value per input column of the consumer matrix):
  {M}/model.layers.{l}.self_attn.o_proj.channel_score  [H*D]   (not for cfsp: it prunes the MLP only)
  {M}/model.layers.{l}.mlp.down_proj.channel_score     [F]
Metrics (W the consumer weight, i its rows (output dims), j its columns):
  flap      FLAP `metrics['WIFV']` (CASIA-IVA-Lab/FLAP lib/prune.py, its default metric):
            fluc_j * sum_i W_ij^2; prune_flap squares it at o_proj (`** 2`), not at down_proj.
  ifv       FLAP `metrics['IFV']`: fluc_j; squared at o_proj.
  wifn      FLAP `metrics['WIFN']`: mean over rows i (torch `.mean(axis=0)` of the [rows, cols] matrix)
            of |W_ij| * sqrt(s_j); squared at o_proj.
  wanda-sp  FLAP `prune_wanda_sp`: (|W| * sqrt(s)).mean(axis=0), i.e. mean_i |W_ij| sqrt(s_j), at
            o_proj (before `.reshape(-1, 128).sum(dim=1)` per head) and down_proj; not squared.
  mag-sp    FLAP `prune_magnitude_sp`: torch.norm(W, dim=0) = sqrt(sum_i W_ij^2); not squared.
  cfsp      wyxscir/CFSP lib/prune.py `prune_cfsp`, local metric `three_w_one_wa` with a = b = c = 1
            (its start.sh; `a` only enters the global layer-importance sigmoid), down_proj only:
              W_under = |W_down| * sqrt(s)^b
              M = (|W_under| / colsum|W_under| + |W_up^T| / colsum|W_up^T|
                   + |W_gate^T| / colsum|W_gate^T|) * sqrt(s)^c           ([C, F], colsum over dim 0)
              score = M.mean(axis=0)                                         ([F])
            computed literally here. Each column-normalised term has columns summing to 1, so the
            score equals (3/C) * sqrt(s_j), C = down_proj's row count (hidden size); the script
            asserts this to relative 1e-9 (it holds whenever no column of W_down, W_up^T or W_gate^T
            is all zero).
  fasp      FASP: sum_i |W_ij| * sqrt(sumsq_j) on the consumer matrix (o_proj columns = V/O
            dimensions, down_proj columns = MLP channels); the raw sumsq, not divided by N.

__metadata__: producer, format, source fixture names, N (windows), T, layers, and `formula.{M}` per
metric; keys in sorted order (`save` from calibrate_reference.py), so the files are byte-for-byte
reproducible.
"""
import os, sys

import numpy as np
import torch
from safetensors.numpy import load_file

torch.set_num_threads(1)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from calibrate_reference import model_path, save  # noqa: E402

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
out_dir = os.path.join(root, "Tests", "Fixtures", "score")
ATTN, MLP = "self_attn.o_proj", "mlp.down_proj"
METRICS = ["flap", "ifv", "wifn", "wanda-sp", "mag-sp", "cfsp", "fasp"]
SQUARED_AT_O_PROJ = {"flap", "ifv", "wifn"}
FORMULAS = {
    "flap": "FLAP WIFV (default): fluc_j * sum_i W_ij^2 on o_proj and down_proj columns; squared at o_proj",
    "ifv": "FLAP IFV: fluc_j; squared at o_proj",
    "wifn": "FLAP WIFN: mean_i |W_ij| * sqrt(sumsq_j / N); squared at o_proj",
    "wanda-sp": "FLAP prune_wanda_sp: mean_i |W_ij| * sqrt(sumsq_j / N) (before the per-head sum at o_proj)",
    "mag-sp": "FLAP prune_magnitude_sp: sqrt(sum_i W_ij^2)",
    "cfsp": "CFSP three_w_one_wa a=b=c=1, down_proj only: mean_i of (colnorm|W_down*sqrt(s)| + colnorm|W_up^T|"
            " + colnorm|W_gate^T|) * sqrt(s), s = sumsq/N; equals (3/C) * sqrt(s_j)",
    "fasp": "FASP: sum_i |W_ij| * sqrt(sumsq_j) (raw sumsq) on o_proj (V/O dims) and down_proj columns",
}


# ----------------------------------------------------------------------------- metrics

def column_normalised(a):
    """|a| / torch.sum(|a|, dim=0): every column divided by its sum over the rows."""
    a = np.abs(a)
    return a / a.sum(axis=0, keepdims=True)


def cfsp_score(w_down, w_up, w_gate, s, b=1.0, c=1.0):
    """CFSP three_w_one_wa on down_proj [C, F], up_proj / gate_proj [F, C] (transposed to [C, F])."""
    root_s = np.sqrt(s).reshape(1, -1)
    w_under = np.abs(w_down) * root_s ** b
    m = (column_normalised(w_under) + column_normalised(w_up.T) + column_normalised(w_gate.T)) * root_s ** c
    return m.mean(axis=0)


def consumer_scores(metric, w, fluc, sumsq, n):
    """Per-column score of consumer weight w [rows, cols], before any squaring."""
    s = sumsq / n  # scaler_row / scaler_inp
    if metric == "flap":
        return fluc * np.sum(w ** 2, axis=0)
    if metric == "ifv":
        return fluc.copy()
    if metric in ("wifn", "wanda-sp"):
        return (np.abs(w) * np.sqrt(s).reshape(1, -1)).mean(axis=0)
    if metric == "mag-sp":
        return np.linalg.norm(w, axis=0)
    if metric == "fasp":
        return np.abs(w).sum(axis=0) * np.sqrt(sumsq)
    raise ValueError(metric)


def layer_scores(l, weights, stats, n):
    """{name: vector} for layer l; weights(name) returns a float64 [out, in] array."""
    res = {}
    pre = f"model.layers.{l}"
    for point in (ATTN, MLP):
        w = weights(f"{pre}.{point}.weight")
        fluc = stats[f"{pre}.{point}.input.fluctuation"]
        sumsq = stats[f"{pre}.{point}.input.sumsq"]
        count = int(stats[f"{pre}.{point}.input.count"][0])
        assert fluc.dtype == np.float64 and sumsq.dtype == np.float64
        assert w.shape[1] == sumsq.shape[0] == fluc.shape[0], (l, point, w.shape, sumsq.shape)
        assert count == n * stats["windows"].shape[1], (l, point, count)
        for metric in METRICS:
            if metric == "cfsp":
                if point != MLP:
                    continue
                s = sumsq / n
                v = cfsp_score(w, weights(f"{pre}.mlp.up_proj.weight"), weights(f"{pre}.mlp.gate_proj.weight"), s)
                simple = 3.0 / w.shape[0] * np.sqrt(s)
                assert np.allclose(v, simple, rtol=1e-9, atol=0), (l, np.max(np.abs(v - simple) / np.abs(simple)))
            else:
                v = consumer_scores(metric, w, fluc, sumsq, n)
                if point == ATTN and metric in SQUARED_AT_O_PROJ:
                    v = v ** 2
            assert v.shape == (w.shape[1],) and np.all(np.isfinite(v)), (metric, l, point)
            res[f"{metric}/{pre}.{point}.channel_score"] = np.ascontiguousarray(v, dtype=np.float64)
    return res


# ----------------------------------------------------------------------------- fixtures

def layers_of(stats):
    return sorted({int(k.split(".")[2]) for k in stats if k.startswith("model.layers.")})


def write(name, stats_rel, weights, weights_desc):
    stats = load_file(os.path.join(root, stats_rel))
    n, t = stats["windows"].shape
    layers = layers_of(stats)
    tensors = {}
    for l in layers:
        tensors.update(layer_scores(l, weights, stats, n))
    meta = {
        "producer": "scripts/reference/score_reference.py",
        "format": "prunekit-scores",
        "statistics": stats_rel,
        "weights": weights_desc,
        "windows": str(n),
        "seqlen": str(t),
        "layers": str(layers),
        "description": "per-column channel scores (float64) before per-head aggregation / thresholding; "
                       "{metric}/model.layers.{l}.{self_attn.o_proj,mlp.down_proj}.channel_score",
    }
    for m in METRICS:
        meta[f"formula.{m}"] = FORMULAS[m]
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, name)
    save(tensors, path, meta)
    print(f"{path}: {len(tensors)} tensors, {os.path.getsize(path)} bytes, N={n}, layers {layers}")
    for m in METRICS:
        for point in (ATTN, MLP):
            k = f"{m}/model.layers.{layers[0]}.{point}.channel_score"
            if k in tensors:
                print(f"  {k}[0] = {tensors[k][0]!r}")


def tiny_fixture():
    rel = "Tests/Fixtures/model/tiny_uniform.safetensors"
    w = load_file(os.path.join(root, rel))
    write("tiny_scores.safetensors", "Tests/Fixtures/calibrate/tiny_uniform_stats.safetensors",
          lambda k: w[k].astype(np.float64), rel + " (float32)")


def smollm2_fixture():
    from transformers import AutoModelForCausalLM
    path = model_path()
    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                 dtype=torch.float32)
    sd = model.state_dict()
    write("smollm2_scores.safetensors", "Tests/Fixtures/calibrate/smollm2_stats.safetensors",
          lambda k: sd[k].detach().to(torch.float64).numpy(),
          os.path.basename(path) + " (scripts/fetch-model.sh), transformers GGUF loader, float32")


if __name__ == "__main__":
    parts = sys.argv[1:] or ["tiny", "smollm2"]
    for p in parts:
        {"tiny": tiny_fixture, "smollm2": smollm2_fixture}[p]()
