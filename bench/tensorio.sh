#!/usr/bin/env bash
# Reading and writing a model file: `convert` from a model file to a model file (read, check,
# convert, write, fsync, rename), plain and zstd, in MB/s of the uncompressed model, against
# `zstd -1` on the same bytes and against a plain file copy. One run, same machine.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/blas-env.sh"
model="${1:-$("$root/scripts/fetch-model.sh")}"
work="$(mktemp -d "${TMPDIR:-/tmp}/prunekit-bench.XXXXXX")"
trap 'rm -rf "$work"' EXIT
(cd "$root" && swift build -c release --product convert >&2)
convert="$root/.build/release/convert"
"$convert" "$model" -o "$work/plain.st" --quiet
bytes=$(stat -c %s "$work/plain.st")
mb=$(python3 -c "print($bytes/1e6)")
t() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); python3 -c "print(f'{$mb/($e-$s):.0f}')"; }
plain=$(t "$convert" "$work/plain.st" -o "$work/copy.st" --quiet)
tozst=$(t "$convert" "$work/plain.st" -o "$work/copy.st.zst" --quiet)
fromzst=$(t "$convert" "$work/copy.st.zst" -o "$work/back.st" --quiet)
zstd1=$(t zstd -1 -q -f "$work/plain.st" -o "$work/z1.zst")
cp_=$(t cp "$work/plain.st" "$work/cp.st")
printf '%-44s %8s\n' "model file ($(python3 -c "print(f'{$mb:.0f}')") MB, F32)" "MB/s"
printf '%-44s %8s\n' "convert plain → plain" "$plain"
printf '%-44s %8s\n' "convert plain → .st.zst (zstd -1, checksum)" "$tozst"
printf '%-44s %8s\n' "convert .st.zst → plain" "$fromzst"
printf '%-44s %8s\n' "zstd -1 (same bytes)" "$zstd1"
printf '%-44s %8s\n' "cp" "$cp_"
python3 -c "print(f'ratios: plain/cp {$plain/$cp_:.2f}, zst-write/zstd-1 {$tozst/$zstd1:.2f}')"
