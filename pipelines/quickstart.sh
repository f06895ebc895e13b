#!/usr/bin/env bash
# Sets up a fresh machine (Debian packages, release build, the default model) and runs the main
# job end to end on SmolLM2-135M-Instruct. Today that is import and dense evaluation; the pruning
# stages join as they land (docs/DESIGN.md).
#   quickstart.sh [MODEL] [OUT_DIR]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/setup.sh"
model="${1:-$("$root/scripts/fetch-model.sh")}"
out="${2:-$root/out/quickstart}"
mkdir -p "$out"
(cd "$root" && swift build -c release >&2)
bin="$root/.build/release"
"$bin/convert" "$model" -o "$out/dense.st.zst"
"$bin/evaluate" --model "$out/dense.st.zst" --ppl wikitext2 --seqlen 2048 --json \
    > "$out/dense-wikitext2.json"
echo "quickstart: results in $out" >&2
cat "$out/dense-wikitext2.json"
