#!/usr/bin/env python3
"""Fixtures for loading checkpoints written by transformers 5, whose config.json carries the rotary
settings as `rope_parameters` (rope_theta, rope_type and, for LLaMA-3 scaling, factor /
low_freq_factor / high_freq_factor / original_max_position_embeddings) instead of transformers 4's
top-level `rope_theta` / `rope_scaling`.

  python3 scripts/reference/transformers5_reference.py          # writes Tests/Fixtures/hf5/
  python3 scripts/reference/transformers5_reference.py demo     # also the SmolLM2 demonstration below

Written with transformers 5.24.0, torch 2.13.0+cpu, safetensors 0.8.0, tokenizers 0.23.3, gguf 0.19.0,
accelerate 1.15.0 (transformers 5 refuses to load a GGUF without it), numpy 2.4.6, on the CPU; reruns are
byte-identical. Outputs in Tests/Fixtures/hf5/:
  smollm2_config.json   the config.json, byte for byte, that transformers 5 `save_pretrained` writes for
                        SmolLM2-135M-Instruct loaded from the GGUF of scripts/fetch-model.sh (env
                        PRUNEKIT_MODEL overrides) in float32 (the tokenizer is saved alongside, not kept)
  tiny_default/         tiny random LlamaForCausalLM (C 64, 2 layers, 4/2 heads, D 16, F 96, V 97,
                        rope_theta 100000, no scaling, untied head), saved by `save_pretrained` in
                        bfloat16, sharded (config.json, model-0000k-of-0000n.safetensors,
                        model.safetensors.index.json; no tokenizer)
  tiny_llama3/          the same sizes, rope_theta 500000, llama3 rope scaling (factor 8, low 1, high 4,
                        original_max_position_embeddings 32), tied head
  reference.json        per tiny folder: token ids [2][24] (seeded, in [0, 97)), and from transformers
                        after loading the saved BF16 checkpoint back with dtype float32: the mean NLL of
                        each sequence over positions 1..23 (as labels=input_ids gives), their mean, exp of
                        that mean (perplexity), and the same with rope_theta forced to 10000 (wrong theta);
                        for tiny_llama3 also with the llama3 scaling dropped (rope_type default, theta 500000)

Weights: every parameter is redrawn from N(0, 0.2²) with a seeded generator (RMSNorm weights as
1 + N(0, 0.1²)) so that the logits are far from uniform and a wrong rope_theta changes the loss visibly.

`demo` (nothing committed): SmolLM2 as above, cast to bfloat16 and saved sharded
(max_shard_size "100MB") with its tokenizer into /tmp/smollm2-hf5 (left in place), reloaded in float32,
perplexity on the first two 2048-token windows of WikiText-2 test (rows of wiki.test.raw with their
"\\n", whitespace-only rows as "", joined by "\\n\\n"; BOS only if the tokenizer adds one).
"""
import json, math, os, shutil, subprocess, sys, tempfile

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_common import model_path  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "Tests", "Fixtures", "hf5")
DATA = os.environ.get("PRUNEKIT_DATA") or os.path.join(os.path.dirname(ROOT), "shared", "data")
WRONG_THETA = 10000.0
SHARD = "60KB"  # the tiny models are ~150 KB in BF16: 3 shards

TINY = {
    "tiny_default": dict(rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
                         tie_word_embeddings=False, seed=1),
    "tiny_llama3": dict(rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                         "original_max_position_embeddings": 32},
                        tie_word_embeddings=True, seed=2),
}


def load_smollm2():
    path = model_path()
    d, f = os.path.dirname(path), os.path.basename(path)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    model.eval()
    # transformers 5 attaches a GgufHfQuantizer (config.quantization_config {"quant_method": "gguf"})
    # even when, as here (no `kernels` package, or an architecture outside its packed path), every weight
    # was unpacked into a plain float32 nn.Linear; `save_pretrained` then refuses ("quantized with gguf
    # and is not serializable") and `dequantize()` is not implemented for it. Drop the quantizer.
    q = getattr(model, "hf_quantizer", None)
    if q is not None:
        assert all(type(m) in (torch.nn.Linear,) for m in model.modules() if "Linear" in type(m).__name__)
        assert all(p.dtype == torch.float32 for p in model.parameters())
        q.remove_quantization_config(model)
    return tok, model


def smollm2_config():
    tok, model = load_smollm2()
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        print("smollm2 save_pretrained wrote:", sorted(os.listdir(tmp)))
        shutil.copyfile(os.path.join(tmp, "config.json"), os.path.join(OUT, "smollm2_config.json"))
    check_config(os.path.join(OUT, "smollm2_config.json"))


def check_config(path):
    cfg = json.load(open(path))
    assert "rope_parameters" in cfg, f"{path}: no rope_parameters: {sorted(cfg)}"
    assert "rope_theta" not in cfg, f"{path}: top-level rope_theta {cfg['rope_theta']}"
    assert "rope_scaling" not in cfg, f"{path}: top-level rope_scaling {cfg['rope_scaling']}"
    return cfg


def tiny_config(spec):
    return LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       head_dim=16, intermediate_size=96, vocab_size=97, max_position_embeddings=128,
                       rms_norm_eps=1e-5, attention_bias=False, mlp_bias=False, initializer_range=0.2,
                       rope_parameters=dict(spec["rope_parameters"]),
                       tie_word_embeddings=spec["tie_word_embeddings"])


@torch.no_grad()
def init_weights(model, seed):
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters()):  # tied lm_head appears once, as embed_tokens
        if name.endswith("norm.weight"):
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g, dtype=torch.float32))
        else:
            p.copy_(0.2 * torch.randn(p.shape, generator=g, dtype=torch.float32))


