#!/usr/bin/env bash
# Methods × ratios (× recovery) on one model: runs each pipeline (or reuses its finished folder), then writes
# out/sweep/results.json (every row: method, ratio, recovery steps, parameters, perplexity per window length,
# zero-shot accuracies and their average, prefill and decode tokens/s), results.md (the same as a markdown table)
# and pareto.svg (perplexity at the longest window and zero-shot average against parameters and against
# measured prefill tokens/s; each panel's Pareto front joined).
#   sweep.sh [MODEL (default: SmolLM2 GGUF)] [RATIOS (default "0.2 0.5")]
# Environment: as pipelines/common.sh (SEQLENS, LIMIT, TASKS, TASK_LIMIT, THREADS, CACHE, SEQUENTIAL); METHODS
# (default "flap wanda-sp cfsp fasp llm-pruner hywia composed"); RECOVER (LoRA steps after pruning, default 0: the folders
# then hold the one-shot and the recovered model, both rows reported); SPEED=0 skips `evaluate --report` (the
# tokens/s columns; about a minute a model); REUSE=0 reruns pipelines whose folder already has a summary;
# SWEEP (output folder, default out/sweep).
# Example: TASKS=all TASK_LIMIT=500 RECOVER=100 pipelines/sweep.sh "" "0.5"
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/blas-env.sh"
model="${1:-}"
ratios="${2:-0.2 0.5}"
methods="${METHODS:-flap wanda-sp cfsp fasp llm-pruner hywia composed}"
recover="${RECOVER:-0}"
sweep="${SWEEP:-$root/out/sweep}"
mkdir -p "$sweep"
(cd "$root" && swift build -c release >&2)
bin="$root/.build/release"
threads=()
[[ -n "${THREADS:-}" ]] && threads=(--threads "$THREADS")
entries=()
first=""
for method in $methods; do
    for ratio in $ratios; do
        out="$root/out/$method-$ratio"
        [[ "$recover" == 0 ]] || out="$out-r$recover"
        if [[ "${REUSE:-1}" == 1 && -f "$out/summary.txt" ]]; then
            echo "== $method $ratio: reusing $out" >&2
        else
            echo "== $method $ratio" >&2
            OUT="$out" RECOVER="$recover" "$root/pipelines/$method.sh" "$model" "$ratio" >&2
        fi
        [[ -n "$first" ]] || first="$out"
        labels=(pruned)
        [[ -f "$out/recovered.st.zst" ]] && labels+=(recovered)
        for label in "${labels[@]}"; do
            if [[ "${SPEED:-1}" == 1 && ! -f "$out/$label-report.json" ]]; then
                "$bin/evaluate" --model "$out/$label.st.zst" --report --json --quiet "${threads[@]}" > "$out/$label-report.json.tmp"
                mv "$out/$label-report.json.tmp" "$out/$label-report.json"
            fi
            entries+=("$method=$ratio=$label=$out")
        done
    done
done
if [[ "${SPEED:-1}" == 1 && ! -f "$first/dense-report.json" ]]; then
    "$bin/evaluate" --model "$first/dense.st" --report --json --quiet "${threads[@]}" > "$first/dense-report.json.tmp"
    mv "$first/dense-report.json.tmp" "$first/dense-report.json"
fi
python3 - "$sweep" "$recover" "dense=—=dense=$first" "${entries[@]}" <<'PY'
import json, os, sys
sweep, recover = sys.argv[1], sys.argv[2]
order = ["boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa"]
def load(path):
    return json.load(open(path)) if os.path.exists(path) else None
