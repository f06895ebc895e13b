#!/usr/bin/env bash
# What every stage needs on a 7B-class model: wall time and peak resident memory (/usr/bin/time -v's maximum RSS,
# which counts the pages of mapped files the process touched), and the bytes each stage reads (its input files'
# sizes) and writes (its output's size).
#   bench/memory.sh SHAPE [MODEL_DIR]    SHAPE llama2-7b or llama3-8b (scripts/make-synthetic-model.sh writes
#                                        MODEL_DIR when it is missing; default $BIG/SHAPE)
# Stages, in order: convert-model (HF → PruneKit model file), convert-gguf (HF → GGUF q8_0), calibrate (4 windows
# × 128 tokens: the statistics of every score), score (flap), allocate (UL-UM), slice, restore-bias, evaluate
# (WikiText-2, the first window of 128 tokens) and generate (16 tokens) on the bias-compensated model (on the dense
# one when it was not made), calibrate-gram (the same windows with Gram matrices at o_proj and down_proj, which
# least squares needs when heads go), restore-lsq, calibrate-gradients (first order, 2 windows × 64 tokens, BF16
# sums), finetune (2 LoRA steps of 2 windows × 64 tokens, adapters only). Outputs are deleted as soon as the
# stages that read them have run; the least-squares model and the gradient statistics go to a pipe, counted.
# Environment: BIG (scratch folder, default /tmp/prunekit-big; besides the model it must hold the Gram file —
# 32 × (F² + C²) × 4 bytes: 17.7 GB for LLaMA-2-7B, 28.5 GB for LLaMA-3-8B — and the sliced model, and $TMPDIR
# the gradient sums: 4 bytes a linear parameter, 26 GB and 28 GB), LIMIT_GB (a stage whose RSS passes this is
# killed and reported so, default 8: above the 6 GB aim, below what would take the machine down), RATIO (default
# 0.5), THREADS, STAGES (a space-separated subset of the stage names, default all; a stage runs only if what it
# reads was made).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/blas-env.sh"
data="${PRUNEKIT_DATA:-$root/../shared/data}"
shape="${1:?usage: bench/memory.sh llama2-7b|llama3-8b [MODEL_DIR]}"
big="${BIG:-/tmp/prunekit-big}"
model="${2:-$big/$shape}"
limit_gb="${LIMIT_GB:-8}"
ratio="${RATIO:-0.5}"
threads="${THREADS:-$(nproc)}"
stages="${STAGES:-convert-model convert-gguf calibrate calibrate-gram score allocate slice restore-bias restore-lsq evaluate generate calibrate-gradients finetune}"
mkdir -p "$big"
[[ -f "$model/config.json" ]] || "$root/scripts/make-synthetic-model.sh" "$shape" "$model" >&2
(cd "$root" && swift build -c release >&2)
bin="$root/.build/release"
work="$(mktemp -d "$big/memory.XXXXXX")"
trap 'rm -rf "$work"' EXIT
calib="$data/c4/c4-validation-sample-2k.jsonl.zst"

size() {  # FILE... → their bytes (a NAME.count file holds a count of bytes written to a pipe)
    local t=0 f
    for f in "$@"; do
        if [[ "$f" == *.count && -f "$f" ]]; then t=$((t + $(cat "$f")))
        elif [[ -e "$f" ]]; then t=$((t + $(du -sb "$f" | cut -f1))); fi
    done
    echo "$t"
}
descendants() { local c; for c in $(pgrep -P "$1"); do echo "$c"; descendants "$c"; done; }
gb() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1e9 }'; }
wanted() { [[ " $stages " == *" $1 "* ]]; }

# run NAME "INPUTS" "OUTPUTS" COMMAND... : runs COMMAND under /usr/bin/time -v with an RSS watchdog
printf '%s (%s), ratio %s, %s threads, RSS limit %s GB\n\n' "$shape" "$model" "$ratio" "$threads" "$limit_gb"
printf '| stage | wall time | peak RSS | read | written | note |\n|---|---|---|---|---|---|\n'
run() {
    local name=$1 inputs=$2 outputs=$3; shift 3
    wanted "$name" || return 0
    local f
    for f in $inputs; do
        [[ -e "$f" ]] || { printf '| %s | | | | | not run: %s was not made |\n' "$name" "$(basename "$f")"; return 0; }
    done
    local log="$work/$name.time" note="" killed=0
    /usr/bin/time -v -o "$log" "$@" > "$work/$name.out" 2> "$work/$name.err" &
    local pid=$! child limit_kb=$((limit_gb * 1000000))
    while kill -0 "$pid" 2> /dev/null; do
        for child in $(descendants "$pid"); do
            local rss; rss="$(awk '/VmRSS/ { print $2 }' "/proc/$child/status" 2> /dev/null || echo 0)"
            if [[ "${rss:-0}" -gt "$limit_kb" ]]; then kill -9 "$child"; killed=1; fi
        done
        sleep 0.2
    done
    local rc=0; wait "$pid" || rc=$?
    local wall rss
    wall="$(awk -F': ' '/Elapsed/ { print $2 }' "$log")"
    rss="$(awk -F': ' '/Maximum resident/ { printf "%.2f GB", $2 / 1e6 }' "$log")"
    if [[ $killed == 1 ]]; then note="killed above $limit_gb GB"
    elif [[ $rc != 0 ]]; then note="failed: $(grep -v '^\s*$' "$work/$name.err" | grep -v 'Command exited' | tail -n 1)"
    fi
    # shellcheck disable=SC2086
    printf '| %s | %s | %s | %s GB | %s GB | %s |\n' "$name" "$wall" "$rss" "$(gb "$(size $inputs)")" \
        "$(gb "$(size $outputs)")" "$note"
}

