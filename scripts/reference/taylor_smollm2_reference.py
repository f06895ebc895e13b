"""Reference LLM-Pruner Taylor importance scores of SmolLM2-135M-Instruct, for
Tests/ToolTests/TaylorSmolLM2Tests.swift: numpy float64 on the gradient sums that our
`calibrate --gradients second` stores, layers 0, 15 and 29 only.

Regenerate (from the package root; PRUNEKIT_DATA defaults to ../shared/data):
  swift build -c release
  .build/release/convert "$(scripts/fetch-model.sh)" -o /tmp/smollm2-dense.st --quiet
  .build/release/calibrate --model /tmp/smollm2-dense.st \\
      --jsonl "${PRUNEKIT_DATA:-../shared/data}/c4/c4-validation-sample-2k.jsonl.zst" \\
      --samples 2 --seqlen 32 --seed 0 --gradients second --grad-dtype f32 --threads 1 \\
      --quiet -o /tmp/smollm2-grads.st
  python3 scripts/reference/taylor_smollm2_reference.py /tmp/smollm2-grads.st /tmp/smollm2-dense.st
(the .st files are uncompressed: about 540 MB of F32 weights and 850 MB of gradient sums; the
fixture's bytes are the same on a rerun). Here the gradient sums do not depend on the thread count
(checked: --threads 1 and 2 give byte-identical sums); --threads 1 is recorded because DESIGN.md
promises identical bits only for a given thread count. calibrate on the GGUF itself gives the same
sums as on its conversion.

Inputs: the statistics file (metadata format "prunekit-stats", gradients "second", grad_dtype "F32",
samples N; per linear weight `model.layers.{l}.{self_attn|mlp}.{x}_proj.weight.grad_sum` G_sum and
`.grad_sq_sum` S_sum, F32 [out, in]) and the dense model file (PruneKit format: F32 weights under
Hugging Face names, the configuration JSON in the metadata). Its checks: the statistics were
computed with CALIBRATE's settings (below) on this model (equal fingerprints).

Scores: those of scripts/reference/taylor_reference.py (its `salience`, `out_channels`, `in_channels`
and `_reduce`, imported: LLM-Pruner's TaylorImportance), in float64 from the F32 sums and weights:
  G = G_sum / N (LLM-Pruner's weight.grad)   Hs = S_sum / N (its acc_grad)
  salience  first: W*G    second: W*Hs*W    mix: W*G - 0.5*W*Hs*W
  rows of q, gate, up; columns of o, down: vector |s.sum|, element |s|.sum
  MLP channel j: [gate row j, up row j, down column j] (root gate)
  attention channel c in 0 .. 576: [q row c, o column c] (GQA, 9 query heads on 3 KV heads: k/v rows
  belong to a whole group and enter no channel's score), reduced by sum, mean, max, prod, first.

Writes Tests/Fixtures/taylor/smollm2_scores.safetensors (save_sorted; -o elsewhere), tensors
  score.{order}.{granularity}.{reduce}.{l}.attention   [576]
  score.{order}.{granularity}.{reduce}.{l}.mlp         [1536]
for order in first, second, mix; granularity in vector, element; reduce in sum, mean, max, prod,
first; l in 0, 15, 29: 180 tensors, F32 by default (about 0.78 MB; float32 rounding is at most
6e-8 relative, a sixteenth of the test's 1e-6; --dtype f64 doubles it to 1.54 MB, and our score
tool's values agree with that within 1.5e-10), and metadata
  format "prunekit-taylor-reference", producer, layers "0,15,29", samples "2", seqlen "32",
  seed "0", data "c4/c4-validation-sample-2k.jsonl.zst" (relative to PRUNEKIT_DATA), threads "1",
  calibrate (the command line above as a JSON list: the model "MODEL", the data relative, no -o),
  and from the statistics
  fingerprint, data_sha256, windows_sha256 (the test checks them before comparing, to tell
  another model or other windows from a wrong score), and per layer grad_sha256.{l}: the sha256 of
  the F32 bytes (little-endian, row-major) of grad_sum then grad_sq_sum of q, o, gate, up, down in
  that order, the gradients the scores come from.

Why the digests: the vector-wise scores |sum(W*G)| of the first and mix orders cancel heavily, so
they magnify the last bits of the gradients: noise of 1e-7 relative on G_sum and S_sum moves them by
up to 1e-1 relative (the element-wise and second-order ones by 3e-7). Equality within 1e-6 therefore
needs calibrate to reproduce these gradients bit for bit; it does here (two runs, --threads 1 and 2,
debug and release builds, the GGUF and its conversion), and the test first checks the digests so
that gradients that moved (another BLAS kernel, a change of the backward) are reported as such, with
this recipe to regenerate, not as 10^5 wrong scores.
"""
import argparse
import hashlib
import json
import os
import sys

import numpy as np
from safetensors import safe_open

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_common import ROOT, save_sorted  # noqa: E402
from taylor_reference import (GRANULARITIES, ORDERS, REDUCTIONS, _reduce, in_channels,  # noqa: E402
                              out_channels, salience)

