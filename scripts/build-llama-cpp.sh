#!/usr/bin/env bash
# Builds llama.cpp's llama-bench and llama-perplexity from source and prints the folder that holds them.
# No binary package of llama.cpp installs here, so the source comes from the PyPI source package of
# llama-cpp-python (its vendor/llama.cpp), and cmake and ninja from their PyPI wheels; about ten minutes on
# 2 cores, once: the result is kept in $PRUNEKIT_CACHE/llama.cpp (default ~/.cache/prunekit/llama.cpp).
#   build-llama-cpp.sh            prints e.g. ~/.cache/prunekit/llama.cpp/build/bin
# Environment: LLAMA_CPP_PYTHON_VERSION (default 0.3.36, which vendors the llama.cpp this was checked with).
set -euo pipefail
cache="${PRUNEKIT_CACHE:-$HOME/.cache/prunekit}/llama.cpp"
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
bin="$cache/build/bin"
if [[ -x "$bin/llama-bench" && -x "$bin/llama-perplexity" ]]; then echo "$bin"; exit 0; fi
mkdir -p "$cache"
command -v cmake >/dev/null && command -v ninja >/dev/null || python3 -m pip install -q cmake ninja >&2
if [[ ! -f "$cache/src/CMakeLists.txt" ]]; then
    # --no-build-isolation: pip download would otherwise build the package's own build tools from source
    # to read its metadata; scikit-build-core (a wheel) is what that needs.
    python3 -m pip install -q scikit-build-core >&2
    python3 -m pip download -q --no-deps --no-build-isolation "llama-cpp-python==$version" -d "$cache" >&2
    rm -rf "$cache/src" "$cache/unpack" && mkdir -p "$cache/unpack"
    tar xzf "$cache/llama_cpp_python-$version.tar.gz" -C "$cache/unpack"
    mv "$cache/unpack/llama_cpp_python-$version/vendor/llama.cpp" "$cache/src" && rm -rf "$cache/unpack"
fi
cmake -S "$cache/src" -B "$cache/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >&2
cmake --build "$cache/build" --target llama-bench llama-perplexity -j "$(nproc)" >&2
echo "$bin"
