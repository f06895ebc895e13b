"""References for the LLaMA forward pass and perplexity, computed with transformers on the CPU.

  python3 scripts/reference/model_reference.py [state] [datasets] [logits] [ppl] [full]

SmolLM2-135M-Instruct is loaded from the same GGUF the tests use (scripts/fetch-model.sh; env
PRUNEKIT_MODEL overrides), in float32. Outputs in Tests/Fixtures/model/:
  smollm2_state.json         per Hugging Face tensor name: shape, sha256 of the float32 bytes
  datasets.json              per dataset (wikitext2, ptb, c4): token count, sha256 of the int32 ids,
                             first ids, whether BOS is added (conventions as in README.md)
  smollm2_logits64.safetensors  logits on the first 64 WikiText-2 tokens: input ids, per-row
                             logsumexp (F64) and argmax, logits at every 16th vocabulary id, top 16
  ppl.json                   exp(mean NLL over the T-1 predicted positions of each window):
                             wikitext2 T=512 first 4 windows, ptb and c4 T=512 first 2 windows
  ppl_full.json              (`full`, slow) WikiText-2 test in full at T=2048 and T=128
"""
import hashlib, json, math, os, subprocess, sys
import numpy as np
import torch
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_common import model_path  # noqa: E402


root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
out = os.path.join(root, "Tests", "Fixtures", "model")
data = os.environ.get("PRUNEKIT_DATA") or os.path.join(os.path.dirname(root), "shared", "data")
os.makedirs(out, exist_ok=True)


def load():
    from transformers import AutoModelForCausalLM, AutoTokenizer
    path = model_path()
    d, f = os.path.dirname(path), os.path.basename(path)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32)
    model.eval()
    return tok, model


def zstd_text(path):
    out = subprocess.check_output(["zstd", "-dc", path])
    return out.decode("utf-8")


def dataset_text(name):
    if name == "wikitext2":
        with open(os.path.join(data, "wikitext-2-raw", "wiki.test.raw"), encoding="utf-8", newline="") as f:
            lines = f.read().splitlines(keepends=True)
        rows = ["" if line.strip() == "" else line for line in lines]
        return "\n\n".join(rows)
    if name == "ptb":
        with open(os.path.join(data, "ptb", "ptb.test.txt"), encoding="utf-8", newline="") as f:
            lines = f.read().split("\n")
        if lines and lines[-1] == "":
            lines = lines[:-1]
        return " ".join(line.strip() for line in lines)
    if name == "c4":
        text = zstd_text(os.path.join(data, "c4", "c4-validation-sample-2k.jsonl.zst"))
        docs = [json.loads(l)["text"] for l in text.split("\n") if l.strip()]
        assert len(docs) == 2000
        return "\n\n".join(docs)
    raise ValueError(name)


def ids_of(tok, name):
    return tok(dataset_text(name))["input_ids"]


def sha_ids(ids):
    return hashlib.sha256(np.asarray(ids, dtype="<i4").tobytes()).hexdigest()


def state(model):
    rows = {}
    for name, t in model.state_dict().items():
        a = t.detach().float().contiguous().numpy()
        rows[name] = {"shape": list(a.shape), "sha256": hashlib.sha256(a.astype("<f4").tobytes()).hexdigest()}
    c = model.config
    meta = {k: getattr(c, k, None) for k in ["hidden_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "intermediate_size", "rms_norm_eps", "rope_theta",
            "max_position_embeddings", "tie_word_embeddings", "vocab_size", "bos_token_id", "eos_token_id"]}
    json.dump({"config": meta, "tensors": rows}, open(os.path.join(out, "smollm2_state.json"), "w"), indent=1, sort_keys=True)


def datasets(tok):
    rows = {}
    for name in ["wikitext2", "ptb", "c4"]:
        ids = ids_of(tok, name)
        rows[name] = {"tokens": len(ids), "sha256": sha_ids(ids), "first": ids[:16],
                      "bos_added": bool(tok.bos_token_id is not None and ids[:1] == [tok.bos_token_id])}
        print(name, len(ids))
    json.dump(rows, open(os.path.join(out, "datasets.json"), "w"), indent=1, sort_keys=True)


@torch.no_grad()
def logits64(tok, model):
    from safetensors.numpy import save_file
    ids = ids_of(tok, "wikitext2")[:64]
    logits = model(torch.tensor([ids])).logits[0].double()
    lse = torch.logsumexp(logits, dim=-1)
    top = torch.topk(logits, 16, dim=-1)
    save_file({
        "input_ids": np.asarray(ids, dtype=np.int64),
        "logsumexp": lse.numpy(),
        "argmax": logits.argmax(-1).numpy().astype(np.int64),
        "strided_logits": logits[:, ::16].float().numpy(),
        "top_ids": top.indices.numpy().astype(np.int64),
        "top_logits": top.values.float().numpy(),
    }, os.path.join(out, "smollm2_logits64.safetensors"))


@torch.no_grad()
def window_nll(model, ids, T, limit):
    n = len(ids) // T if limit is None else min(len(ids) // T, limit)
    total = 0.0
    for w in range(n):
        x = torch.tensor([ids[w * T:(w + 1) * T]])
        logits = model(x).logits[0].double()
        total += torch.nn.functional.cross_entropy(logits[:-1], x[0, 1:], reduction="sum").item()
    return n, total


def ppl(tok, model, runs, filename):
    rows = {}
    for name, T, limit in runs:
        ids = ids_of(tok, name)
        n, total = window_nll(model, ids, T, limit)
        mean = total / (n * (T - 1))
        # FLAP/Wanda's eval_ppl multiplies each window's mean loss by T and divides by N·T: the
        # same mean over the T-1 predicted positions, hence the same perplexity.
        rows[f"{name}_T{T}_limit{limit}"] = {"dataset": name, "seqlen": T, "windows": n,
                                             "nll_sum": total, "predicted": n * (T - 1),
                                             "ppl": math.exp(mean)}
        print(name, T, limit, math.exp(mean))
    json.dump(rows, open(os.path.join(out, filename), "w"), indent=1, sort_keys=True)


if __name__ == "__main__":
    what = sys.argv[1:] or ["state", "datasets", "logits", "ppl"]
    torch.manual_seed(0)
    tok, model = load()
    if "state" in what: state(model)
    if "datasets" in what: datasets(tok)
    if "logits" in what: logits64(tok, model)
    if "ppl" in what:
        ppl(tok, model, [("wikitext2", 512, 4), ("ptb", 512, 2), ("c4", 512, 2)], "ppl.json")
    if "full" in what:
        ppl(tok, model, [("wikitext2", 2048, None), ("wikitext2", 128, None)], "ppl_full.json")