PRODUCER = "scripts/reference/taylor_smollm2_reference.py"
OUT = os.path.join(ROOT, "Tests", "Fixtures", "taylor", "smollm2_scores.safetensors")
LAYERS = [0, 15, 29]
DATA = "c4/c4-validation-sample-2k.jsonl.zst"
SETTINGS = {"samples": "2", "seqlen": "32", "seed": "0"}
THREADS = "1"
PROJECTIONS = ["self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
CALIBRATE = ["calibrate", "--model", "MODEL", "--jsonl", DATA, "--samples", SETTINGS["samples"],
             "--seqlen", SETTINGS["seqlen"], "--seed", SETTINGS["seed"], "--gradients", "second",
             "--grad-dtype", "f32", "--threads", THREADS]


def check_statistics(meta, model_meta):
    want = {"format": "prunekit-stats", "gradients": "second", "grad_dtype": "F32",
            "gradient_loss": "next-token cross-entropy, mean per window", "windows_mode": "documents", **SETTINGS}
    for k, v in want.items():
        assert meta.get(k) == v, f"statistics: {k} is {meta.get(k)!r}, want {v!r}"
    assert meta["source"].endswith("/" + DATA), meta["source"]
    assert meta["fingerprint"] == model_meta["fingerprint"], "statistics of another model"
    args = json.loads(meta["arguments"])
    assert "--threads" in args and args[args.index("--threads") + 1] == THREADS, args


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("stats", help="calibrate --gradients second statistics (uncompressed .st)")
    ap.add_argument("model", help="the dense model file (uncompressed .st, F32 weights)")
    ap.add_argument("-o", "--output", default=OUT)
    ap.add_argument("--dtype", choices=["f32", "f64"], default="f32")
    a = ap.parse_args()

    with safe_open(a.model, "np") as fm, safe_open(a.stats, "np") as fs:
        model_meta, meta = fm.metadata(), fs.metadata()
        check_statistics(meta, model_meta)
        cfg = json.loads(model_meta["config"])
        N = int(meta["samples"])
        D = cfg["head_dim"]
        out, digests = {}, {}
        for l in LAYERS:
            H, Hkv, F = cfg["head_counts"][l], cfg["kv_head_counts"][l], cfg["ffn_widths"][l]
            assert H == 9 and Hkv == 3 and D == 64 and F == 1536 and cfg["hidden_size"] == 576, cfg
            W, G, Hs = {}, {}, {}
            h = hashlib.sha256()
            for proj in PROJECTIONS:
                k = f"model.layers.{l}.{proj}.weight"
                w, g, s = fm.get_tensor(k), fs.get_tensor(k + ".grad_sum"), fs.get_tensor(k + ".grad_sq_sum")
                assert w.dtype == g.dtype == s.dtype == np.float32 and w.shape == g.shape == s.shape, k
                h.update(g.astype("<f4").tobytes())
                h.update(s.astype("<f4").tobytes())
                assert np.isfinite(g).all() and np.isfinite(s).all() and (s >= 0).all(), k
                W[proj] = w.astype(np.float64)
                G[proj] = g.astype(np.float64) / N   # LLM-Pruner's weight.grad
                Hs[proj] = s.astype(np.float64) / N  # its acc_grad
            digests[f"grad_sha256.{l}"] = h.hexdigest()

            def s_of(proj, order):
                return salience(W[proj], G[proj], Hs[proj], order)

            for order in ORDERS:
                for gran in GRANULARITIES:
                    # GQA (H != Hkv): k/v rows enter no channel's score; the root q first.
                    attn = np.stack([out_channels(s_of("self_attn.q_proj", order), gran),
                                     in_channels(s_of("self_attn.o_proj", order), gran)])
                    mlp = np.stack([out_channels(s_of("mlp.gate_proj", order), gran),
                                    out_channels(s_of("mlp.up_proj", order), gran),
                                    in_channels(s_of("mlp.down_proj", order), gran)])
                    assert attn.shape == (2, H * D) and mlp.shape == (3, F), (attn.shape, mlp.shape)
                    for reduce in REDUCTIONS:
                        key = f"score.{order}.{gran}.{reduce}.{l}"
                        for kind, stack in (("attention", attn), ("mlp", mlp)):
                            v = _reduce(stack, reduce)
                            assert np.isfinite(v).all() and (v > 0).all(), key + kind
                            if a.dtype == "f32":
                                # every value a normal float32: its rounding is relative, at most 2^-24
                                assert v.min() > np.finfo(np.float32).tiny * 1e3 and v.max() < 1e30, (key, v.min())
                            out[f"{key}.{kind}"] = np.ascontiguousarray(
                                v, dtype=np.float32 if a.dtype == "f32" else np.float64)
            print(f"layer {l}: mix.element.sum attention {out[f'score.mix.element.sum.{l}.attention'].mean():.4g}, "
                  f"mlp {out[f'score.mix.element.sum.{l}.mlp'].mean():.4g} (means)")

    m = {"format": "prunekit-taylor-reference", "producer": PRODUCER, "layers": ",".join(map(str, LAYERS)),
         "data": DATA, "threads": THREADS, "calibrate": json.dumps(CALIBRATE), "gradients": "second",
         "grad_dtype": "F32", **SETTINGS}
    for k in ("fingerprint", "data_sha256", "windows_sha256"):
        m[k] = meta[k]
    m.update(digests)
    save_sorted(out, a.output, m)
    print(a.output, len(out), "tensors,", os.path.getsize(a.output), "bytes")


if __name__ == "__main__":
    main()
