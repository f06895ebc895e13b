#!/usr/bin/env bash
# Sharded calibration: SHARDS runs of `calibrate --shard i/n`, then `calibrate merge` of all n shards
# only if every shard succeeded. pipelines/slurm/README.md explains.
#   calibrate.sh            Slurm: submits an array job (one shard per task) and a merge job that
#                           depends on it (afterok, --kill-on-invalid-dep=yes: a failed task cancels the
#                           merge); prints "ARRAYJOB MERGEJOB" on stdout
#   calibrate.sh --xargs    no Slurm: the shards as local processes (xargs -P JOBS), then the merge
# Environment (paths are made absolute here; the jobs need them readable on every node):
#   MODEL [required], JSONL | TEXT | TOKENS (default JSONL: the C4 sample under PRUNEKIT_DATA, by
#   default ../shared/data), SAMPLES, SEQLEN, SEED, OUTDIR [required], OUTPUT, CALIBRATE_ARGS, as in
#   calibrate-array.sbatch; SHARDS (default 4); PRUNEKIT_BIN (default .build/release of this repository)
#   Slurm: CPUS_PER_TASK (default 1), THREADS (default CPUS_PER_TASK), MEM (sbatch --mem per task,
#   e.g. 2G), TIME (--time), PARTITION, SBATCH_ARGS (more sbatch options for both jobs, split at spaces)
#   --xargs: JOBS (shards at a time, default min(SHARDS, cores)), THREADS (default cores / JOBS)
set -euo pipefail
me="calibrate.sh"
die() { echo "$me: $2" >&2; exit "$1"; }
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
array="$here/calibrate-array.sbatch"

mode="slurm"
case "${1:-}" in
"") ;;
--xargs) mode="xargs" ;;
-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
*) die 64 "unknown argument '$1' (none, --xargs or --help)" ;;
esac

export SHARDS="${SHARDS:-4}"
[[ "$SHARDS" =~ ^[1-9][0-9]*$ ]] || die 64 "SHARDS must be a positive number (got '$SHARDS')"
[[ -n "${MODEL:-}" ]] || die 64 "set MODEL, the model file or folder"
[[ -n "${OUTDIR:-}" ]] || die 64 "set OUTDIR, the folder of the shard files"
if [[ -z "${JSONL:-}${TEXT:-}${TOKENS:-}" ]]; then
    JSONL="${PRUNEKIT_DATA:-$root/../shared/data}/c4/c4-validation-sample-2k.jsonl.zst"
fi
export PRUNEKIT_BIN="${PRUNEKIT_BIN:-$root/.build/release}"
for v in MODEL JSONL TEXT TOKENS PRUNEKIT_BIN; do
    [[ -z "${!v:-}" ]] && continue
    [[ -e "${!v}" ]] || die 66 "$v: no such file or folder: ${!v}"
    export "$v=$(realpath "${!v}")"
done
[[ -x "$PRUNEKIT_BIN/calibrate" ]] || die 66 "no calibrate in $PRUNEKIT_BIN (swift build -c release)"
mkdir -p "$OUTDIR"
OUTDIR="$(realpath "$OUTDIR")"
OUTPUT="$(realpath -m "${OUTPUT:-$OUTDIR/stats.st.zst}")"
export OUTDIR OUTPUT
rm -f "$OUTPUT"  # a merged file is there only if this run's merge wrote it
n="$SHARDS"

if [[ "$mode" == slurm ]]; then
    command -v sbatch > /dev/null || die 69 "no sbatch here: run calibrate.sh --xargs without Slurm"
    export THREADS="${THREADS:-${CPUS_PER_TASK:-1}}"
    read -r -a more <<< "${SBATCH_ARGS:-}"
    opts=(--parsable --export=ALL "${more[@]}")
    [[ -z "${MEM:-}" ]] || opts+=(--mem="$MEM")
    [[ -z "${TIME:-}" ]] || opts+=(--time="$TIME")
    [[ -z "${PARTITION:-}" ]] || opts+=(--partition="$PARTITION")
    aid="$(sbatch "${opts[@]}" --array="0-$((n - 1))" --cpus-per-task="${CPUS_PER_TASK:-1}" \
        --job-name=prunekit-calibrate --output="$OUTDIR/slurm-%A_%a.out" "$array" shard)" ||
        die 70 "could not submit the array job (sbatch says why above)"
    aid="${aid%%;*}"
    [[ "$aid" =~ ^[0-9]+$ ]] || die 70 "sbatch did not return a job id for the array: '$aid'"
    if ! mid="$(sbatch "${opts[@]}" --dependency="afterok:$aid" --kill-on-invalid-dep=yes --cpus-per-task=1 \
        --job-name=prunekit-calibrate-merge --output="$OUTDIR/slurm-%j-merge.out" "$array" merge)"; then
        scancel "$aid" || true
        die 70 "could not submit the merge job; cancelled the array job $aid"
    fi
    mid="${mid%%;*}"
    echo "$me: array job $aid (shards 0-$((n - 1)) of $n), merge job $mid after all of them → $OUTPUT;" \
        "logs $OUTDIR/slurm-*.out; squeue -j $aid,$mid" >&2
    echo "$aid $mid"
    exit 0
fi

cores="$(nproc)"
jobs="${JOBS:-$((n < cores ? n : cores))}"
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || die 64 "JOBS must be a positive number (got '$jobs')"
export THREADS="${THREADS:-$((cores / jobs > 0 ? cores / jobs : 1))}"
status="$(mktemp -d)"
trap 'rm -rf "$status"' EXIT
echo "$me: $n shards, $jobs at a time, $THREADS thread(s) each; logs $OUTDIR/shard-i-of-$n.log" >&2
export array status
# One shard: its log beside its file, its exit code into $status, one line when it ends.
# shellcheck disable=SC2016 # expanded by the inner bash
seq 0 $((n - 1)) | xargs -P "$jobs" -I{} bash -c '
    i="$1" log="$OUTDIR/shard-$1-of-$SHARDS.log" start=$SECONDS
    bash "$array" shard "$i" > "$log" 2>&1 && rc=0 || rc=$?
    echo "$rc" > "$status/$i"
    if ((rc == 0)); then
        echo "calibrate.sh: shard $i/$SHARDS done in $((SECONDS - start)) s" >&2
    fi
    exit 0' _ {}
failed=() why=""
for ((i = 0; i < n; i++)); do
    rc="$(cat "$status/$i" 2> /dev/null || echo "?")"
    if [[ "$rc" != 0 ]]; then
        failed+=("$i")
        [[ -n "$why" ]] || why="shard $i: exit $rc: $(tail -n 1 "$OUTDIR/shard-$i-of-$n.log" 2> /dev/null)"
    fi
done
((${#failed[@]} == 0)) ||
    die 75 "not merging: ${#failed[@]} of $n shards failed ($why; log $OUTDIR/shard-${failed[0]}-of-$n.log)"
exec bash "$array" merge
