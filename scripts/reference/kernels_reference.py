"""Reference outputs for the Kernels tests, computed with transformers' own LLaMA code in torch.

Usage:  python3 scripts/reference/kernels_reference.py   (torch 2.13 CPU, transformers 5.x)

Writes Tests/Fixtures/kernels/<name>.safetensors (uncompressed safetensors) with, per case:
  inputs as float32 (exactly what the Swift kernel gets), `expected64` computed in float64 and
  `expected32` computed in float32 by the same transformers/torch functions. Swift tests never run
  Python; rerun this script only to change the cases (the fixtures are committed, ~0.5 MB).
Cases:
  rmsnorm    LlamaRMSNorm, eps 1e-5 and 1e-6, C = 48 and 37
  rope_*     LlamaRotaryEmbedding + apply_rotary_pos_emb, default and llama3 scaling, positions
             0.. and 3000.., inv_freq as transformers computes it in float32
  attn_*     eager_attention_forward (repeat_kv, causal mask of -inf) with GQA and H == Hkv,
             T = 37 and T = 200 (beyond the kernel's block of query rows)
  swiglu     silu(gate) * up, gate spanning ±100
  xent       cross_entropy(reduction="none") per position
"""
import math
import os
import types

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import LlamaConfig
from transformers.models.llama import modeling_llama as ml

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "Tests", "Fixtures", "kernels")
gen = torch.Generator().manual_seed(1234)


def randn(*shape, scale=1.0):
    return (torch.randn(*shape, generator=gen, dtype=torch.float32) * scale).contiguous()


def save(name, tensors):
    os.makedirs(OUT, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(OUT, name + ".safetensors"))


def rmsnorm_cases():
    t = {}
    for i, (T, C, eps) in enumerate([(5, 48, 1e-5), (3, 37, 1e-6)]):
        x = randn(T, C, scale=2.0)
        w = 1 + randn(C, scale=0.3)
        out = {}
        for dtype, key in ((torch.float64, "expected64"), (torch.float32, "expected32")):
            m = ml.LlamaRMSNorm(C, eps=eps).to(dtype)
            with torch.no_grad():
                m.weight.copy_(w.to(dtype))
                out[key] = m(x.to(dtype))
        t.update({f"{i}.x": x, f"{i}.weight": w, f"{i}.eps": torch.tensor([eps], dtype=torch.float64),
                  f"{i}.expected64": out["expected64"], f"{i}.expected32": out["expected32"]})
    save("rmsnorm", t)


def rope_case(name, D, theta, scaling):
    params = {"rope_type": "default", "rope_theta": theta}
    if scaling is not None:
        params = {"rope_type": "llama3", "rope_theta": theta, **scaling}
    cfg = LlamaConfig(hidden_size=D * 2, num_attention_heads=2, head_dim=D, rope_parameters=params,
                      max_position_embeddings=8192)
    rot = ml.LlamaRotaryEmbedding(cfg)
    inv = rot.inv_freq.clone()
    t = {"inv_freq": inv, "meta": torch.tensor([D, theta], dtype=torch.float64)}
    if scaling is not None:
        t["scaling"] = torch.tensor([scaling["factor"], scaling["low_freq_factor"],
                                     scaling["high_freq_factor"],
                                     scaling["original_max_position_embeddings"]], dtype=torch.float64)
    for i, (T, H, start) in enumerate([(6, 3, 0), (5, 2, 3000)]):
        x = randn(1, H, T, D)  # transformers' [batch, heads, T, D]
        pos = torch.arange(start, start + T)[None, :]
        cos, sin = rot(x, pos)
        q32, _ = ml.apply_rotary_pos_emb(x, x, cos, sin)
        # float64 with the same float32 angles: only the rounding of cos/sin and of the products differs
        freqs = (pos[..., None].float() * inv).double()
        emb = torch.cat((freqs, freqs), dim=-1)
        q64, _ = ml.apply_rotary_pos_emb(x.double(), x.double(), emb.cos(), emb.sin())
        tr = lambda a: a[0].transpose(0, 1).contiguous()  # -> [T, H, D]
        t.update({f"{i}.x": tr(x), f"{i}.start": torch.tensor([start], dtype=torch.int32),
                  f"{i}.expected32": tr(q32), f"{i}.expected64": tr(q64),
                  f"{i}.cos32": cos[0, :, : D // 2].contiguous(), f"{i}.sin32": sin[0, :, : D // 2].contiguous()})
    save(name, t)


def attention_case(name, T, H, Hkv, D):
    q, k, v = randn(T, H, D), randn(T, Hkv, D), randn(T, Hkv, D)
    mask = torch.full((T, T), float("-inf")).triu(1)
    t = {"q": q, "k": k, "v": v, "shape": torch.tensor([T, H, Hkv, D], dtype=torch.int32)}
    for dtype, key in ((torch.float64, "expected64"), (torch.float32, "expected32")):
        module = types.SimpleNamespace(num_key_value_groups=H // Hkv, training=False)
        to = lambda a: a.to(dtype).transpose(0, 1)[None]  # [1, heads, T, D]
        out, _ = ml.eager_attention_forward(module, to(q), to(k), to(v), mask.to(dtype)[None, None],
                                            scaling=D ** -0.5)
        t[key] = out[0]  # already [T, H, D]
    save(name, t)


def swiglu_case():
    g = torch.cat([randn(997, scale=4.0), torch.tensor([-100.0, -88.0, -20.0, 0.0, 20.0, 88.0, 100.0])])
    u = randn(g.numel())
    act = ml.ACT2FN["silu"]
    save("swiglu", {"gate": g, "up": u, "expected64": act(g.double()) * u.double(),
                    "expected32": act(g) * u})


def xent_case():
    T, V = 7, 1001
    logits = randn(T, V, scale=6.0)
    targets = torch.randint(0, V, (T,), generator=gen)
    f = torch.nn.functional.cross_entropy
    save("xent", {"logits": logits, "targets": targets.to(torch.int32),
                  "expected64": f(logits.double(), targets, reduction="none"),
                  "expected32": f(logits, targets, reduction="none")})


if __name__ == "__main__":
    rmsnorm_cases()
    rope_case("rope_default", 16, 10000.0, None)
    rope_case("rope_llama3", 64, 500000.0, {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                            "original_max_position_embeddings": 8192})
    rope_case("rope_llama3_odd", 48, 10000.0, {"factor": 3.0, "low_freq_factor": 1.5, "high_freq_factor": 5.0,
                                               "original_max_position_embeddings": 1000})
    attention_case("attn_gqa_37", 37, 6, 2, 16)
    attention_case("attn_gqa_200", 200, 6, 2, 8)
    attention_case("attn_mha_200", 200, 3, 3, 8)
    attention_case("attn_t1", 1, 2, 1, 5)
    swiglu_case()
    xent_case()
