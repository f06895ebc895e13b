#!/usr/bin/env python3
"""The PyTorch side of bench/calibrate.sh: the statistics `calibrate` computes, captured by forward
hooks in transformers on the CPU (float32 model, float64 accumulation: sums and sums of squares at
the q/k/v, o_proj, gate/up and down_proj inputs, FLAP's fluctuation per window, CFSP's block
angular distance), over the windows of a `--tokens` file, a few windows per forward call.

Usage: hf_calibrate_bench.py MODEL.gguf WINDOWS.st THREADS
Prints one line: "<seconds> <peak RSS MB>".
"""
import os
import resource
import sys
import time

import torch
from safetensors.numpy import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from calibrate_reference import POINTS, FLUCTUATION, PointStats, BlockStats  # noqa: E402


def main():
    model_path, windows_path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.set_num_threads(threads)
    from transformers import AutoModelForCausalLM
    d, f = os.path.dirname(model_path), os.path.basename(model_path)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32,
                                                 attn_implementation="eager")
    model.eval()
    windows = torch.as_tensor(load_file(windows_path)["tokens"].astype("int64"))
    N, T = windows.shape
    per_call = max(1, 4096 // T)
    start = time.perf_counter()
    handles = []
    for layer in model.model.layers:
        for P in POINTS:
            st = PointStats(False, P in FLUCTUATION)
            handles.append(layer.get_submodule(P).register_forward_pre_hook(
                lambda mod, args, st=st: st.add(args[0])))
        bs = BlockStats()

        def pre(mod, args, kwargs, bs=bs):
            bs.a = args[0] if args else kwargs["hidden_states"]

        def post(mod, args, kwargs, output, bs=bs):
            bs.add(bs.a, output[0] if isinstance(output, (tuple, list)) else output)

        handles.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(layer.register_forward_hook(post, with_kwargs=True))
    # Only the decoder layers: calibration needs no head.
    with torch.no_grad():
        for i in range(0, N, per_call):
            model.model(windows[i:i + per_call], use_cache=False)
    seconds = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{seconds:.2f} {rss:.0f}")


if __name__ == "__main__":
    main()
