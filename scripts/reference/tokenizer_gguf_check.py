#!/usr/bin/env python3
"""Checks the tokenizer metadata `convert --to gguf` writes, in llama.cpp itself (llama-cpp-python):
for each vocabulary of shared/data/tokenizers, a tiny random LLaMA carrying that tokenizer (our
tokenizer.json, from `tokenize --write-json`) goes through `convert --to gguf`, and llama.cpp, loading
only the vocabulary, must give the ids of the .inp/.out vectors (llama.cpp's tokenizer tests).

  python3 scripts/reference/tokenizer_gguf_check.py [BUILD_DIR]   (default .build/release)

Prints per vocabulary how many vectors match; exits 1 on any mismatch.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.environ.get("PRUNEKIT_DATA", os.path.join(ROOT, "..", "shared", "data"))
BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, ".build", "release")

from llama_cpp import Llama  # noqa: E402


def vectors(name):
    inp = open(os.path.join(DATA, "tokenizers", f"ggml-vocab-{name}.gguf.inp"), encoding="utf-8").read()
    out = open(os.path.join(DATA, "tokenizers", f"ggml-vocab-{name}.gguf.out"), encoding="utf-8").read()
    texts = inp.split("\n__ggml_vocab_test__\n")
    if texts[-1] == "":
        texts.pop()
    lines = out.split("\n")
    if lines[-1] == "":
        lines.pop()
    assert len(texts) == len(lines)
    return [(t, [int(x) for x in l.split()]) for t, l in zip(texts, lines)]


def tiny_model(directory, tokenizer_json, vocab):
    rng = np.random.default_rng(0)
    C, L, H, F = 64, 1, 4, 96
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": C,
              "intermediate_size": F, "num_hidden_layers": L, "num_attention_heads": H,
              "num_key_value_heads": H, "vocab_size": vocab, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
              "max_position_embeddings": 256, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2}
    w = lambda *s: (rng.standard_normal(s) * 0.02).astype(np.float32)
    t = {"model.embed_tokens.weight": w(vocab, C), "lm_head.weight": w(vocab, C),
         "model.norm.weight": np.ones(C, np.float32)}
    for l in range(L):
        p = f"model.layers.{l}."
        t |= {p + "input_layernorm.weight": np.ones(C, np.float32),
              p + "post_attention_layernorm.weight": np.ones(C, np.float32),
              p + "self_attn.q_proj.weight": w(C, C), p + "self_attn.k_proj.weight": w(C, C),
              p + "self_attn.v_proj.weight": w(C, C), p + "self_attn.o_proj.weight": w(C, C),
              p + "mlp.gate_proj.weight": w(F, C), p + "mlp.up_proj.weight": w(F, C),
              p + "mlp.down_proj.weight": w(C, F)}
    os.makedirs(directory)
    json.dump(config, open(os.path.join(directory, "config.json"), "w"))
    save_file(t, os.path.join(directory, "model.safetensors"))
    os.replace(tokenizer_json, os.path.join(directory, "tokenizer.json"))


failed = False
with tempfile.TemporaryDirectory() as tmp:
    for name in ["gpt-2", "llama-bpe", "qwen2", "llama-spm"]:
        source = os.path.join(DATA, "tokenizers", f"ggml-vocab-{name}.gguf")
        tj = os.path.join(tmp, f"{name}.json")
        subprocess.run([os.path.join(BIN, "tokenize"), "--model", source, "--write-json", tj], check=True,
                       stdout=subprocess.DEVNULL)
        vocab = len(json.load(open(tj, encoding="utf-8"))["model"]["vocab"])
        hf = os.path.join(tmp, name)
        tiny_model(hf, tj, vocab)
        gguf = os.path.join(tmp, f"{name}.gguf")
        subprocess.run([os.path.join(BIN, "convert"), hf, "--to", "gguf", "-o", gguf, "--quiet"], check=True)
        llm = Llama(model_path=gguf, vocab_only=True, verbose=False)
        cases = vectors(name)
        good = 0
        for text, expected in cases:
            ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
            if ids == expected:
                good += 1
            else:
                print(f"  {name}: {text!r}: llama.cpp {ids[:12]} expected {expected[:12]}")
        print(f"{name}: llama.cpp on the exported GGUF gives the expected ids for {good}/{len(cases)} vectors")
        failed |= good != len(cases)
sys.exit(1 if failed else 0)