@torch.no_grad()
def sequence_nll(model, ids):
    """Mean NLL of each sequence over positions 1..T-1, in float64 from the float32 logits; checked
    against transformers' own `labels=input_ids` loss (float32, mean over the batch)."""
    out = model(ids, labels=ids)
    logits = out.logits.double()
    per = [torch.nn.functional.cross_entropy(logits[b, :-1], ids[b, 1:]).item() for b in range(ids.shape[0])]
    mean = sum(per) / len(per)
    assert abs(out.loss.item() - mean) <= 1e-5 * abs(mean), (out.loss.item(), mean)
    return per, mean


def tiny(name, spec):
    folder = os.path.join(OUT, name)
    shutil.rmtree(folder, ignore_errors=True)
    config = tiny_config(spec)
    torch.manual_seed(spec["seed"])
    model = LlamaForCausalLM(config)
    init_weights(model, spec["seed"])
    model.to(torch.bfloat16)
    model.save_pretrained(folder, max_shard_size=SHARD)
    files = sorted(os.listdir(folder))
    shards = [f for f in files if f.endswith(".safetensors")]
    assert "model.safetensors.index.json" in files and len(shards) >= 2, files
    cfg = check_config(os.path.join(folder, "config.json"))
    assert cfg["rope_parameters"] == spec["rope_parameters"], cfg["rope_parameters"]
    print(name, "files:", files)

    g = torch.Generator().manual_seed(1000 + spec["seed"])
    ids = torch.randint(0, 97, (2, 24), generator=g, dtype=torch.int64)

    back = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    assert back.config.rope_parameters["rope_theta"] == spec["rope_parameters"]["rope_theta"]
    for k, v in model.state_dict().items():  # the reload is the BF16 weights, upcast exactly
        assert torch.equal(back.state_dict()[k], v.float()), k
    per, mean = sequence_nll(back, ids)

    wrong_cfg = AutoConfig.from_pretrained(folder)
    wrong_cfg.rope_parameters = dict(wrong_cfg.rope_parameters, rope_theta=WRONG_THETA)
    wrong = AutoModelForCausalLM.from_pretrained(folder, config=wrong_cfg, dtype=torch.float32).eval()
    wper, wmean = sequence_nll(wrong, ids)
    rel = abs(wmean - mean) / mean
    print(f"{name}: nll {per} mean {mean!r} ppl {math.exp(mean)!r}")
    print(f"{name}: wrong theta {WRONG_THETA}: nll {wper} mean {wmean!r}  relative difference {rel:.3e}")
    assert rel > 1e-3, rel
    row = {"folder": name, "rope_parameters": spec["rope_parameters"],
           "tie_word_embeddings": spec["tie_word_embeddings"], "shards": shards,
           "input_ids": ids.tolist(), "nll": per, "mean_nll": mean, "ppl": math.exp(mean),
           "wrong_theta": WRONG_THETA, "wrong_theta_nll": wper, "wrong_theta_mean_nll": wmean,
           "wrong_theta_ppl": math.exp(wmean)}
    if spec["rope_parameters"]["rope_type"] != "default":  # right theta, scaling ignored
        plain_cfg = AutoConfig.from_pretrained(folder)
        plain_cfg.rope_parameters = {"rope_type": "default", "rope_theta": spec["rope_parameters"]["rope_theta"]}
        plain = AutoModelForCausalLM.from_pretrained(folder, config=plain_cfg, dtype=torch.float32).eval()
        pper, pmean = sequence_nll(plain, ids)
        print(f"{name}: scaling ignored: nll {pper} mean {pmean!r}  relative difference {abs(pmean - mean) / mean:.3e}")
        assert abs(pmean - mean) / mean > 1e-3
        row.update(no_scaling_nll=pper, no_scaling_mean_nll=pmean, no_scaling_ppl=math.exp(pmean))
    return row


def wikitext2_text():
    with open(os.path.join(DATA, "wikitext-2-raw", "wiki.test.raw"), encoding="utf-8", newline="") as f:
        lines = f.read().splitlines(keepends=True)
    return "\n\n".join("" if line.strip() == "" else line for line in lines)


@torch.no_grad()
def demo(dest="/tmp/smollm2-hf5", T=2048, windows=2):
    tok, model = load_smollm2()
    shutil.rmtree(dest, ignore_errors=True)
    model.to(torch.bfloat16)
    model.save_pretrained(dest, max_shard_size="100MB")
    tok.save_pretrained(dest)
    print("demo wrote:", {f: os.path.getsize(os.path.join(dest, f)) for f in sorted(os.listdir(dest))})
    del model
    model = AutoModelForCausalLM.from_pretrained(dest, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(dest)
    ids = tok(wikitext2_text())["input_ids"]
    print("demo: tokens", len(ids), "first", ids[:8], "bos", tok.bos_token_id)
    total = 0.0
    for w in range(windows):
        x = torch.tensor([ids[w * T:(w + 1) * T]])
        logits = model(x).logits[0].double()
        total += torch.nn.functional.cross_entropy(logits[:-1], x[0, 1:], reduction="sum").item()
    mean = total / (windows * (T - 1))
    print(f"demo: wikitext2 T={T} first {windows} windows: mean nll {mean!r} ppl {math.exp(mean)!r}")


if __name__ == "__main__":
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    what = sys.argv[1:]
    os.makedirs(OUT, exist_ok=True)
    smollm2_config()
    ref = {"generator": "scripts/reference/transformers5_reference.py",
           "versions": {"transformers": __import__("transformers").__version__, "torch": torch.__version__}}
    for name, spec in TINY.items():
        ref[name] = tiny(name, spec)
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)  # json writes floats with repr: full float64 precision
        f.write("\n")
    print("wrote", OUT)
    if "demo" in what:
        demo()
