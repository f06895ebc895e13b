#!/usr/bin/env bash
# FASP (Hu et al., 2025): 128 windows of 2048 tokens with Gram matrices at the o_proj and down_proj inputs,
# the score Σ_i |W_ij|·‖X_j‖ on the consumer's columns, FASP's interlinked units (an MLP channel: gate/up
# row and down_proj column; a V/O dimension: v_proj row and the o_proj columns that read it, Q and K
# untouched), the same fraction in every layer, least-squares restoration of o_proj and down_proj
# (Cholesky). The result has value heads narrower than head_dim: PruneKit's evaluate runs it; transformers
# and llama.cpp cannot hold it. Sequential by default (the layer-by-layer procedure of Wanda and SparseGPT
# that the FASP paper builds on; its code is not public): each layer is scored, pruned and refitted on the
# outputs of the layers before it as pruned, so the least squares fit the pruned model's own inputs;
# SEQUENTIAL=0 measures every layer on the dense model in one pass. Usage: see pipelines/common.sh.
NAME=fasp
SEQUENTIAL_DEFAULT=1
run_pipeline() {
    calibrate_stats --samples 128 --seqlen 2048 --gram o_proj,down_proj --gram-dtype f64 \
        $(sequential_recipe --metric fasp --ratio "$ratio" --structure UL-UM --attention-unit vo --restore lsq)
    "$bin/score" --model "$out/dense.st" --stats "$out/stats.st.zst" --metric fasp --quiet -o "$out/scores.st.zst"
    "$bin/allocate" --scores "$out/scores.st.zst" --ratio "$ratio" --structure UL-UM --attention-unit vo \
        --plot "$out/plan.svg" -o "$out/plan.st.zst"
    "$bin/slice" --model "$out/dense.st" --plan "$out/plan.st.zst" --quiet -o - |
        "$bin/restore" --model - --dense "$out/dense.st" --stats "$out/stats.st.zst" --plan "$out/plan.st.zst" \
            --method lsq --quiet -o "$out/pruned.st.zst"
}
source "$(dirname "$0")/common.sh"
