#!/usr/bin/env bash
# LoRA fine-tuning, in one run on this machine: `finetune` (activations kept and recomputed) against
# PyTorch + PEFT (scripts/reference/hf_finetune_bench.py: transformers' AutoModelForCausalLM, float32,
# CPU, its default attention, from the same GGUF) with the same model, windows, rank, targets, batch
# and sequence length: LoRA r 8, α 16, dropout 0.05 on q,k,v,o,gate,up,down; STEPS optimizer steps of
# BATCH windows of T tokens in micro-batches of MICRO (gradient accumulation); AdamW lr 1e-4 linear to
# 0, no warm-up, weight decay 0, gradient norm clipped at 1; THREADS threads (default 2) for both and
# for the sgemm yardstick. The windows: the first STEPS × BATCH windows of T tokens of WikiText-2's
# train text ($PRUNEKIT_DATA/wikitext-2-raw/wiki.train.raw; wiki.valid.raw when the train split is
# absent, never the test split the evaluations use), tokenised once by `tokenize`, in file order.
#  - tokens/s (B·T a step) over steps 2..STEPS, the first being the warm-up: PyTorch times them in
#    its run; `finetune` reports its training time (loading and writing excluded) but cannot leave
#    out a step, so it runs twice per policy, STEPS steps and 1 step, and the difference of the two
#    training times is its time for steps 2..STEPS (the same first batch in both);
#  - peak memory: the peak RSS of the STEPS run (/usr/bin/time %M; loading included), PyTorch's
#    ru_maxrss (loading included); below the table, each side's peak once loaded, before any step
#    (`finetune --steps 0 --adapters-only`; PyTorch's ru_maxrss after get_peft_model);
#  - effective GFLOP/s against the machine's sgemm: with frozen weights a step costs a forward
#    (2 FLOPs per multiply-add of every linear weight and the tied head: 2·P a token) and the input
#    gradients (2·P a token; no weight gradients), plus causal attention, forward and backward
#    (3× the forward's Q·Kᵀ and P·V over (T+1)/2 keys): 4·P + 3·attention a token. The adapters'
#    own products (r = 8: about 2% of that) and recompute's second forward are not counted;
#  - the batch loss of step 1 and of step STEPS: step 1's is the base model's (B = 0 in both) and
#    should agree to float32 rounding; the last ones differ a little (other initial A, other
#    dropout masks).
# Usage: bench/finetune.sh [MODEL.gguf]   env: STEPS (6, ≥ 2), BATCH (8), MICRO (4), T (256), THREADS (2)
export THREADS="${THREADS:-2}"
source "$(dirname "$0")/setup.sh"
steps="${STEPS:-6}" batch="${BATCH:-8}" micro="${MICRO:-4}" T="${T:-256}"
rank=8 alpha=16 dropout=0.05 lr=1e-4
((steps >= 2)) || { echo "finetune.sh: STEPS must be at least 2 (the first is the warm-up)" >&2; exit 1; }
text="$data/wikitext-2-raw/wiki.train.raw"
[[ -f "$text" ]] || text="$data/wikitext-2-raw/wiki.valid.raw"

# The windows, tokenised once: the first STEPS × BATCH windows of T tokens of the text.
"$bin/tokenize" --model "$model" "$text" > "$work/ids"
python3 - "$work/ids" "$work/windows.st" "$((steps * batch))" "$T" <<'PY'
import sys
import numpy as np
from safetensors.numpy import save_file
ids, path, N, T = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ids = np.array(open(ids).read().split(), dtype=np.int32)
assert len(ids) >= N * T, f"the text gives {len(ids)} tokens, fewer than {N} windows of {T}"
save_file({"tokens": np.ascontiguousarray(ids[:N * T].reshape(N, T))}, path)
PY

ours() {  # steps policy → "$work/ours": "tokens/s last_loss rssMB" (finetune's last stderr line and /usr/bin/time)
    if ! /usr/bin/time -f "%M" -o "$work/rss" "$bin/finetune" --model "$work/model.st" --tokens "$work/windows.st" \
        --steps "$1" --batch "$batch" --micro-batch "$micro" --rank "$rank" --alpha "$alpha" --dropout "$dropout" \
        --no-shuffle --lr "$lr" --activations "$2" --threads "$threads" -o "$work/out.st" > /dev/null 2> "$work/err"; then
        cat "$work/err" >&2
        exit 1
    fi
    line="$(tail -n 1 "$work/err")"
    [[ $line =~ last\ loss\ ([0-9.]+)\;\ training\ [0-9.]+\ s,\ ([0-9.]+)\ tokens/s ]] || { echo "finetune: $line" >&2; exit 1; }
    echo "${BASH_REMATCH[2]} ${BASH_REMATCH[1]} $(( $(tail -n 1 "$work/rss") / 1024 ))" > "$work/ours"
}

