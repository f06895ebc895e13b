#!/usr/bin/env bash
# Sharded calibration end to end (pipelines/slurm): under a real Slurm — a one-node cluster on
# localhost started here (munged, slurmctld, slurmd; Debian's slurm-wlm and munge, installed with
# apt-get if missing) — and through xargs -P, for SmolLM2 and 4 shards; each merged file is compared
# with one run over the same windows. Then the bad cases: a missing, a repeated and a foreign shard,
# a failed array task (the merge job must be cancelled, not run), a failed local shard. Prints
# PASS/FAIL per check; exits 1 on any failure. Needs root (SlurmUser=root) and the release build.
# Every daemon it starts and its temporary folder are removed on exit.
#   PRUNEKIT_DATA  data folder (default ../shared/data)    KEEP=1  keep the temporary folder
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
data="${PRUNEKIT_DATA:-$root/../shared/data}"
jsonl="$(realpath "$data/c4/c4-validation-sample-2k.jsonl.zst")"
bin="$root/.build/release"
submit="$root/pipelines/slurm/calibrate.sh"
array="$root/pipelines/slurm/calibrate-array.sbatch"
# 4 windows of 2304 tokens: calibrate's batches are 4096 rows, so one window per batch and one
# batch per shard (a shard holds whole batches: --samples 8 --seqlen 128 is one batch, 3 empty shards).
samples=4 seqlen=2304 shards=4
started=$SECONDS

((EUID == 0)) || { echo "slurm-test: run as root (the test cluster's SlurmUser)" >&2; exit 77; }
[[ -x "$bin/calibrate" && -x "$bin/convert" ]] || { echo "slurm-test: build first: swift build -c release" >&2; exit 66; }
if ! command -v slurmctld > /dev/null || ! command -v slurmd > /dev/null || ! command -v munged > /dev/null; then
    echo "slurm-test: installing slurm-wlm and munge" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q slurm-wlm munge > /dev/null || { apt-get update -q > /dev/null && apt-get install -y -q slurm-wlm munge > /dev/null; }
fi
python3 -c 'import numpy' 2> /dev/null || apt-get install -y -q python3-numpy > /dev/null

