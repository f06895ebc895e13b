#!/usr/bin/env bash
# The README's results table: every published recipe (FLAP, Wanda-sp, CFSP, FASP) at each ratio on one model,
# then one table of parameters, WikiText-2 perplexity and zero-shot accuracy per method and ratio, from the
# JSON files the pipelines leave in out/NAME-RATIO/.
#   results.sh [MODEL (default: SmolLM2 GGUF)] [RATIOS (default "0.2 0.5")]
# Environment: as pipelines/common.sh (SEQLENS, LIMIT, TASKS, TASK_LIMIT, THREADS, CACHE); METHODS (default
# "flap wanda-sp cfsp fasp"). Calibration statistics are cached, so CFSP reuses Wanda-sp's and reruns are cheap.
# Example (the zero-shot columns of the README): SEQLENS=none TASKS=all TASK_LIMIT=500 pipelines/results.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
model="${1:-}"
ratios="${2:-0.2 0.5}"
methods="${METHODS:-flap wanda-sp cfsp fasp}"
dirs=()
for method in $methods; do
    for ratio in $ratios; do
        echo "== $method $ratio" >&2
        OUT="$root/out/$method-$ratio" "$root/pipelines/$method.sh" "$model" "$ratio" >&2
        dirs+=("$method=$ratio=$root/out/$method-$ratio")
    done
done
python3 - "${dirs[@]}" <<'PY'
import json, os, sys
order = ["boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa"]
def load(path):
    return json.load(open(path)) if os.path.exists(path) else None
rows = []
first = sys.argv[1].split("=", 2)[2]
seqlens = sorted({f.split("-")[1][:-5] for f in os.listdir(first) if f.startswith("dense-") and f[6:-5].isdigit()},
                 key=int, reverse=True)
def row(label, ratio, directory, which):
    ppl = [load(f"{directory}/{which}-{T}.json") for T in seqlens]
    tasks = load(f"{directory}/{which}-tasks.json")
    params = next((p["parameters"] for p in ppl if p), None)
    cells = [label, ratio] + ([f"{params:,}"] if seqlens else [])
    cells += [f"{p['perplexity']:.2f}" if p else "—" for p in ppl]
    names = sorted(tasks["tasks"], key=order.index) if tasks else []
    if tasks:
        metric = lambda r: r["acc_norm"] if "acc_norm" in r else r["acc"]
        cells += [f"{metric(tasks['tasks'][n]):.4f}" for n in names] + [f"{tasks['average']['acc']:.4f}"]
    return cells, names, tasks
cells, names, tasks = row("dense", "—", first, "dense")
rows.append(cells)
for item in sys.argv[1:]:
    method, ratio, directory = item.split("=", 2)
    rows.append(row(method, f"{float(ratio):.0%}", directory, "pruned")[0])
header = ["method", "ratio"] + (["parameters"] if seqlens else []) + [f"T = {T}" for T in seqlens] + names + (["average"] if names else [])
if tasks:
    n = {t["n"] for t in tasks["tasks"].values()}
    print(f"(zero-shot: acc_norm where the task reports it, else acc; items per task: {', '.join(map(str, sorted(n)))})")
print("| " + " | ".join(header) + " |")
print("|" + "---|" * len(header))
for r in rows:
    print("| " + " | ".join(r) + " |")
PY
