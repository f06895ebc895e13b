"""References for calibration: the drawing of calibration windows and the statistics gathered by
forward hooks, computed with transformers on the CPU in float32 (statistics accumulated in float64).

  python3 scripts/reference/calibrate_reference.py [windows] [tiny] [smollm2]

With no argument all three parts are produced. SmolLM2-135M-Instruct is loaded from the GGUF that
scripts/fetch-model.sh prints (env PRUNEKIT_MODEL overrides), its tokenizer from the same file (the
transformers GGUF loader; `tok(text)["input_ids"]`, default special tokens). Data comes from
../shared/data next to the repository (env PRUNEKIT_DATA overrides). Outputs go to
Tests/Fixtures/calibrate/.

windows.json -- the calibration windows (the GPTQ / Wanda / FLAP get_loaders procedure, drawn with
Python's own `random` module):
  Documents mode (a JSONL file): texts = the `text` field of every line in file order (lines made
  only of spaces, tabs and CRs are skipped, as Sources/Evaluation/Datasets.swift does);
  ids_i = tok(texts[i]). If at least `samples` documents have len(ids_i) > T: random.seed(seed);
  per window: repeat i = random.randint(0, len(texts) - 1) until len(ids_i) > T; then
  s = random.randint(0, len(ids_i) - T - 1); window = ids_i[s:s+T].
  Joined mode (too few long documents, or a text file): ids = tok("\\n\\n".join(texts)), or
  ids = tok(whole text) for a plain UTF-8 text file (read without newline translation);
  random.seed(seed); per window: s = random.randint(0, len(ids) - T - 1); window = ids[s:s+T].
  Per case: source (relative to the data folder), kind ("jsonl"/"text"), seed, samples, seqlen,
  mode ("documents"/"joined"), eligible (documents with more than T tokens; null for text),
  total_tokens (joined: len(ids); documents: sum of len(ids_i)), sha256 (of all windows' ids as
  int32 little-endian, windows in order), head (first 8 ids of each window) and, when
  samples*T <= 4096, windows (the full lists).
  Cases: c4_s0_n4_t128, c4_s0_n128_t2048 (c4-validation-sample-2k), olmo_s5_n16_t512
  (c4-sample-olmo-1k), wikivalid_s1_n4_t256 (wikitext-2-raw/wiki.valid.raw).

tiny_uniform_stats.safetensors, smollm2_stats.safetensors -- statistics of one float32 forward of
all N windows W [N, T] as a batch (no attention mask, no padding, no KV cache). For every decoder
layer l, forward pre-hooks capture the inputs X ([N*T, width] rows, converted to float64) of the
points P in {self_attn.q_proj (= input_layernorm output), self_attn.o_proj (attention output
before the projection), mlp.gate_proj (= post_attention_layernorm output), mlp.down_proj
(silu(gate) * up)}:
  model.layers.{l}.{P}.input.count        I64 [1]      N*T
  model.layers.{l}.{P}.input.sum          F64 [width]  sum over rows of X
  model.layers.{l}.{P}.input.sumsq        F64 [width]  sum over rows of X^2
  model.layers.{l}.{P}.input.gram         [width, width] X^T X (where stored, see below)
  model.layers.{l}.{P}.input.fluctuation  F64 [width]  (o_proj and down_proj only) FLAP's input
      fluctuation as accumulated one calibration sample at a time: over windows n = 0..N-1 in
      order, x_t the T rows of window n, baseline starting at 0:
        baseline = baseline * n/(n+1) + mean_t(x_t)/(n+1)
        fluc = 0 if n == 0 else fluc*(n-1)/n + sum_t (x_t - baseline)^2 / (n+1)
      (with the baseline just updated); for N > 1 this is the unbiased sample variance of each
      channel over all N*T rows around the running-mean baseline as FLAP computes it.
Block statistics, from the decoder layer's input hidden states a_t (forward pre-hook) and output
hidden states b_t (forward hook; first element when the output is a tuple), per token in float64:
cos = a.b / (|a| |b|), 0.5 when a norm is zero, clamped to [-1, 1]:
  model.layers.{l}.block.count         I64 [1]  N*T
  model.layers.{l}.block.angular_sum   F64 [1]  sum_t arccos(cos)/pi
  model.layers.{l}.block.cosine_sum    F64 [1]  sum_t cos
  model.layers.{l}.block.mse_sum       F64 [1]  sum_t mean_c (a - b)^2
  model.layers.{l}.block.mae_sum       F64 [1]  sum_t mean_c |a - b|
plus `windows` (I64 [N, T]) and a description in __metadata__ (keys rewritten in sorted order after
safetensors.numpy.save_file, whose hash-map order varies between runs, so the files are
byte-for-byte reproducible).
  tiny_uniform: Tests/Fixtures/model/tiny_uniform.safetensors as a transformers LlamaForCausalLM
    (float32, eager attention, loaded with strict=True; bias flags from the file, any bias the file
    lacks is zero); windows torch.manual_seed(0); torch.randint(0, vocab, (3, 16)); every layer,
    gram (F64) at all four points.
  smollm2: windows drawn as c4_s0_n4_t128 but with samples 2, T 64 (c4-validation-sample-2k, seed 0);
    statistics of layers 0, 1, 15 and 29 only; one gram, model.layers.0.self_attn.o_proj.input.gram,
    stored as F32 (accumulated in float64).
"""
import hashlib, json, math, os, struct, subprocess, sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import random
import numpy as np
import torch
from safetensors.numpy import save_file
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_common import model_path, save_sorted as save  # noqa: E402

