#!/usr/bin/env python3
"""Reference for `restore` (Sources/Pruning/Restoration.swift): the three compensation methods computed
in numpy float64 from real SmolLM2 statistics, written as a small fixture that
Tests/ToolTests/RestoreReferenceTests.swift compares the tool's output against.

  python3 scripts/reference/restore_reference.py --bin DIR [--work DIR] [--reuse]
  python3 scripts/reference/restore_reference.py --dense dense.st --stats stats.st --plan plan.st \
      [--restored 'restored-{method}.st'] [--no-write]

Pipeline (FASP's recipe, small; run with the tools in --bin, in the work folder, default
/tmp/prunekit-restore-reference; the model is scripts/fetch-model.sh's GGUF or $PRUNEKIT_MODEL, the data
$PRUNEKIT_DATA or ../shared/data):
  convert   $MODEL -o dense.st --quiet
  calibrate --model dense.st --jsonl $DATA/c4/c4-validation-sample-2k.jsonl.zst --samples 4 --seqlen 256
            --gram o_proj,down_proj --gram-dtype f64 --quiet -o stats.st
  score     --model dense.st --stats stats.st --metric fasp --quiet -o scores.st
  allocate  --scores scores.st --ratio 0.3 --structure UL-UM --attention-unit vo --quiet -o plan.st
  slice     --model dense.st --plan plan.st --quiet -o sliced.st
  restore   --model sliced.st --dense dense.st --stats stats.st --plan plan.st --method METHOD
            -o restored-METHOD.st            (METHOD = bias, lsq, bias+lsq; not --quiet: its error table
                                              on stderr is checked too)

The math (docs/DESIGN.md, "restore"). A consumer (o_proj, down_proj) with dense weight W [C, F], bias b
(SmolLM2 has none: b = 0), its input x over the n calibration tokens with s = sum_t x_t and G = sum_t x_t x_t^T,
keeps the input columns K. The kept-column refit minimises over W' [C, k] (and c [C] for bias+lsq)
      sum_t || W x_t - W' x_{K,t} - c ||^2 + lam ||W'||_F^2,     lam = damp * mean(diag G[K, K]),
  bias      W' = W[:, K], c = W[:, dropped] (s / n)[dropped]                   (the mean of the dropped inputs)
  lsq       c = 0; normal equations W' (G[K,K] + lam I) = W G[:, K]
  bias+lsq  [W', c] ([[G[K,K] + lam I, s_K], [s_K^T, n]]) = W [G[:, K], s]      (the constant input undamped)
b' = b + c, written for bias and bias+lsq (zeros + c here); lsq writes no o_proj/down_proj bias when the dense
model has none. The systems are solved by Cholesky (scipy.linalg.cho_factor / cho_solve). The error of a
candidate (W', delta = b' - b), with D = W - scatter_K(W'):
      E = sum_t || D x_t - delta ||^2 = tr(D G D^T) - 2 delta^T D s + n ||delta||^2,
E_before that of the plain slice (W[:, K], delta = 0). Fallback (as documented: "a layer whose solve fails or
whose error would grow keeps the plain slice"; Restoration.swift's test is `not (after <= before (1 + 1e-9)
+ 1e-12)`): then W' = W[:, K], b' = b (so bias+lsq writes a zero bias), and E_after = E_before.

Kept columns: down_proj the plan's kept_channels. o_proj (docs/DESIGN.md, value widths; Slicing
.keptAttentionColumns): with value widths w_g per KV head (head_dim each for the dense SmolLM2), offsets
o_g = sum_{g'<g} w_g', rep = H / Hkv, query head h = g rep + j owns the columns starting at rep o_g + j w_g;
for every kept query head h in order, the columns rep o_g + j w_g + (r - o_g) of the kept value rows r of its
group g (kept_value_dims of a V/O plan, else all rows of the kept KV heads). For SmolLM2 (D = 64, H = 9,
Hkv = 3) that is h D + r - g D, asserted below.

Fixture Tests/Fixtures/restore/smollm2_restore.safetensors (F64 unless said), layers 0, 11, 14, 29 (11: the
layer where lsq and bias+lsq fall back on down_proj with these statistics), P in
{model.layers.L.self_attn.o_proj, model.layers.L.mlp.down_proj}:
  rows                       I64 [16]   the weight rows kept in the fixture: 0, 36, ..., 540
  P.kept_columns             I64 [k]    (the same for every method)
  P.{method}.weight_rows     [16, k]    rows `rows` of the restored weight; absent when the weight is the
                                        plain slice W[rows][:, K] (method bias, or a fallback): a test reads
                                        those from the dense model (this keeps the file under 1.5 MB)
  P.{method}.bias            [576]      b' (bias and bias+lsq only)
  P.{method}.errors          [2]        E_before, E_after (of what is written)
  P.{method}.fell_back       I64 [1]    1 when the fallback rule kept the plain slice
  plan.L.{kept_heads,kept_kv_heads,kept_value_dims}  I64   the plan's attention lists (its kept_channels are
                                        down_proj's kept_columns), for the test to tell a different plan from
                                        different math
__metadata__ (sorted keys): commands (JSON, with $MODEL / $DATA placeholders), damp, layers, methods, rows,
dense_fingerprint, plan_digest (the sha256 Slicing.swift's PlanFile.digest computes: sliced and restored models
carry it), stats_windows_sha256 (calibrate's metadata), stats_tensors_sha256 (sha256 of the raw little-endian
bytes of the count, sum and gram tensors of o_proj then down_proj for each fixture layer in order: the exact
statistics the reference used), plan_file_sha256 and stats_file_sha256 (of the files as written here: these
include the tools' `arguments` metadata, so they only match a run with the same command lines), fit_errors
(JSON: the rejected fits' errors), tool (producer and version of the restore compared with).

The sanity check compares the reference with the tool's restored-{method}.st (float32) for every layer:
the whole o_proj/down_proj weights and biases, |tool - ref| <= atol + 1e-5 |ref| with atol = 1e-5 * RMS(ref)
(the Swift test's tolerance), and the stderr error table (printed with 4 significant digits) and its
"kept the plain slice" markers; it prints the largest relative errors per case and exits 1 on a mismatch.
"""
import argparse, hashlib, json, os, re, shutil, struct, subprocess, sys, tempfile, time

