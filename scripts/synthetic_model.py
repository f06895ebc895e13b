"""Writes a Hugging Face LLaMA checkpoint of a real model's shape with random BF16 weights.

Usage:  python3 scripts/synthetic_model.py SHAPE DIR [--seed N] [--shard-gb G] [--layers L]
        (numpy only; scripts/make-synthetic-model.sh also writes DIR/tokenizer.json)

SHAPE   llama2-7b   32 layers, hidden 4096, MLP 11008, 32 heads (multi-head), vocabulary 32000,
                    rope theta 1e4, 4096 positions: meta-llama/Llama-2-7b-hf's config.json
        llama3-8b   32 layers, hidden 4096, MLP 14336, 32 heads / 8 KV heads (GQA), vocabulary
                    128256, rope theta 5e5 with LLaMA-3 scaling (factor 8, low 1, high 4, original
                    8192), 131072 positions: meta-llama/Llama-3.1-8B's config.json
--layers L keeps the shape of every layer but only L of them (bench/ uses it to double the depth).

Weights: for tensor k (in the order below) a numpy PCG64 generator seeded with (seed, k) draws
standard normals in float32, scaled and rounded to nearest-even BF16. Linear weights have standard
deviation 0.02 (transformers' initializer_range for both models); o_proj and down_proj, which write
into the residual stream, 0.02 / sqrt(2 * layers) (GPT-2's residual scaling), so that the residual
stream grows like sqrt(layers) at most and activations stay finite through 32 layers; the
embeddings and the untied head 0.02; RMSNorm weights 1. The same SHAPE, seed and layers always
give the same bytes.

Files: config.json, generation_config.json, model-0000k-of-0000n.safetensors (tensors in
transformers' order, each shard at most --shard-gb GB) and model.safetensors.index.json
(metadata.total_size and weight_map), as transformers' save_pretrained writes them. Each shard is
written tensor by tensor (one tensor in memory at a time, the largest the 128256 x 4096
embedding: 2.1 GB as float32), to DIR/.NAME.partial and renamed when complete.
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np

SHAPES = {
    "llama2-7b": dict(
        vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
        rms_norm_eps=1e-5, rope_theta=10000.0, rope_scaling=None, bos_token_id=1, eos_token_id=2),
    "llama3-8b": dict(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072,
        rms_norm_eps=1e-5, rope_theta=500000.0,
        rope_scaling=dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=8192, rope_type="llama3"),
        bos_token_id=128000, eos_token_id=[128001, 128008, 128009]),
}


def tensors(c):
    """(name, shape, std) in transformers' order; std None: ones."""
    h, f, v, L = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["num_hidden_layers"]
    d = h // c["num_attention_heads"]
    kv = c["num_key_value_heads"] * d
    out_std = 0.02 / math.sqrt(2 * L)
    yield "model.embed_tokens.weight", (v, h), 0.02
    for l in range(L):
        p = f"model.layers.{l}."
        yield p + "self_attn.q_proj.weight", (h, h), 0.02
        yield p + "self_attn.k_proj.weight", (kv, h), 0.02
        yield p + "self_attn.v_proj.weight", (kv, h), 0.02
        yield p + "self_attn.o_proj.weight", (h, h), out_std
        yield p + "mlp.gate_proj.weight", (f, h), 0.02
        yield p + "mlp.up_proj.weight", (f, h), 0.02
        yield p + "mlp.down_proj.weight", (h, f), out_std
        yield p + "input_layernorm.weight", (h,), None
        yield p + "post_attention_layernorm.weight", (h,), None
    yield "model.norm.weight", (h,), None
    yield "lm_head.weight", (v, h), 0.02


def bf16(x):
    """float32 array -> uint16 BF16 bits, rounded to nearest even (finite inputs)."""
    u = x.view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def values(k, shape, std, seed):
    n = int(np.prod(shape))
    if std is None:
        return np.full(n, 0x3F80, dtype=np.uint16)  # 1.0
    out = np.empty(n, dtype=np.uint16)
    rng = np.random.Generator(np.random.PCG64([seed, k]))
    chunk = 1 << 26
    buf = np.empty(min(n, chunk), dtype=np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        rng.standard_normal(out=buf[:m], dtype=np.float32)
        buf[:m] *= np.float32(std)
        out[start:start + m] = bf16(buf[:m])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shape", choices=sorted(SHAPES))
    ap.add_argument("dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shard-gb", type=float, default=5.0)
    ap.add_argument("--layers", type=int)
    a = ap.parse_args()
    c = dict(SHAPES[a.shape])
    if a.layers is not None:
        if not 1 <= a.layers <= 256:
            sys.exit("--layers must be 1 to 256")
        c["num_hidden_layers"] = a.layers
    os.makedirs(a.dir, exist_ok=True)
    config = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu",
                  attention_bias=False, mlp_bias=False, head_dim=c["hidden_size"] // c["num_attention_heads"],
                  initializer_range=0.02, pretraining_tp=1, tie_word_embeddings=False,
                  torch_dtype="bfloat16", use_cache=True, **c)
    with open(os.path.join(a.dir, "config.json"), "w") as fh:
        json.dump(config, fh, indent=2, sort_keys=True)
        fh.write("\n")
    with open(os.path.join(a.dir, "generation_config.json"), "w") as fh:
        json.dump(dict(bos_token_id=c["bos_token_id"], eos_token_id=c["eos_token_id"]), fh, indent=2)
        fh.write("\n")

    items = list(tensors(c))
    limit = int(a.shard_gb * 1e9)
    shards, current, size = [], [], 0
    for item in items:
        nbytes = 2 * int(np.prod(item[1]))
        if current and size + nbytes > limit:
            shards.append(current)
            current, size = [], 0
        current.append(item)
        size += nbytes
    shards.append(current)

    weight_map, total, k = {}, 0, 0
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for tname, shape, _ in shard:
            nbytes = 2 * int(np.prod(shape))
            header[tname] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
            weight_map[tname] = name
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        partial = os.path.join(a.dir, "." + name + ".partial")
        with open(partial, "wb") as fh:
            fh.write(struct.pack("<Q", len(raw)))
            fh.write(raw)
            for tname, shape, std in shard:
                fh.write(values(k, shape, std, a.seed).tobytes())
                k += 1
        os.replace(partial, os.path.join(a.dir, name))
        total += offset
        print(f"{name}: {len(shard)} tensors, {offset / 1e9:.2f} GB", file=sys.stderr)
    with open(os.path.join(a.dir, "model.safetensors.index.json"), "w") as fh:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, fh, indent=2)
        fh.write("\n")
    params = total // 2
    print(f"{a.shape}: {params:,} parameters, {total / 1e9:.2f} GB in {len(shards)} shards", file=sys.stderr)


if __name__ == "__main__":
    main()
