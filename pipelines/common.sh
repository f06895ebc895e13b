# Shared by the pipelines: arguments, the build, the dense model file, evaluation and the summary.
# A pipeline sets NAME and defines run_pipeline (which writes "$out/pruned.st.zst"), then sources this.
#   pipelines/NAME.sh [MODEL (default: SmolLM2 GGUF)] [RATIO (default 0.2)] [CALIBRATION JSONL (default: the C4 sample)]
# Environment: SEQUENTIAL (1: calibrate --sequential, each layer measured on the pruned outputs of the layers
# before it; 0: one pass on the dense model; each pipeline's default is its paper's code's), OUT (output folder,
# default out/NAME-RATIO, out/NAME-RATIO-seq or -onepass when SEQUENTIAL differs from the pipeline's default), SEQLENS (evaluation window lengths, default "2048 128"),
# LIMIT (evaluate only the first N windows, default all; one number for every length, or one per SEQLENS entry:
# SEQLENS="2048 128" LIMIT="32 512"; SEQLENS=none skips perplexity), TASKS (zero-shot
# tasks for evaluate --tasks, e.g. "all"; default none), TASK_LIMIT (the first N items of each task), THREADS, CACHE (default out/cache: calibration
# statistics and evaluations are kept there, keyed by the contents of the model file, the data and the tool's
# binary and by the arguments, and reused by later runs; CACHE=none turns it off), RECOVER (LoRA recovery after
# pruning, finetune --steps: batches of RECOVER_BATCH (default 16) C4 windows of RECOVER_SEQLEN tokens (default 256),
# r 8 on all seven projections, learning rate RECOVER_LR (default 2e-3, linear to 0: the best of 1e-4, 4e-4, 1e-3
# and 2e-3 for 30 steps in the README's "Recovery"; finetune's own default, LLM-Pruner's 1e-4, is for its two epochs
# of Alpaca), ranks uniform or, where the pipeline says so, importance-guided; RECOVER_BUDGET=uniform|importance).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/blas-env.sh"
data="${PRUNEKIT_DATA:-$root/../shared/data}"
model="${1:-}"
ratio="${2:-0.2}"
calib="${3:-$data/c4/c4-validation-sample-2k.jsonl.zst}"
[[ -n "$model" ]] || model="$("$root/scripts/fetch-model.sh")"
sequential="${SEQUENTIAL:-${SEQUENTIAL_DEFAULT:-0}}"
[[ "$sequential" == 0 || "$sequential" == 1 ]] || { echo "SEQUENTIAL must be 0 or 1" >&2; exit 64; }
suffix=""
[[ "$sequential" == "${SEQUENTIAL_DEFAULT:-0}" ]] || suffix=$([[ "$sequential" == 1 ]] && echo -seq || echo -onepass)
recover="${RECOVER:-0}"
[[ "$recover" =~ ^[0-9]+$ ]] || { echo "RECOVER must be a number of steps" >&2; exit 64; }
recover_budget="${RECOVER_BUDGET:-${RECOVER_BUDGET_DEFAULT:-uniform}}"
[[ "$recover_budget" == uniform || "$recover_budget" == importance ]] || { echo "RECOVER_BUDGET must be uniform or importance" >&2; exit 64; }
recover_lr="${RECOVER_LR:-2e-3}"
if [[ "$recover" != 0 ]]; then
    suffix="$suffix-r$recover"
    [[ "$recover_budget" == "${RECOVER_BUDGET_DEFAULT:-uniform}" ]] || suffix="$suffix-$recover_budget"