python3 "$root/scripts/reference/hf_finetune_bench.py" "$model" "$work/windows.st" "$steps" "$batch" "$micro" \
    "$rank" "$alpha" "$dropout" "$lr" "$threads" > "$work/hf" 2> "$work/hf.err" || { cat "$work/hf.err" >&2; exit 1; }
read -r htps hrss hfirst hlast hattn hloaded < <(tail -n 1 "$work/hf")
/usr/bin/time -f "%M" -o "$work/rss" "$bin/finetune" --model "$work/model.st" --tokens "$work/windows.st" --steps 0 \
    --batch "$batch" --micro-batch "$micro" --threads "$threads" --adapters-only -o "$work/adapters" --quiet
loaded=$(( $(tail -n 1 "$work/rss") / 1024 ))
rows=()
for policy in keep recompute; do
    ours 1 "$policy"
    read -r tps1 first rss1 < "$work/ours"
    ours "$steps" "$policy"
    read -r tps last rss < "$work/ours"
    rows+=("$policy $tps1 $first $tps $last $rss")
done

printf 'LoRA r %s α %s dropout %s on q,k,v,o,gate,up,down; %s steps of %s windows (micro-batches of %s) × %s tokens of %s\n' \
    "$rank" "$alpha" "$dropout" "$steps" "$batch" "$micro" "$T" "$(basename "$text")"
printf 'tokens/s over steps 2..%s; PyTorch %s, transformers attention: %s\n\n' "$steps" \
    "$(python3 -c 'import torch, transformers, peft; print(f"{torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")')" "$hattn"
python3 - "$steps" "$batch" "$T" "$peak" "$htps" "$hrss" "$hfirst" "$hlast" "$loaded" "$hloaded" "${rows[@]}" <<'PY'
import sys
steps, B, T = (int(v) for v in sys.argv[1:4])
peak, htps, hrss, hfirst, hlast, loaded, hloaded = (float(v) for v in sys.argv[4:11])
# SmolLM2: C 576, 30 layers, 9 heads of 64 (3 KV heads), F 1536, V 49152 (tied head).
C, L, H, D, F, V, Hkv = 576, 30, 9, 64, 1536, 49152, 3
linear = L * (2 * C * D * (H + Hkv) + 3 * C * F) + V * C
attention = L * 4 * H * D * (T + 1) / 2
per_token = 4 * linear + 3 * attention
step_tokens = B * T
print(f"{'':<20} {'tok/s':>9} {'GFLOP/s':>8} {'of sgemm':>8} {'peak MB':>8} {'loss 1':>9} {f'loss {steps}':>9} | {'speed':>6} {'memory':>6}")
def row(name, tps, rss, first, last, ratios):
    gf = tps * per_token / 1e9
    print(f"{name:<20} {tps:>9.1f} {gf:>8.1f} {100 * gf / peak:>7.0f}% {rss:>8.0f} {first:>9.4f} {last:>9.4f} | {ratios}")
for r in sys.argv[11:]:
    policy, tps1, first, tps, last, rss = r.split()
    tps1, first, tps, last, rss = float(tps1), float(first), float(tps), float(last), float(rss)
    # finetune's training seconds from its tokens/s (printed to 0.1 s, the rate more finely); the
    # STEPS run's less the 1-step run's is steps 2..STEPS.
    seconds = steps * step_tokens / tps - step_tokens / tps1
    rate = (steps - 1) * step_tokens / seconds if seconds > 0 else float("nan")
    row(f"PruneKit {policy}", rate, rss, first, last, f"{rate / htps:>5.2f}x {rss / hrss:>5.2f}x")
row("PyTorch + PEFT", htps, hrss, hfirst, hlast, f"{'':>6} {'':>6}")
print(f"\npeak RSS once loaded, before any step: PruneKit {loaded:.0f} MB, PyTorch + PEFT {hloaded:.0f} MB")
print("speed: PruneKit's tokens/s ÷ PyTorch's (aim ≥ 1.5x); memory: PruneKit's peak RSS ÷ PyTorch's (aim ≤ 0.5x)")
print(f"FLOPs a token: 4·P + 3·attention = {per_token / 1e6:.1f} M at T = {T} (P = {linear / 1e6:.1f} M weights in products)")
PY
