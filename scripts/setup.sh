#!/usr/bin/env bash
# Installs what a fresh machine lacks (Debian packages: OpenBLAS, zstd, pkg-config) and fetches
# the default model. Safe to run again: it installs nothing that is already there.
set -euo pipefail
need=()
for pkg in libopenblas-dev libzstd-dev pkg-config zstd; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
    echo "setup: installing ${need[*]}" >&2
    sudo_cmd=""
    [[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq >&2
    $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi
"$(dirname "$0")/fetch-model.sh" >/dev/null