torch.set_num_threads(1)

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
out = os.path.join(root, "Tests", "Fixtures", "calibrate")
data = os.environ.get("PRUNEKIT_DATA") or os.path.join(os.path.dirname(root), "shared", "data")
POINTS = ["self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj"]
FLUCTUATION = {"self_attn.o_proj", "mlp.down_proj"}
C4 = "c4/c4-validation-sample-2k.jsonl.zst"
OLMO = "c4/c4-sample-olmo-1k.jsonl.zst"
WIKI_VALID = "wikitext-2-raw/wiki.valid.raw"
CASES = [  # name, source, kind, seed, samples, T
    ("c4_s0_n4_t128", C4, "jsonl", 0, 4, 128),
    ("c4_s0_n128_t2048", C4, "jsonl", 0, 128, 2048),
    ("olmo_s5_n16_t512", OLMO, "jsonl", 5, 16, 512),
    ("wikivalid_s1_n4_t256", WIKI_VALID, "text", 1, 4, 256),
]


# ----------------------------------------------------------------------------- model and tokenizer

def load_tokenizer():
    from transformers import AutoTokenizer
    path = model_path()
    return AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))


def load_smollm2():
    from transformers import AutoModelForCausalLM
    path = model_path()
    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                 dtype=torch.float32, attn_implementation="eager")
    return model.eval()


# ----------------------------------------------------------------------------- windows (part A)

def read_source(rel, kind):
    path = os.path.join(data, rel)
    raw = subprocess.check_output(["zstd", "-dc", path]) if path.endswith(".zst") else open(path, "rb").read()
    text = raw.decode("utf-8")
    if kind == "text":
        return text
    texts = []
    for line in text.split("\n"):
        if line.strip(" \t\r") == "":
            continue
        texts.append(json.loads(line)["text"])
    return texts


def draw_windows(tok, rel, kind, seed, samples, T):
    """The windows and a description of how they were drawn (see the module docstring)."""
    src = read_source(rel, kind)
    info = {"source": rel, "kind": kind, "seed": seed, "samples": samples, "seqlen": T}
    windows = []
    if kind == "jsonl":
        texts = src
        doc_ids = [tok(t)["input_ids"] for t in texts]
        eligible = sum(1 for ids in doc_ids if len(ids) > T)
        info["documents"] = len(texts)
        info["eligible"] = eligible
        if eligible >= samples:
            info["mode"] = "documents"
            info["total_tokens"] = sum(len(ids) for ids in doc_ids)
            random.seed(seed)
            for _ in range(samples):
                while True:
                    i = random.randint(0, len(texts) - 1)
                    if len(doc_ids[i]) > T:
                        break
                s = random.randint(0, len(doc_ids[i]) - T - 1)
                windows.append(doc_ids[i][s:s + T])
            return windows, info
        ids = tok("\n\n".join(texts))["input_ids"]
    else:
        info["documents"] = None
        info["eligible"] = None
        ids = tok(src)["input_ids"]
    info["mode"] = "joined"
    info["total_tokens"] = len(ids)
    random.seed(seed)
    for _ in range(samples):
        s = random.randint(0, len(ids) - T - 1)
        windows.append(ids[s:s + T])
    return windows, info


