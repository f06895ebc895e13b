#!/usr/bin/env bash
# Runs the whole test suite in a release build (the numeric tests are heavy in debug), then the unit
# tests again in a debug build, where every bounds check, overflow check and precondition runs (the
# tool tests, which run the built binaries as a user does, run in the release pass only).
set -euo pipefail
source "$(dirname "$0")/blas-env.sh"
cd "$(dirname "$0")/.."
swift build -c release
swift test -c release "$@"
swift build --build-tests
swift test --skip-build --skip ToolTests "$@"
