#!/usr/bin/env python3
"""Checks a GGUF written by `convert --to gguf` with gguf-py and with llama.cpp itself
(llama-cpp-python; `pip install llama-cpp-python` builds llama.cpp, slowly): llama.cpp's perplexity on
the windows of a `--tokens` file against `evaluate`'s on the same windows.

Usage: gguf_export_check.py MODEL.gguf WINDOWS.st EVALUATE_PERPLEXITY
Prints gguf-py's view (architecture, per-layer widths, tensor types) and both perplexities; exits 1
when they differ by more than 1%.
"""
import math
import sys

import numpy as np
from gguf import GGUFReader
from safetensors.numpy import load_file

path, windows_path, expected = sys.argv[1], sys.argv[2], float(sys.argv[3])
reader = GGUFReader(path)
arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
print(f"gguf-py: architecture {arch}, {len(reader.tensors)} tensors, types "
      f"{sorted({t.tensor_type.name for t in reader.tensors})}")
if arch == "deci":
    f = reader.fields["deci.feed_forward_length"]
    print("  feed_forward_length", [int(f.parts[i][0]) for i in f.data])

from llama_cpp import Llama  # noqa: E402

windows = load_file(windows_path)["tokens"].astype(np.int64)
T = windows.shape[1]
llm = Llama(model_path=path, n_ctx=T, n_batch=T, logits_all=True, verbose=False, n_threads=2)
total, count = 0.0, 0
for w in windows:
    llm.reset()
    llm.eval(w.tolist())
    logits = np.asarray(llm.scores[:T], dtype=np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    total -= logp[np.arange(T - 1), w[1:]].sum()
    count += T - 1
ppl = math.exp(total / count)
rel = abs(ppl - expected) / expected
print(f"llama.cpp perplexity {ppl:.4f}, evaluate {expected:.4f}, relative difference {rel:.2e}")
sys.exit(0 if rel < 0.01 else 1)
