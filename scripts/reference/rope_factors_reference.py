#!/usr/bin/env python3
"""Expected `rope_freqs.weight` of a GGUF export with LLaMA-3 rope scaling, from transformers' own
llama3 inverse frequencies: llama.cpp divides the base frequency θ^(-2i/D) by the factor, so the factor
is inv_freq / inv_freq_llama3 (transformers.modeling_rope_utils, rope_type "llama3").

  python3 scripts/reference/rope_factors_reference.py   → Tests/Fixtures/export/rope_factors.json
"""
import json
import os

import torch
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CASES = [  # head_dim, rope_theta, factor, low_freq_factor, high_freq_factor, original_max_position_embeddings
    (16, 10000.0, 8.0, 1.0, 4.0, 64),       # the tiny test model with scaling
    (64, 100000.0, 4.0, 1.0, 4.0, 128),     # SmolLM2's head size, scaling that matters at T = 512
    (128, 500000.0, 8.0, 1.0, 4.0, 8192),   # LLaMA-3.1-8B
    (64, 500000.0, 32.0, 1.0, 4.0, 8192),   # LLaMA-3.2-1B
]
out = []
for D, theta, factor, low, high, original in CASES:
    scaling = {"rope_type": "llama3", "factor": factor, "low_freq_factor": low, "high_freq_factor": high,
               "original_max_position_embeddings": original}
    config = LlamaConfig(hidden_size=D * 4, num_attention_heads=4, head_dim=D, rope_theta=theta,
                         rope_scaling=scaling, max_position_embeddings=original * 4)
    base = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.int64).to(torch.float64) / D))
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    factors = (base / scaled.to(torch.float64)).tolist()
    out.append({"head_dim": D, "rope_theta": theta, "rope_scaling": scaling, "factors": factors})
path = os.path.join(ROOT, "Tests", "Fixtures", "export", "rope_factors.json")
with open(path, "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")
print(f"wrote {path}")
