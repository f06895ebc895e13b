#!/usr/bin/env bash
# The backward pass, in one run on this machine: forward + backward of the language-model loss on
# SmolLM2 over the first N windows of T tokens of WikiText-2 (T = 128 and 1024), in batches of
# 2048/T windows after one warm-up batch:
#  - tokens/s and peak memory of ours (`prunekit-bench backward`, activations kept and recomputed)
#    against transformers' autograd (float32, CPU) on the same windows and batches;
#  - effective GFLOP/s against the machine's sgemm: a forward's FLOPs (every linear weight and the
#    tied head, 2 per multiply-add, and causal attention) times 3 (the backward is twice the
#    forward), whatever the policy — recomputing costs a fourth forward that is not counted.
# Usage: bench/backward.sh [MODEL.gguf] [WINDOWS_AT_1024 (default 4)]
source "$(dirname "$0")/setup.sh"
n1024="${2:-4}"
n128=$((n1024 * 8))

flops() {  # T N seconds → effective GFLOP/s (SmolLM2's shapes)
    python3 -c "
T, N, s = $1, $2, $3
C, L, H, D, F, V, Hkv = 576, 30, 9, 64, 1536, 49152, 3
linear = L * (2 * C * D * (H + Hkv) + 3 * C * F) + V * C
attention = L * 4 * H * D * (T + 1) / 2
print(f'{3 * N * T * (2 * linear + attention) / s / 1e9:.1f}')"
}

ours() {  # T N keep → "tokens/s seconds loss rssMB"
    /usr/bin/time -f "%M" -o "$work/rss" "$bin/prunekit-bench" backward "$work/model.st" --T "$1" --N "$2" \
        --keep "$3" --threads "$threads" > "$work/out" 2>/dev/null
    sed -E 's/.*: ([0-9.]+) tokens\/s, ([0-9.]+) s, mean loss ([0-9.]+)/\1 \2 \3/' "$work/out" | tr '\n' ' '
    echo "$(( $(tail -n 1 "$work/rss") / 1024 ))"
}

printf '%-6s %-10s %9s %9s %8s %8s %10s | %9s %8s %10s | %6s %7s\n' T policy "tok/s" "GFLOP/s" "of sgemm" "RSS MB" \
    loss "HF tok/s" "HF RSS" "HF loss" speed memory
for spec in "128 $n128" "1024 $n1024"; do
    set -- $spec
    read -r htps hrss hloss <<<"$(python3 "$root/scripts/reference/hf_backward_bench.py" "$model" "$1" "$2" "$threads" 2>/dev/null | tail -n 1)"
    for keep in 1 0; do
        read -r tps secs loss rss <<<"$(ours "$1" "$2" "$keep")"
        gf=$(flops "$1" "$2" "$secs")
        policy=$([[ $keep == 1 ]] && echo keep || echo recompute)
        python3 -c "print(f'{$1:<6} {\"$policy\":<10} {$tps:>9} {$gf:>9} {100*$gf/$peak:>7.0f}% {$rss:>8} {$loss:>10.5f} | {$htps:>9} {$hrss:>8} {$hloss:>10.5f} | {$tps/$htps:>5.2f}x {$rss/$hrss:>6.2f}x')"
    done
done
