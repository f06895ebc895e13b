#!/usr/bin/env bash
# calibrate on SmolLM2 in one run on this machine: 1024 windows × 128 tokens and 128 × 2048 drawn
# from the C4 sample. Prints wall time, effective GFLOP/s of the forward pass (the FLOP floor:
# 2 per multiply-add of every decoder-layer weight plus causal attention) against the sgemm
# GFLOP/s this machine reaches, peak memory, and the same statistics captured by forward hooks in
# transformers on the same windows (scripts/reference/hf_calibrate_bench.py).
# Usage: bench/calibrate.sh [MODEL.gguf] [DIVISOR (default 1: the full sizes; 8 = an eighth of the windows)]
source "$(dirname "$0")/setup.sh"
divisor="${2:-1}"
printf '%-12s %9s %9s %8s %8s | %9s %8s | %7s\n' "N × T" "seconds" "GFLOP/s" "of peak" "RSS MB" "HF s" "HF RSS" "speed"
for spec in "128 1024" "2048 128"; do
    set -- $spec
    T=$1 N=$(($2 / divisor))
    /usr/bin/time -f "%e %M" -o "$work/time" "$bin/calibrate" --model "$work/model.st" \
        --jsonl "$data/c4/c4-validation-sample-2k.jsonl.zst" --samples "$N" --seqlen "$T" \
        --dump-windows "$work/windows.st" --threads "$threads" --quiet -o "$work/stats.st.zst"
    read -r seconds rss_kb <"$work/time"
    read -r hf_seconds hf_rss <<<"$(python3 "$root/scripts/reference/hf_calibrate_bench.py" "$model" \
        "$work/windows.st" "$threads" 2>/dev/null | tail -n 1)"
    python3 - "$T" "$N" "$seconds" "$rss_kb" "$peak" "$hf_seconds" "$hf_rss" <<'PY'
import sys
T, N = int(sys.argv[1]), int(sys.argv[2])
seconds, rss, peak, hf_s, hf_rss = (float(v) for v in sys.argv[3:])
# SmolLM2: C 576, 30 layers, 9 heads of 64 (3 KV heads), F 1536; no head in calibration.
C, L, H, Hkv, D, F = 576, 30, 9, 3, 64, 1536
linear = L * (C * D * (2 * H + 2 * Hkv) + 3 * C * F)
flops = N * T * (2 * linear + L * 4 * H * D * (T + 1) / 2)
print(f"{N:>4} × {T:<5} {seconds:>9.1f} {flops / seconds / 1e9:>9.1f} {100 * flops / seconds / 1e9 / peak:>7.0f}% "
      f"{rss / 1024:>8.0f} | {hf_s:>9.1f} {hf_rss:>8.0f} | {hf_s / seconds:>6.2f}x")
PY
done
echo "(seconds include reading the model, tokenising the C4 sample and the fingerprint; the floor is the forward FLOPs at sgemm peak)"