def sha_windows(windows):
    h = hashlib.sha256()
    for w in windows:
        h.update(np.asarray(w, dtype="<i4").tobytes())
    return h.hexdigest()


def windows_fixture(tok):
    rows = {}
    for name, rel, kind, seed, samples, T in CASES:
        windows, info = draw_windows(tok, rel, kind, seed, samples, T)
        assert len(windows) == samples and all(len(w) == T for w in windows)
        row = {k: info[k] for k in ["source", "kind", "seed", "samples", "seqlen", "mode", "eligible",
                                    "total_tokens"]}
        row["sha256"] = sha_windows(windows)
        row["head"] = [list(w[:8]) for w in windows]
        if samples * T <= 4096:
            row["windows"] = [list(w) for w in windows]
        rows[name] = row
        print(f"{name}: mode {row['mode']}, eligible {row['eligible']}, total_tokens {row['total_tokens']}, "
              f"sha256 {row['sha256'][:16]}…")
    path = os.path.join(out, "windows.json")
    with open(path, "w") as f:
        json.dump(rows, f, indent=1, sort_keys=True)
        f.write("\n")
    return path


# ----------------------------------------------------------------------------- statistics (part B)

class PointStats:
    """float64 accumulators for the input of one linear layer."""

    def __init__(self, gram, fluctuation):
        self.count = 0
        self.sum = self.sumsq = self.gram = None
        self.want_gram, self.want_fluc = gram, fluctuation
        self.baseline = self.fluc = None
        self.n = 0  # calibration samples (windows) seen by the fluctuation recurrence

    def add(self, x):  # x: [N, T, width] float32
        x = x.detach().to(torch.float64)
        rows = x.reshape(-1, x.shape[-1])
        if self.sum is None:
            w = rows.shape[1]
            self.sum = torch.zeros(w, dtype=torch.float64)
            self.sumsq = torch.zeros(w, dtype=torch.float64)
            if self.want_gram:
                self.gram = torch.zeros(w, w, dtype=torch.float64)
            if self.want_fluc:
                self.baseline = torch.zeros(w, dtype=torch.float64)
                self.fluc = torch.zeros(w, dtype=torch.float64)
        self.count += rows.shape[0]
        self.sum += rows.sum(0)
        self.sumsq += (rows * rows).sum(0)
        if self.want_gram:
            self.gram += rows.T @ rows
        if self.want_fluc:
            for xt in x:  # one window at a time, in order: xt [T, width]
                n = self.n
                self.baseline = self.baseline * (n / (n + 1)) + xt.mean(0) / (n + 1)
                if n == 0:
                    self.fluc = torch.zeros_like(self.baseline)
                else:
                    self.fluc = self.fluc * ((n - 1) / n) + ((xt - self.baseline) ** 2).sum(0) / (n + 1)
                self.n += 1


class BlockStats:
    def __init__(self):
        self.count = 0
        self.angular = self.cosine = self.mse = self.mae = 0.0
        self.a = None

    def add(self, a, b):  # [N, T, C] float32 each
        a = a.detach().to(torch.float64).reshape(-1, a.shape[-1])
        b = b.detach().to(torch.float64).reshape(-1, b.shape[-1])
        na, nb = a.norm(dim=1), b.norm(dim=1)
        dot = (a * b).sum(1)
        zero = (na == 0) | (nb == 0)
        cos = torch.where(zero, torch.full_like(dot, 0.5), dot / torch.where(zero, torch.ones_like(dot), na * nb))
        cos = cos.clamp(-1.0, 1.0)
        self.count += a.shape[0]
        self.angular += (torch.arccos(cos) / math.pi).sum().item()
        self.cosine += cos.sum().item()
        self.mse += ((a - b) ** 2).mean(1).sum().item()
        self.mae += (a - b).abs().mean(1).sum().item()