import numpy as np
import scipy.linalg
from safetensors import safe_open
from safetensors.numpy import save_file
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_common import model_path, save_sorted as save, sha256_file  # noqa: E402

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
fixture_default = os.path.join(root, "Tests", "Fixtures", "restore", "smollm2_restore.safetensors")
data_dir = os.environ.get("PRUNEKIT_DATA") or os.path.join(os.path.dirname(root), "shared", "data")

METHODS = ["bias", "lsq", "bias+lsq"]
FIXTURE_LAYERS = [0, 11, 14, 29]
ROWS = list(range(0, 576, 36))  # 16 rows
DAMP = 0.01  # restore's default --damp
RTOL = 1e-5
DATA_REL = "c4/c4-validation-sample-2k.jsonl.zst"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def commands():
    """The pipeline's command lines; $MODEL and $DATA stand for the GGUF and the data folder."""
    cmds = [
        ["convert", "$MODEL", "-o", "dense.st", "--quiet"],
        ["calibrate", "--model", "dense.st", "--jsonl", "$DATA/" + DATA_REL, "--samples", "4", "--seqlen", "256",
         "--gram", "o_proj,down_proj", "--gram-dtype", "f64", "--quiet", "-o", "stats.st"],
        ["score", "--model", "dense.st", "--stats", "stats.st", "--metric", "fasp", "--quiet", "-o", "scores.st"],
        ["allocate", "--scores", "scores.st", "--ratio", "0.3", "--structure", "UL-UM", "--attention-unit", "vo",
         "--quiet", "-o", "plan.st"],
        ["slice", "--model", "dense.st", "--plan", "plan.st", "--quiet", "-o", "sliced.st"],
    ]
    for m in METHODS:
        cmds.append(["restore", "--model", "sliced.st", "--dense", "dense.st", "--stats", "stats.st", "--plan",
                     "plan.st", "--method", m, "-o", f"restored-{m}.st"])
    return cmds


