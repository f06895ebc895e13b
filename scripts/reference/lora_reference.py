"""Reference LoRA fine-tuning trajectory for the fine-tuning tests: 10 optimizer steps of torch +
peft LoRA on the tiny uniform model, in float64 on the CPU.

Usage:  python3 scripts/reference/lora_reference.py
        (torch 2.13 CPU, transformers 5.24, peft 0.21.2; one torch thread; a few seconds)

The model is Tests/Fixtures/model/tiny_uniform.safetensors (2 layers, C 64, 4/2 heads, D 16, F 96,
V 97, biases on every projection, untied head): transformers' LlamaForCausalLM built from its
config (eager attention), its float32 weights loaded, then model.double().eval(). Two changes to
transformers, which computes these in float32 whatever the model's dtype: LlamaRMSNorm.forward and
modeling_llama.eager_attention_forward are replaced by the same formulas with the normalisation
and the attention softmax in the input's dtype (float64), as tiny_model.forward computes them. The
script asserts that this model's logits equal tiny_model.forward's on the 8 token rows (to 1e-12;
unpatched they differ by ~1e-6). RoPE angles and cos/sin stay float32 as in transformers (and as
in tiny_model.rope).

LoRA (peft get_peft_model, adapter "default", scaling = alpha / r, no dropout, bias "none", base
weights and biases frozen), two cases, each written under a prefix `<case>.`:
  all   r 4, alpha 8, targets q,k,v,o,gate,up,down_proj; AdamW weight decay 0.0;
        transformers.get_linear_schedule_with_warmup(warmup 2, 10 training steps)
  qv    r 2, alpha 4, targets q_proj, v_proj;              AdamW weight decay 0.1;
        transformers.get_cosine_schedule_with_warmup(warmup 3, 10 training steps)
Initialisation (replacing peft's): per case one numpy RandomState(0); for every lora_A weight
[r, in], in the order model.named_parameters() yields them (layer by layer, modules in forward
order q,k,v,o,gate,up,down), A = float32(rs.uniform(-1/sqrt(in), 1/sqrt(in), size=(r, in))) (drawn
in float64, rounded to float32), then stored as float64; every lora_B weight [out, r] is zero.
Optimizer torch.optim.AdamW over the LoRA parameters only: lr 1e-2, betas (0.9, 0.999), eps 1e-8
(the scheduler multiplies lr; note both schedules give lr 0 at step 0).

Training: step k = 0..9 uses batch rows b..b+3, b = 4k mod 8, as two micro-batches (rows b, b+1,
then b+2, b+3). n = number of counted label positions in the whole batch (labels[:, 1:] != -100
over the 4 rows). For each micro-batch: logits = model(input_ids=tokens[rows]).logits (no attention
mask), summed cross-entropy of logits[:, :-1] against labels[:, 1:] (-100 ignored), in float64,
backward on (sum / n), accumulating. Then g = clip_grad_norm_(lora params, max_norm 1.0) (the
pre-clip total L2 norm), opt.step(), sched.step(), opt.zero_grad().

Output Tests/Fixtures/finetune/lora_steps.safetensors (uncompressed, written with save_sorted):
  tokens              I64 [8, 12]  numpy RandomState(1).randint(0, 97, size=(8, 12))
  labels              I64 [8, 12]  Hugging Face convention (aligned with tokens, shifted inside the
                                   loss): tokens with -100 at positions 0..4 of rows 1, 3, 5, 7
                                   (prompts) and at positions 9..11 of row 6 (padding)
  <case>.loss         F64 [10]     batch loss of step k (sum of CE / n), before its update
  <case>.grad_norm    F64 [10]     total gradient norm of step k before clipping
  <case>.lr           F64 [10]     learning rate step k used (scheduler value before sched.step())
  <case>.init.<key>   lora_A: F32 [r, in] the exact values drawn; lora_B: F64 [out, r] zeros
  <case>.final.<key>  F64, lora_A [r, in] and lora_B [out, r] after the 10 steps
where <key> is peft's saved-adapter name (get_peft_model_state_dict, adapter name removed), e.g.
base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight, ...mlp.down_proj.lora_B.weight
(in named_parameters() they read ...q_proj.lora_A.default.weight).
__metadata__: <case>.r, <case>.alpha, <case>.targets (comma-separated), <case>.weight_decay,
<case>.schedule (linear / cosine), <case>.warmup; steps 10, batch 4, micro_batch 2, lr 0.01,
max_grad_norm 1.0, model (path in the repository), peft_version, torch_version,
transformers_version, producer.
"""
import json
import os
import sys

import numpy as np
import peft
import torch
import transformers
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from safetensors import safe_open
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama import modeling_llama

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tiny_model  # noqa: E402  (its work is under `if __name__ == "__main__"`)
from reference_common import ROOT, save_sorted  # noqa: E402

