#!/usr/bin/env bash
# Writes a Hugging Face checkpoint of a 7B-class LLaMA shape with random BF16 weights (fixed seed),
# for measuring what PruneKit's stages need at the size people prune (bench/memory.sh).
#   scripts/make-synthetic-model.sh SHAPE DIR [--seed N] [--layers L] [--shard-gb G]
#   SHAPE: llama2-7b (32 × 4096, MLP 11008, 32 heads, vocabulary 32000: 13.5 GB)
#          llama3-8b (32 × 4096, MLP 14336, GQA 32/8, vocabulary 128256, LLaMA-3 rope scaling: 16.1 GB)
# The weights, config.json and sharded safetensors with their index come from scripts/synthetic_model.py
# (its docstring says how the weights are drawn and scaled); tokenizer.json is the real model family's
# vocabulary (LLaMA-2's SentencePiece BPE, LLaMA-3's byte-level BPE) from the GGUF vocabularies in
# $PRUNEKIT_DATA/tokenizers, written by our `tokenize --write-json`. Never commit the output.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="${PRUNEKIT_DATA:-$root/../shared/data}"
[[ $# -ge 2 ]] || { echo "usage: $0 llama2-7b|llama3-8b DIR [--seed N] [--layers L] [--shard-gb G]" >&2; exit 64; }
shape="$1"; dir="$2"; shift 2
case "$shape" in
    llama2-7b) vocab="$data/tokenizers/ggml-vocab-llama-spm.gguf" ;;
    llama3-8b) vocab="$data/tokenizers/ggml-vocab-llama-bpe.gguf" ;;
    *) echo "$0: unknown shape '$shape' (llama2-7b or llama3-8b)" >&2; exit 64 ;;
esac
[[ -f "$vocab" ]] || { echo "$0: $vocab is missing (set PRUNEKIT_DATA)" >&2; exit 66; }
python3 -c 'import numpy' 2>/dev/null || { echo "$0: needs python3 with numpy (pip install numpy)" >&2; exit 69; }
(cd "$root" && swift build -c release --product tokenize >&2)
mkdir -p "$dir"
python3 "$root/scripts/synthetic_model.py" "$shape" "$dir" "$@"
"$root/.build/release/tokenize" --model "$vocab" --write-json "$dir/tokenizer.json.partial"
mv "$dir/tokenizer.json.partial" "$dir/tokenizer.json"
echo "$dir"
