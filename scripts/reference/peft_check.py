#!/usr/bin/env python3
"""Checks that stock peft loads the adapters `finetune --adapters-only` writes, onto PruneKit's own
Hugging Face export of the base model, and that the adapted model's logits equal those of the model
`finetune` merges (the same run without --adapters-only), exported to Hugging Face as well.

Usage:  python3 scripts/reference/peft_check.py [BIN_DIR [WORK_DIR [MODEL]]]
        BIN_DIR   the build's binaries (default .build/release: convert and finetune)
        WORK_DIR  where the files go (default: a temporary directory, removed afterwards)
        MODEL     the base model (default: $PRUNEKIT_MODEL, else the GGUF scripts/fetch-model.sh prints)
        Env PRUNEKIT_DATA: the data directory (default ../shared/data next to the repository).
        (torch 2.13 CPU, transformers 5.24, peft 0.21.2; two threads; about 3 minutes on 2 shared cores)

Steps:
 1. convert MODEL -o dense.st; convert dense.st --to hf -o base-hf/ (float32 weights: a Q4_1 GGUF
    is dequantised).
 2. Training text: the first 200,000 characters of wikitext-2-raw/wiki.valid.raw (train.txt in
    WORK_DIR). finetune twice with the same options and seed: --seqlen 64 --steps 8 --batch 4
    --micro-batch 2 --lr 1e-3 --rank 4 --alpha 12 --dropout 0.05 (all seven projections, seed 7,
    --threads 2), once with --adapters-only -o adapters/, once -o merged.st; then
    convert merged.st --to hf -o merged-hf/. r 4 and α 12 are not finetune's defaults (8, 16), so a
    config that wrote the defaults would fail step 4.
 3. adapter_config.json (read as peft reads it, PeftConfig.from_pretrained): r, lora_alpha,
    lora_dropout, target_modules equal the options given; peft_type LORA, task_type CAUSAL_LM, no
    rank_pattern / alpha_pattern, use_rslora / use_dora false. adapter_model.safetensors: 2·7·L
    tensors, every lora_B non-zero.
 4. transformers (float32, attn_implementation "eager", eval, torch.no_grad): base-hf through
    AutoModelForCausalLM, its logits taken, then PeftModel.from_pretrained(base, adapters/) (stock
    loading, no options). Asserted: peft's adapter state (get_peft_model_state_dict) has exactly the
    file's keys and values (so no key was dropped or left at its initialisation), every LoRA
    module's scaling is α/r. merged-hf through AutoModelForCausalLM. Tokens: the first 2 × 64 ids
    of wikitext-2-raw/wiki.test.raw under base-hf's tokenizer, as a [2, 64] batch (no mask).
    Compared, with tol = 1e-4 · max|merged logits|:
      peft vs merged            np.testing.assert_allclose(peft, merged, rtol=1e-4, atol=tol)
      merge_and_unload vs merged  the same assertion
      peft vs base              max |difference| > 100 · tol (the adapters do change the logits)
    Diagnostic (asserted to 1e-5 relative): merged-hf's projection weights equal base-hf's +
    (α/r)·B·A computed in float64 from the adapter file.

Measured (SmolLM2-135M-Instruct Q4_1 from fetch-model.sh, 30 layers, 210 adapted projections;
one run on 2 shared cores, 2m50s in all, of which finetune 2 × ~42 s):
    every lora_B non-zero, max |B| 4.5e-03; merged-hf weights vs base + (α/r)·B·A: max rel 5.8e-08
    peft vs merged              max abs 8.5e-05, max rel (to max|merged| 34.6) 2.5e-06
    merge_and_unload vs merged  max abs 5.4e-05, max rel 1.6e-06
    peft vs base                max abs 5.3e+00 (1535 × the tolerance 3.5e-03)
A run prints these figures; they differ from these only by float32 rounding (thread count, BLAS).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_common import ROOT, model_path  # noqa: E402

SEQLEN, STEPS, BATCH, MICRO, LR = 64, 8, 4, 2, 1e-3
RANK, ALPHA, DROPOUT, SEED, THREADS = 4, 12, 0.05, 7, 2
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TRAIN_CHARS = 200_000
ROWS, COLS = 2, 64
RTOL = 1e-4

started = time.time()


def log(msg):
    print(f"[{time.time() - started:6.1f} s] {msg}", flush=True)


def run(cmd):
    log("$ " + " ".join(cmd))
    t = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    log(f"  ({time.time() - t:.1f} s)")


def compare(name, got, want):
    """Max abs and relative (to max|want|) differences, then assert_allclose(rtol 1e-4, atol 1e-4·max|want|)."""
    scale = float(np.abs(want).max())
    diff = float(np.abs(got - want).max())
    print(f"  {name:28s} max abs {diff:.3e}  max rel (to max|ref| {scale:.3f}) {diff / scale:.3e}", flush=True)
    return diff, scale


def main():
    args = sys.argv[1:]
    bindir = os.path.abspath(args[0] if len(args) > 0 else os.path.join(ROOT, ".build", "release"))
    temporary = None
    if len(args) > 1:
        work = os.path.abspath(args[1])
        os.makedirs(work, exist_ok=True)
    else:
        temporary = work = tempfile.mkdtemp(prefix="peft_check.")
    model = args[2] if len(args) > 2 else model_path()
    data = os.environ.get("PRUNEKIT_DATA") or os.path.join(os.path.dirname(ROOT), "shared", "data")
    torch.set_num_threads(THREADS)
    log(f"bin {bindir}, work {work}, model {model}")
    try:
        check(bindir, work, model, data)
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
    log("OK")


def check(bindir, work, model, data):
    from peft import PeftConfig, PeftModel, get_peft_model_state_dict
    from peft.tuners.lora import LoraLayer
    from safetensors.numpy import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    convert, finetune = os.path.join(bindir, "convert"), os.path.join(bindir, "finetune")
    p = lambda *names: os.path.join(work, *names)

    # 1. The base model and its Hugging Face export.
    run([convert, model, "-o", p("dense.st"), "--threads", str(THREADS), "--quiet"])
    run([convert, p("dense.st"), "--to", "hf", "-o", p("base-hf"), "--threads", str(THREADS), "--quiet"])

    # 2. Two fine-tuning runs with the same options: adapters, and the merged model.
    with open(os.path.join(data, "wikitext-2-raw", "wiki.valid.raw"), encoding="utf-8", newline="") as f:
        text = f.read(TRAIN_CHARS)
    with open(p("train.txt"), "w", encoding="utf-8", newline="") as f:
        f.write(text)
    common = [finetune, "--model", p("dense.st"), "--text", p("train.txt"), "--seqlen", str(SEQLEN),
              "--steps", str(STEPS), "--batch", str(BATCH), "--micro-batch", str(MICRO), "--lr", str(LR),
              "--rank", str(RANK), "--alpha", str(ALPHA), "--dropout", str(DROPOUT),
              "--targets", ",".join(t.removesuffix("_proj") for t in TARGETS),
              "--seed", str(SEED), "--threads", str(THREADS), "--quiet"]
    run(common + ["--adapters-only", "-o", p("adapters")])
    run(common + ["-o", p("merged.st")])
    run([convert, p("merged.st"), "--to", "hf", "-o", p("merged-hf"), "--threads", str(THREADS), "--quiet"])

    # 3. The adapter files.
    with open(p("adapters", "adapter_config.json")) as f:
        raw_config = json.load(f)
    log("adapter_config.json: " + json.dumps(raw_config, sort_keys=True))
    cfg = PeftConfig.from_pretrained(p("adapters"))
    assert cfg.peft_type.value == "LORA" and cfg.task_type == "CAUSAL_LM", (cfg.peft_type, cfg.task_type)
    assert cfg.r == RANK and cfg.lora_alpha == ALPHA, (cfg.r, cfg.lora_alpha)
    assert cfg.lora_dropout == DROPOUT, cfg.lora_dropout
    assert set(cfg.target_modules) == set(TARGETS), cfg.target_modules
    assert not cfg.rank_pattern and not cfg.alpha_pattern, (cfg.rank_pattern, cfg.alpha_pattern)
    assert not cfg.use_rslora and not cfg.use_dora and cfg.bias == "none" and not cfg.fan_in_fan_out
    adapters = load_file(p("adapters", "adapter_model.safetensors"))
    with open(p("base-hf", "config.json")) as f:
        layers = json.load(f)["num_hidden_layers"]
    assert len(adapters) == 2 * len(TARGETS) * layers, len(adapters)
    for k, v in adapters.items():
        assert v.dtype == np.float32 and (v.shape[0] == RANK if ".lora_A." in k else v.shape[1] == RANK), (k, v.shape)
    zero_b = [k for k, v in adapters.items() if ".lora_B." in k and not np.any(v)]
    assert not zero_b, f"lora_B all zero: {zero_b[:5]}"
    log(f"adapters: {len(adapters)} tensors, r {cfg.r}, alpha {cfg.lora_alpha}, targets {sorted(cfg.target_modules)}, "
        f"every lora_B non-zero (max |B| {max(float(np.abs(v).max()) for k, v in adapters.items() if '.lora_B.' in k):.3e})")

    # 4. transformers + peft.
    tok = AutoTokenizer.from_pretrained(p("base-hf"))
    with open(os.path.join(data, "wikitext-2-raw", "wiki.test.raw"), encoding="utf-8", newline="") as f:
        ids = tok(f.read(20_000))["input_ids"]
    assert len(ids) >= ROWS * COLS
    ids = torch.tensor(ids[:ROWS * COLS], dtype=torch.long).reshape(ROWS, COLS)

    def load(d):
        m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
        assert m.config._attn_implementation == "eager"
        return m.eval()

    def logits(m):
        with torch.no_grad():
            return m(input_ids=ids).logits.double().numpy()

    base = load(p("base-hf"))
    base_w = {k: v.detach().double().clone() for k, v in base.state_dict().items() if "_proj." in k}
    base_logits = logits(base)
    peft_model = PeftModel.from_pretrained(base, p("adapters"))
    peft_model.eval()
    state = {k: v.detach().numpy() for k, v in get_peft_model_state_dict(peft_model).items()}
    assert set(state) == set(adapters), (sorted(set(state) ^ set(adapters)))[:10]
    for k in adapters:
        assert np.array_equal(state[k], adapters[k]), k
    lora = [m for m in peft_model.modules() if isinstance(m, LoraLayer)]
    assert len(lora) == len(TARGETS) * layers, len(lora)
    assert all(abs(m.scaling["default"] - ALPHA / RANK) < 1e-12 for m in lora), {m.scaling["default"] for m in lora}
    log(f"peft: {len(lora)} LoRA modules loaded, state equal to the file, scaling {ALPHA / RANK}")
    peft_logits = logits(peft_model)

    merged = load(p("merged-hf"))
    merged_logits = logits(merged)
    merged_w = {k: v.detach().double() for k, v in merged.state_dict().items() if "_proj." in k}

    # Diagnostic: merged weights = base + s·B·A.
    s, worst = ALPHA / RANK, 0.0
    for l in range(layers):
        for t in TARGETS:
            mod = f"model.layers.{l}.{'self_attn' if t in TARGETS[:4] else 'mlp'}.{t}"
            a = torch.from_numpy(adapters[f"base_model.model.{mod}.lora_A.weight"]).double()
            b = torch.from_numpy(adapters[f"base_model.model.{mod}.lora_B.weight"]).double()
            want = base_w[mod + ".weight"] + s * (b @ a)
            err = float((merged_w[mod + ".weight"] - want).abs().max() / want.abs().max())
            worst = max(worst, err)
            assert err < 1e-5, (mod, err)

    print("results:", flush=True)
    print(f"  merged weights vs base + (alpha/r)·B·A: max rel {worst:.3e}", flush=True)
    d_pm, scale = compare("peft vs merged", peft_logits, merged_logits)
    np.testing.assert_allclose(peft_logits, merged_logits, rtol=RTOL, atol=RTOL * scale)
    d_pb, _ = compare("peft vs base (the change)", peft_logits, base_logits)
    assert d_pb > 100 * RTOL * scale, f"the adapters hardly change the logits: {d_pb} vs tolerance {RTOL * scale}"
    unloaded = peft_model.merge_and_unload()
    assert not any(isinstance(m, LoraLayer) for m in unloaded.modules())
    unloaded_logits = logits(unloaded)
    compare("merge_and_unload vs merged", unloaded_logits, merged_logits)
    np.testing.assert_allclose(unloaded_logits, merged_logits, rtol=RTOL, atol=RTOL * scale)
    compare("merge_and_unload vs peft", unloaded_logits, peft_logits)
    print(f"  tolerance: assert_allclose(rtol={RTOL}, atol={RTOL} * max|merged| = {RTOL * scale:.3e}); "
          f"the change is {d_pb / (RTOL * scale):.0f}x the tolerance", flush=True)


if __name__ == "__main__":
    main()