torch.set_num_threads(1)
MODEL = "Tests/Fixtures/model/tiny_uniform.safetensors"
OUT = os.path.join(ROOT, "Tests", "Fixtures", "finetune")
STEPS, BATCH, MICRO, LR, MAX_NORM, ROWS, COLS = 10, 4, 2, 1e-2, 1.0, 8, 12
ALL_PROJ = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CASES = {
    "all": dict(r=4, alpha=8, targets=ALL_PROJ, weight_decay=0.0, schedule="linear", warmup=2),
    "qv": dict(r=2, alpha=4, targets=["q_proj", "v_proj"], weight_decay=0.1, schedule="cosine", warmup=3),
}
SCHEDULES = {"linear": transformers.get_linear_schedule_with_warmup,
             "cosine": transformers.get_cosine_schedule_with_warmup}
F = torch.nn.functional


def rmsnorm_in_input_dtype(self, hidden_states):
    """LlamaRMSNorm.forward without its float32 round trip: the same formula in the input's dtype."""
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))


def eager_attention_in_input_dtype(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """modeling_llama.eager_attention_forward with its softmax in the input's dtype, not float32."""
    key_states = modeling_llama.repeat_kv(key, module.num_key_value_groups)
    value_states = modeling_llama.repeat_kv(value, module.num_key_value_groups)
    attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = F.softmax(attn_weights, dim=-1)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value_states).transpose(1, 2).contiguous()
    return attn_output, attn_weights


def load_weights():
    with safe_open(os.path.join(ROOT, MODEL), "pt") as f:
        cfg = json.loads(f.metadata()["config"])
        W = {k: f.get_tensor(k) for k in f.keys()}
    return cfg, W


def build(cfg, W):
    """transformers' LlamaForCausalLM of the model file, float64, eval."""
    L = cfg["num_hidden_layers"]
    for key in ("head_counts", "kv_head_counts", "ffn_widths"):
        assert len(set(cfg[key])) == 1, (key, cfg[key])  # LlamaConfig has one width for all layers
    assert cfg["rope_scaling"] is None and cfg["architecture"] == "llama"
    has = lambda m: {f"model.layers.{l}.{m}.bias" in W for l in range(L)}
    attn_bias = has("self_attn.q_proj") | has("self_attn.k_proj") | has("self_attn.v_proj") | has("self_attn.o_proj")
    mlp_bias = has("mlp.gate_proj") | has("mlp.up_proj") | has("mlp.down_proj")
    assert len(attn_bias) == 1 and len(mlp_bias) == 1, "biases on some projections only"
    hf = LlamaConfig(hidden_size=cfg["hidden_size"], intermediate_size=cfg["ffn_widths"][0], num_hidden_layers=L,
                     num_attention_heads=cfg["head_counts"][0], num_key_value_heads=cfg["kv_head_counts"][0],
                     head_dim=cfg["head_dim"], vocab_size=cfg["vocab_size"], rms_norm_eps=cfg["rms_norm_eps"],
                     rope_theta=cfg["rope_theta"], max_position_embeddings=cfg["max_position_embeddings"],
                     attention_bias=attn_bias.pop(), mlp_bias=mlp_bias.pop(), bos_token_id=cfg["bos_token_id"],
                     eos_token_id=cfg["eos_token_id"], tie_word_embeddings=cfg["tie_word_embeddings"],
                     attn_implementation="eager")
    m = LlamaForCausalLM(hf)
    assert m.config._attn_implementation == "eager"
    missing, unexpected = m.load_state_dict(W, strict=False)
    if cfg["tie_word_embeddings"]:
        assert "lm_head.weight" not in W
        m.tie_weights()
        assert m.lm_head.weight is m.model.embed_tokens.weight
        missing = [k for k in missing if k != "lm_head.weight"]
    else:
        assert m.lm_head.weight is not m.model.embed_tokens.weight
    assert not missing and not unexpected, (missing, unexpected)
    m.double().eval()
    assert all(p.dtype == torch.float64 for p in m.parameters())
    return m


def logit_diff(m, cfg, W64, tokens):
    with torch.no_grad():
        hf = m(input_ids=tokens).logits
    return max((hf[i] - tiny_model.forward(W64, cfg, tokens[i])[0]).abs().max().item() for i in range(len(tokens)))


def data(V):
    tokens = np.random.RandomState(1).randint(0, V, size=(ROWS, COLS)).astype(np.int64)
    labels = tokens.copy()
    labels[1::2, 0:5] = -100  # prompts of rows 1, 3, 5, 7
    labels[6, 9:12] = -100    # padding of row 6
    return tokens, labels