def run_pipeline(bin_dir, work, reuse):
    """Runs the commands in `work` (relative output names); returns the wall time and restore's stderr."""
    os.makedirs(work, exist_ok=True)
    subst = {"$MODEL": model_path(), "$DATA": data_dir}
    logs, t0 = {}, time.time()
    for cmd in commands():
        out = cmd[cmd.index("-o") + 1]
        log = os.path.join(work, out + ".log")
        if reuse and os.path.exists(os.path.join(work, out)) and os.path.exists(log):
            logs[out] = open(log).read()
            continue
        argv = [os.path.join(bin_dir, cmd[0])] + [
            next((a.replace(k, v) for k, v in subst.items() if a.startswith(k)), a) for a in cmd[1:]]
        t = time.time()
        r = subprocess.run(argv, cwd=work, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stderr}")
        open(log, "w").write(r.stderr)
        logs[out] = r.stderr
        print(f"  {time.time() - t:6.1f} s  {' '.join(cmd)}", file=sys.stderr)
    wall = time.time() - t0
    print(f"pipeline wall time {wall:.1f} s", file=sys.stderr)
    return wall, logs


class St:
    """A safetensors file (a zstd-compressed one is decompressed with the zstd CLI to a temporary file)."""

    def __init__(self, path):
        self.path, self.tmp = path, None
        with open(path, "rb") as f:
            compressed = f.read(4) == ZSTD_MAGIC
        if compressed:
            self.tmp = tempfile.NamedTemporaryFile(suffix=".st", delete=False)
            self.tmp.close()
            subprocess.run(["zstd", "-dqf", path, "-o", self.tmp.name], check=True)
            path = self.tmp.name
        self.f = safe_open(path, "numpy")
        self.meta = self.f.metadata() or {}
        self.names = set(self.f.keys())

    def __getitem__(self, name):
        return self.f.get_tensor(name)

    def get(self, name):
        return self[name] if name in self.names else None

    def close(self):
        if self.tmp:
            os.unlink(self.tmp.name)


def o_proj_columns(plan, l, cfg):
    D, H, Hkv = cfg["head_dim"], cfg["head_counts"][l], cfg["kv_head_counts"][l]
    if Hkv == 0:
        return []
    widths = (cfg.get("value_widths") or [[D] * Hkv for _ in cfg["head_counts"]])[l]
    offsets = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(int)
    rep = H // Hkv
    pre = f"model.layers.{l}.self_attn."
    vd = plan.get(pre + "kept_value_dims")
    rows = [int(r) for r in vd] if vd is not None else \
        [r for g in plan[pre + "kept_kv_heads"] for r in range(offsets[g], offsets[g] + widths[g])]
    cols = []
    for h in (int(h) for h in plan[pre + "kept_heads"]):
        g, j = h // rep, h % rep
        first = rep * offsets[g] + j * widths[g]
        group_rows = [r for r in rows if offsets[g] <= r < offsets[g] + widths[g]]
        cols += [first + r - offsets[g] for r in group_rows]
        if cfg.get("value_widths") is None:  # the brief's uniform formula, h D + r - g D
            assert cols[-len(group_rows):] == [h * D + r - g * D for r in group_rows] or not group_rows
    return cols


def plan_digest(plan, layers):
    """Slicing.swift PlanFile.digest: sha256 of the kept index lists as text."""
    text = "prunekit-plan-v1"
    j = lambda a: ",".join(str(int(x)) for x in a)
    for l in range(layers):
        pre, mlp = f"model.layers.{l}.self_attn.", f"model.layers.{l}.mlp."
        text += f"\n{l}:{j(plan[pre + 'kept_heads'])};{j(plan[pre + 'kept_kv_heads'])};{j(plan[mlp + 'kept_channels'])}"
        vd = plan.get(pre + "kept_value_dims")
        if vd is not None:
            text += ";v" + j(vd)
    return hashlib.sha256(text.encode()).hexdigest()


