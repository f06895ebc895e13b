"""PyTorch + PEFT side of bench/finetune.sh: LoRA fine-tuning of AutoModelForCausalLM (float32, CPU,
its default attention) loaded from the same GGUF, on the windows of the same `--tokens` file
(integer tensor `tokens` [N, T]) in file order, with the settings `finetune` is given, the loop
written plainly:
  - peft get_peft_model(LoraConfig(r, lora_alpha, lora_dropout, the seven projections, bias "none",
    task CAUSAL_LM)), model.train() (so that lora_dropout drops);
  - torch.optim.AdamW over the trainable (LoRA) parameters: betas 0.9/0.999, eps 1e-8, weight decay 0
    (transformers' defaults, finetune's; torch's own default decay is 0.01); lr linear from LR to 0
    over the steps, no warm-up (get_linear_schedule_with_warmup, finetune's default schedule);
  - optimizer step k takes windows kB..kB+B-1 in micro-batches of MICRO: for each,
    loss = summed cross-entropy of the next token (every position but a window's last) ÷ the whole
    batch's count B·(T-1), backward (transformers' loss with num_items_in_batch); then
    clip_grad_norm_(1.0), step, schedule step, zero_grad.
Step 1 is the warm-up: tokens/s is over steps 2..STEPS (their B·T tokens each, as finetune counts).
Prints "tokens_per_second peak_rss_MB first_step_loss last_step_loss attention loaded_rss_MB" (peak
RSS: the process's ru_maxrss, loading included; loaded: the same once the model is loaded and
adapted, before any step; losses: the batch loss before the update).

  python3 scripts/reference/hf_finetune_bench.py MODEL.gguf WINDOWS.st STEPS BATCH MICRO RANK ALPHA DROPOUT LR THREADS
"""
import os, resource, sys, time
import torch
from safetensors.numpy import load_file

path, windows_path = sys.argv[1], sys.argv[2]
steps, batch, micro, rank = (int(v) for v in sys.argv[3:7])
alpha, dropout, lr = (float(v) for v in sys.argv[7:10])
threads = int(sys.argv[10])
assert steps >= 2 and batch % micro == 0, "STEPS >= 2 (the first is the warm-up), BATCH a multiple of MICRO"
torch.set_num_threads(threads)
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import AutoModelForCausalLM, get_linear_schedule_with_warmup  # noqa: E402

d, f = os.path.dirname(path), os.path.basename(path)
model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
attention = model.config._attn_implementation
targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                                         bias="none", task_type="CAUSAL_LM"))
model.train()
trainable = [p for p in model.parameters() if p.requires_grad]
windows = torch.as_tensor(load_file(windows_path)["tokens"].astype("int64"))
N, T = windows.shape
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
assert N >= steps * batch, f"{N} windows, fewer than {steps} steps of {batch}"
print(f"hf_finetune_bench: {sum(p.numel() for p in trainable)} trainable parameters, attention {attention}, "
      f"{steps} steps of {batch} (micro {micro}) × {T} tokens", file=sys.stderr)
opt = torch.optim.AdamW(trainable, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
schedule = get_linear_schedule_with_warmup(opt, num_warmup_steps=0, num_training_steps=steps)
ce = torch.nn.functional.cross_entropy


def step(k):
    x = windows[k * batch:(k + 1) * batch]
    count = batch * (T - 1)
    total = 0.0
    for m in range(0, batch, micro):
        ids = x[m:m + micro]
        labels = torch.cat([ids[:, 1:], torch.full((len(ids), 1), -100)], dim=1)  # the shift, as transformers
        logits = model(input_ids=ids, use_cache=False).logits
        loss = ce(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum") / count
        loss.backward()
        total += loss.item()
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    opt.step()
    schedule.step()
    opt.zero_grad()
    return total


losses = [step(0)]  # warm-up
start = time.perf_counter()
for k in range(1, steps):
    losses.append(step(k))
seconds = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{(steps - 1) * batch * T / seconds:.1f} {rss:.0f} {losses[0]:.6f} {losses[-1]:.6f} {attention} {loaded:.0f}")
