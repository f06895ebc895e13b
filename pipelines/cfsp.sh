#!/usr/bin/env bash
# CFSP (Wang et al., COLING 2025), as its start.sh: 128 windows of 2048 tokens, MLP channels only, the
# fine-grained activation score, per-block budgets from the angular distance between block input and
# output (sigmoid, a = 1), kept widths rounded to multiples of 128 (cuda_friendly). With RECOVER=STEPS, CFSP's recovery:
# LoRA whose ranks follow each block's angular importance (finetune --budget-by; RECOVER_BUDGET=uniform for the
# ablation). Usage: see pipelines/common.sh.
NAME=cfsp
RECOVER_BUDGET_DEFAULT=importance
run_pipeline() {
    calibrate_stats --samples 128 --seqlen 2048
    "$bin/score" --model "$out/dense.st" --stats "$out/stats.st.zst" --metric cfsp --quiet -o "$out/scores.st.zst"
    "$bin/allocate" --scores "$out/scores.st.zst" --ratio "$ratio" --blocks angular --prune mlp --round 128 \
        --plot "$out/plan.svg" -o "$out/plan.st.zst"
    "$bin/slice" --model "$out/dense.st" --plan "$out/plan.st.zst" --quiet -o "$out/pruned.st.zst"
}
source "$(dirname "$0")/common.sh"
