#!/usr/bin/env bash
# Wanda-sp (the structured Wanda baseline of the FLAP paper): 128 C4 windows of 2048 tokens, the score
# mean_i |W_ij|·‖X_j‖ summed per head, the same fraction removed in every layer and module (UL-UM), no
# compensation. Sequential by default, as the official code (FLAP's prune_wanda_sp) runs it: each layer's
# statistics come from the outputs of the layers before it, already pruned (calibrate --sequential);
# SEQUENTIAL=0 measures every layer on the dense model in one pass. Usage: see pipelines/common.sh.
NAME=wanda-sp
SEQUENTIAL_DEFAULT=1
run_pipeline() {
    calibrate_stats --samples 128 --seqlen 2048 $(sequential_recipe --metric wanda-sp --ratio "$ratio" --structure UL-UM)
    "$bin/score" --model "$out/dense.st" --stats "$out/stats.st.zst" --metric wanda-sp --quiet -o "$out/scores.st.zst"
    "$bin/allocate" --scores "$out/scores.st.zst" --ratio "$ratio" --structure UL-UM --plot "$out/plan.svg" \
        -o "$out/plan.st.zst"
    "$bin/slice" --model "$out/dense.st" --plan "$out/plan.st.zst" --quiet -o "$out/pruned.st.zst"
}
source "$(dirname "$0")/common.sh"
