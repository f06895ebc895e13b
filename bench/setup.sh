# Sourced by the benchmarks: the release build, the model as a PruneKit model file in a scratch
# folder, and the sgemm GFLOP/s this machine reaches (the yardstick). Sets root, data, model,
# threads, work, bin, peak; $1 is the model (default: SmolLM2).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/blas-env.sh"
data="${PRUNEKIT_DATA:-$root/../shared/data}"
model="${1:-$("$root/scripts/fetch-model.sh")}"
threads="${THREADS:-$(nproc)}"
work="$(mktemp -d "${TMPDIR:-/tmp}/prunekit-bench.XXXXXX")"
trap 'rm -rf "$work"' EXIT
(cd "$root" && swift build -c release >&2)
bin="$root/.build/release"
"$bin/convert" "$model" -o "$work/model.st" --quiet
peak=$("$bin/prunekit-bench" sgemm --size 2048 --threads "$threads" | sed -E 's/.*: ([0-9.]+) GFLOP\/s.*/\1/')
printf 'sgemm peak (N=2048, %s threads): %s GFLOP/s\n\n' "$threads" "$peak"
