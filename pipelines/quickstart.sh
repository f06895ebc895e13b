#!/usr/bin/env bash
# The main job on a fresh machine: installs what is missing (Debian packages, the release build, the
# default model SmolLM2-135M-Instruct), then prunes 20% of its decoder-layer parameters with FLAP
# (pipelines/flap.sh: calibrate, score, allocate, slice, restore) and prints the dense and pruned
# WikiText-2 perplexity at T = 2048 on the first 16 windows (32,768 of the test set's 304,986 tokens):
# a few minutes on 2 cores after set-up and build. FULL=1 evaluates the whole test set (about half an hour).
#   quickstart.sh [MODEL] [RATIO]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/setup.sh"
if [[ "${FULL:-0}" == 1 ]]; then unset LIMIT; else export LIMIT="${LIMIT:-16}"; fi
OUT="${OUT:-$root/out/quickstart}" SEQLENS="${SEQLENS:-2048}" "$root/pipelines/flap.sh" "${1:-}" "${2:-0.2}"
lengths="of each length"  # LIMIT may give one number per SEQLENS entry (pipelines/common.sh)
[[ "${LIMIT:-}" == *" "* ]] && lengths="of the lengths ${SEQLENS:-2048}, in order"
[[ -z "${LIMIT:-}" ]] || echo "(the first $LIMIT windows $lengths; FULL=1 pipelines/quickstart.sh for the whole WikiText-2 test set)"
