#!/usr/bin/env bash
# Fuzzes one reader with libFuzzer (docs/DESIGN.md "Hardening"): builds prunekit-fuzz with
# -sanitize=fuzzer,address (a debug build in .build/fuzz), then runs target NAME for SECONDS on a copy of its
# seed corpus (Tests/Fuzz/Corpus/NAME: valid and handcrafted files), 2 GB of memory and 10 s an input at most.
# A crash, a leak-free out-of-memory or a timeout leaves its input in .build/fuzz/findings/NAME and exits non-zero.
#   scripts/fuzz.sh NAME SECONDS [libFuzzer options...]
# NAME: safetensors, gguf, tokenizer-json, tokenizer-gguf, config, jsonl, plan, statistics, scores.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
name="${1:?target name}" seconds="${2:?seconds}"
shift 2
cd "$root"
swift build --build-path .build/fuzz --product prunekit-fuzz -Xswiftc -sanitize=fuzzer,address \
    -Xswiftc -parse-as-library -Xswiftc -DFUZZING >&2
work=".build/fuzz/corpus/$name" findings=".build/fuzz/findings/$name"
mkdir -p "$work" "$findings"
[[ -d "Tests/Fuzz/Corpus/$name" ]] && cp -n "Tests/Fuzz/Corpus/$name"/* "$work"/ 2>/dev/null || true
PRUNEKIT_FUZZ_TARGET="$name" ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1" \
    .build/fuzz/debug/prunekit-fuzz "$work" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
    -artifact_prefix="$findings/" -print_final_stats=1 "$@"