tmp="$(mktemp -d /tmp/prunekit-slurm-test.XXXXXX)"
chmod 755 "$tmp"  # munged wants every folder above its socket searchable by all
pids=()           # the daemons started here, stopped in reverse order
# The processes of this test cluster's jobs: slurmstepd and the job's own, found by the unique
# SLURM_CONF in their environment (slurmstepd outlives a stopped slurmd and ignores SIGTERM).
job_processes() {
    local p comm
    for p in /proc/[0-9]*; do
        grep -qzxF "SLURM_CONF=$SLURM_CONF" "$p/environ" 2> /dev/null || continue
        read -r comm < "$p/comm" 2> /dev/null || continue
        [[ "$comm" == slurmstepd ]] || grep -qz '^SLURM_JOB_ID=' "$p/environ" 2> /dev/null || continue
        echo "${p#/proc/}"
    done
}
cleanup() {
    local rc=$? p k
    trap - INT TERM
    if [[ -n "${SLURM_CONF:-}" ]] && kill -0 "${pids[1]:-0}" 2> /dev/null; then
        local jobs=()
        read -r -a jobs <<< "$(timeout 10 squeue -h -o %i 2> /dev/null | tr '\n' ' ')" || true
        ((${#jobs[@]} == 0)) || timeout 10 scancel "${jobs[@]}" 2> /dev/null || true
        for _ in $(seq 30); do  # the cancelled jobs' steps report to slurmd before it stops
            [[ -z "$(job_processes)" ]] && break
            sleep 1
        done
    fi
    for ((k = ${#pids[@]} - 1; k >= 0; k--)); do
        p="${pids[k]}"
        if kill "$p" 2> /dev/null; then wait "$p" 2> /dev/null || true; fi
    done
    if [[ -n "${SLURM_CONF:-}" ]]; then
        for p in $(job_processes); do kill -KILL "$p" 2> /dev/null || true; done
    fi
    if [[ "${KEEP:-0}" == 1 ]]; then echo "slurm-test: kept $tmp" >&2; else rm -rf "$tmp"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

failures=0
pass() { echo "PASS  $*"; }
fail() { echo "FAIL  $*"; failures=$((failures + 1)); }
check() { local what="$1"; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }
note() { echo "NOTE  $*"; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Compares two statistics files tensor by tensor: byte-identical, or within calibrate merge's promise
# (docs/DESIGN.md, "Shards": one run to float64 rounding; the tests' |a − e| ≤ 1e-9 + 1e-12·|e|);
# integer tensors and the windows' metadata exactly. One line; exit 1 on a difference.
compare() {
    python3 - "$1" "$2" << 'PY'
import json, struct, sys
import numpy as np
DT = {"F64": np.float64, "F32": np.float32, "I64": np.int64, "I32": np.int32}
def load(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8:8 + n])
    return head.pop("__metadata__", {}), head, raw[8 + n:]
(ma, ha, da), (mb, hb, db) = load(sys.argv[1]), load(sys.argv[2])
keys = ["format", "fingerprint", "samples", "seqlen", "seed", "data_sha256", "windows_sha256", "windows_mode",
        "batch_windows", "windows_in_file", "shards", "shard_count"]
bad = [k for k in keys if ma.get(k) != mb.get(k)]
if bad or sorted(ha) != sorted(hb):
    print(f"metadata {bad} or tensor names differ"); sys.exit(1)
same = close = 0; worst = (0.0, "-")
for name, ea in ha.items():
    eb = hb[name]
    a, b = da[slice(*ea["data_offsets"])], db[slice(*eb["data_offsets"])]
    if ea["dtype"] == eb["dtype"] and ea["shape"] == eb["shape"] and a == b:
        same += 1; continue
    if ea["dtype"][0] == "I" or ea["shape"] != eb["shape"]:
        print(f"{name} differs"); sys.exit(1)
    x = np.frombuffer(a, DT[ea["dtype"]]).astype(np.float64); e = np.frombuffer(b, DT[eb["dtype"]]).astype(np.float64)
    err = np.abs(x - e)
    if not np.all(err <= 1e-9 + 1e-12 * np.abs(e)):
        i = int(np.argmax(err - 1e-12 * np.abs(e)))
        print(f"{name}[{i}]: {x[i]!r} vs {e[i]!r}"); sys.exit(1)
    rel = float(np.max(err / np.maximum(np.abs(e), 1e-300)))
    close += 1
    if rel > worst[0]: worst = (rel, name)
print(f"{len(ha)} tensors: {same} byte-identical, {close} within float64 rounding"
      + (f" (largest relative difference {worst[0]:.1e}, {worst[1]})" if close else ""))
PY
}

# Runs "$@", keeping its stderr in $tmp/err and its exit code in $rc.
rc=0
run() { rc=0; "$@" 2> "$tmp/err" > "$tmp/out" || rc=$?; }
# A refusal: non-zero exit, exactly one line on stderr containing $1, and no file $2.
refused() { ((rc != 0)) && (($(wc -l < "$tmp/err") == 1)) && grep -q -- "$1" "$tmp/err" && [[ ! -e "$2" ]]; }
said() { echo "exit $rc, \"$(tail -n 1 "$tmp/err")\""; }
# Compares $1 with $2 into $compared; true if equal.
compared=""
equal() { local ok=0; compared="$(compare "$1" "$2" 2>&1)" || ok=1; return $ok; }

# The model, converted once so that the tasks do not each dequantise the GGUF.
model="$tmp/smollm2.st"
"$bin/convert" "$("$root/scripts/fetch-model.sh")" -o "$model" --threads 1 --quiet

# --- the cluster ------------------------------------------------------------------------------
# Each daemon in a session of its own, so that an interrupt of this script (Ctrl-C signals the whole
# process group) leaves them to the clean-up, which cancels the jobs before it stops them.
mkdir -p "$tmp/munge" "$tmp/state" "$tmp/spool" "$tmp/log"
chmod 755 "$tmp/munge"
head -c 1024 /dev/urandom > "$tmp/munge/munge.key"
chmod 400 "$tmp/munge/munge.key"
sock="$tmp/munge/munge.sock"
setsid munged -F --key-file="$tmp/munge/munge.key" --socket="$sock" --pid-file="$tmp/munge/munged.pid" \
    --log-file="$tmp/log/munged.log" --seed-file="$tmp/munge/munged.seed" > /dev/null 2>&1 &
pids+=($!)
for _ in $(seq 50); do munge -n -S "$sock" 2> /dev/null | unmunge -S "$sock" > /dev/null 2>&1 && break; sleep 0.2; done
check "munged answers on its own socket" bash -c "munge -n -S '$sock' | unmunge -S '$sock' > /dev/null"

cpus="$(nproc)"
memory="$(slurmd -C | grep -o 'RealMemory=[0-9]*' | cut -d= -f2)"
export SLURM_CONF="$tmp/slurm.conf"
cat > "$SLURM_CONF" << EOF
ClusterName=prunekit-test
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
AuthType=auth/munge
AuthInfo=socket=$sock
CredType=cred/munge
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/log/slurmctld.log
SlurmdLogFile=$tmp/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MinJobAge=900
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=test Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
setsid slurmctld -D -c -f "$SLURM_CONF" > "$tmp/log/slurmctld.out" 2>&1 &
pids+=($!)
setsid slurmd -D -N localhost -f "$SLURM_CONF" > "$tmp/log/slurmd.out" 2>&1 &
pids+=($!)
for _ in $(seq 60); do [[ "$(sinfo -h -o %T 2> /dev/null)" == idle ]] && break; sleep 0.5; done
check "a one-node cluster: $(sinfo -h -o '%P %D node, %c CPUs, %m MB, %T' 2> /dev/null)" \
    test "$(sinfo -h -o %T 2> /dev/null)" == idle
((failures == 0)) || { tail -n 5 "$tmp/log/"*.log >&2; exit 1; }

# States of job $1 (an array: one per task), "TASK=STATE REASON EXIT" per line.
states() {
    [[ -n "$1" ]] || return 0
    scontrol show job -o "$1" 2> /dev/null | awk '{
        for (i = 1; i <= NF; i++) { k = $i; sub(/=.*/, "", k); v = $i; sub(/^[^=]*=/, "", v); m[k] = v }
        print m["ArrayTaskId"] "=" m["JobState"] " " m["Reason"] " " m["ExitCode"]; delete m }' | sort
}
# Waits until no task of job $1 is pending or running (15 minutes at most).
finish() {
    for _ in $(seq 900); do
        states "$1" | grep -q -E '=(PENDING|RUNNING|CONFIGURING|COMPLETING|SUSPENDED) ' || return 0
        sleep 1
    done
    return 1
}

# --- one run and the shards ---------------------------------------------------------------------
common=(MODEL="$model" JSONL="$jsonl" SAMPLES="$samples" SEQLEN="$seqlen" SEED=0 SHARDS="$shards")
t0=$SECONDS
"$bin/calibrate" --model "$model" --jsonl "$jsonl" --samples $samples --seqlen $seqlen --threads 1 --quiet \
    -o "$tmp/single.st"
t_single=$((SECONDS - t0))
note "one run over the $samples windows of $seqlen tokens, 1 thread: $t_single s"

t0=$SECONDS
ids="$(env "${common[@]}" OUTDIR="$tmp/slurm" OUTPUT="$tmp/slurm/merged.st" CPUS_PER_TASK=1 MEM=1G "$submit" 2> "$tmp/err")" || true
aid="" mid=""
read -r aid mid <<< "$ids" || true
check "calibrate.sh submits the array and the merge: jobs $aid, $mid" test -n "${mid:-}"
finish "$mid" || true
t_slurm=$((SECONDS - t0))
tasks="$(states "$aid" | tr '\n' ' ')"
check "the $shards array tasks completed: $tasks" \
    test "$(states "$aid" | grep -c '=COMPLETED None 0:0')" == "$shards"
check "the merge job completed: $(states "$mid")" test "$(states "$mid")" == "=COMPLETED None 0:0"
note "Slurm: $shards shards on $cpus CPUs and the merge, submission to merged file: $t_slurm s"
equal "$tmp/slurm/merged.st" "$tmp/single.st" && ok=1 || ok=0
check "Slurm's merged statistics equal one run's: $compared" test "$ok" == 1

t0=$SECONDS
run env "${common[@]}" OUTDIR="$tmp/xargs" OUTPUT="$tmp/xargs/merged.st" JOBS=2 THREADS=1 "$submit" --xargs
t_xargs=$((SECONDS - t0))
check "calibrate.sh --xargs exits 0 ($(tail -n 1 "$tmp/err"))" test "$rc" == 0
note "xargs -P 2: $shards shards and the merge: $t_xargs s"
equal "$tmp/xargs/merged.st" "$tmp/single.st" && ok=1 || ok=0
check "xargs's merged statistics equal one run's: $compared" test "$ok" == 1
same=1
for ((i = 0; i < shards; i++)); do
    equal "$tmp/slurm/shard-$i-of-$shards.st" "$tmp/xargs/shard-$i-of-$shards.st" && [[ "$compared" == *"byte-identical, 0 within"* ]] || same=0
done
equal "$tmp/slurm/merged.st" "$tmp/xargs/merged.st" && [[ "$compared" == *"byte-identical, 0 within"* ]] || same=0
check "Slurm's and xargs's shard and merged files hold byte-identical tensors" test "$same" == 1

# --- bad cases ----------------------------------------------------------------------------------
shard() { echo "$tmp/slurm/shard-$1-of-$shards.st"; }
bad() {  # a folder with Slurm's shards $@ (of the names given after =, if any)
    local dir="$tmp/bad-$1"; shift
    mkdir -p "$dir"
    for spec in "$@"; do cp "$(shard "${spec%%=*}")" "$dir/shard-${spec##*=}-of-$shards.st"; done
    echo "$dir"
}
merge_in() { run env OUTDIR="$1" SHARDS=$shards OUTPUT="$1/merged.st" PRUNEKIT_BIN="$bin" bash "$array" merge; }

dir="$(bad missing 0 1 3)"
merge_in "$dir"
check "the merge step refuses a missing shard: $(said)" refused "shard file(s) 2 of 4 missing" "$dir/merged.st"
run "$bin/calibrate" merge "$(shard 0)" "$(shard 1)" "$(shard 3)" -o "$tmp/partial.st"
check "calibrate merge refuses a missing shard: $(said)" refused "shard 2 of 4 is missing" "$tmp/partial.st"

dir="$(bad repeated 0 1 1=2 3)"
merge_in "$dir"
check "the merge step refuses a repeated shard (shard 1 named shard 2): $(said)" refused "is not shard 2 of 4" "$dir/merged.st"
run "$bin/calibrate" merge "$(shard 0)" "$(shard 1)" "$(shard 1)" "$(shard 2)" "$(shard 3)" -o "$tmp/repeated.st"
check "calibrate merge refuses a repeated shard: $(said)" refused "shard 1 is given twice" "$tmp/repeated.st"

dir="$(bad seed 0 1 3)"
run env "${common[@]}" SEED=1 OUTDIR="$dir" PRUNEKIT_BIN="$bin" THREADS=1 bash "$array" shard 2
check "shard 2 of the windows of seed 1 computed (exit $rc)" test "$rc" == 0
merge_in "$dir"
check "the merge step refuses a shard of another seed: $(said)" refused "differ in seed" "$dir/merged.st"

dir="$(bad seqlen 0 1 2)"
run env "${common[@]}" SAMPLES=8 SEQLEN=128 OUTDIR="$dir" PRUNEKIT_BIN="$bin" THREADS=1 bash "$array" shard 3
check "shard 3 of 8 windows of 128 tokens computed (exit $rc)" test "$rc" == 0
merge_in "$dir"
check "the merge step refuses a shard of other windows: $(said)" refused "differ in samples" "$dir/merged.st"

# A task given a bad model path: a calibrate that swaps the model of shard 2 for a missing file.
mkdir -p "$tmp/badbin"
cat > "$tmp/badbin/calibrate" << EOF
#!/usr/bin/env bash
args=("\$@")
if [[ " \$* " == *" --shard 2/$shards "* ]]; then
    for k in "\${!args[@]}"; do [[ "\${args[k]}" != --model ]] || args[k + 1]="$tmp/no-such-model.st"; done
fi
exec "$bin/calibrate" "\${args[@]}"
EOF
chmod +x "$tmp/badbin/calibrate"
ids="$(env "${common[@]}" OUTDIR="$tmp/failed" OUTPUT="$tmp/failed/merged.st" PRUNEKIT_BIN="$tmp/badbin" "$submit" 2> /dev/null)" || true
aid="" mid=""
read -r aid mid <<< "$ids" || true
check "calibrate.sh submits the array and the merge: jobs $aid, $mid" test -n "$mid"
finish "$aid" || true
for _ in $(seq 30); do [[ "$(states "$mid")" == =PENDING* ]] || break; sleep 1; done
check "array task 2 failed, the others completed: $(states "$aid" | tr '\n' ' ')" \
    test "$(states "$aid" | grep -c '=COMPLETED None 0:0') $(states "$aid" | grep -c '^2=FAILED')" == "$((shards - 1)) 1"
log="$(ls "$tmp/failed/slurm-${aid}_2.out" 2> /dev/null || true)"
check "the failed task's log says why in one line: $(grep -v '^calibrate-array: shard' "$log" 2> /dev/null | tail -n 1)" \
    test "$(grep -v '^calibrate-array: shard' "$log" 2> /dev/null | grep -c 'no-such-model')" == 1
check "the merge job was cancelled without running: $(states "$mid")" \
    test "$(states "$mid")" == "=CANCELLED DependencyNeverSatisfied 0:0"
check "no merged file, no merge log" test ! -e "$tmp/failed/merged.st" -a ! -e "$tmp/failed/slurm-$mid-merge.out"
# Recovery as the README says: the failed task alone again (SHARDS, not the array's task count), then the merge.
j="$(env "${common[@]}" OUTDIR="$tmp/failed" PRUNEKIT_BIN="$bin" THREADS=1 sbatch --parsable --export=ALL --array=2 \
    --output="$tmp/failed/slurm-%A_%a.out" "$array" 2> /dev/null)" || true
k="$(env OUTDIR="$tmp/failed" SHARDS="$shards" OUTPUT="$tmp/failed/merged.st" PRUNEKIT_BIN="$bin" sbatch --parsable \
    --export=ALL --dependency="afterok:$j" --kill-on-invalid-dep=yes --output="$tmp/failed/slurm-%j-merge.out" \
    "$array" merge 2> /dev/null)" || true
finish "$k" || true
equal "$tmp/failed/merged.st" "$tmp/single.st" && ok=1 || ok=0
check "task 2 resubmitted alone, then merged ($(states "$j") $(states "$k")): equal to one run" test "$ok" == 1

# Without --kill-on-invalid-dep the merge would wait forever (Slurm 22.05: pending, DependencyNeverSatisfied).
j="$(sbatch --parsable -o /dev/null --wrap false)"
k="$(sbatch --parsable -o /dev/null --dependency="afterok:$j" --wrap true)"
finish "$j" || true
for _ in $(seq 30); do [[ "$(states "$k")" == *DependencyNeverSatisfied* ]] && break; sleep 1; done
check "without --kill-on-invalid-dep a dependent of a failed job stays: $(states "$k")" \
    test "$(states "$k")" == "=PENDING DependencyNeverSatisfied 0:0"
scancel "$k"

# The same failure without Slurm: shards 0-2 of 8 windows of 128 tokens are empty (one batch).
run env "${common[@]}" SAMPLES=8 SEQLEN=128 OUTDIR="$tmp/xfailed" OUTPUT="$tmp/xfailed/merged.st" JOBS=2 \
    THREADS=1 "$submit" --xargs
grep -v '^calibrate.sh: \(shard .* done\|[0-9]* shards,\)' "$tmp/err" > "$tmp/err2" || true
mv "$tmp/err2" "$tmp/err"
check "calibrate.sh --xargs does not merge when shards fail: $(said)" refused "not merging: 3 of 4 shards failed" \
    "$tmp/xfailed/merged.st"

echo "slurm-test: $((SECONDS - started)) s in all (one run $t_single s, Slurm $t_slurm s, xargs $t_xargs s);" \
    "$failures failure(s)"
((failures == 0))