rows = []
for item in sys.argv[3:]:
    method, ratio, label, directory = item.split("=", 3)
    seqlens = sorted((int(f[len(label) + 1:-5]) for f in os.listdir(directory)
                      if f.startswith(label + "-") and f[len(label) + 1:-5].isdigit()), reverse=True)
    ppl = {T: load(f"{directory}/{label}-{T}.json") for T in seqlens}
    tasks = load(f"{directory}/{label}-tasks.json")
    report = load(f"{directory}/{label}-report.json")
    params = next((p["parameters"] for p in ppl.values()), None) or (report or {}).get("model", {}).get("parameters")
    metric = lambda r: r["acc_norm"] if "acc_norm" in r else r["acc"]
    rows.append({
        "method": method, "ratio": None if ratio == "—" else float(ratio),
        "recovery_steps": int(recover) if label == "recovered" else 0, "model": label, "parameters": params,
        "perplexity": {str(T): p["perplexity"] for T, p in ppl.items()},
        "zero_shot": {n: metric(r) for n, r in sorted(tasks["tasks"].items(), key=lambda x: order.index(x[0]))} if tasks else {},
        "zero_shot_average": tasks["average"]["acc"] if tasks else None,
        "prefill_tokens_per_second_2048": report["model"]["prefillTokensPerSecond2048"] if report else None,
        "decode_tokens_per_second_128": report["model"]["decodeTokensPerSecond128"] if report else None,
    })
json.dump(rows, open(f"{sweep}/results.json", "w"), indent=1)
lengths = sorted({T for r in rows for T in r["perplexity"]}, key=int, reverse=True)
names = [n for n in order if any(n in r["zero_shot"] for r in rows)]
header = ["method", "ratio", "recovery", "parameters"] + [f"T = {T}" for T in lengths] + names + ["average", "prefill tok/s", "decode tok/s"]
fmt = lambda x, f: "—" if x is None else format(x, f)
lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
for r in rows:
    cells = [r["method"], "—" if r["ratio"] is None else f"{r['ratio']:.0%}",
             f"LoRA {r['recovery_steps']} steps" if r["recovery_steps"] else "—", fmt(r["parameters"], ",")]
    cells += [fmt(r["perplexity"].get(T), ".2f") for T in lengths]
    cells += [fmt(r["zero_shot"].get(n), ".4f") for n in names] + [fmt(r["zero_shot_average"], ".4f")]
    cells += [fmt(r["prefill_tokens_per_second_2048"], ".1f"), fmt(r["decode_tokens_per_second_128"], ".1f")]
    lines.append("| " + " | ".join(cells) + " |")
open(f"{sweep}/results.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))

# The Pareto chart: four panels (x: parameters or prefill tokens/s; y: perplexity (log) or zero-shot average).
def front(points, x_better_small, y_better_small):
    best, out = None, []
    for x, y, r in sorted(points, key=lambda p: p[0] if x_better_small else -p[0]):
        if best is None or (y < best if y_better_small else y > best):
            best = y
            out.append((x, y, r))
    return out
import math
colours = {"dense": "#000000", "flap": "#1f77b4", "wanda-sp": "#ff7f0e", "cfsp": "#2ca02c", "fasp": "#d62728",
           "llm-pruner": "#9467bd", "hywia": "#8c564b", "composed": "#e377c2"}
def ticks(lo, hi, log):
    """Round values inside [lo, hi] (log10 units when log), about four of them: decades, 1-2-5 or 1…9 steps of a
    decade on a log axis (else round steps of the values themselves); 1-2-5 steps on a linear one."""
    if log:
        for mantissas in ((1,), (1, 2, 5), tuple(range(1, 10))):
            values = [k + math.log10(m) for k in range(math.floor(lo), math.ceil(hi) + 1) for m in mantissas]
            inside = [v for v in values if lo - 1e-9 <= v <= hi + 1e-9]
            if len(inside) >= 2:
                return inside
        return [math.log10(v) for v in ticks(10 ** lo, 10 ** hi, False) if v > 0]
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / 4
    step = min((m * 10 ** math.floor(math.log10(raw)) for m in (1, 2, 5, 10)), key=lambda s: abs(s - raw))
    return [round(k * step, 12) for k in range(math.ceil(lo / step), math.floor(hi / step) + 1)]
def label(values, v):
    """v printed with as many decimals as the spacing of the ticks it belongs to needs."""
    step = min((b - a for a, b in zip(values, values[1:])), default=abs(v) or 1)
    return f"{v:,.{max(0, -math.floor(math.log10(step) + 1e-9))}f}"
panels = [("parameters", "parameters", True), ("prefill_tokens_per_second_2048", "prefill tokens/s (T = 2048)", False)]
measures = [(f"perplexity T = {lengths[0]}" if lengths else None, lambda r: r["perplexity"].get(lengths[0]) if lengths else None, True, True),
            ("zero-shot average", lambda r: r["zero_shot_average"], False, False)]
W, H, L, T_, B = 360, 240, 60, 30, 40
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" height="{2 * H + 40}" font-family="sans-serif" font-size="10">',
       '<text x="10" y="14">methods: ' + ", ".join(f'<tspan fill="{c}">{m}</tspan>' for m, c in colours.items())
       + '; hollow: recovered with LoRA; lines join each panel\'s Pareto front</text>']
