#!/usr/bin/env bash
# CFSP (Wang et al., COLING 2025), as its start.sh: 128 windows of 2048 tokens, MLP channels only, the
# fine-grained activation score, per-block budgets from the angular distance between block input and
# output (sigmoid, a = 1), kept widths rounded to multiples of 128 (cuda_friendly). With RECOVER=STEPS, CFSP's recovery:
# LoRA whose ranks follow each block's angular importance (finetune --budget-by; RECOVER_BUDGET=uniform for the
# ablation). One pass by default, as CFSP's prune_cfsp: every block is measured on the dense model's outputs.
# SEQUENTIAL=1 keeps those budgets (the one-pass plan's widths, budgets.st.zst) and chooses each block's channels
# on the outputs of the blocks before it as pruned (calibrate --sequential --widths; our extension, not the
# paper's). Usage: see pipelines/common.sh.
NAME=cfsp
SEQUENTIAL_DEFAULT=0
RECOVER_BUDGET_DEFAULT=importance
run_pipeline() {
    calibrate_stats --samples 128 --seqlen 2048
    cfsp_plan
    "$bin/slice" --model "$out/dense.st" --plan "$out/plan.st.zst" --quiet -o "$out/pruned.st.zst"
}
source "$(dirname "$0")/common.sh"
