#!/usr/bin/env python3
"""Reference fixtures for the TensorIO safetensors tests (Tests/Fixtures/safetensors/).

Usage:
    python3 scripts/reference/safetensors_fixtures.py            # (re)write the fixtures
    python3 scripts/reference/safetensors_fixtures.py --verify F  # check files F… (plain or zstd)
                                                                 # hold exactly the golden tensors

Writes, with the `safetensors` library (0.8) and torch:
  python_written.safetensors      save_file() output: metadata, every dtype, a 0-element tensor, a
                                  scalar; python_written.json lists each tensor's dtype, shape, raw
                                  bytes (hex) and values (floats as exact hex-float text).
  python_written.safetensors.zst  the same compressed by the zstd command-line tool (`--check`).
  golden.safetensors              the golden tensors as the safetensors library serialises them
                                  (one metadata key, so the library's unordered metadata map cannot
                                  reorder it); TensorIOTests writes the same tensors from Swift and
                                  compares bytes.
  golden.safetensors.zst          the same, `zstd -3 --check` (the Swift writer's default level).
The golden float tensors exercise rounding: BF16 and F16 come from torch `.to(dtype)` of exact float32
bit patterns (ties to even, overflow to infinity, subnormals, NaN), which the Swift writer must match.
"""
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load, save, save_file

OUT = Path(__file__).resolve().parents[2] / "Tests" / "Fixtures" / "safetensors"

# float32 bit patterns shared with SafetensorsGoldenTests.swift.
BF16_SOURCE_BITS = [
    0x3F800000,  # 1.0
    0x3F808000,  # 1 + 2^-8: tie, rounds down to even 0x3F80
    0x3F818000,  # tie, rounds up to even 0x3F82
    0x3F808001,  # just above the tie: 0x3F81
    0x7F7FFFFF,  # largest float: rounds to +inf
    0x80000000,  # -0.0
    0xFF800000,  # -inf
    0x00000001,  # smallest subnormal: rounds to 0
    0x7FC00001,  # NaN with payload: 0xFFFF, as ATen's vectorised conversion writes every NaN
    0xFF812345,  # negative signalling NaN: 0xFFFF too
    0xC2F6E979,  # -123.456
]
F16_SOURCE_BITS = [
    0x3F800000,  # 1.0
    0x3F801000,  # 1 + 2^-11: tie, rounds to 1.0
    0x3F803000,  # 1 + 3·2^-11: tie, rounds up to 1 + 2^-9
    0x477FE000,  # 65504, largest half
    0x477FF000,  # 65520: tie at the top, rounds to +inf
    0x33800000,  # 2^-24, smallest half subnormal
    0x33000000,  # 2^-25: tie with 0, rounds to 0
    0x32000000,  # 2^-27: rounds to 0
    0xFF800000,  # -inf
    0x7FC00000,  # NaN
    0xFF812345,  # negative signalling NaN: quieted, sign and top payload kept (0xFE09)
    0xBDCCCCCD,  # -0.1
]


def f32_from_bits(bits):
    return torch.from_numpy(np.array(bits, dtype=np.uint32).view(np.float32).copy())


def golden_tensors():
    """In the safetensors library's own order (dtype descending, then name)."""
    t = {}
    t["ids"] = torch.tensor([-1, 0, 2**40 + 7], dtype=torch.int64)
    t["weight.f64"] = torch.tensor([1.0 / 3.0, -2.5], dtype=torch.float64)
    t["a.f32"] = (torch.arange(6, dtype=torch.float32) * 0.25 - 1.0).reshape(2, 3)
    t["scalar"] = torch.tensor(3.5, dtype=torch.float32)
    t["i32"] = torch.tensor([-(2**31), 2**31 - 1], dtype=torch.int32)
    t["bf16"] = f32_from_bits(BF16_SOURCE_BITS).to(torch.bfloat16)
    t["empty"] = torch.zeros((0, 4), dtype=torch.float16)
    t["f16"] = f32_from_bits(F16_SOURCE_BITS).to(torch.float16)
    t["i16"] = torch.tensor([-32768, 32767], dtype=torch.int16)
    t["i8"] = torch.tensor([-128, 127], dtype=torch.int8)
    t["u8"] = torch.tensor([0, 1, 255], dtype=torch.uint8)
    t["mask"] = torch.tensor([True, False, False, True])
    return t


GOLDEN_METADATA = {"note": 'quote" backslash\\ newline\n tab\t ctrl\x01 del\x7f é 漢 slash/'}


