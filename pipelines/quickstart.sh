#!/usr/bin/env bash
# The main job on a fresh machine: installs what is missing (Debian packages, the release build, the
# default model SmolLM2-135M-Instruct), then prunes 20% of its decoder-layer parameters with FLAP
# (pipelines/flap.sh: calibrate, score, allocate, slice, restore) and prints the dense and pruned
# WikiText-2 perplexity at T = 2048. About half an hour on 2 cores.
#   quickstart.sh [MODEL] [RATIO]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/setup.sh"
OUT="${OUT:-$root/out/quickstart}" SEQLENS="${SEQLENS:-2048}" "$root/pipelines/flap.sh" "${1:-}" "${2:-0.2}"
