"""Reference dequantisation for the GGUF tests, computed with gguf-py (llama.cpp's own reader).

  python3 scripts/reference/gguf_reference.py [MODEL.gguf]

Writes into Tests/Fixtures/gguf/:
  smollm2_dequant_sha256.json  for every tensor of the SmolLM2 GGUF (GGUF names, no Q/K
                               permutation): ggml type, shape, sha256 of gguf-py's dequantised
                               float32 little-endian bytes
  quant_blocks.gguf            a small GGUF holding random blocks of every other supported type
                               (valid f16 scales, random quants), and
  quant_blocks_sha256.json     the sha256 and the first 8 values of gguf-py's dequantisation of each
"""
import hashlib, json, os, subprocess, sys
import numpy as np
from gguf import GGUFReader, GGUFWriter, GGMLQuantizationType as Q
from gguf.quants import dequantize

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
out = os.path.join(root, "Tests", "Fixtures", "gguf")
os.makedirs(out, exist_ok=True)


def digest(values):
    return hashlib.sha256(np.ascontiguousarray(values, dtype="<f4").tobytes()).hexdigest()


def model_checksums(path):
    reader = GGUFReader(path)
    rows = {}
    for t in reader.tensors:
        values = dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = [int(d) for d in reversed(t.shape.tolist())]
        rows[t.name] = {"type": t.tensor_type.name, "shape": shape, "sha256": digest(values)}
    with open(os.path.join(out, "smollm2_dequant_sha256.json"), "w") as f:
        json.dump(rows, f, indent=1, sort_keys=True)
    print(f"{len(rows)} tensors checksummed")


# (type, block bytes, offsets of f16 scale fields within a block)
BLOCKS = [
    (Q.Q4_0, 18, [0]), (Q.Q4_1, 20, [0, 2]), (Q.Q5_0, 22, [0]), (Q.Q5_1, 24, [0, 2]),
    (Q.Q8_0, 34, [0]), (Q.Q4_K, 144, [0, 2]), (Q.Q5_K, 176, [0, 2]), (Q.Q6_K, 210, [208]),
]


def quant_blocks():
    rng = np.random.default_rng(1234)
    path = os.path.join(out, "quant_blocks.gguf")
    writer = GGUFWriter(path, "llama")
    expected = {}
    for qtype, size, scale_offsets in BLOCKS:
        elements_per_block = 256 if qtype.name.endswith("_K") else 32
        rows, blocks_per_row = 3, 2
        raw = rng.integers(0, 256, size=(rows, blocks_per_row * size), dtype=np.uint8)
        for r in range(rows):
            for b in range(blocks_per_row):
                for off in scale_offsets:
                    scale = np.array([rng.uniform(-0.05, 0.05)], dtype=np.float16)
                    raw[r, b * size + off:b * size + off + 2] = scale.view(np.uint8)
        name = f"blocks.{qtype.name}"
        writer.add_tensor(name, raw, raw_dtype=qtype)
        values = dequantize(raw, qtype).astype(np.float32)
        assert values.shape == (rows, blocks_per_row * elements_per_block)
        expected[name] = {"type": qtype.name, "shape": list(values.shape),
                          "sha256": digest(values), "first": [float(v) for v in values.flat[:8]]}
    for name, dtype, qtype in [("plain.F16", np.float16, Q.F16), ("plain.F32", np.float32, Q.F32)]:
        values = rng.standard_normal((2, 40)).astype(dtype)
        writer.add_tensor(name, values, raw_dtype=qtype)
        expected[name] = {"type": qtype.name, "shape": [2, 40],
                          "sha256": digest(values.astype(np.float32)),
                          "first": [float(v) for v in values.astype(np.float32).flat[:8]]}
    bf = (rng.standard_normal((2, 40)).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    writer.add_tensor("plain.BF16", bf, raw_dtype=Q.BF16)
    bfv = (bf.astype(np.uint32) << 16).view(np.float32)
    expected["plain.BF16"] = {"type": "BF16", "shape": [2, 40], "sha256": digest(bfv),
                              "first": [float(v) for v in bfv.flat[:8]]}
    writer.add_string("test.string", "héllo")
    writer.add_array("test.ints", [1, -2, 3])
    writer.add_float64("test.f64", 0.125)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    # Independent check: gguf-py's reader sees the same values the script computed.
    reader = GGUFReader(path)
    for t in reader.tensors:
        assert digest(dequantize(t.data, t.tensor_type).astype(np.float32)) == expected[t.name]["sha256"], t.name
    with open(os.path.join(out, "quant_blocks_sha256.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
    print(f"{len(expected)} block tensors written")


if __name__ == "__main__":
    model = sys.argv[1] if len(sys.argv) > 1 else subprocess.check_output(
        [os.path.join(root, "scripts", "fetch-model.sh")], text=True).strip()
    model_checksums(model)
    quant_blocks()
