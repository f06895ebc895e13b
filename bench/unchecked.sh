#!/usr/bin/env bash
# What -Ounchecked would buy, per stage, in one run on this machine: the same workloads with the
# normal release build (-O: bounds, overflow and precondition checks live) and with every target
# built -Ounchecked (PRUNEKIT_UNCHECKED=1, built into .build-unchecked). Each workload runs REPEAT
# times (default 3) alternating the two builds; the table shows the best time of each and
# checked/unchecked. Usage: bench/unchecked.sh [MODEL.gguf]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/blas-env.sh"
data="${PRUNEKIT_DATA:-$root/../shared/data}"
model="${1:-$("$root/scripts/fetch-model.sh")}"
repeat="${REPEAT:-3}"
work="$(mktemp -d "${TMPDIR:-/tmp}/prunekit-unchecked.XXXXXX")"
trap 'rm -rf "$work"' EXIT
(cd "$root" && swift build -c release >&2 && PRUNEKIT_UNCHECKED=1 swift build -c release --scratch-path .build-unchecked >&2)
builds=("$root/.build-unchecked/release" "$root/.build/release")
c4="$data/c4/c4-validation-sample-2k.jsonl.zst"
wiki="$data/wikitext-2-raw/wiki.test.raw"

# Inputs every workload shares, made once with the normal build.
b="${builds[0]}"
"$b/convert" "$model" -o "$work/dense.st" --quiet
"$b/calibrate" --model "$work/dense.st" --jsonl "$c4" --samples 8 --seqlen 512 --gram o_proj,down_proj \
    --gram-dtype f64 --quiet -o "$work/stats.st"
"$b/score" --model "$work/dense.st" --stats "$work/stats.st" --metric fasp --quiet -o "$work/scores.st"
"$b/allocate" --scores "$work/scores.st" --ratio 0.3 --structure UL-UM --attention-unit vo --quiet -o "$work/plan.st"
"$b/slice" --model "$work/dense.st" --plan "$work/plan.st" --quiet -o "$work/sliced.st"

workload() {  # NAME BIN → runs it once
    local bin="$2"
    case "$1" in
    convert) "$bin/convert" "$model" -o "$work/out.st" --quiet ;;  # GGUF dequantisation, fingerprint, writing
    tokenize) "$bin/tokenize" --model "$work/dense.st" "$wiki" --count > /dev/null ;;
    evaluate) "$bin/evaluate" --model "$work/dense.st" --ppl wikitext2 --seqlen 2048 --limit 2 --quiet > /dev/null 2>&1 ;;
    calibrate) "$bin/calibrate" --model "$work/dense.st" --jsonl "$c4" --samples 8 --seqlen 512 \
        --gram o_proj,down_proj --gram-dtype f64 --quiet -o "$work/out.st" ;;
    score) "$bin/score" --model "$work/dense.st" --stats "$work/stats.st" --metric fasp --quiet -o "$work/out.st" ;;
    allocate) for r in 0.2 0.3 0.4 0.5; do
        "$bin/allocate" --scores "$work/scores.st" --ratio $r --structure AL-AM --attention-unit vo --quiet -o "$work/out.st"
        done ;;
    slice) "$bin/slice" --model "$work/dense.st" --plan "$work/plan.st" --quiet -o "$work/out.st" ;;
    restore) "$bin/restore" --model "$work/sliced.st" --dense "$work/dense.st" --stats "$work/stats.st" \
        --plan "$work/plan.st" --method lsq --quiet -o "$work/out.st" ;;
    esac
}

seconds() { local s e; s=$(date +%s.%N); workload "$1" "$2"; e=$(date +%s.%N); echo "$e - $s" | bc; }

printf '%-10s %12s %12s %9s\n' stage "unchecked s" "checked s" ratio
for name in convert tokenize evaluate calibrate score allocate slice restore; do
    best=(999999 999999)
    for ((i = 0; i < repeat; i++)); do
        for k in 0 1; do
            t=$(seconds "$name" "${builds[$k]}")
            best[$k]=$(echo "if ($t < ${best[$k]}) $t else ${best[$k]}" | bc)
        done
    done
    printf '%-10s %12.2f %12.2f %8.2fx\n' "$name" "${best[0]}" "${best[1]}" "$(echo "${best[1]} / ${best[0]}" | bc -l)"
done
