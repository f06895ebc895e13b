#!/usr/bin/env bash
# The README's results table: every published recipe at each ratio on one model, then one table of parameters,
# WikiText-2 perplexity and zero-shot accuracy per method and ratio — pipelines/sweep.sh with the one-shot
# recipes, each rerun (statistics and dense evaluations come from the cache) and no speed report.
#   results.sh [MODEL (default: SmolLM2 GGUF)] [RATIOS (default "0.2 0.5")]
# Environment: as pipelines/sweep.sh; METHODS defaults to "flap wanda-sp cfsp fasp llm-pruner hywia".
# Example (the zero-shot columns of the README): SEQLENS=none TASKS=all TASK_LIMIT=500 pipelines/results.sh
set -euo pipefail
REUSE="${REUSE:-0}" SPEED="${SPEED:-0}" RECOVER=0 exec "$(dirname "$0")/sweep.sh" "$@"