def run(name, spec, cfg, W, tokens, labels):
    model = build(cfg, W)
    lcfg = LoraConfig(r=spec["r"], lora_alpha=spec["alpha"], lora_dropout=0.0, target_modules=spec["targets"],
                      bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, lcfg)
    model.eval()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert params and all(".lora_A.default." in n or ".lora_B.default." in n for n, _ in params), params
    assert all(p.dtype == torch.float64 for _, p in params)
    expected = 2 * cfg["num_hidden_layers"] * len(spec["targets"])
    assert len(params) == expected, (len(params), expected)
    rs, init = np.random.RandomState(0), {}
    with torch.no_grad():
        for n, p in params:
            if ".lora_A." in n:
                r, fan_in = p.shape
                assert r == spec["r"]
                bound = 1.0 / np.sqrt(fan_in)
                a = rs.uniform(-bound, bound, size=(r, fan_in)).astype(np.float32)
                p.copy_(torch.from_numpy(a).double())
                init[n] = a
            else:
                assert p.shape[1] == spec["r"]
                p.zero_()
                init[n] = np.zeros(tuple(p.shape), dtype=np.float64)
    layers = [mod for mod in model.modules() if isinstance(mod, LoraLayer)]
    assert len(layers) == expected // 2 and all(mod.scaling["default"] == spec["alpha"] / spec["r"] for mod in layers)
    lora = [p for _, p in params]
    opt = torch.optim.AdamW(lora, lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=spec["weight_decay"])
    sched = SCHEDULES[spec["schedule"]](opt, num_warmup_steps=spec["warmup"], num_training_steps=STEPS)
    tok, lab = torch.from_numpy(tokens), torch.from_numpy(labels)
    losses, norms, lrs = [], [], []
    for k in range(STEPS):
        b = (BATCH * k) % ROWS
        count = int((lab[b:b + BATCH, 1:] != -100).sum())
        total = 0.0
        for mb in range(b, b + BATCH, MICRO):
            x, y = tok[mb:mb + MICRO], lab[mb:mb + MICRO]
            logits = model(input_ids=x).logits
            assert logits.dtype == torch.float64
            ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), y[:, 1:].reshape(-1),
                                 ignore_index=-100, reduction="sum")
            if k == 0 and mb == b:  # the same labels through transformers' own loss (float32 logits there)
                hf = model(input_ids=x, labels=y, num_items_in_batch=count).loss.item()
                assert abs(hf - ce.item() / count) < 1e-5, (hf, ce.item() / count)
            (ce / count).backward()
            total += ce.item()
        losses.append(total / count)
        norms.append(torch.nn.utils.clip_grad_norm_(lora, max_norm=MAX_NORM).item())
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
        opt.zero_grad()
        print(f"{name} step {k} rows {b}..{b + BATCH - 1} n {count} lr {lrs[-1]:.6g} loss {losses[-1]:.12f} "
              f"grad_norm {norms[-1]:.6g}{'  (clipped)' if norms[-1] > MAX_NORM else ''}")
    final = get_peft_model_state_dict(model)
    key = lambda n: n.replace(".default.", ".")
    assert sorted(final) == sorted(key(n) for n in init), (sorted(final)[:2], list(init)[:2])
    t = {f"{name}.loss": np.array(losses), f"{name}.grad_norm": np.array(norms), f"{name}.lr": np.array(lrs)}
    for n, p in params:
        assert final[key(n)] is p or torch.equal(final[key(n)], p.detach())
        t[f"{name}.init.{key(n)}"] = init[n]
        t[f"{name}.final.{key(n)}"] = p.detach().double().contiguous().numpy()
    meta = {f"{name}.r": str(spec["r"]), f"{name}.alpha": str(spec["alpha"]),
            f"{name}.targets": ",".join(spec["targets"]), f"{name}.weight_decay": str(spec["weight_decay"]),
            f"{name}.schedule": spec["schedule"], f"{name}.warmup": str(spec["warmup"])}
    return t, meta


def main():
    cfg, W = load_weights()
    tokens, labels = data(cfg["vocab_size"])
    # transformers' float64 model against tiny_model.forward on the same float32 weights.
    W64 = {k: v.double() for k, v in W.items()}
    ids = torch.from_numpy(tokens)
    unpatched = logit_diff(build(cfg, W), cfg, W64, ids)
    assert unpatched < 1e-5, unpatched
    modeling_llama.LlamaRMSNorm.forward = rmsnorm_in_input_dtype
    modeling_llama.eager_attention_forward = eager_attention_in_input_dtype
    err = logit_diff(build(cfg, W), cfg, W64, ids)
    print(f"transformers float64 LlamaForCausalLM vs tiny_model.forward: max abs logit diff {err:.3g} "
          f"(with transformers' float32 RMSNorm and softmax: {unpatched:.3g})")
    assert err < 1e-12, err
    tensors = {"tokens": tokens, "labels": labels}
    meta = {"steps": str(STEPS), "batch": str(BATCH), "micro_batch": str(MICRO), "lr": str(LR),
            "max_grad_norm": str(MAX_NORM), "model": MODEL, "peft_version": peft.__version__,
            "torch_version": torch.__version__, "transformers_version": transformers.__version__,
            "producer": "scripts/reference/lora_reference.py"}
    for name, spec in CASES.items():
        t, m = run(name, spec, cfg, W, tokens, labels)
        tensors.update(t)
        meta.update(m)
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "lora_steps.safetensors")
    save_sorted(tensors, path, meta)
    print(path, os.path.getsize(path), "bytes,", len(tensors), "tensors")


if __name__ == "__main__":
    main()