def error(W, K, Wk, delta, G, s, n):
    """sum_t ||W x_t - Wk x_{K,t} - delta||^2 through G, s, n."""
    D = W.copy()
    D[:, K] -= Wk
    return float(np.sum((D @ G) * D) - 2 * delta @ (D @ s) + n * delta @ delta)


def restore(W, b, K, G, s, n, method, damp):
    """Returns (weight [C, k], bias or None, E_before, E_after, fell_back, fit error)."""
    C, F = W.shape
    k = len(K)
    dropped = np.setdiff1d(np.arange(F), K)
    plain = W[:, K]
    b0 = np.zeros(C) if b is None else b
    c = np.zeros(C)
    Wk, ok = plain, True
    if method == "bias":
        c = W[:, dropped] @ (s[dropped] / max(n, 1.0))
    else:
        GKK = G[np.ix_(K, K)]
        lam = damp * np.trace(GKK) / k
        if method == "lsq":
            A, R = GKK + lam * np.eye(k), W @ G[:, K]
        else:
            A = np.block([[GKK + lam * np.eye(k), s[K][:, None]], [s[K][None, :], np.array([[n]])]])
            R = W @ np.column_stack([G[:, K], s])
        try:
            X = scipy.linalg.cho_solve(scipy.linalg.cho_factor(A, lower=True), R.T).T  # X A = R
            Wk = X[:, :k]
            if method == "bias+lsq":
                c = X[:, k]
        except np.linalg.LinAlgError:
            ok = False
    before = max(error(W, K, plain, np.zeros(C), G, s, n), 0.0)
    fit = max(error(W, K, Wk, c, G, s, n), 0.0) if ok else float("nan")
    fell_back = not ok or not (fit <= before * (1 + 1e-9) + 1e-12)
    writes_bias = b is not None or method != "lsq"
    if fell_back:  # the plain slice: b' = b (zeros for a bias-adding method on a model without biases)
        return plain, (b0 if writes_bias else None), before, before, True, fit
    return Wk, (b0 + c if writes_bias else None), before, fit, False, fit


TABLE_LINE = re.compile(r"^\s*(\d+)\s+o_proj\s+(\S+)\s+→\s+(\S+)(\s+\(kept the plain slice\))?"
                        r"\s+down_proj\s+(\S+)\s+→\s+(\S+)(\s+\(kept the plain slice\))?\s*$")


def parse_table(stderr):
    """restore's per-layer error table: {layer: {"o_proj": (before, after, fell_back), "down_proj": ...}}."""
    out = {}
    for line in stderr.splitlines():
        m = TABLE_LINE.match(line)
        if m:
            out[int(m[1])] = {"o_proj": (float(m[2]), float(m[3]), bool(m[4])),
                              "down_proj": (float(m[5]), float(m[6]), bool(m[7]))}
    return out


