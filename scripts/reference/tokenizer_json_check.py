#!/usr/bin/env python3
"""Checks the tokenizer.json files PruneKit writes (tokenize --write-json) with Hugging Face
`tokenizers` and transformers: every case of llama.cpp's vocabulary tests (shared/data/tokenizers)
must encode to the expected ids and decode back.

Usage: scripts/reference/tokenizer_json_check.py DIR   (DIR holds gpt-2.json, llama-bpe.json, ...)
Prints one line per vocabulary; exits non-zero on any mismatch.
"""
import os
import sys

from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast

data = os.environ.get("PRUNEKIT_DATA", os.path.join(os.path.dirname(__file__), "../../../shared/data"))
folder = sys.argv[1]
failures = 0
for name in ["gpt-2", "llama-bpe", "qwen2", "llama-spm"]:
    path = os.path.join(folder, f"{name}.json")
    if not os.path.exists(path):
        continue
    base = os.path.join(data, "tokenizers", f"ggml-vocab-{name}.gguf")
    texts = open(base + ".inp", encoding="utf-8").read().split("\n__ggml_vocab_test__\n")
    if texts[-1] == "":
        texts.pop()
    expected = [[int(t) for t in line.split()] for line in open(base + ".out", encoding="utf-8").read().split("\n")[: len(texts)]]
    raw = Tokenizer.from_file(path)
    fast = PreTrainedTokenizerFast(tokenizer_file=path)
    bad = 0
    for text, ids in zip(texts, expected):
        got = raw.encode(text, add_special_tokens=False).ids
        got_fast = fast.encode(text, add_special_tokens=False)
        back = fast.decode(ids)
        if got != ids or got_fast != ids or back != text:
            bad += 1
            print(f"  {name}: {text!r}: got {got} / {got_fast}, expected {ids}; decode {back!r}")
    print(f"{name}: {len(texts) - bad}/{len(texts)} cases equal (tokenizers {raw.get_vocab_size()} tokens)")
    failures += bad
sys.exit(1 if failures else 0)
