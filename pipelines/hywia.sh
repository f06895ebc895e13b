#!/usr/bin/env bash
# HyWIA (Liu et al., AAAI 2025): LLM-Pruner's setting (pipelines/llm-pruner.sh: 10 windows of 64 tokens, the
# gradient of the mean language-model loss, block-wise pruning of the same fraction in its scaled layer range,
# attention by query heads) with the importance of each channel fused from two granularities of the same
# first-order Taylor salience: fine (element-wise Σ|W⊙G|) and coarse (vector-wise |ΣW⊙G|), each replaced by its
# rank in the layer and mixed by softmax weights over the two (score --metric hywia). The paper publishes no code:
# docs/DESIGN.md "HyWIA" gives our design and the README the ablation behind it. FUSION (adaptive, equal, fine,
# coarse; default adaptive), TEMPERATURE (default 1) and NORMALISE (rank, mean or max; default rank) select the
# variant; OUT defaults to out/hywia-RATIO, or out/hywia-FUSION-tTEMPERATURE[-NORMALISE]-RATIO for another one. LoRA recovery with RECOVER=STEPS. Usage: see pipelines/common.sh.
NAME=hywia
fusion="${FUSION:-adaptive}"
temperature="${TEMPERATURE:-1}"
normalise="${NORMALISE:-rank}"
variant="$fusion-t$temperature"
[[ "$normalise" == rank ]] || variant="$variant-$normalise"
[[ "$variant" == adaptive-t1 ]] || OUT="${OUT:-$(dirname "$0")/../out/hywia-$variant-${2:-0.2}}"
run_pipeline() {
    calibrate_stats --samples 10 --seqlen 64 --gradients first
    "$bin/score" --model "$out/dense.st" --stats "$out/stats.st.zst" --metric hywia --order first --reduce sum \
        --fusion "$fusion" --temperature "$temperature" --normalise "$normalise" --quiet -o "$out/scores.st.zst"
    "$bin/allocate" --scores "$out/scores.st.zst" --ratio "$ratio" --structure UL-UM --attention-unit head \
        --layers "$(llm_pruner_layers)" --plot "$out/plan.svg" -o "$out/plan.st.zst"
    "$bin/slice" --model "$out/dense.st" --plan "$out/plan.st.zst" --quiet -o "$out/pruned.st.zst"
}
source "$(dirname "$0")/common.sh"
