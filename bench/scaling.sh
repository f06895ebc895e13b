#!/usr/bin/env bash
# Cost grows as it should: calibrate (with Gram matrices at down_proj) and evaluate on LLaMA-2-7B-shaped
# layers, at two sizes each way — tokens ×2 (windows ×2, the same model) and layers ×2 (the same windows) —
# printed as ratios measured in one run. Aim: time ×2 (± 15%) for either doubling; peak memory flat in
# tokens (one layer's weights dominate) and flat in layers (one layer in memory at a time). A run has a part
# that does not grow with tokens (reading the model, writing the statistics), so the tokens rows add a third
# size (×4) and print the growth of what does: (t(4N) − t(2N)) / (t(2N) − t(N)), 2 when cost is linear. With
# the default 32 windows the hidden-state batches (4096 rows) are full from the smallest size on.
#   bench/scaling.sh            (env BIG: scratch folder, default /tmp/prunekit-big; LAYERS: the smaller
#                               depth, default 4; SAMPLES: the smaller window count, default 32; THREADS;
#                               REPEAT: runs of each measurement, the fastest kept, default 2)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/blas-env.sh"
data="${PRUNEKIT_DATA:-$root/../shared/data}"
big="${BIG:-/tmp/prunekit-big}"
layers="${LAYERS:-4}"
samples="${SAMPLES:-32}"
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
marginal() {  # LABEL "s kb" "s kb" "s kb" → the growth of the part that grows with tokens
    awk -v label="$1" -v a="$2" -v b="$3" -v c="$4" 'BEGIN {
        split(a, x, " "); split(b, y, " "); split(c, z, " ")
        printf "| %s | %.1f / %.1f / %.1f s | %.2f× | %.1f s | %.2f / %.2f / %.2f GB |\n", label, x[1], y[1], z[1],
            (z[1] - y[1]) / (y[1] - x[1]), 2 * x[1] - y[1], x[2] / 1e6, y[2] / 1e6, z[2] / 1e6 }'
}
printf 'LLaMA-2-7B layers (4096 hidden, 11008 MLP, 32 heads), %s threads, fastest of %s runs\n\n' "$threads" "$repeat"
c1="$(calibrate "$layers" "$samples")"; c2="$(calibrate "$layers" $((2 * samples)))"; c4="$(calibrate "$layers" $((4 * samples)))"
cL="$(calibrate $((2 * layers)) "$samples")"
e1="$(evaluate "$layers" "$samples")"; e2="$(evaluate "$layers" $((2 * samples)))"; e4="$(evaluate "$layers" $((4 * samples)))"
eL="$(evaluate $((2 * layers)) "$samples")"
printf '| measurement | smaller | doubled | time ratio | memory ratio |\n|---|---|---|---|---|\n'
row "calibrate --gram down_proj, tokens ×2 ($samples → $((2 * samples)) × 128, $layers layers)" "$c1" "$c2"
row "calibrate --gram down_proj, layers ×2 ($layers → $((2 * layers)), $samples × 128)" "$c1" "$cL"
row "evaluate, tokens ×2 ($samples → $((2 * samples)) windows of 128, $layers layers)" "$e1" "$e2"
row "evaluate, layers ×2 ($layers → $((2 * layers)), $samples windows of 128)" "$e1" "$eL"
printf '\n| tokens N, 2N, 4N | time | growth of the part that grows with tokens: (t(4N) − t(2N)) / (t(2N) − t(N)) | fixed part 2t(N) − t(2N) | peak memory |\n|---|---|---|---|---|\n'
marginal "calibrate --gram down_proj ($samples, $((2 * samples)), $((4 * samples)) × 128)" "$c1" "$c2" "$c4"
marginal "evaluate ($samples, $((2 * samples)), $((4 * samples)) windows of 128)" "$e1" "$e2" "$e4"
