#!/usr/bin/env bash
# The recipe composed from the stages (issue 17's "best recipe the stages can compose"; not a paper's): CFSP's
# block budgets and channel scores, FASP's least squares, CFSP's importance-guided LoRA.
#  1. the dense pass of CFSP (128 windows of 2048 tokens): the fine-grained activation score and the per-block
#     budgets from the angular distance (sigmoid, a = 1), MLP channels only, widths rounded to multiples of 128
#     — attention stays whole, the one choice that held up best at 50% in the one-shot table;
#  2. sequential (the default; SEQUENTIAL=0 for one pass): each block keeps its budget, chooses its channels on
#     the outputs of the blocks before it as pruned, and its down_proj is refit by least squares to the Gram
#     matrix of the inputs the pruned model gives it (calibrate --sequential --widths --restore lsq);
#  3. with RECOVER=STEPS, LoRA whose ranks follow the dense blocks' angular importance (RECOVER_BUDGET=uniform for
#     the ablation).
# Usage: see pipelines/common.sh.
NAME=composed
SEQUENTIAL_DEFAULT=1
RECOVER_BUDGET_DEFAULT=importance
run_pipeline() {
    local gram=(--gram down_proj --gram-dtype f64)
    if [[ "$sequential" == 1 ]]; then calibrate_stats --samples 128 --seqlen 2048; else calibrate_stats --samples 128 --seqlen 2048 "${gram[@]}"; fi
    cfsp_plan "${gram[@]}" --restore lsq
    "$bin/slice" --model "$out/dense.st" --plan "$out/plan.st.zst" --quiet -o - |
        "$bin/restore" --model - --dense "$out/dense.st" --stats "$out/stats.st.zst" --plan "$out/plan.st.zst" \
            --method lsq --quiet -o "$out/pruned.st.zst"
}
source "$(dirname "$0")/common.sh"
