#!/usr/bin/env bash
# Runs the whole test suite in a release build (the numeric tests are heavy in debug).
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release
swift test -c release "$@"
