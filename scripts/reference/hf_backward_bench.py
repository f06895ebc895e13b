"""transformers' side of bench/backward.sh: forward and backward of the language-model loss
(labels=input_ids) through AutoModelForCausalLM (float32, CPU, its default attention) loaded from
the same GGUF, on the same WikiText-2 windows in the same batches as `prunekit-bench backward`
(max(1, 2048/T) windows, one warm-up batch); prints "tokens_per_second peak_rss_MB mean_loss".

  python3 scripts/reference/hf_backward_bench.py MODEL.gguf T N THREADS
"""
import os, resource, sys, time
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model_reference import dataset_text  # noqa: E402

path, T, N, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

d, f = os.path.dirname(path), os.path.basename(path)
tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32)
model.eval()  # no dropout in LLaMA either way; gradients stay on
ids = tok(dataset_text("wikitext2"))["input_ids"]
windows = torch.tensor([ids[i * T:(i + 1) * T] for i in range(N)])
batch = max(1, 2048 // T)


def step(x):
    loss = model(x, labels=x).loss
    loss.backward()
    return loss.item()


step(windows[:batch])  # warm-up, as ours
losses = []
start = time.perf_counter()
for b in range(0, N, batch):
    x = windows[b:b + batch]
    losses.append(step(x) * len(x))
seconds = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{N * T / seconds:.1f} {rss:.0f} {sum(losses) / N:.6f}")
