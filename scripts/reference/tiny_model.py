"""Tiny random LLaMA-family models and their reference outputs, for the forward-pass tests.

  python3 scripts/reference/tiny_model.py

A plain-torch decoder written from the math (RMSNorm, RoPE with rotate_half and optional llama3
scaling, causal grouped-query attention, SwiGLU, optional bias on every projection) with per-layer
head, KV-head and MLP widths, zero included. It is first checked against transformers'
LlamaForCausalLM on a uniform configuration (float64 model; to 1e-5, since transformers'
RMSNorm runs in float32 whatever the dtype), then run in float64 on:
  tiny_uniform     2 layers, C 64, 4/2 heads, D 16, F 96, V 97, all biases, untied head
  tiny_nonuniform  3 layers, C 48, D 8, heads [4,0,6], KV [2,0,3], F [40,24,0], some biases,
                   tied head, V 61, llama3 rope scaling, theta 500000
Writes Tests/Fixtures/model/<name>.safetensors (a PruneKit model file, plain, F32 weights, config in
__metadata__) and <name>_ref.safetensors: tokens [2, 19] (I64), logits [2, 19, V] (F64), loss [2]
(F64, mean NLL of each sequence), hidden_states [L, 19, C] (F64, first sequence, after each layer).
"""
import json, math, os
import numpy as np
import torch
from safetensors.numpy import save_file

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
out = os.path.join(root, "Tests", "Fixtures", "model")
os.makedirs(out, exist_ok=True)
PROJ = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def inv_freq(cfg):
    D = cfg["head_dim"]
    # As transformers: inverse frequencies, angles and cos/sin in float32 whatever the model dtype.
    f = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))
    s = cfg["rope_scaling"]
    if s:
        low_wl = s["original_max_position_embeddings"] / s["low_freq_factor"]
        high_wl = s["original_max_position_embeddings"] / s["high_freq_factor"]
        wl = 2 * math.pi / f
        scaled = torch.where(wl > low_wl, f / s["factor"], f)
        smooth = (s["original_max_position_embeddings"] / wl - s["low_freq_factor"]) / (s["high_freq_factor"] - s["low_freq_factor"])
        mid = (1 - smooth) * scaled / s["factor"] + smooth * scaled
        is_mid = (wl >= high_wl) & (wl <= low_wl)
        f = torch.where(is_mid, mid, scaled)
    return f


def rope(x, cfg):  # x: [T, H, D]
    T = x.shape[0]
    f = inv_freq(cfg)
    ang = (f[:, None] @ torch.arange(T, dtype=torch.float32)[None, :]).T
    emb = torch.cat([ang, ang], dim=-1)
    cos, sin = emb.cos().double()[:, None, :], emb.sin().double()[:, None, :]
    half = x.shape[-1] // 2
    rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rot * sin


def rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def lin(W, name, x):
    y = x @ W[name + ".weight"].T
    if name + ".bias" in W:
        y = y + W[name + ".bias"]
    return y


