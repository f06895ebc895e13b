#!/usr/bin/env bash
# Tokenizer throughput on the WikiText-2 test text, per vocabulary: PruneKit's `tokenize`
# (release build) against the Hugging Face `tokenizers` library on the same text, both
# single-threaded, same machine, one run. The Hugging Face side loads the tokenizer.json that
# `tokenize --write-json` writes from the same GGUF (scripts/reference/tokenizer_json_check.py
# checks those files against llama.cpp's vectors; tests check SmolLM2's against transformers).
# Usage: bench/tokenizer.sh [MODEL.gguf]   (default: SmolLM2, plus the shared vocabularies)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/blas-env.sh"
data="${PRUNEKIT_DATA:-$root/../shared/data}"
model="${1:-$("$root/scripts/fetch-model.sh")}"
text="$data/wikitext-2-raw/wiki.test.raw"
work="$(mktemp -d "${TMPDIR:-/tmp}/prunekit-bench.XXXXXX")"
trap 'rm -rf "$work"' EXIT
(cd "$root" && swift build -c release --product tokenize >&2)
bin="$root/.build/release/tokenize"
printf '%-22s %10s %10s %10s %10s %8s\n' "WikiText-2 test" "ours MB/s" "HF MB/s" "ours tok" "HF tok" "ratio"
for gguf in "$model" "$data"/tokenizers/ggml-vocab-{llama-spm,llama-bpe,qwen2}.gguf; do
    name=$(basename "$gguf" .gguf)
    "$bin" --model "$gguf" --write-json "$work/tokenizer.json"
    ours=$("$bin" --model "$gguf" "$text" --count --stats 2>&1 >/dev/null)
    theirs=$(RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false python3 - "$work/tokenizer.json" "$text" <<'PY'
import sys, time
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
text = open(sys.argv[2], encoding="utf-8").read()
tok.encode(text[:1000], add_special_tokens=False)
start = time.perf_counter()
ids = tok.encode(text, add_special_tokens=False).ids
seconds = time.perf_counter() - start
print(f"{len(ids)} {len(text.encode()) / 1e6 / seconds:.2f}")
PY
)
    read -r hf_tokens hf_mbs <<<"$theirs"
    ours_mbs=$(sed -E 's/.* ([0-9.]+) MB\/s.*/\1/' <<<"$ours")
    ours_tokens=$(sed -E 's/^tokenize: ([0-9]+) tokens.*/\1/' <<<"$ours")
    python3 -c "print(f'{\"$name\"[:22]:<22} {$ours_mbs:>10.2f} {$hf_mbs:>10.2f} {$ours_tokens:>10} {$hf_tokens:>10} {$ours_mbs/$hf_mbs:>7.2f}x')"
done
