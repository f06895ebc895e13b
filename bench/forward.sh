#!/usr/bin/env bash
# The forward pass, in one run on this machine:
#  - effective GFLOP/s of `evaluate` on WikiText-2 at T = 2048 and T = 128 against the sgemm
#    GFLOP/s the same machine reaches on a large square product (prunekit-bench sgemm);
#  - tokens/s and peak memory against transformers (float32, CPU, eager, same windows);
#  - decoding at batch 1 (`evaluate --report`, after 128 and 1024 tokens of context) against the
#    memory-bandwidth bound: the weights' bytes (4 per parameter: every weight is read once a token,
#    the tied embedding whole by the head) over the machine's copy bandwidth (prunekit-bench copy; the
#    stricter bound over its read bandwidth too); the KV cache's bytes are not in the bound;
#  - llama.cpp (scripts/build-llama-cpp.sh; llama-bench on our F32 GGUF export of the same model):
#    prompt processing of 2048 tokens and generation of 128, beside our prefill and decode.
# Usage: bench/forward.sh [MODEL.gguf] [WINDOWS_AT_2048 (default 8)]
source "$(dirname "$0")/setup.sh"
n2048="${2:-8}"
n128=$((n2048 * 16))

run_ours() {  # T windows → "tokens/s GFLOP/s maxrssMB"
    local T=$1 N=$2
    /usr/bin/time -f "%M" -o "$work/rss" "$bin/evaluate" --model "$work/model.st" --ppl wikitext2 \
        --seqlen "$T" --limit "$N" --threads "$threads" --json --quiet > "$work/out.json"
    python3 - "$work/out.json" "$work/rss" "$T" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); rss = int(open(sys.argv[2]).read().split()[-1]) / 1024
T = int(sys.argv[3])
# FLOPs per token: 2 per multiply-add of every linear weight and the head, plus causal attention
# (Q·Kᵀ and P·V over (T+1)/2 keys on average). SmolLM2: C 576, 30 layers, 9 heads of 64, V 49152.
C, L, H, D, F, V, Hkv = 576, 30, 9, 64, 1536, 49152, 3
linear = L * (2 * C * D * (H + Hkv) + 3 * C * F) + V * C
attention = L * 4 * H * D * (T + 1) / 2
flops = r["tokens_evaluated"] * (2 * linear + attention)
print(f'{r["tokens_per_second"]:.0f} {flops / r["seconds"] / 1e9:.1f} {rss:.0f} {r["perplexity"]:.4f}')
PY
}

run_theirs() {
    python3 "$root/scripts/reference/hf_forward_bench.py" "$model" "$1" "$2" "$threads" 2>/dev/null | tail -n 1
}

printf '%-10s %10s %9s %8s %10s | %10s %8s %10s | %7s %7s\n' T "tok/s" "GFLOP/s" "of peak" "RSS MB" \
    "HF tok/s" "HF RSS" "HF ppl" "speed" "memory"
for spec in "2048 $n2048" "128 $n128"; do
    set -- $spec
    read -r tps gf rss ppl <<<"$(run_ours "$1" "$2")"
    read -r htps hrss hppl <<<"$(run_theirs "$1" "$2")"
    python3 -c "print(f'{$1:<10} {$tps:>10} {$gf:>9} {100*$gf/$peak:>7.0f}% {$rss:>10} | {$htps:>10} {$hrss:>8} {$hppl:>10} | {$tps/$htps:>6.2f}x {$rss/$hrss:>6.2f}x   (ppl {$ppl})')"
done

# Decoding against the memory bound, and llama.cpp on the same model.
# This machine's bandwidth drifts by ±20% over minutes (a shared host): it is measured just before
# and just after the decoding figures, and the higher of each (the stricter bound) is used.
bandwidth() { "$bin/prunekit-bench" copy --threads "$threads" | sed -E 's/.*: ([0-9.]+) GB\/s.*/\1/' | tr '\n' ' '; }
read -r copy_before read_before <<<"$(bandwidth)"
"$bin/evaluate" --model "$work/model.st" --report --json --threads "$threads" --quiet > "$work/report.json" 2>/dev/null
read -r copy_after read_after <<<"$(bandwidth)"
copy_bw=$(python3 -c "print(max($copy_before, $copy_after))")
read_bw=$(python3 -c "print(max($read_before, $read_after))")
llama="$("$root/scripts/build-llama-cpp.sh")"
"$bin/convert" "$work/model.st" --to gguf --dtype f32 -o "$work/model.gguf" --quiet
"$llama/llama-bench" -m "$work/model.gguf" -t "$threads" -r 3 -p 2048 -n 128 -o json > "$work/llama.json" 2>/dev/null
python3 - "$work/report.json" "$work/llama.json" "$copy_bw" "$read_bw" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["model"]
llama = json.load(open(sys.argv[2]))
copy_bw, read_bw = float(sys.argv[3]), float(sys.argv[4])
weight_bytes = 4 * r["parameters"]
bound, read_bound = copy_bw * 1e9 / weight_bytes, read_bw * 1e9 / weight_bytes
print(f"\nmemory: copy {copy_bw:.1f} GB/s (read + written), read {read_bw:.1f} GB/s; weights {weight_bytes/1e6:.0f} MB a token")
print(f"decode bound (weights / copy bandwidth, the issue's yardstick): {bound:.1f} tok/s; "
      f"weights / read bandwidth: {read_bound:.1f} tok/s")
for ctx in (128, 1024):
    t = r[f"decode_tokens_per_second_{ctx}"]
    print(f"decode after {ctx:>4} tokens: {t:6.1f} tok/s = {t * weight_bytes / 1e9:5.1f} GB/s of weights; "
          f"the bound is {bound / t:.2f}x this (aim <= 1.5x), the read bound {read_bound / t:.2f}x")
pp = next(x["avg_ts"] for x in llama if x["n_prompt"] == 2048)
tg = next(x["avg_ts"] for x in llama if x["n_gen"] == 128)
ours_pp, ours_tg = r["prefill_tokens_per_second_2048"], r["decode_tokens_per_second_128"]
print(f"llama.cpp ({llama[0].get('build_commit', '?')}, F32 GGUF): pp2048 {pp:.1f} tok/s, tg128 {tg:.1f} tok/s; "
      f"evaluate: prefill T=2048 {ours_pp:.1f} tok/s ({ours_pp / pp:.2f}x), decode {ours_tg:.1f} tok/s ({ours_tg / tg:.2f}x)")
PY

