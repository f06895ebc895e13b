#!/usr/bin/env bash
# Digests of every artifact the published recipes write, for checking that a change of code is a
# change of structure only: run it before and after, with each build's tools, and compare the lists.
#   scripts/artifact-digests.sh BIN_DIR WORK_DIR > digests.txt
# It runs, with the tools found in BIN_DIR (called by their bare names, so that the command line
# recorded in every file's metadata is the same whichever build runs):
#   - allocate on the 22 reference cases of Tests/Fixtures/allocate/plans.json (plan file and SVG);
#   - the commands of pipelines/flap.sh, wanda-sp.sh, cfsp.sh and fasp.sh on SmolLM2 at ratios 0.2 and
#     0.5, with fewer calibration windows than the recipes (128 × 128 for FLAP, 8 × 1024 for the others)
#     so that it takes minutes: statistics, scores, plans, SVGs, pruned models, and their exports.
# Output: one line "sha256  name" per file, sorted by name.
set -euo pipefail
bin="$(cd "$1" && pwd)"
work="$2"
root="$(cd "$(dirname "$0")/.." && pwd)"
data="${PRUNEKIT_DATA:-$root/../shared/data}"
fixtures="$root/Tests/Fixtures/allocate"
export PATH="$bin:$PATH"
rm -rf "$work"
mkdir -p "$work"
cd "$work"

# The reference cases, as allocate command lines.
python3 - "$fixtures/plans.json" > cases.txt <<'PY'
import json, sys
for name, c in sorted(json.load(open(sys.argv[1])).items()):
    a = c["args"]
    args = ["--ratio", repr(a["ratio"])]
    if a.get("blocks"):
        args += ["--blocks", a["blocks"], "--angular-a", repr(a.get("angular_a", 1.0))]
    else:
        args += ["--structure", a["structure"]]
    args += ["--attention-unit", a["attention_unit"], "--prune", a["prune"], "--min-keep", str(a["min_keep"]),
             "--remove-heads", str(a["remove_heads"])]
    if a.get("layers"): args += ["--layers", a["layers"]]
    if a.get("round"): args += ["--round", str(a["round"])]
    print(name, c["scores"], " ".join(args))
PY
while read -r name scores args; do
    # shellcheck disable=SC2086
    allocate --scores "$fixtures/$scores" $args --quiet --plot "case-$name.svg" -o "case-$name.plan.st.zst"
done < cases.txt

model="$("$root/scripts/fetch-model.sh")"
c4="$data/c4/c4-validation-sample-2k.jsonl.zst"
convert "$model" -o dense.st --quiet
calibrate --model dense.st --jsonl "$c4" --samples 128 --seqlen 128 --quiet -o flap-stats.st.zst
calibrate --model dense.st --jsonl "$c4" --samples 8 --seqlen 1024 --quiet -o stats.st.zst
calibrate --model dense.st --jsonl "$c4" --samples 8 --seqlen 1024 --gram o_proj,down_proj --gram-dtype f64 \
    --quiet -o fasp-stats.st.zst
for ratio in 0.2 0.5; do
    # flap.sh
    score --model dense.st --stats flap-stats.st.zst --metric flap --quiet -o flap-scores.st.zst
    allocate --scores flap-scores.st.zst --ratio $ratio --structure AL-AM --plot flap-$ratio.svg --quiet \
        -o flap-$ratio.plan.st.zst
    slice --model dense.st --plan flap-$ratio.plan.st.zst --quiet -o - |
        restore --model - --dense dense.st --stats flap-stats.st.zst --plan flap-$ratio.plan.st.zst --method bias \
            --quiet -o flap-$ratio.st.zst
    convert flap-$ratio.st.zst --to gguf --dtype f16 --quiet -o flap-$ratio.gguf
    # wanda-sp.sh
    score --model dense.st --stats stats.st.zst --metric wanda-sp --quiet -o wanda-scores.st.zst
    allocate --scores wanda-scores.st.zst --ratio $ratio --structure UL-UM --plot wanda-$ratio.svg --quiet \
        -o wanda-$ratio.plan.st.zst
    slice --model dense.st --plan wanda-$ratio.plan.st.zst --quiet -o wanda-$ratio.st.zst
    convert wanda-$ratio.st.zst --to hf --quiet -o wanda-$ratio-hf
    # cfsp.sh
    score --model dense.st --stats stats.st.zst --metric cfsp --quiet -o cfsp-scores.st.zst
    allocate --scores cfsp-scores.st.zst --ratio $ratio --blocks angular --prune mlp --round 128 \
        --plot cfsp-$ratio.svg --quiet -o cfsp-$ratio.plan.st.zst
    slice --model dense.st --plan cfsp-$ratio.plan.st.zst --quiet -o cfsp-$ratio.st.zst
    # fasp.sh (and the other two restorations on the same plan)
    score --model dense.st --stats fasp-stats.st.zst --metric fasp --quiet -o fasp-scores.st.zst
    allocate --scores fasp-scores.st.zst --ratio $ratio --structure UL-UM --attention-unit vo \
        --plot fasp-$ratio.svg --quiet -o fasp-$ratio.plan.st.zst
    slice --model dense.st --plan fasp-$ratio.plan.st.zst --quiet -o fasp-$ratio.sliced.st.zst
    for method in lsq bias bias+lsq; do
        restore --model fasp-$ratio.sliced.st.zst --dense dense.st --stats fasp-stats.st.zst \
            --plan fasp-$ratio.plan.st.zst --method $method --quiet -o fasp-$ratio-$method.st.zst
    done
    convert fasp-$ratio-lsq.st.zst --to gguf --pad-values --quiet -o fasp-$ratio.gguf
done
rm dense.st cases.txt
find . -type f -print0 | sort -z | xargs -0 sha256sum | sed 's#  \./#  #'
