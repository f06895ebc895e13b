# Sourced by the scripts that run PruneKit's tools, tests and benchmarks. Debian 12's OpenBLAS (0.3.21, built with
# DYNAMIC_ARCH) does not recognise recent Xeons and falls back to its generic Prescott (SSE3) kernels: sgemm about 3×
# slower, and other bits than the fixtures (made on a machine OpenBLAS detects as Cooperlake). Unless the user chose a
# core type, pick the newest one the CPU's flags support: avx512_bf16 → Cooperlake, AVX-512 F/VL/BW/DQ → SkylakeX,
# AVX2 + FMA → Haswell (otherwise OpenBLAS's own detection stands). docs/DESIGN.md "Threads".
if [[ -z "${OPENBLAS_CORETYPE:-}" && -r /proc/cpuinfo ]]; then
    cpu_flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
    if [[ "$cpu_flags" == *" avx512_bf16 "* ]]; then
        export OPENBLAS_CORETYPE=Cooperlake
    elif [[ "$cpu_flags" == *" avx512f "* && "$cpu_flags" == *" avx512vl "* && "$cpu_flags" == *" avx512bw "* && "$cpu_flags" == *" avx512dq "* ]]; then
        export OPENBLAS_CORETYPE=SkylakeX
    elif [[ "$cpu_flags" == *" avx2 "* && "$cpu_flags" == *" fma "* ]]; then
        export OPENBLAS_CORETYPE=Haswell
    fi
    unset cpu_flags
fi
