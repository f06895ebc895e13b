#!/usr/bin/env bash
# Zero-shot tasks, in one run on this machine: `evaluate --tasks` against lm-evaluation-harness 0.4.13
# scoring with transformers (float32, CPU; scripts/reference/zeroshot_reference.py, which builds the
# requests with lm-eval and scores them with its HFLM, batch 8) on the first LIMIT items of each of the
# seven tasks: wall time (model loading included) and peak memory, as ratios, and both accuracies.
# lm-eval is looked for in LMEVAL_PYTHON (default /tmp/lmeval-venv/bin/python; made with
#   python3 -m venv --system-site-packages /tmp/lmeval-venv && /tmp/lmeval-venv/bin/pip install lm-eval==0.4.13);
# without it the reference script's own reimplementation of lm-eval's requests scores them (said in the output).
# Usage: bench/zeroshot.sh [MODEL.gguf] [LIMIT (default 500)]
source "$(dirname "$0")/setup.sh"
limit="${2:-500}"
py="${LMEVAL_PYTHON:-/tmp/lmeval-venv/bin/python}"
reference=(--no-own-scores)
if ! "$py" -c "import lm_eval" 2>/dev/null; then
    py=python3 reference=(--no-lmeval)
    echo "(lm-eval not importable: the reference is the script's reimplementation of its requests, unbatched)"
fi

/usr/bin/time -f "%e %M" -o "$work/ours.time" "$bin/evaluate" --model "$model" --tasks all --limit "$limit" \
    --threads "$threads" --json --quiet > "$work/ours.json"
PRUNEKIT_MODEL="$model" /usr/bin/time -f "%e %M" -o "$work/theirs.time" "$py" \
    "$root/scripts/reference/zeroshot_reference.py" --limit "$limit" --threads "$threads" "${reference[@]}" \
    --out "$work/theirs.json" > "$work/theirs.log" 2>&1 || { cat "$work/theirs.log" >&2; exit 1; }

python3 - "$work" "$limit" <<'PY'
import json, sys
work, limit = sys.argv[1], sys.argv[2]
ours = json.load(open(f"{work}/ours.json"))["tasks"]
theirs = json.load(open(f"{work}/theirs.json"))
(ot, om), (tt, tm) = [map(float, open(f"{work}/{w}.time").read().split()[-2:]) for w in ("ours", "theirs")]
print(f"first {limit} items of each task; reference: {theirs['built_by']}, torch {theirs['versions']['torch']}")
print(f"{'task':<14} {'n':>5} {'acc':>8} {'ref acc':>8} {'acc_norm':>9} {'ref norm':>9}")
for name, t in theirs["tasks"].items():
    o = ours[name]
    f = lambda x: f"{x:.4f}" if x is not None else "—"
    print(f"{name:<14} {o['n']:>5} {f(o['acc']):>8} {f(t['acc']):>8} {f(o.get('acc_norm')):>9} {f(t['acc_norm']):>9}")
print(f"\nevaluate: {ot:.0f} s, {om/1024:.0f} MB peak;  reference: {tt:.0f} s, {tm/1024:.0f} MB peak")
print(f"evaluate is {tt/ot:.2f}x faster and uses {om/tm:.2f}x the memory (aim: >= 3x, <= 0.3x)")
PY
