#!/usr/bin/env bash
# LLM-Pruner (Ma et al., 2023; horseee/LLM-Pruner, scripts/llama_prune.sh and hf_prune.py): 10 calibration
# windows of 64 tokens (its get_examples('bookcorpus', ..., 10, seq_len=64); here the C4 sample, as
# bookcorpus is not in the data folder), the gradient of the mean language-model loss (calibrate
# --gradients first), first-order element-wise Taylor importance (--taylor param_first: Σ|W⊙G| over each
# coupled weight's row or column), summed across the coupled weights (its default grouping_strategy
# sum) and over a head's channels; block-wise, the same fraction in every pruned layer (its local
# pruning), attention by query heads, and only layers 4..29 of LLaMA-7B's 32 (block_*_layer_start 4,
# end 30) — here that range scaled to the model's depth. No compensation; LLM-Pruner's LoRA
# recovery with RECOVER=STEPS (finetune, uniform ranks). Usage: see pipelines/common.sh.
NAME=llm-pruner
run_pipeline() {
    calibrate_stats --samples 10 --seqlen 64 --gradients first
    "$bin/score" --model "$out/dense.st" --stats "$out/stats.st.zst" --metric taylor --order first \
        --granularity element --reduce sum --quiet -o "$out/scores.st.zst"
    "$bin/allocate" --scores "$out/scores.st.zst" --ratio "$ratio" --structure UL-UM --attention-unit head \
        --layers "$(llm_pruner_layers)" --plot "$out/plan.svg" -o "$out/plan.st.zst"
    "$bin/slice" --model "$out/dense.st" --plan "$out/plan.st.zst" --quiet -o "$out/pruned.st.zst"
}
source "$(dirname "$0")/common.sh"
