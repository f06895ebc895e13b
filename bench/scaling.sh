#!/usr/bin/env bash
# Cost grows as it should: calibrate (with Gram matrices at down_proj) and evaluate on LLaMA-2-7B-shaped
# layers, at two sizes each way — tokens ×2 (windows ×2, the same model) and layers ×2 (the same windows) —
# printed as ratios measured in one run. Aim: time ×2 (± 15%) for either doubling; peak memory flat in
# tokens (one layer's weights dominate) and flat in layers (one layer in memory at a time).
#   bench/scaling.sh            (env BIG: scratch folder, default /tmp/prunekit-big; LAYERS: the smaller
#                               depth, default 4; SAMPLES: the smaller window count, default 8; THREADS;
#                               REPEAT: runs of each measurement, the fastest kept, default 2)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="${PRUNEKIT_DATA:-$root/../shared/data}"
big="${BIG:-/tmp/prunekit-big}"
layers="${LAYERS:-4}"
samples="${SAMPLES:-8}"
threads="${THREADS:-$(nproc)}"
repeat="${REPEAT:-2}"
mkdir -p "$big"
for n in "$layers" $((2 * layers)); do
    [[ -f "$big/llama2-7b-L$n/config.json" ]] ||
        "$root/scripts/make-synthetic-model.sh" llama2-7b "$big/llama2-7b-L$n" --layers "$n" > /dev/null
done
(cd "$root" && swift build -c release >&2)
bin="$root/.build/release"
work="$(mktemp -d "$big/scaling.XXXXXX")"
trap 'rm -rf "$work"' EXIT
calib="$data/c4/c4-validation-sample-2k.jsonl.zst"

measure() {  # COMMAND... → "seconds kb": the fastest of REPEAT runs, and its peak RSS
    local best="" i
    for ((i = 0; i < repeat; i++)); do
        /usr/bin/time -f "%e %M" -o "$work/t" "$@" > /dev/null 2> "$work/err" || { cat "$work/err" >&2; exit 1; }
        if [[ -z "$best" ]] || awk -v a="$(cut -d' ' -f1 "$work/t")" -v b="${best% *}" 'BEGIN { exit !(a < b) }'; then
            best="$(cat "$work/t")"
        fi
    done
    echo "$best"
}
calibrate() {  # DEPTH SAMPLES
    measure "$bin/calibrate" --model "$big/llama2-7b-L$1" --jsonl "$calib" --samples "$2" --seqlen 128 \
        --gram down_proj --threads "$threads" --quiet -o "$work/stats.st"
}
evaluate() {  # DEPTH WINDOWS
    measure "$bin/evaluate" --model "$big/llama2-7b-L$1" --ppl wikitext2 --seqlen 128 --limit "$2" \
        --threads "$threads" --quiet
}
row() {  # LABEL "s kb" "s kb"
    awk -v label="$1" -v a="$2" -v b="$3" 'BEGIN {
        split(a, x, " "); split(b, y, " ")
        printf "| %s | %.1f s, %.2f GB | %.1f s, %.2f GB | %.2f× | %.2f× |\n", label, x[1], x[2] / 1e6, y[1], y[2] / 1e6,
            y[1] / x[1], y[2] / x[2] }'
}
printf 'LLaMA-2-7B layers (4096 hidden, 11008 MLP, 32 heads), %s threads, fastest of %s runs\n\n' "$threads" "$repeat"
printf '| measurement | smaller | doubled | time ratio | memory ratio |\n|---|---|---|---|---|\n'
row "calibrate --gram down_proj, tokens ×2 ($samples → $((2 * samples)) × 128, $layers layers)" \
    "$(calibrate "$layers" "$samples")" "$(calibrate "$layers" $((2 * samples)))"
row "calibrate --gram down_proj, layers ×2 ($layers → $((2 * layers)), $samples × 128)" \
    "$(calibrate "$layers" "$samples")" "$(calibrate $((2 * layers)) "$samples")"
row "evaluate, tokens ×2 ($samples → $((2 * samples)) windows of 128, $layers layers)" \
    "$(evaluate "$layers" "$samples")" "$(evaluate "$layers" $((2 * samples)))"
row "evaluate, layers ×2 ($layers → $((2 * layers)), $samples windows of 128)" \
    "$(evaluate "$layers" "$samples")" "$(evaluate $((2 * layers)) "$samples")"
