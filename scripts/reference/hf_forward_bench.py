"""transformers' side of bench/forward.sh: the same WikiText-2 windows through
AutoModelForCausalLM (float32, CPU) loaded from the same GGUF; prints
"tokens_per_second peak_rss_MB perplexity".

  python3 scripts/reference/hf_forward_bench.py MODEL.gguf T N THREADS
"""
import math, os, resource, sys, time
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model_reference import dataset_text  # noqa: E402

path, T, N, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

d, f = os.path.dirname(path), os.path.basename(path)
tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32).eval()
ids = tok(dataset_text("wikitext2"))["input_ids"]
windows = torch.tensor([ids[i * T:(i + 1) * T] for i in range(N)])
total = 0.0
start = time.perf_counter()
with torch.no_grad():
    batch = max(1, 2048 // T)
    for b in range(0, N, batch):
        x = windows[b:b + batch]
        logits = model(x).logits.double()
        total += torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum").item()
seconds = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{N * T / seconds:.0f} {rss:.0f} {math.exp(total / (N * (T - 1))):.4f}")