def compare(actual, expected):
    """Largest relative error (over nonzero expected), largest abs error, worst |d| / (atol + rtol |e|)."""
    a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    d = np.abs(a - e)
    nz = e != 0
    atol = RTOL * np.sqrt(np.mean(e * e)) if e.size else 0.0
    rel = float(np.max(d[nz] / np.abs(e[nz]))) if nz.any() else 0.0
    if atol > 0:
        worst = float(np.max(d / (atol + RTOL * np.abs(e))))
    else:  # an all-zero reference (a fallback's zero bias): exact
        worst = np.inf if d.size and np.max(d) > 0 else 0.0
    return rel, float(np.max(d)) if d.size else 0.0, worst


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", help="folder of the built tools (runs the pipeline in --work)")
    ap.add_argument("--work", default="/tmp/prunekit-restore-reference")
    ap.add_argument("--reuse", action="store_true", help="keep the work folder's outputs that exist")
    ap.add_argument("--dense"), ap.add_argument("--stats"), ap.add_argument("--plan")
    ap.add_argument("--restored", help="the tool's outputs, '{method}' replaced (default: the work folder's)")
    ap.add_argument("--out", default=fixture_default)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    wall, logs = None, {}
    if args.bin:
        wall, logs = run_pipeline(args.bin, args.work, args.reuse)
    dense_p = args.dense or os.path.join(args.work, "dense.st")
    stats_p = args.stats or os.path.join(args.work, "stats.st")
    plan_p = args.plan or os.path.join(args.work, "plan.st")
    restored_p = args.restored or os.path.join(args.work, "restored-{method}.st")
    dense, stats, plan = St(dense_p), St(stats_p), St(plan_p)
    cfg = json.loads(dense.meta["config"])
    L, C = cfg["num_hidden_layers"], cfg["hidden_size"]
    assert stats.meta.get("fingerprint") == dense.meta["fingerprint"], "statistics of another model"
    assert plan.meta.get("fingerprint") == dense.meta["fingerprint"], "a plan for another model"
    assert cfg.get("value_widths") is None and (cfg["head_dim"], cfg["head_counts"][0], cfg["kv_head_counts"][0]) == (64, 9, 3)
    digest = plan_digest(plan, L)

    sliced_p = os.path.join(os.path.dirname(restored_p), "sliced.st")
    sliced = St(sliced_p) if os.path.exists(sliced_p) else None
    tools = {m: St(restored_p.format(method=m)) for m in METHODS if os.path.exists(restored_p.format(method=m))}
    for m, t in tools.items():
        assert t.meta.get("plan_digest") == digest, f"{m}: plan digest {t.meta.get('plan_digest')} != {digest}"
        assert t.meta.get("restore") == m
    tables = {m: parse_table(logs.get(f"restored-{m}.st", "")) for m in METHODS}

    tensors = {"rows": np.array(ROWS, np.int64)}
    fit_errors, tool_err, bad = {}, {}, []
    stats_hash = hashlib.sha256()
    consumers = [("o_proj", "self_attn.o_proj"), ("down_proj", "mlp.down_proj")]
    for l in range(L):
        for short, module in consumers:
            P = f"model.layers.{l}.{module}"
            W = dense[P + ".weight"].astype(np.float64)
            b = dense.get(P + ".bias")
            b = None if b is None else b.astype(np.float64)
            K = np.array(o_proj_columns(plan, l, cfg) if short == "o_proj"
                         else plan[f"model.layers.{l}.mlp.kept_channels"], np.int64)
            assert np.all(np.diff(K) > 0) and K[-1] < W.shape[1]
            pre = f"{P}.input."
            n = float(stats[pre + "count"][0])
            s, G = stats[pre + "sum"].astype(np.float64), stats[pre + "gram"].astype(np.float64)
            assert np.array_equal(G, G.T)
            if l in FIXTURE_LAYERS:
                for field in ("count", "sum", "gram"):
                    t = stats[pre + field]
                    assert t.dtype.byteorder in "<=" and t.dtype in (np.int64, np.float64)
                    stats_hash.update(np.ascontiguousarray(t).tobytes())
                tensors[P + ".kept_columns"] = K
            if sliced is not None:  # slice kept exactly these columns of the dense weight
                assert np.array_equal(sliced[P + ".weight"], dense[P + ".weight"][:, K]), f"{P}: sliced columns"
            for m in METHODS:
                Wk, bias, before, after, fell_back, fit = restore(W, b, K, G, s, n, m, DAMP)
                case = f"{P}.{m}"
                if fell_back:
                    fit_errors[case] = fit
                    print(f"  fallback: layer {l} {short} {m}: fit error {fit:.6g} > before {before:.6g}", file=sys.stderr)
                if l in FIXTURE_LAYERS:
                    if not fell_back and m != "bias":
                        tensors[case + ".weight_rows"] = np.ascontiguousarray(Wk[ROWS])
                    if bias is not None:
                        tensors[case + ".bias"] = bias
                    tensors[case + ".errors"] = np.array([before, after])
                    tensors[case + ".fell_back"] = np.array([int(fell_back)], np.int64)
                if m not in tools:
                    continue
                t = tools[m]
                rel_w, abs_w, worst_w = compare(t[P + ".weight"], Wk)
                rows_rel = compare(t[P + ".weight"][ROWS], Wk[ROWS])[0]
                tb = t.get(P + ".bias")
                if bias is None:
                    rel_b, worst_b = 0.0, 0.0
                    if tb is not None:
                        bad.append(f"{case}: the tool wrote a bias, the reference none")
                else:
                    if tb is None:
                        bad.append(f"{case}: the tool wrote no bias")
                        rel_b, worst_b = np.inf, np.inf
                    else:
                        rel_b, _, worst_b = compare(tb, bias)
                row = tables[m].get(l, {}).get(short)
                if row is not None:
                    tb_, ta_, tf_ = row
                    if tf_ != fell_back or abs(tb_ - before) > 1e-3 * before + 1e-9 or abs(ta_ - after) > 1e-3 * after + 1e-9:
                        bad.append(f"{case}: tool's table {row} vs reference ({before:.6g}, {after:.6g}, {fell_back})")
                elif logs:
                    bad.append(f"{case}: no row in restore's error table")
                if worst_w > 1 or worst_b > 1:
                    bad.append(f"{case}: weight {worst_w:.3g}, bias {worst_b:.3g} × the tolerance")
                tool_err[case] = {"weight_max_rel": rel_w, "weight_rows_max_rel": rows_rel, "weight_max_abs": abs_w,
                                  "weight_worst_over_tol": worst_w, "bias_max_rel": rel_b, "bias_worst_over_tol": worst_b}
                if l in FIXTURE_LAYERS:
                    print(f"  layer {l:2d} {short:9s} {m:8s} k={len(K):4d}  E {before:11.6g} -> {after:11.6g}"
                          f"{' (fallback)' if fell_back else '           '}  max rel err vs tool: weight {rel_w:.2e}"
                          f" (16 rows {rows_rel:.2e}, abs {abs_w:.1e}, {worst_w:.2g}×tol)  bias {rel_b:.2e}")
    for l in FIXTURE_LAYERS:
        pre = f"model.layers.{l}."
        for name in ("self_attn.kept_heads", "self_attn.kept_kv_heads", "self_attn.kept_value_dims"):
            v = plan.get(pre + name)
            if v is not None:
                tensors[f"plan.{l}.{name.split('.')[-1]}"] = v.astype(np.int64)

    if tool_err:
        worst = max(tool_err.items(), key=lambda kv: kv[1]["weight_max_rel"])
        print(f"all {len(tool_err)} cases compared with the tool; largest weight rel error {worst[1]['weight_max_rel']:.2e}"
              f" ({worst[0]}), largest bias rel error {max(v['bias_max_rel'] for v in tool_err.values()):.2e};"
              f" largest |error| / (atol + rtol |ref|): weight {max(v['weight_worst_over_tol'] for v in tool_err.values()):.3g},"
              f" bias {max(v['bias_worst_over_tol'] for v in tool_err.values()):.3g}", file=sys.stderr)
    else:
        print("no restored-{method}.st found: the reference is not compared with the tool", file=sys.stderr)

    meta = {
        "producer": "scripts/reference/restore_reference.py",
        "format": "prunekit-restore-reference",
        "commands": json.dumps(commands()),
        "model": "SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch-model.sh)",
        "data": DATA_REL,
        "damp": repr(DAMP),
        "methods": json.dumps(METHODS),
        "layers": json.dumps(FIXTURE_LAYERS),
        "rows": json.dumps(ROWS),
        "dense_fingerprint": dense.meta["fingerprint"],
        "plan_digest": digest,
        "stats_windows_sha256": stats.meta.get("windows_sha256", ""),
        "stats_tensors_sha256": stats_hash.hexdigest(),
        "plan_file_sha256": sha256_file(plan_p),
        "stats_file_sha256": sha256_file(stats_p),
        "fit_errors": json.dumps(fit_errors, sort_keys=True),
        "tool": (tools[METHODS[0]].meta.get("producer", "") + " " + tools[METHODS[0]].meta.get("version", "")) if tools else "",
    }
    if not args.no_write:
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        save(tensors, args.out, meta)
        print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)", file=sys.stderr)
    for x in [dense, stats, plan, sliced, *tools.values()]:
        if x is not None:
            x.close()
    if bad:
        print("MISMATCH between the reference and the tool:\n  " + "\n  ".join(bad), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
