#!/usr/bin/env bash
# Sequential pruning against one-pass pruning and against the official code, in one run on this machine:
# Wanda-sp on SmolLM2's MLP channels (the official loop prunes heads as multi-head attention, which grouped-
# query attention is not), the official code's 128 C4 windows of 128 tokens, MLP fractions 0.2 and 0.5.
#  - one pass: calibrate, score, allocate, slice (wall time, calibrate's peak memory);
#  - sequential: the same with calibrate --sequential (aim: at most 1.5x the one-pass time);
#  - the official loop, FLAP's prune_wanda_sp on the CPU (scripts/reference/wanda_sp_official.py) on the same
#    windows: its wall time and memory, how many kept channels differ from ours, and the WikiText-2 perplexity
#    (T = 2048, the first LIMIT windows; default 16) of both pruned models (the official one sliced by our
#    tools from its kept lists).
# Usage: bench/sequential.sh [MODEL.gguf]   (env LIMIT, THREADS, FRACTIONS: the MLP fractions, default "0.2 0.5")
source "$(dirname "$0")/setup.sh"
limit="${LIMIT:-16}"
"$bin/calibrate" --model "$work/model.st" --jsonl "$data/c4/c4-validation-sample-2k.jsonl.zst" --samples 128 --seqlen 128 \
    --dump-windows "$work/windows.st" --threads "$threads" --quiet -o "$work/dense-stats.st"
# allocate's ratio P for an MLP fraction q (UL-UM, MLP only: q = P · T_l / T_mlp,l; SmolLM2's layers are uniform).
ratio_for() {
    python3 - "$work/model.st" "$1" <<'PY'
import json, struct, sys
with open(sys.argv[1], "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    c = json.loads(json.loads(f.read(n))["__metadata__"]["config"])
C, D, H, K, F = c["hidden_size"], c["head_dim"], c["head_counts"][0], c["kv_head_counts"][0], c["ffn_widths"][0]
layer = C * D * (2 * H + 2 * K) + 3 * C * F
print(repr(float(sys.argv[2]) * 3 * C * F / layer))
PY
}
timed() {  # LABEL COMMAND... → appends "seconds rss_kb" of the command to $work/LABEL.time
    local label=$1; shift
    /usr/bin/time -f "%e %M" -a -o "$work/$label.time" "$@"
}
prune() {  # LABEL RATIO [CALIBRATE ARGS...] → $work/LABEL.plan.st, $work/LABEL.st
    local label=$1 ratio=$2; shift 2
    rm -f "$work/$label.time"
    timed "$label" "$bin/calibrate" --model "$work/model.st" --tokens "$work/windows.st" --threads "$threads" --quiet \
        -o "$work/$label.stats.st" "$@"
    timed "$label" "$bin/score" --model "$work/model.st" --stats "$work/$label.stats.st" --metric wanda-sp --quiet \
        --threads "$threads" -o "$work/$label.scores.st"
    timed "$label" "$bin/allocate" --scores "$work/$label.scores.st" --ratio "$ratio" --structure UL-UM --prune mlp \
        --quiet -o "$work/$label.plan.st"
    timed "$label" "$bin/slice" --model "$work/model.st" --plan "$work/$label.plan.st" --quiet -o "$work/$label.st"
}
ppl() { "$bin/evaluate" --model "$1" --ppl wikitext2 --seqlen 2048 --limit "$limit" --threads "$threads" --json --quiet |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["perplexity"])'; }

printf '%-6s %-10s %9s %9s %10s | %s\n' "q" "procedure" "seconds" "peak MB" "vs 1-pass" "kept channels vs official, perplexity (T=2048, $limit windows)"
for q in ${FRACTIONS:-0.2 0.5}; do
    P=$(ratio_for "$q")
    prune "onepass-$q" "$P"
    prune "seq-$q" "$P" --sequential --metric wanda-sp --ratio "$P" --structure UL-UM --prune mlp
    python3 "$root/scripts/reference/wanda_sp_official.py" "$model" "$work/windows.st" "$q" "$threads" \
        "$work/official-$q.json" > /dev/null 2>&1
    # The official kept lists as a plan (our plan's metadata, its kept_channels replaced), sliced by our tools.
    python3 - "$work/seq-$q.plan.st" "$work/official-$q.json" "$work/official-$q.plan.st" <<'PY'
import json, sys
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file
with safe_open(sys.argv[1], "np") as f:
    meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
for l, kept in enumerate(json.load(open(sys.argv[2]))["kept_channels"]):
    tensors[f"model.layers.{l}.mlp.kept_channels"] = np.asarray(kept, dtype=np.int32)
save_file(tensors, sys.argv[3], metadata=meta)
PY
    "$bin/slice" --model "$work/model.st" --plan "$work/official-$q.plan.st" --quiet -o "$work/official-$q.st"
    python3 - "$work" "$q" "$(ppl "$work/onepass-$q.st")" "$(ppl "$work/seq-$q.st")" "$(ppl "$work/official-$q.st")" <<'PY'
import json, sys
from safetensors import safe_open
work, q, ppl = sys.argv[1], sys.argv[2], dict(zip(["onepass", "seq", "official"], map(float, sys.argv[3:6])))
def kept(label):
    with safe_open(f"{work}/{label}-{q}.plan.st", "np") as f:
        return [set(f.get_tensor(f"model.layers.{l}.mlp.kept_channels").tolist()) for l in range(30)]
official = json.load(open(f"{work}/official-{q}.json"))
ref = [set(k) for k in official["kept_channels"]]
def time(label):
    rows = [line.split() for line in open(f"{work}/{label}-{q}.time") if line.strip() and line[0].isdigit()]
    return sum(float(r[0]) for r in rows), max(int(r[1]) for r in rows) / 1024
one_s, _ = time("onepass")
for label in ("onepass", "seq"):
    s, rss = time(label)
    diff = sum(len(a ^ b) // 2 for a, b in zip(kept(label), ref))
    print(f"{q:<6} {label:<10} {s:>9.1f} {rss:>9.0f} {s / one_s:>9.2f}x | {diff} channels differ; "
          f"ppl {ppl[label]:.4f} ({100 * (ppl[label] / ppl['official'] - 1):+.3f}% vs official)")
print(f"{q:<6} {'official':<10} {official['seconds']:>9.1f} {official['peak_rss_mb']:>9.0f} {official['seconds'] / one_s:>9.2f}x | "
      f"ppl {ppl['official']:.4f} (seconds: the loop, without loading the model)")
PY
done
