#!/usr/bin/env python3
"""The official Wanda-sp loop (CASIA-IVA-Lab/FLAP lib/prune.py `prune_wanda_sp`), run on the CPU in float32 with
transformers on the same windows as `calibrate --tokens`, pruning MLP channels only (the official code prunes
heads as multi-head attention, which SmolLM2's grouped-query attention is not). The side of bench/sequential.sh
that `calibrate --sequential` is measured against: its per-layer kept channels, wall time and peak memory.

  wanda_sp_official.py MODEL.gguf WINDOWS.st MLP_FRACTION THREADS OUT.json

Per layer, as the official loop: forward hooks on down_proj (WrappedGPT.add_batch, one window per call: the
running mean over windows of ||x_j||^2) while the dense layer runs on every window; W_metric = (|W| *
sqrt(scaler_row)).mean(axis=0); threshold = sort(W_metric)[int(F * MLP_FRACTION)], keep >= it; `compress` slices
gate/up rows and down_proj columns; then every window runs through the pruned layer, and those outputs are the
next layer's inputs. The only changes: device CPU (the official code calls .cuda()), a causal mask and rotary
embeddings built for transformers 5's decoder-layer call.

Writes OUT.json: {"kept_channels": [[...] per layer], "seconds": wall time of the loop (model loading
excluded), "peak_rss_mb": ...}.
"""
import json
import os
import resource
import sys
import time

import torch
from safetensors.numpy import load_file


def main():
    model_path, windows_path, fraction, threads, out = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    torch.set_num_threads(threads)
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(model_path), gguf_file=os.path.basename(model_path),
                                                 dtype=torch.float32, attn_implementation="eager").eval()
    windows = torch.as_tensor(load_file(windows_path)["tokens"].astype("int64"))
    N, T = windows.shape
    start = time.perf_counter()
    with torch.no_grad():
        inps = [model.model.embed_tokens(windows[j:j + 1]) for j in range(N)]
        outs = [None] * N
        position_ids = torch.arange(T)[None]
        mask = torch.full((T, T), float("-inf")).triu(1)[None, None]
        position_embeddings = model.model.rotary_emb(inps[0], position_ids)

        def run(layer, x):
            y = layer(x, attention_mask=mask, position_ids=position_ids, position_embeddings=position_embeddings)
            return y[0] if isinstance(y, (tuple, list)) else y

        kept = []
        for layer in model.model.layers:
            down = layer.mlp.down_proj
            state = {"scaler_row": torch.zeros(down.in_features, dtype=torch.float32), "nsamples": 0}

            def add_batch(_, inp, __):  # WrappedGPT.add_batch
                x = inp[0].reshape(-1, inp[0].shape[-1]).t().float()
                state["scaler_row"] *= state["nsamples"] / (state["nsamples"] + 1)
                state["nsamples"] += 1
                state["scaler_row"] += torch.norm(x, p=2, dim=1) ** 2 / state["nsamples"]

            handle = down.register_forward_hook(add_batch)
            for j in range(N):
                outs[j] = run(layer, inps[j])
            handle.remove()
            W_metric = (torch.abs(down.weight.data) * torch.sqrt(state["scaler_row"].reshape((1, -1)))).mean(axis=0)
            thresh = torch.sort(W_metric)[0][int(W_metric.numel() * fraction)]
            W_mask = W_metric >= thresh
            index = torch.where(W_mask)[0]
            # compress(layer, None, W_mask, ...): the kept rows of up/gate and columns of down, physically.
            for proj in (layer.mlp.up_proj, layer.mlp.gate_proj):
                proj.weight.data = proj.weight.data[index]
                proj.out_features = len(index)
            down.weight.data = down.weight.data[:, index]
            down.in_features = len(index)
            kept.append(index.tolist())
            for j in range(N):
                outs[j] = run(layer, inps[j])
            inps, outs = outs, inps  # the pruned output as input to the next layer
    seconds = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open(out, "w") as f:
        json.dump({"kept_channels": kept, "seconds": seconds, "peak_rss_mb": rss}, f)
    print(f"{seconds:.1f} {rss:.0f}")


if __name__ == "__main__":
    main()
