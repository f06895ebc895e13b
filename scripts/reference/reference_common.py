"""Helpers the reference generators share: where the model is, and writing fixtures reproducibly."""
import hashlib, json, os, struct, subprocess

from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def model_path():
    """The SmolLM2 GGUF: $PRUNEKIT_MODEL, else the one scripts/fetch-model.sh caches."""
    return os.environ.get("PRUNEKIT_MODEL") or subprocess.check_output(
        [os.path.join(ROOT, "scripts", "fetch-model.sh")], text=True).strip()


def save_sorted(tensors, path, meta):
    """safetensors.numpy.save_file, then the __metadata__ keys put in sorted order in place: the
    writer emits them in hash-map order, which changes from run to run, and the fixtures should be
    byte-for-byte reproducible. Same header length, same JSON, same tensor bytes."""
    save_file(tensors, path, metadata=meta)
    with open(path, "r+b") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        raw = f.read(n)
        header = json.loads(raw)
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        body = raw.rstrip(b" ")
        assert len(text) == len(body) and json.loads(text) == json.loads(body), path
        f.seek(8)
        f.write(text)
    os.chmod(path, 0o644)


def sha256_file(path):
    """The hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
