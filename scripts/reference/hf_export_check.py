#!/usr/bin/env python3
"""Checks that stock transformers loads a directory written by `convert --to hf` and computes what
`evaluate` computes: the mean negative log-likelihood of the windows of a `--tokens` file.

Usage: hf_export_check.py HF_DIR WINDOWS.st EXPECTED_NLL
Prints transformers' mean NLL and the relative difference; exits 1 beyond 1e-5.
"""
import sys

import torch
from safetensors.numpy import load_file
from transformers import AutoModelForCausalLM

torch.set_num_threads(1)
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32)
model.eval()
windows = torch.as_tensor(load_file(sys.argv[2])["tokens"].astype("int64"))
total, count = 0.0, 0
with torch.no_grad():
    for w in windows:
        logits = model(w[None]).logits[0].double()
        total += torch.nn.functional.cross_entropy(logits[:-1], w[1:], reduction="sum").item()
        count += len(w) - 1
nll = total / count
expected = float(sys.argv[3])
rel = abs(nll - expected) / abs(expected)
print(f"transformers nll {nll:.9f}  evaluate {expected:.9f}  relative difference {rel:.2e}")
sys.exit(0 if rel < 1e-5 else 1)