fi
out="${OUT:-$root/out/$NAME-$ratio$suffix}"
seqlens="${SEQLENS:-2048 128}"
[[ "$seqlens" == none ]] && seqlens=""
tasks="${TASKS:-}"
task_limit=()
[[ -n "${TASK_LIMIT:-}" ]] && task_limit=(--limit "$TASK_LIMIT")
mkdir -p "$out"
(cd "$root" && swift build -c release >&2)
bin="$root/.build/release"
threads=()
[[ -n "${THREADS:-}" ]] && threads=(--threads "$THREADS")
read -r -a limits <<< "${LIMIT:-}"
read -r -a lengths <<< "$seqlens"
[[ ${#limits[@]} -le 1 || ${#limits[@]} -eq ${#lengths[@]} ]] || { echo "LIMIT must be one number or one per SEQLENS entry" >&2; exit 64; }
for n in "${limits[@]}"; do [[ "$n" =~ ^[0-9]+$ ]] || { echo "LIMIT must be a number of windows, not $n" >&2; exit 64; }; done
limit_for() {  # T → the --limit arguments of evaluation at window length T (none: every window)
    local i
    [[ ${#limits[@]} -eq 0 ]] && return 0
    [[ ${#limits[@]} -eq 1 ]] && { echo --limit "${limits[0]}"; return 0; }
    for i in "${!lengths[@]}"; do [[ "${lengths[$i]}" == "$1" ]] && echo --limit "${limits[$i]}"; done
    return 0
}

cache="${CACHE:-$root/out/cache}"
[[ "$cache" == none ]] || mkdir -p "$cache"
reused=()

cache_key() {  # FILE... -- ARG... → a digest of the files' contents (a directory: of its files') and of the arguments
    local parts=() f
    while [[ $# -gt 0 && "$1" != -- ]]; do  # contents, not times: provisioned data gets fresh times every session
        f="$(realpath "$1")"
        if [[ -d "$f" ]]; then
            parts+=("$(cd "$f" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-64)")
        else
            parts+=("$(sha256sum < "$f" | cut -c1-64)")
        fi
        shift
    done
    shift
    printf '%s\n' "${parts[@]}" "$@" | sha256sum | cut -c1-16
}

cached() {  # KEY OUTPUT COMMAND... : runs COMMAND (which writes OUTPUT) unless the cache holds KEY
    local key="$1" output="$2"; shift 2
    if [[ "$cache" != none && -f "$cache/$key" ]]; then
        echo "reusing $cache/$key for $(basename "$output")" >&2
        cp "$cache/$key" "$output"
        reused+=("$(basename "$output")")
        return
    fi
    "$@"
    if [[ "$cache" != none ]]; then cp "$output" "$cache/$key.tmp" && mv "$cache/$key.tmp" "$cache/$key"; fi
}

sequential_recipe() {  # RECIPE ARGUMENTS → calibrate's --sequential and the recipe, when SEQUENTIAL=1
    [[ "$sequential" == 1 ]] && echo --sequential "$@"
    return 0
}

llm_pruner_layers() {  # → "A-B": LLM-Pruner's pruned layers 4..29 of LLaMA-7B's 32, scaled to the model's depth
    local layers
    layers=$(python3 -c "
import json, struct, sys
f = open(sys.argv[1], 'rb'); n = struct.unpack('<Q', f.read(8))[0]
print(json.loads(json.loads(f.read(n))['__metadata__']['config'])['num_hidden_layers'])" "$out/dense.st")
    echo "$(( (4 * layers + 16) / 32 ))-$(( (30 * layers + 16) / 32 - 1 ))"
}

stats_inputs=()  # files an argument of calibrate_stats names (a --widths plan): their contents enter the cache key
calibrate_stats() {  # CALIBRATE ARGUMENTS... → $out/stats.st.zst (the model is $out/dense.st, the data $calib)
    # the key has the run folder's path taken out of the arguments (a --widths plan there enters by its contents), so
    # another folder's run of the same recipe — a recovery variant's — reuses the statistics
    local key_args=("${@//"$out"/OUT}")
    cached "stats-$(cache_key "$model" "$calib" "$bin/calibrate" "${stats_inputs[@]}" -- "${key_args[@]}" "${threads[@]}")" "$out/stats.st.zst" \
        /usr/bin/time -f %M -o "$out/calibrate.rss" \
        "$bin/calibrate" --model "$out/dense.st" --jsonl "$calib" "$@" "${threads[@]}" --quiet -o "$out/stats.st.zst"
}

cfsp_plan() {  # [CALIBRATE ARGUMENTS...] → $out/plan.st.zst from $out/stats.st.zst (the dense pass): CFSP's channel
    # scores and angular block budgets (MLP channels, multiples of 128). With SEQUENTIAL=1 the budgets are kept
    # (budgets.st.zst; the dense statistics become dense-stats.st.zst) and each block's channels are chosen on a
    # sequential calibration of 128 windows of 2048 tokens, with the ARGUMENTS added (a recipe's --restore, say).
    "$bin/score" --model "$out/dense.st" --stats "$out/stats.st.zst" --metric cfsp --quiet -o "$out/scores.st.zst"
    "$bin/allocate" --scores "$out/scores.st.zst" --ratio "$ratio" --blocks angular --prune mlp --round 128 \
        --plot "$out/plan.svg" -o "$out/plan.st.zst"
    [[ "$sequential" == 1 ]] || return 0
    mv "$out/plan.st.zst" "$out/budgets.st.zst"
    mv "$out/stats.st.zst" "$out/dense-stats.st.zst"
    stats_inputs=("$out/budgets.st.zst")
    calibrate_stats --samples 128 --seqlen 2048 "$@" \
        --sequential --metric cfsp --ratio "$ratio" --widths "$out/budgets.st.zst" --prune mlp
    "$bin/score" --model "$out/dense.st" --stats "$out/stats.st.zst" --metric cfsp --quiet -o "$out/scores.st.zst"
    "$bin/allocate" --scores "$out/scores.st.zst" --ratio "$ratio" --widths "$out/budgets.st.zst" --prune mlp \
        --plot "$out/plan.svg" -o "$out/plan.st.zst"
}

# Evaluations are cached too, the dense model's by its source file, any other by the model's fingerprint (its
# weights and configuration; the file's bytes also hold the paths it was made with): a pruned model that another run
# already made and evaluated — a recovery run's, say — is not evaluated again.
model_fingerprint() {  # MODEL FILE (.st or .st.zst) → the fingerprint in its header
    { if [[ "$1" == *.zst ]]; then zstd -dcq "$1" 2> /dev/null || true; else cat "$1"; fi; } | python3 -c '
import json, struct, sys
f = sys.stdin.buffer
n = struct.unpack("<Q", f.read(8))[0]
print(json.loads(f.read(n))["__metadata__"]["fingerprint"])'
}
eval_key() {  # MODEL LABEL DATA BINARY -- ARG... → the cache key of an evaluation
    local file="$1" label="$2" data_file="$3"
    shift 3
    if [[ "$label" == dense ]]; then
        local prefix=dense
        [[ "$data_file" == "$data/tasks" ]] && prefix=tasks
        echo "$prefix-$(cache_key "$model" "$data_file" "$@")"
    else
        local prefix=eval
        [[ "$data_file" == "$data/tasks" ]] && prefix=eval-tasks
        echo "$prefix-$(cache_key "$data_file" "$@" "fingerprint=$(model_fingerprint "$file")")"
    fi
}

evaluate_all() {  # MODEL LABEL → $out/LABEL-T.json for every T
    local limit
    for T in $seqlens; do
        read -r -a limit <<< "$(limit_for "$T")"
        cached "$(eval_key "$1" "$2" "$data/wikitext-2-raw/wiki.test.raw" "$bin/evaluate" -- "$T" "${limit[@]}" "${threads[@]}")" \
            "$out/$2-$T.json" sh -c '"$@" > "$0"' "$out/$2-$T.json" \
            "$bin/evaluate" --model "$1" --ppl wikitext2 --seqlen "$T" "${limit[@]}" "${threads[@]}" --json --quiet
    done
}

evaluate_tasks() {  # MODEL LABEL → $out/LABEL-tasks.json
    [[ -n "$tasks" ]] || return 0
    cached "$(eval_key "$1" "$2" "$data/tasks" "$bin/evaluate" -- "$tasks" "${task_limit[@]}" "${threads[@]}")" \
        "$out/$2-tasks.json" sh -c '"$@" > "$0"' "$out/$2-tasks.json" \
        "$bin/evaluate" --model "$1" --tasks "$tasks" "${task_limit[@]}" "${threads[@]}" --json --quiet
}

summary() {
    python3 - "$out" "$seqlens" "$NAME" "$ratio" "$prune_seconds" "${reused[*]}" "$tasks" "${TASK_LIMIT:-}" "$sequential" \
        "$prune_rss" "${labels[*]}" "$recover" "${recover_seconds:-0}" "$recover_budget" "$(cat "$out/finetune.rss" 2>/dev/null || true)" "$recover_lr" <<'PY'
import json, sys
out, seqlens, name, ratio, seconds = sys.argv[1], sys.argv[2].split(), sys.argv[3], sys.argv[4], float(sys.argv[5])
stats_reused = "stats.st.zst" in sys.argv[6].split()
tasks, task_limit = sys.argv[7], sys.argv[8]
procedure = "sequential" if sys.argv[9] == "1" else "one pass"
rss = f", calibrate's peak memory {int(sys.argv[10]) / 1024:.0f} MB" if sys.argv[10] else ""
note = ", calibration statistics reused from the cache, not included" if stats_reused else ""
labels = sys.argv[11].split()
print(f"{name} at ratio {ratio}, {procedure} (pruning wall time {seconds:.0f} s{rss}{note})")
if "recovered" in labels:
    ft_rss = f", peak memory {int(sys.argv[15]) / 1024:.0f} MB" if sys.argv[15] else ""
    print(f"recovered: LoRA, {sys.argv[12]} steps, {sys.argv[14]} ranks, learning rate {sys.argv[16]} "
          f"({float(sys.argv[13]):.0f} s{ft_rss})")
if seqlens:
    rows = []
    for label in labels:
        r = [json.load(open(f"{out}/{label}-{T}.json")) for T in seqlens]
        rows.append((label, r[0]["parameters"], [x["perplexity"] for x in r]))
    subsets = []
    for T in seqlens:
        r0 = json.load(open(f"{out}/dense-{T}.json"))
        if r0["tokens_evaluated"] < r0["dataset_tokens"] - int(T):
            subsets.append(f"first {r0['windows']} windows at T={T}: {r0['tokens_evaluated']:,} of {r0['dataset_tokens']:,} tokens")
    print("WikiText-2 perplexity" + (", " + "; ".join(subsets) if subsets else ""))
    print(f"{'model':<9} {'parameters':>12} " + " ".join(f"{'T=' + T:>10}" for T in seqlens))
    for label, params, ppl in rows:
        print(f"{label:<9} {params:>12} " + " ".join(f"{p:>10.3f}" for p in ppl))
if tasks:
    results = {label: json.load(open(f"{out}/{label}-tasks.json")) for label in labels}
    order = ["boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa"]
    names = sorted(results["dense"]["tasks"], key=order.index)
    metric = lambda r: r["acc_norm"] if "acc_norm" in r else r["acc"]
    print(f"zero-shot accuracy (acc_norm where the task reports it, else acc"
          + (f"; the first {task_limit} items of each task)" if task_limit else "; every item)"))
    print(f"{'model':<9} " + " ".join(f"{n[:10]:>10}" for n in names) + f" {'average':>10}")
    for label, r in results.items():
        print(f"{label:<9} " + " ".join(f"{metric(r['tasks'][n]):>10.4f}" for n in names)
              + f" {r['average']['acc']:>10.4f}")
PY
}

# The dense model as a PruneKit file: converted once into the cache and hard-linked into each run's folder (every
# run would otherwise hold its own 0.5 GB copy of SmolLM2); a copy where no link can be made.
if [[ "$cache" != none ]]; then
    dense_key="model-$(cache_key "$model" "$bin/convert" --)"
    [[ -f "$cache/$dense_key" ]] || { "$bin/convert" "$model" -o "$cache/$dense_key.tmp" --quiet && mv "$cache/$dense_key.tmp" "$cache/$dense_key"; }
    rm -f "$out/dense.st"
    ln "$cache/$dense_key" "$out/dense.st" 2> /dev/null || cp "$cache/$dense_key" "$out/dense.st"
else
    "$bin/convert" "$model" -o "$out/dense.st" --quiet
fi
start=$(date +%s)
rm -f "$out/calibrate.rss" "$out/dense-stats.st.zst" "$out/budgets.st.zst"
run_pipeline
prune_seconds=$(( $(date +%s) - start ))
prune_rss="$(cat "$out/calibrate.rss" 2>/dev/null || true)"  # calibrate's peak resident KB (the largest stage)
labels=(dense pruned)
if [[ "$recover" != 0 ]]; then
    budget=()
    # the dense model's block importance (a sequential CFSP run keeps it beside its own statistics)
    budget_stats="$out/stats.st.zst"
    [[ -f "$out/dense-stats.st.zst" ]] && budget_stats="$out/dense-stats.st.zst"
    [[ "$recover_budget" == importance ]] && budget=(--budget-by "$budget_stats")
    start=$(date +%s)
    /usr/bin/time -f %M -o "$out/finetune.rss" \
        "$bin/finetune" --model "$out/pruned.st.zst" --jsonl "$calib" --steps "$recover" --batch "${RECOVER_BATCH:-16}" \
            --micro-batch 4 --seqlen "${RECOVER_SEQLEN:-256}" --lr "$recover_lr" "${budget[@]}" \
            --plot "$out/recovery.svg" "${threads[@]}" --quiet -o "$out/recovered.st.zst"
    recover_seconds=$(( $(date +%s) - start ))
    labels+=(recovered)
fi
for label in "${labels[@]}"; do
    model_file="$out/$label.st.zst"
    [[ "$label" == dense ]] && model_file="$out/dense.st"
    evaluate_all "$model_file" "$label"
done
for label in "${labels[@]}"; do
    model_file="$out/$label.st.zst"
    [[ "$label" == dense ]] && model_file="$out/dense.st"
    evaluate_tasks "$model_file" "$label"
done
summary | tee "$out/summary.txt"
