#!/usr/bin/env bash
# FASP, in part: 128 windows of 2048 tokens with Gram matrices, the score Σ_i |W_ij|·‖X_j‖ on the consumer,
# the same fraction in every layer, least-squares restoration of the consumers (Cholesky). FASP's own
# attention unit, V/O dimensions, is not available yet: this pipeline prunes MLP channels only.
# Usage: see pipelines/common.sh.
NAME=fasp
run_pipeline() {
    calibrate_stats --samples 128 --seqlen 2048 --gram down_proj --gram-dtype f64
    "$bin/score" --model "$out/dense.st" --stats "$out/stats.st.zst" --metric fasp --quiet -o "$out/scores.st.zst"
    "$bin/allocate" --scores "$out/scores.st.zst" --ratio "$ratio" --structure UL-UM --prune mlp \
        --plot "$out/plan.svg" -o "$out/plan.st.zst"
    "$bin/slice" --model "$out/dense.st" --plan "$out/plan.st.zst" --quiet -o - |
        "$bin/restore" --model - --dense "$out/dense.st" --stats "$out/stats.st.zst" --plan "$out/plan.st.zst" \
            --method lsq --quiet -o "$out/pruned.st.zst"
}
source "$(dirname "$0")/common.sh"