run convert-model "$model" "$work/model.st" \
    "$bin/convert" "$model" -o "$work/model.st" --threads "$threads" --quiet
rm -f "$work/model.st"
run convert-gguf "$model" "$work/model.gguf" \
    "$bin/convert" "$model" --to gguf --dtype q8_0 -o "$work/model.gguf" --threads "$threads" --quiet
rm -f "$work/model.gguf"
run calibrate "$model" "$work/stats.st" \
    "$bin/calibrate" --model "$model" --jsonl "$calib" --samples 4 --seqlen 128 --threads "$threads" --quiet \
    -o "$work/stats.st"
run score "$model $work/stats.st" "$work/scores.st" \
    "$bin/score" --model "$model" --stats "$work/stats.st" --metric flap --threads "$threads" --quiet -o "$work/scores.st"
run allocate "$work/scores.st" "$work/plan.st" \
    "$bin/allocate" --scores "$work/scores.st" --ratio "$ratio" --structure UL-UM --quiet -o "$work/plan.st"
run slice "$model $work/plan.st" "$work/sliced.st" \
    "$bin/slice" --model "$model" --plan "$work/plan.st" --threads "$threads" --quiet -o "$work/sliced.st"
run restore-bias "$work/sliced.st $model $work/stats.st $work/plan.st" "$work/bias.st" \
    "$bin/restore" --model "$work/sliced.st" --dense "$model" --stats "$work/stats.st" --plan "$work/plan.st" \
    --method bias --threads "$threads" --quiet -o "$work/bias.st"
pruned="$work/bias.st"
[[ -f "$pruned" ]] || pruned="$model"
run evaluate "$pruned" "" \
    "$bin/evaluate" --model "$pruned" --ppl wikitext2 --seqlen 128 --limit 1 --threads "$threads" --quiet --json
run generate "$pruned" "" \
    "$bin/evaluate" --model "$pruned" --generate "The capital of France is" --max-tokens 16 --threads "$threads"
rm -f "$work/bias.st"
# The Gram file is the largest output (32 layers × (F² + C²) × 4 bytes: 17.7 GB for LLaMA-2-7B, 28.5 GB for LLaMA-3-8B); the
# least-squares model goes to standard output, counted, so that the disk holds the model, the Gram file and the
# sliced model at most.
run calibrate-gram "$model" "$work/gram.st" \
    "$bin/calibrate" --model "$model" --jsonl "$calib" --samples 4 --seqlen 128 --gram o_proj,down_proj \
    --threads "$threads" --quiet -o "$work/gram.st"
run restore-lsq "$work/sliced.st $model $work/gram.st $work/plan.st" "$work/lsq.count" \
    bash -c '"$0" "$@" | wc -c > "'"$work"'/lsq.count"' "$bin/restore" --model "$work/sliced.st" --dense "$model" \
    --stats "$work/gram.st" --plan "$work/plan.st" --method lsq --threads "$threads" --quiet -o -
rm -f "$work/gram.st" "$work/sliced.st"
# The gradient sums (26 GB as F32 for LLaMA-2-7B) live in a temporary file under $TMPDIR while they add up;
# the BF16 output goes to standard output, counted.
run calibrate-gradients "$model" "$work/grad.count" \
    bash -c '"$0" "$@" | wc -c > "'"$work"'/grad.count"' "$bin/calibrate" --model "$model" --jsonl "$calib" \
    --samples 2 --seqlen 64 --gradients first --grad-dtype bf16 --threads "$threads" --quiet -o -
run finetune "$model" "$work/adapter" \
    "$bin/finetune" --model "$model" --jsonl "$calib" --steps 2 --batch 2 --micro-batch 1 --seqlen 64 \
    --adapters-only --threads "$threads" --quiet -o "$work/adapter"