def python_written_tensors():
    g = torch.Generator().manual_seed(7)
    t = {}
    t["model.embed_tokens.weight"] = torch.randn(4, 3, generator=g, dtype=torch.float32)
    t["model.layers.0.self_attn.q_proj.weight"] = torch.randn(3, 3, generator=g).to(torch.bfloat16)
    t["model.layers.0.mlp.up_proj.weight"] = torch.randn(2, 3, generator=g).to(torch.float16)
    t["stats.sum"] = torch.randn(3, generator=g, dtype=torch.float64)
    t["tokens"] = torch.tensor([[1, 2, 3], [49151, 0, -5]], dtype=torch.int64)
    t["counts"] = torch.tensor([7, -7], dtype=torch.int32)
    t["small"] = torch.tensor([-300, 300], dtype=torch.int16)
    t["tiny"] = torch.tensor([-3, 3], dtype=torch.int8)
    t["bytes"] = torch.tensor([0, 128, 255], dtype=torch.uint8)
    t["keep"] = torch.tensor([[True, False], [False, True]])
    t["nothing"] = torch.zeros((3, 0), dtype=torch.float32)
    t["step"] = torch.tensor(12.0, dtype=torch.float32)
    t["special"] = torch.tensor([float("nan"), float("inf"), -0.0, 1e-40], dtype=torch.float32)
    return t


PYTHON_METADATA = {"producer": "safetensors_fixtures.py", "format": "pt",
                   "text": "line one\nline \"two\" ü"}


ST_NAMES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16",
            torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32", torch.int16: "I16",
            torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}


def describe(tensors):
    out = []
    for name, t in tensors.items():
        dtype = ST_NAMES[t.dtype]
        raw = t.contiguous().numpy().tobytes() if t.dtype != torch.bfloat16 else \
            t.view(torch.int16).numpy().tobytes()
        if t.is_floating_point():
            values = [float(v).hex() for v in t.double().flatten().tolist()]
        else:
            values = [int(v) for v in t.flatten().tolist()]
        out.append({"name": name, "dtype": dtype, "shape": list(t.shape), "hex": raw.hex(),
                    "values": values})
    return out


def zstd_compress(src, dst):
    subprocess.run(["zstd", "-q", "-f", "-3", "--check", str(src), "-o", str(dst)], check=True)


def read_maybe_zstd(path):
    data = Path(path).read_bytes()
    if data[:4] == b"\x28\xb5\x2f\xfd":
        data = subprocess.run(["zstd", "-q", "-d", "-c"], input=data, check=True,
                              capture_output=True).stdout
    return data


def same(a, b):
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == torch.bfloat16:
        a, b = a.view(torch.int16), b.view(torch.int16)
    return a.contiguous().numpy().tobytes() == b.contiguous().numpy().tobytes()


def verify(paths):
    expected = golden_tensors()
    ok = True
    for p in paths:
        data = read_maybe_zstd(p)
        got = load(data)  # the safetensors library's own validation
        n = struct.unpack("<Q", data[:8])[0]
        meta = json.loads(data[8:8 + n]).get("__metadata__")
        problems = [k for k in expected if k not in got or not same(got[k], expected[k])]
        problems += [k for k in got if k not in expected]
        if meta != GOLDEN_METADATA:
            problems.append("__metadata__")
        print(f"{p}: {'OK' if not problems else 'MISMATCH ' + ', '.join(problems)}")
        ok = ok and not problems
    return ok


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--verify":
        sys.exit(0 if verify(sys.argv[2:]) else 1)
    assert shutil.which("zstd"), "the zstd command-line tool is needed"
    OUT.mkdir(parents=True, exist_ok=True)

    pw = python_written_tensors()
    save_file(pw, OUT / "python_written.safetensors", metadata=PYTHON_METADATA)
    (OUT / "python_written.json").write_text(json.dumps(
        {"metadata": PYTHON_METADATA, "tensors": describe(pw)}, indent=1, ensure_ascii=False))
    zstd_compress(OUT / "python_written.safetensors", OUT / "python_written.safetensors.zst")

    golden = golden_tensors()
    blob = save(golden, metadata=GOLDEN_METADATA)
    # The library must have kept our order (it sorts by dtype, then name).
    n = struct.unpack("<Q", blob[:8])[0]
    keys = [k for k in json.loads(blob[8:8 + n]) if k != "__metadata__"]
    assert keys == list(golden), keys
    (OUT / "golden.safetensors").write_bytes(blob)
    zstd_compress(OUT / "golden.safetensors", OUT / "golden.safetensors.zst")
    assert verify([OUT / "golden.safetensors", OUT / "golden.safetensors.zst"])
    print("bf16 bits:", [f"{v:04x}" for v in golden["bf16"].view(torch.int16).numpy().view(np.uint16)])
    print("f16 bits:", [f"{v:04x}" for v in golden["f16"].view(torch.int16).numpy().view(np.uint16)])


if __name__ == "__main__":
    main()
