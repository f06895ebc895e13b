#!/usr/bin/env bash
# Tokenizer throughput on the WikiText-2 test text: PruneKit's `tokenize` (release) against the
# Hugging Face `tokenizers` library (the tokenizer transformers builds from the same GGUF),
# both single-threaded, same machine, one run. Prints MB/s, tokens/s and the ratio.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
data="${PRUNEKIT_DATA:-$root/../shared/data}"
model="${1:-$("$root/scripts/fetch-model.sh")}"
text="$data/wikitext-2-raw/wiki.test.raw"
(cd "$root" && swift build -c release --product tokenize >&2)
ours=$("$root/.build/release/tokenize" --model "$model" "$text" --count --stats 2>&1 >/dev/null)
theirs=$(RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false python3 - "$model" "$text" <<'PY' 2>/dev/null
import os, sys, time
from transformers import AutoTokenizer
path, text_path = sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
text = open(text_path, encoding="utf-8").read()
backend = tok.backend_tokenizer
backend.encode(text[:1000])
start = time.perf_counter()
ids = backend.encode(text, add_special_tokens=False).ids
seconds = time.perf_counter() - start
mb = len(text.encode()) / 1e6
print(f"{len(ids)} {mb:.4f} {seconds:.4f}")
PY
)
read -r n mb s <<<"$theirs"
ours_mbs=$(sed -E 's/.* ([0-9.]+) MB\/s.*/\1/' <<<"$ours")
ours_tokens=$(sed -E 's/^tokenize: ([0-9]+) tokens.*/\1/' <<<"$ours")
hf_mbs=$(python3 -c "print(f'{$mb/$s:.2f}')")
printf '%-28s %12s %12s\n' "tokenizer (WikiText-2 test)" "MB/s" "tokens"
printf '%-28s %12s %12s\n' "PruneKit tokenize" "$ours_mbs" "$ours_tokens"
printf '%-28s %12s %12s\n' "HF tokenizers (1 thread)" "$hf_mbs" "$n"
python3 -c "print(f'ratio PruneKit / HF: {$ours_mbs/$hf_mbs:.2f}x')"
