#!/usr/bin/env bash
# Kills every stage with SIGKILL at random moments and checks what is left: the output path must be
# absent or hold a complete file (the previous run's: every stage is deterministic, so the bytes of the
# reference run), and after the next, uninterrupted run no temporary file may remain beside it. Then a
# read-only output folder, a missing input, a directory given as a file and standard input closed early:
# each one line on stderr, the documented exit code, nothing written.
#   scripts/fault-injection.sh [KILLS (default 20)]
# Works on the tiny test model (Tests/Fixtures/model/tiny_uniform.safetensors) with enough windows that
# each stage runs for a fraction of a second; the release build in .build/release.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
kills="${1:-20}"
(cd "$root" && swift build -c release >&2)
bin="$root/.build/release"
work="$(mktemp -d)"
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
cd "$work"
model="$root/Tests/Fixtures/model/tiny_uniform.safetensors"
python3 - <<'PY'
import numpy as np
from safetensors.numpy import save_file
rng = np.random.RandomState(0)
save_file({"tokens": rng.randint(0, 97, size=(512, 64)).astype(np.int32)}, "windows.st")
PY
"$bin/convert" "$model" -o dense.st.zst --quiet
"$bin/calibrate" --model dense.st.zst --tokens windows.st --gram o_proj,down_proj -o stats.st --quiet
"$bin/score" --model dense.st.zst --stats stats.st --metric fasp -o scores.st --quiet
"$bin/allocate" --scores scores.st --ratio 0.3 --structure UL-UM --attention-unit vo -o plan.st --quiet
"$bin/slice" --model dense.st.zst --plan plan.st -o sliced.st --quiet

stages=(
    "convert|out.st.zst|$bin/convert $work/dense.st.zst -o out.st.zst --quiet"
    "calibrate|out.st|$bin/calibrate --model $work/dense.st.zst --tokens $work/windows.st --gram o_proj,down_proj -o out.st --quiet"
    "calibrate-gradients|out.st|$bin/calibrate --model $work/dense.st.zst --tokens $work/windows.st --gradients first -o out.st --quiet"
    "score|out.st|$bin/score --model $work/dense.st.zst --stats $work/stats.st --metric fasp -o out.st --quiet"
    "allocate|out.st|$bin/allocate --scores $work/scores.st --ratio 0.3 --structure UL-UM --attention-unit vo -o out.st --quiet"
    "slice|out.st|$bin/slice --model $work/dense.st.zst --plan $work/plan.st -o out.st --quiet"
    "restore|out.st|$bin/restore --model $work/sliced.st --dense $work/dense.st.zst --stats $work/stats.st --plan $work/plan.st --method lsq -o out.st --quiet"
    "finetune|out.st|$bin/finetune --model $work/sliced.st --tokens $work/windows.st --steps 4 --batch 8 --micro-batch 4 -o out.st --quiet"
)
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
for entry in "${stages[@]}"; do
    IFS='|' read -r name output command <<< "$entry"
    rm -rf run && mkdir run && cd run
    start=$(date +%s%N)
    eval "$command"
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    cp "$output" ../reference
    survived=0 complete=0 absent=0
    for ((i = 0; i < kills; i++)); do
        # Half the kills with no previous file, half over a complete one.
        if (( i % 2 == 0 )); then rm -f "$output"; else cp ../reference "$output"; fi
        delay=$(python3 -c "import random; print(f'{random.uniform(0, $ms / 1000):.4f}')")
        bash -c "exec $command" & pid=$!  # exec: the pid is the tool's own
        sleep "$delay"
        kill -9 "$pid" 2>/dev/null || survived=$((survived + 1))
        wait "$pid" 2>/dev/null || true
        if [[ -e "$output" ]]; then
            cmp -s "$output" ../reference || fail "$name: kill $i left an incomplete $output"
            complete=$((complete + 1))
        else
            absent=$((absent + 1))
        fi
    done
    leftovers=$(ls -A | grep -c '\.tmp-' || true)
    eval "$command"
    cmp -s "$output" ../reference || fail "$name: the run after the kills differs from the reference"
    if ls -A | grep -q '\.tmp-'; then fail "$name: temporaries remain after the next run: $(ls -A | grep '\.tmp-' | tr '\n' ' ')"; fi
    printf '%-20s %5d ms a run; %d kills (%d finished first): the output absent %d times, complete %d; %d temporaries left, none after the next run\n' \
        "$name" "$ms" "$kills" "$survived" "$absent" "$complete" "$leftovers"
    cd ..
done

# Refusals: one line, the exit code, nothing written.
expect() {  # STATUS OUTPUT COMMAND... : runs COMMAND, checks its status, one stderr line, OUTPUT absent
    local status="$1" output="$2"; shift 2
    local got=0
    "$@" 2> err.txt || got=$?
    [[ "$got" == "$status" ]] || fail "$* exited $got, not $status: $(cat err.txt)"
    [[ $(wc -l < err.txt) == 1 ]] || fail "$*: stderr is not one line: $(cat err.txt)"
    [[ ! -e "$output" ]] || fail "$*: wrote $output"
    printf '%-20s exit %s: %s\n' "$(basename "$1")" "$got" "$(cat err.txt)"
}
mkdir readonly && chmod a-w readonly
if [[ -w readonly ]]; then
    echo "(running as a user who can write anywhere: the read-only folder case is skipped)"
else
    expect 74 readonly/out.st "$bin/convert" dense.st.zst -o readonly/out.st --quiet
fi
expect 66 out.st "$bin/convert" missing.st -o out.st --quiet
mkdir adir
expect 66 out.st "$bin/score" --model dense.st.zst --stats adir --metric fasp -o out.st --quiet
expect 65 out.st "$bin/calibrate" --model - --tokens windows.st -o out.st --quiet < <(head -c 1000 dense.st.zst)
echo "$failures failures"
[[ "$failures" == 0 ]]
