#!/usr/bin/env bash
# What pruning bought, in one run on this machine: the dense model and the 50% FLAP, CFSP and FASP models
# (pipelines/NAME.sh MODEL 0.5; made first when out/NAME-0.5/pruned.st.zst is missing), each measured by
# `evaluate --report` (parameters, file size, MACs per token, prefill tokens/s at T = 128 and 2048, decode
# tokens/s at batch 1 after 128 and 1024 tokens of context, peak memory) and by llama.cpp's llama-bench on
# our GGUF exports in F32 and Q8_0 (prompt processing of 128 and 2048 tokens, generation of 128 tokens after
# 128 and 1024 of context). llama.cpp is built from source by scripts/build-llama-cpp.sh (about ten minutes,
# once). Nothing else should run on the machine meanwhile.
# Usage: bench/pruned-speed.sh [MODEL.gguf]   Environment: THREADS, OUT (default out: where the pipelines
# leave out/NAME-0.5), METHODS (default "flap cfsp fasp"), RATIO (default 0.5).
source "$(dirname "$0")/setup.sh"
llama="$("$root/scripts/build-llama-cpp.sh")"
outdir="${OUT:-$root/out}"
ratio="${RATIO:-0.5}"
names=(dense) files=("$work/model.st")
for method in ${METHODS:-flap cfsp fasp}; do
    pruned="$outdir/$method-$ratio/pruned.st.zst"
    if [[ ! -f "$pruned" ]]; then
        OUT="$outdir/$method-$ratio" SEQLENS=none "$root/pipelines/$method.sh" "$model" "$ratio" >&2
    fi
    names+=("$method-$ratio") files+=("$pruned")
done

for i in "${!names[@]}"; do
    name="${names[$i]}" file="${files[$i]}"
    "$bin/evaluate" --model "$file" --report --json --threads "$threads" --quiet > "$work/$name.report.json" 2>/dev/null
    pad=()
    [[ "$name" == fasp-* ]] && pad=(--pad-values)  # llama.cpp holds no narrowed value heads
    for dtype in f32 q8_0; do
        "$bin/convert" "$file" --to gguf --dtype "$dtype" "${pad[@]}" -o "$work/$name.$dtype.gguf" --quiet
        "$llama/llama-bench" -m "$work/$name.$dtype.gguf" -t "$threads" -r 2 -p 128,2048 -n 128 -d 0,1024 \
            -o json > "$work/$name.$dtype.llama.json" 2>/dev/null
        rm -f "$work/$name.$dtype.gguf"
    done
done

python3 - "$work" "${names[@]}" <<'PY'
import json, sys
work, names = sys.argv[1], sys.argv[2:]
def llama(name, dtype):
    runs = json.load(open(f"{work}/{name}.{dtype}.llama.json"))
    out = {}
    for r in runs:
        key = ("pp", r["n_prompt"]) if r["n_prompt"] else ("tg", r.get("n_depth", 0))
        if r["n_prompt"] and r.get("n_depth", 0):
            continue
        out[key] = r["avg_ts"]
    return out
rows = []
for name in names:
    rep = json.load(open(f"{work}/{name}.report.json"))["model"]
    rows.append((name, rep, llama(name, "f32"), llama(name, "q8_0")))
dense = rows[0][1]
print("PruneKit (evaluate --report; F32)")
head = f"{'model':<10} {'params':>11} {'file MB':>8} {'GMAC/tok':>9} {'pp128':>8} {'pp2048':>8} {'tg@128':>8} {'tg@1024':>8} {'RSS MB':>7}"
print(head)
for name, r, _, _ in rows:
    print(f"{name:<10} {r['parameters']:>11,} {r['file_bytes']/1e6:>8.1f} {r['macs_per_token_2048']/1e9:>9.4f} "
          f"{r['prefill_tokens_per_second_128']:>8.1f} {r['prefill_tokens_per_second_2048']:>8.1f} "
          f"{r['decode_tokens_per_second_128']:>8.1f} {r['decode_tokens_per_second_1024']:>8.1f} {r['peak_rss_mb']:>7.0f}")
print("\nspeed-ups over dense (PruneKit)")
for name, r, _, _ in rows[1:]:
    ks = ["prefill_tokens_per_second_128", "prefill_tokens_per_second_2048", "decode_tokens_per_second_128",
          "decode_tokens_per_second_1024"]
    print(f"{name:<10} params {r['parameters']/dense['parameters']:.3f}×  " +
          "  ".join(f"{k.split('_')[0]}{k.split('_')[-1]} {r[k]/dense[k]:.2f}×" for k in ks))
for dtype, idx in (("F32", 2), ("Q8_0", 3)):
    print(f"\nllama.cpp llama-bench, {dtype} GGUF (tokens/s; tg = 128 tokens generated after 0 or 1024 of context)")
    print(f"{'model':<10} {'pp128':>8} {'pp2048':>8} {'tg@0':>8} {'tg@1024':>8}   vs dense")
    d = rows[0][idx]
    for row in rows:
        l = row[idx]
        cells = [l.get(("pp", 128)), l.get(("pp", 2048)), l.get(("tg", 0)), l.get(("tg", 1024))]
        ratio = "  ".join(f"{(c or 0)/(d.get(k) or 1):.2f}×" for c, k in zip(cells, [("pp", 128), ("pp", 2048), ("tg", 0), ("tg", 1024)]))
        print(f"{row[0]:<10} " + " ".join(f"{(c or 0):>8.1f}" for c in cells) + f"   {ratio}")
PY