def forward(W, cfg, tokens):
    C, D = cfg["hidden_size"], cfg["head_dim"]
    x = W["model.embed_tokens.weight"][tokens]
    T = x.shape[0]
    hidden = []
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        H, Hkv = cfg["head_counts"][l], cfg["kv_head_counts"][l]
        h = rms(x, W[p + "input_layernorm.weight"], cfg["rms_norm_eps"])
        if H > 0:
            q = rope(lin(W, p + "self_attn.q_proj", h).view(T, H, D), cfg)
            k = rope(lin(W, p + "self_attn.k_proj", h).view(T, Hkv, D), cfg)
            v = lin(W, p + "self_attn.v_proj", h).view(T, Hkv, D)
            k = k.repeat_interleave(H // Hkv, dim=1)
            v = v.repeat_interleave(H // Hkv, dim=1)
            s = torch.einsum("thd,shd->hts", q, k) / math.sqrt(D)
            s = s.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
            a = torch.einsum("hts,shd->thd", s.softmax(-1), v).reshape(T, H * D)
        else:
            a = torch.zeros(T, 0, dtype=torch.float64)
        x = x + lin(W, p + "self_attn.o_proj", a)
        h = rms(x, W[p + "post_attention_layernorm.weight"], cfg["rms_norm_eps"])
        g = lin(W, p + "mlp.gate_proj", h)
        u = lin(W, p + "mlp.up_proj", h)
        x = x + lin(W, p + "mlp.down_proj", torch.nn.functional.silu(g) * u)
        hidden.append(x)
    x = rms(x, W["model.norm.weight"], cfg["rms_norm_eps"])
    head = W["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else W["lm_head.weight"]
    return x @ head.T, torch.stack(hidden)


def make_weights(cfg, biases, gen):
    C, D, V = cfg["hidden_size"], cfg["head_dim"], cfg["vocab_size"]
    W = {"model.embed_tokens.weight": 0.3 * torch.randn(V, C, generator=gen, dtype=torch.float64)}
    for l in range(cfg["num_hidden_layers"]):
        H, Hkv, F = cfg["head_counts"][l], cfg["kv_head_counts"][l], cfg["ffn_widths"][l]
        shapes = {"self_attn.q_proj": (H * D, C), "self_attn.k_proj": (Hkv * D, C),
                  "self_attn.v_proj": (Hkv * D, C), "self_attn.o_proj": (C, H * D),
                  "mlp.gate_proj": (F, C), "mlp.up_proj": (F, C), "mlp.down_proj": (C, F)}
        p = f"model.layers.{l}."
        W[p + "input_layernorm.weight"] = 1 + 0.1 * torch.randn(C, generator=gen, dtype=torch.float64)
        for name in PROJ:
            if name == "mlp.gate_proj":
                W[p + "post_attention_layernorm.weight"] = 1 + 0.1 * torch.randn(C, generator=gen, dtype=torch.float64)
            o, i = shapes[name]
            W[p + name + ".weight"] = torch.randn(o, i, generator=gen, dtype=torch.float64) / math.sqrt(max(i, 1))
            if (l, name) in biases:
                W[p + name + ".bias"] = 0.1 * torch.randn(o, generator=gen, dtype=torch.float64)
    W["model.norm.weight"] = 1 + 0.1 * torch.randn(C, generator=gen, dtype=torch.float64)
    if not cfg["tie_word_embeddings"]:
        W["lm_head.weight"] = torch.randn(V, C, generator=gen, dtype=torch.float64) / math.sqrt(C)
    # Quantise to float32 so that the Swift side (F32 weights) computes with the same values.
    return {k: v.float().double() for k, v in W.items()}


def check_against_transformers(cfg, W):
    from transformers import LlamaConfig, LlamaForCausalLM
    hf = LlamaConfig(hidden_size=cfg["hidden_size"], intermediate_size=cfg["ffn_widths"][0],
                     num_hidden_layers=cfg["num_hidden_layers"], num_attention_heads=cfg["head_counts"][0],
                     num_key_value_heads=cfg["kv_head_counts"][0], head_dim=cfg["head_dim"],
                     vocab_size=cfg["vocab_size"], rms_norm_eps=cfg["rms_norm_eps"], rope_theta=cfg["rope_theta"],
                     max_position_embeddings=cfg["max_position_embeddings"], attention_bias=True, mlp_bias=True,
                     tie_word_embeddings=cfg["tie_word_embeddings"], attn_implementation="eager")
    m = LlamaForCausalLM(hf).double().eval()
    m.load_state_dict(W, strict=True)
    tokens = torch.randint(0, cfg["vocab_size"], (19,), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = m(tokens[None]).logits[0]
    mine, _ = forward(W, cfg, tokens)
    err = (ref - mine).abs().max().item()
    # transformers' LlamaRMSNorm computes in float32 even in a float64 model, so the two agree to
    # float32 precision, not float64.
    assert err < 1e-5, err
    print("reference equals transformers LlamaForCausalLM: max abs diff", err)


def write(name, cfg, W, gen):
    entries = {k: v.float().numpy() for k, v in W.items()}
    meta = {"format": "prunekit-model", "config": json.dumps(cfg, sort_keys=True),
            "producer": "scripts/reference/tiny_model.py"}
    # Canonical order: embedding, each layer in forward order, final norm, head.
    save_file(entries, os.path.join(out, name + ".safetensors"), metadata=meta)
    tokens = torch.randint(0, cfg["vocab_size"], (2, 19), generator=gen)
    logits, losses, hidden0 = [], [], None
    for s in range(2):
        lg, hid = forward(W, cfg, tokens[s])
        logits.append(lg)
        losses.append(torch.nn.functional.cross_entropy(lg[:-1], tokens[s, 1:]).item())
        if s == 0:
            hidden0 = hid
    save_file({"tokens": tokens.numpy().astype(np.int64), "logits": torch.stack(logits).numpy(),
               "loss": np.asarray(losses, dtype=np.float64), "hidden_states": hidden0.numpy()},
              os.path.join(out, name + "_ref.safetensors"))
    print(name, "loss", losses)


def base(**kw):
    cfg = {"architecture": "llama", "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": None,
           "max_position_embeddings": 64, "bos_token_id": 1, "eos_token_id": 2}
    cfg.update(kw)
    return cfg


if __name__ == "__main__":
    gen = torch.Generator().manual_seed(0)
    uni = base(hidden_size=64, num_hidden_layers=2, head_dim=16, head_counts=[4, 4], kv_head_counts=[2, 2],
               ffn_widths=[96, 96], vocab_size=97, tie_word_embeddings=False)
    W = make_weights(uni, {(l, p) for l in range(2) for p in PROJ}, gen)
    check_against_transformers(uni, W)
    write("tiny_uniform", uni, W, gen)
    non = base(hidden_size=48, num_hidden_layers=3, head_dim=8, head_counts=[4, 0, 6], kv_head_counts=[2, 0, 3],
               ffn_widths=[40, 24, 0], vocab_size=61, tie_word_embeddings=True, rope_theta=500000.0,
               rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 32})
    biases = {(0, "self_attn.o_proj"), (0, "mlp.down_proj"), (1, "self_attn.o_proj"),
              (2, "self_attn.q_proj"), (2, "self_attn.k_proj"), (2, "self_attn.v_proj"), (2, "mlp.down_proj")}
    write("tiny_nonuniform", non, make_weights(non, biases, gen), gen)