@torch.no_grad()
def collect(model, windows, layers, gram_points):
    """Runs the model once on windows [N, T] and returns {tensor name: numpy array}.
    layers: indices of decoder layers to keep; gram_points: set of (l, P) with a gram."""
    decoder = model.model.layers
    points, blocks, handles = {}, {}, []
    for l in layers:
        layer = decoder[l]
        for P in POINTS:
            st = points[(l, P)] = PointStats((l, P) in gram_points, P in FLUCTUATION)
            handles.append(layer.get_submodule(P).register_forward_pre_hook(
                lambda mod, args, st=st: st.add(args[0])))
        bs = blocks[l] = BlockStats()

        def pre(mod, args, kwargs, bs=bs):
            bs.a = args[0] if args else kwargs["hidden_states"]

        def post(mod, args, kwargs, output, bs=bs):
            b = output[0] if isinstance(output, (tuple, list)) else output
            bs.add(bs.a, b)
            bs.a = None

        handles.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(layer.register_forward_hook(post, with_kwargs=True))
    try:
        model(torch.as_tensor(windows, dtype=torch.long), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    tensors = {}
    for (l, P), st in points.items():
        p = f"model.layers.{l}.{P}.input."
        tensors[p + "count"] = np.asarray([st.count], dtype=np.int64)
        tensors[p + "sum"] = st.sum.numpy()
        tensors[p + "sumsq"] = st.sumsq.numpy()
        if st.want_gram:
            tensors[p + "gram"] = st.gram.numpy()
        if st.want_fluc:
            tensors[p + "fluctuation"] = st.fluc.numpy()
    for l, bs in blocks.items():
        p = f"model.layers.{l}.block."
        tensors[p + "count"] = np.asarray([bs.count], dtype=np.int64)
        tensors[p + "angular_sum"] = np.asarray([bs.angular], dtype=np.float64)
        tensors[p + "cosine_sum"] = np.asarray([bs.cosine], dtype=np.float64)
        tensors[p + "mse_sum"] = np.asarray([bs.mse], dtype=np.float64)
        tensors[p + "mae_sum"] = np.asarray([bs.mae], dtype=np.float64)
    tensors["windows"] = np.asarray(windows, dtype=np.int64)
    return tensors


def load_tiny(name="tiny_uniform"):
    """The PruneKit model file as a float32 transformers LlamaForCausalLM holding exactly its tensors."""
    from safetensors import safe_open
    from transformers import LlamaConfig, LlamaForCausalLM
    path = os.path.join(root, "Tests", "Fixtures", "model", name + ".safetensors")
    with safe_open(path, "pt") as f:
        cfg = json.loads(f.metadata()["config"])
        W = {k: f.get_tensor(k) for k in f.keys()}
    L = cfg["num_hidden_layers"]
    for key in ["head_counts", "kv_head_counts", "ffn_widths"]:
        assert len(set(cfg[key])) == 1, f"{key} not uniform: transformers needs one width per model"
    attn_bias = any(k.endswith(".bias") and ".self_attn." in k for k in W)
    mlp_bias = any(k.endswith(".bias") and ".mlp." in k for k in W)
    hf = LlamaConfig(hidden_size=cfg["hidden_size"], intermediate_size=cfg["ffn_widths"][0], num_hidden_layers=L,
                     num_attention_heads=cfg["head_counts"][0], num_key_value_heads=cfg["kv_head_counts"][0],
                     head_dim=cfg["head_dim"], vocab_size=cfg["vocab_size"], rms_norm_eps=cfg["rms_norm_eps"],
                     rope_theta=cfg["rope_theta"], rope_scaling=cfg["rope_scaling"],
                     max_position_embeddings=cfg["max_position_embeddings"], attention_bias=attn_bias,
                     mlp_bias=mlp_bias, tie_word_embeddings=cfg["tie_word_embeddings"],
                     bos_token_id=cfg.get("bos_token_id"), eos_token_id=cfg.get("eos_token_id"),
                     attn_implementation="eager")
    torch.manual_seed(0)
    model = LlamaForCausalLM(hf).float().eval()
    expected = model.state_dict()
    sd = {k: v.float() for k, v in W.items()}
    added = []
    for k, v in expected.items():
        if k not in sd:
            if k.endswith(".bias"):  # the model has the bias slot, the file not: zero
                sd[k] = torch.zeros_like(v)
                added.append(k)
            elif k == "lm_head.weight" and cfg["tie_word_embeddings"]:
                sd[k] = sd["model.embed_tokens.weight"]
    model.load_state_dict(sd, strict=True)
    got = model.state_dict()
    for k, v in W.items():
        assert torch.equal(got[k], v.float()), k
    for k in added:
        assert not got[k].any(), k
    print(f"{name}: attention_bias {attn_bias}, mlp_bias {mlp_bias}, zero biases added {len(added)}")
    # Sanity: transformers in float32 against the float64 plain-torch reference of tiny_model.py.
    ref_path = os.path.join(root, "Tests", "Fixtures", "model", name + "_ref.safetensors")
    if os.path.exists(ref_path):
        with safe_open(ref_path, "pt") as f:
            tokens, ref_logits = f.get_tensor("tokens"), f.get_tensor("logits")
        with torch.no_grad():
            logits = model(tokens, use_cache=False).logits.double()
        err = (logits - ref_logits).abs().max().item()
        assert err < 1e-3, err
        print(f"{name}: logits vs {name}_ref.safetensors max abs diff {err:.2e}")
    return model, cfg


def tiny_fixture():
    model, cfg = load_tiny("tiny_uniform")
    torch.manual_seed(0)
    W = torch.randint(0, cfg["vocab_size"], (3, 16))
    L = cfg["num_hidden_layers"]
    tensors = collect(model, W.tolist(), list(range(L)), {(l, P) for l in range(L) for P in POINTS})
    meta = {"producer": "scripts/reference/calibrate_reference.py",
            "model": "Tests/Fixtures/model/tiny_uniform.safetensors (transformers LlamaForCausalLM, float32)",
            "windows": "torch.manual_seed(0); torch.randint(0, vocab_size, (3, 16))",
            "layers": json.dumps(list(range(L))),
            "description": "calibration statistics by forward hooks, float64 accumulation; gram F64 at "
                           "q_proj, o_proj, gate_proj, down_proj inputs of every layer"}
    path = os.path.join(out, "tiny_uniform_stats.safetensors")
    save(tensors, path, meta)
    print(f"tiny_uniform_stats: layer 0 block angular mean "
          f"{tensors['model.layers.0.block.angular_sum'][0] / tensors['model.layers.0.block.count'][0]:.6f}, "
          f"layer 1 down_proj fluctuation sum {tensors['model.layers.1.mlp.down_proj.input.fluctuation'].sum():.6f}")
    return path


def smollm2_fixture(tok):
    windows, info = draw_windows(tok, C4, "jsonl", 0, 2, 64)
    info["sha256"] = sha_windows(windows)
    model = load_smollm2()
    layers = [0, 1, 15, 29]
    assert len(model.model.layers) == 30
    tensors = collect(model, windows, layers, {(0, "self_attn.o_proj")})
    g = "model.layers.0.self_attn.o_proj.input.gram"
    tensors[g] = tensors[g].astype(np.float32)
    meta = {"producer": "scripts/reference/calibrate_reference.py",
            "model": "SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch-model.sh), transformers, float32",
            "windows": json.dumps({k: info[k] for k in ["source", "kind", "seed", "samples", "seqlen", "mode",
                                                        "eligible", "total_tokens", "sha256"]}, sort_keys=True),
            "layers": json.dumps(layers),
            "description": "calibration statistics by forward hooks, float64 accumulation, layers 0, 1, 15, 29 "
                           "only; one gram (layer 0 o_proj input) stored as F32"}
    path = os.path.join(out, "smollm2_stats.safetensors")
    save(tensors, path, meta)
    print(f"smollm2 windows: mode {info['mode']}, eligible {info['eligible']}, head {[w[:4] for w in windows]}")
    print(f"smollm2_stats: layer 29 block cosine mean "
          f"{tensors['model.layers.29.block.cosine_sum'][0] / tensors['model.layers.29.block.count'][0]:.6f}, "
          f"layer 0 q_proj input sum[0] {tensors['model.layers.0.self_attn.q_proj.input.sum'][0]:.6f}")
    return path


if __name__ == "__main__":
    what = sys.argv[1:] or ["windows", "tiny", "smollm2"]
    os.makedirs(out, exist_ok=True)
    written = []
    tok = load_tokenizer() if ("windows" in what or "smollm2" in what) else None
    if "windows" in what:
        written.append(windows_fixture(tok))
    if "tiny" in what:
        written.append(tiny_fixture())
    if "smollm2" in what:
        written.append(smollm2_fixture(tok))
    for p in written:
        size = os.path.getsize(p)
        assert size < 2 * 1024 * 1024, (p, size)
        print(f"{os.path.relpath(p, root)}: {size} bytes")