for pi, (xkey, xname, x_small) in enumerate(panels):
    for mi, (yname, yval, log, y_small) in enumerate(measures):
        ox, oy = pi * W, 20 + mi * H
        pts = [(r[xkey], yval(r), r) for r in rows if r[xkey] is not None and yval(r) is not None]
        if not pts or yname is None:
            svg.append(f'<text x="{ox + L}" y="{oy + H / 2}">{xname}: not measured</text>')
            continue
        xs = [p[0] for p in pts]; ys = [math.log10(p[1]) if log else p[1] for p in pts]
        x0, x1 = min(xs), max(xs); y0, y1 = min(ys), max(ys)
        x1 += (x1 - x0) * 0.05 or 1; x0 -= (x1 - x0) * 0.05 or 1; y1 += (y1 - y0) * 0.08 or 0.1; y0 -= (y1 - y0) * 0.08 or 0.1
        px = lambda x: ox + L + (W - L - 15) * (x - x0) / (x1 - x0)
        py = lambda y: oy + T_ + (H - T_ - B) * (y1 - (math.log10(y) if log else y)) / (y1 - y0)
        svg.append(f'<text x="{ox + L}" y="{oy + 22}">{yname}{" (log)" if log else ""} against {xname}</text>')
        svg.append(f'<line x1="{ox + L}" y1="{oy + H - B}" x2="{ox + W - 15}" y2="{oy + H - B}" stroke="#444"/>')
        svg.append(f'<line x1="{ox + L}" y1="{oy + T_}" x2="{ox + L}" y2="{oy + H - B}" stroke="#444"/>')
        xt = ticks(x0, x1, False)
        unit, suffix = (1e6, "M") if xkey == "parameters" else (1, "")
        for xv in xt:
            xl = label([x / unit for x in xt], xv / unit) + suffix
            svg.append(f'<line x1="{px(xv):.1f}" y1="{oy + T_}" x2="{px(xv):.1f}" y2="{oy + H - B}" stroke="#eee"/>')
            svg.append(f'<text x="{px(xv):.1f}" y="{oy + H - B + 12}" text-anchor="middle">{xl}</text>')
        yt = [10 ** v if log else v for v in ticks(y0, y1, log)]
        for y in yt:
            yl = label(yt, y)
            svg.append(f'<line x1="{ox + L}" y1="{py(y):.1f}" x2="{ox + W - 15}" y2="{py(y):.1f}" stroke="#eee"/>')
            svg.append(f'<text x="{ox + L - 4}" y="{py(y) + 3:.1f}" text-anchor="end">{yl}</text>')
        f = front(pts, x_small, y_small)
        svg.append('<polyline fill="none" stroke="#999" stroke-dasharray="3,2" points="'
                   + " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y, _ in f) + '"/>')
        for x, y, r in pts:
            c = colours.get(r["method"], "#555")
            fill = "none" if r["recovery_steps"] else c
            svg.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" stroke="{c}" fill="{fill}">'
                       f'<title>{r["method"]} {"" if r["ratio"] is None else format(r["ratio"], ".0%")} {r["model"]}</title></circle>')
svg.append("</svg>")
open(f"{sweep}/pareto.svg", "w").write("\n".join(svg) + "\n")
print(f"wrote {sweep}/results.json, results.md, pareto.svg", file=sys.stderr)
PY
