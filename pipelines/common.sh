# Shared by the pipelines: arguments, the build, the dense model file, evaluation and the summary.
# A pipeline sets NAME and defines run_pipeline (which writes "$out/pruned.st.zst"), then sources this.
#   pipelines/NAME.sh [MODEL (default: SmolLM2 GGUF)] [RATIO (default 0.2)] [CALIBRATION JSONL (default: the C4 sample)]
# Environment: OUT (output folder, default out/NAME-RATIO), SEQLENS (evaluation window lengths, default "2048 128"),
# LIMIT (evaluate only the first N windows, default all), THREADS.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="${PRUNEKIT_DATA:-$root/../shared/data}"
model="${1:-}"
ratio="${2:-0.2}"
calib="${3:-$data/c4/c4-validation-sample-2k.jsonl.zst}"
[[ -n "$model" ]] || model="$("$root/scripts/fetch-model.sh")"
out="${OUT:-$root/out/$NAME-$ratio}"
seqlens="${SEQLENS:-2048 128}"
mkdir -p "$out"
(cd "$root" && swift build -c release >&2)
bin="$root/.build/release"
threads=()
[[ -n "${THREADS:-}" ]] && threads=(--threads "$THREADS")
limit=()
[[ -n "${LIMIT:-}" ]] && limit=(--limit "$LIMIT")

evaluate_all() {  # MODEL LABEL → $out/LABEL-T.json for every T
    for T in $seqlens; do
        "$bin/evaluate" --model "$1" --ppl wikitext2 --seqlen "$T" "${limit[@]}" "${threads[@]}" --json --quiet \
            > "$out/$2-$T.json"
    done
}

summary() {
    python3 - "$out" "$seqlens" "$NAME" "$ratio" "$prune_seconds" <<'PY'
import json, sys
out, seqlens, name, ratio, seconds = sys.argv[1], sys.argv[2].split(), sys.argv[3], sys.argv[4], float(sys.argv[5])
rows = []
for label in ("dense", "pruned"):
    r = [json.load(open(f"{out}/{label}-{T}.json")) for T in seqlens]
    rows.append((label, r[0]["parameters"], [x["perplexity"] for x in r]))
print(f"{name} at ratio {ratio} (pruning wall time {seconds:.0f} s; WikiText-2 perplexity)")
print(f"{'model':<8} {'parameters':>12} " + " ".join(f"{'T=' + T:>10}" for T in seqlens))
for label, params, ppl in rows:
    print(f"{label:<8} {params:>12} " + " ".join(f"{p:>10.3f}" for p in ppl))
PY
}

"$bin/convert" "$model" -o "$out/dense.st" --quiet
start=$(date +%s)
run_pipeline
prune_seconds=$(( $(date +%s) - start ))
evaluate_all "$out/dense.st" dense
evaluate_all "$out/pruned.st.zst" pruned
summary | tee "$out/summary.txt"
