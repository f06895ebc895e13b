#!/usr/bin/env bash
# FLAP (An et al., AAAI 2024), as its official recipe: 1024 calibration windows of 128 tokens, the WIFV
# fluctuation metric, the AL-AM structure (adaptive across layers and modules, standardised scores), bias
# compensation. Heads are removed by KV group (GQA). One pass, as FLAP's prune_flap (every layer measured on
# the dense model); STRUCTURE=UL-UM or UL-MM with SEQUENTIAL=1 measures each layer on the pruned outputs of
# the layers before it. Usage: see pipelines/common.sh.
NAME=flap
SEQUENTIAL_DEFAULT=0
structure="${STRUCTURE:-AL-AM}"
run_pipeline() {
    calibrate_stats --samples 1024 --seqlen 128 \
        $(sequential_recipe --metric flap --ratio "$ratio" --structure "$structure" --restore bias)
    "$bin/score" --model "$out/dense.st" --stats "$out/stats.st.zst" --metric flap --quiet -o "$out/scores.st.zst"
    "$bin/allocate" --scores "$out/scores.st.zst" --ratio "$ratio" --structure "$structure" --plot "$out/plan.svg" \
        -o "$out/plan.st.zst"
    "$bin/slice" --model "$out/dense.st" --plan "$out/plan.st.zst" --quiet -o - |
        "$bin/restore" --model - --dense "$out/dense.st" --stats "$out/stats.st.zst" --plan "$out/plan.st.zst" \
            --method bias --quiet -o "$out/pruned.st.zst"
}
source "$(dirname "$0")/common.sh"
