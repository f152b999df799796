"""Claims for the text path (MiniLM, default options), measured in one run on two real labelled sets:
tests/data/text/intents.csv (318 hand-written assistant commands, 5 classes) and `stdlib-docstrings`, the
first sentences of the docstrings of six CPython standard-library packages (asyncio, email, xml,
multiprocessing, http, importlib; 120 each, label = the package), written to a CSV at run time from this
Python's own source: no download, the same sentences for the same Python version, and a harder task.

1. val accuracy FP32 vs INT8 (OpenVINO/NNCF) within 1 point, top-1 agreement >= 0.97 (both sets); the
   same for the ONNX Runtime INT8 layout;
2. warm feature cache vs `--no-cache-features` at 30 epochs (the default): >= 50x (run.json timing.total_s);
3. end-to-end string -> label p50 of the OpenVINO bundle as `edgetl compile` builds it by default (edgetl's
   native BertTokenize op in the graph, a static-shape branch for one short sentence: seq_bucket,
   `Predictor.predict_text`) vs the by-hand way (transformers' tokenizer in Python + ONNX Runtime FP32
   encoder+head graph, batch 1): goal >= 2x. All run the same validation sentences (intents), interleaved in
   rounds, so machine noise hits all; the speed-up is the median over rounds of the per-round ratio. Timed
   beside them: the same INT8 model with `--no-fused-kernels` (openvino-tokenizers' subgraph in the graph) and
   with `--tokenizer host` (the `tokenizers` library in Python, token ids into OpenVINO), the ONNX Runtime INT8
   bundle (dynamic quantization, extensions' tokenizer in the graph), and the FP32 run's OpenVINO and ONNX
   Runtime bundles, to show what INT8, the runtime and each in-graph tokenizer change;
4. the static-shape branch's trade-off: the OpenVINO INT8 bundle with and without it (`--static-tokens 0`),
   on the intents sentences (above) and on `edgetl bench`'s eight sample texts taken in turn (5 to ~90 tokens:
   every call changes shape, most go past the branch), same rounds and ratios.

Every `edgetl train` is a fresh process. Run it alone on the machine. Writes benchmarks/results/text.json
(text.avx2.json on a CPU without VNNI: _common.per_cpu).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import per_cpu, write_result

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: tests.text.docstrings
from tests.text.docstrings import stdlib_docstrings  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "text" / "intents.csv"
ROUNDS, PER_ROUND = 12, 40


def edgetl(*args: str) -> None:
    cmd = [sys.executable, "-m", "edgetl", *args]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def train(data: Path, out: Path, cache: Path, *extra: str) -> dict:
    edgetl("train", "--data", str(data), "--backbone", "minilm", "--out", str(out), "--cache-dir", str(cache),
           "--epochs", "30", "--no-progress", *extra)  # fmt: skip
    return json.loads((out / "run.json").read_text())


def accuracy(data: Path, tmp: Path) -> dict:
    """FP32 (cold, then warm from the cache), --no-cache-features and INT8 runs on one data set."""
    cold = train(data, tmp / "cold", tmp / "cache")
    warm = train(data, tmp / "warm", tmp / "cache")
    nocache = train(data, tmp / "nocache", tmp / "cache-unused", "--no-cache-features")
    int8 = train(data, tmp / "int8", tmp / "cache", "--quantize", "int8")
    int8_ort = train(data, tmp / "int8ort", tmp / "cache", "--quantize", "int8", "--target", "onnxruntime")
    # both layouts in one run (`--target A,B`), for `compile RUN --target auto`: every feature is a cache hit here
    train(data, tmp / "int8both", tmp / "cache", "--quantize", "int8", "--target", "openvino,onnxruntime")
    m, mo = int8["metrics"], int8_ort["metrics"]
    return {
        "train_texts": int8["data"]["train"],
        "val_texts": int8["data"]["val"],
        "classes": len(int8["classes"]),
        "val_acc_fp32": m["val_acc_fp32"],
        "val_acc_int8": m["val_acc"],
        "int8_drop_points": m["int8_drop"] * 100,
        "int8_agreement": m["int8_agreement"],
        "quantize": {k: int8["quantize"][k] for k in ("target", "method", "precision_used", "status")},
        "onnxruntime_int8": {  # ONNX Runtime: quantize_dynamic on the MatMuls, same FP32 recipe
            "val_acc_int8": mo["val_acc"],
            "int8_drop_points": mo["int8_drop"] * 100,
            "int8_agreement": mo["int8_agreement"],
            "quantize": {k: int8_ort["quantize"][k] for k in ("target", "method", "precision_used", "status")},
        },
        "total_s": {
            "cold": cold["timing"]["total_s"],
            "warm": warm["timing"]["total_s"],
            "no_cache": nocache["timing"]["total_s"],
        },  # fmt: skip
        "val_acc_no_cache": nocache["metrics"]["val_acc"],
        "speedup_warm": nocache["timing"]["total_s"] / warm["timing"]["total_s"],
        "speedup_cold": nocache["timing"]["total_s"] / cold["timing"]["total_s"],
        "versions": int8["versions"],
    }


def by_hand(run: Path, tmp: Path):
    """What a user writes without edgetl: HF tokenizer + ONNX Runtime on the FP32 encoder+head graph."""
    import onnxruntime as ort

    from edgetl.export.text import build_text_graph, export_text_encoder, load_text_parts
    from edgetl.tokenizer_graphs.tokenizers import hf_tokenizer

    record, backbone, head, _ = load_text_parts(run)
    path = tmp / "fp32.onnx"
    path.write_bytes(build_text_graph(export_text_encoder(backbone), head, record, "fp32").SerializeToString())
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    tok = hf_tokenizer(backbone.model_dir)

    def run_one(text: str) -> int:
        enc = tok([text], truncation=True, max_length=backbone.cfg.preprocess.max_length, return_tensors="np")
        feeds = {
            "input_ids": enc["input_ids"].astype(np.int64),
            "attention_mask": enc["attention_mask"].astype(np.int64),
        }
        return int(sess.run(["label"], feeds)[0][0])

    return run_one


def labeller(predictor):
    return lambda text: predictor.predict_text(text).label


def latency(fns: dict, texts: list[str]) -> dict:
    """Interleaved rounds (order reversed every other round); per round, each pipeline's p50 over the same
    sentences. The speed-up is the median over rounds of by_hand p50 / pipeline p50 (same minute, same noise)."""
    for fn in fns.values():  # warm-up: first-call allocations are not latency
        for t in texts[:5]:
            fn(t)
    times: dict[str, list[float]] = {k: [] for k in fns}
    per_round: dict[str, list[float]] = {k: [] for k in fns}
    labels: dict[str, list[int]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(ROUNDS):
        batch = texts[(r * PER_ROUND) % len(texts) :][:PER_ROUND]
        for name in names if r % 2 == 0 else names[::-1]:
            fn, block = fns[name], []
            for t in batch:
                start = time.perf_counter()
                labels[name].append(fn(t))
                block.append((time.perf_counter() - start) * 1000)
            times[name] += block
            per_round[name].append(float(np.median(block)))
    out = {k: {"p50_ms": float(np.percentile(v, 50)), "p90_ms": float(np.percentile(v, 90)), "n": len(v),
               "round_p50_ms": per_round[k]} for k, v in times.items()}  # fmt: skip
    speedup = {
        k: float(np.median(np.array(per_round["by_hand"]) / np.array(per_round[k]))) for k in fns if k != "by_hand"
    }
    return out | {"labels": labels, "speedup": speedup}


def main() -> dict:
    from edgetl.bench.harness import SAMPLE_TEXTS
    from edgetl.data.text import load_text_dataset
    from edgetl.deploy.predictor import Predictor

    with tempfile.TemporaryDirectory(prefix="edgetl-text-bench-") as tmp:
        tmp = Path(tmp)
        sets = {"intents": DATA, "stdlib-docstrings": stdlib_docstrings(tmp / "stdlib-docstrings.csv")}
        results = {name: accuracy(data, tmp / name) for name, data in sets.items()}
        bundles = {}  # each bundle as `edgetl compile` builds it by default, plus the OpenVINO host-tokenizer one
        plan = (
            ("int8", "int8", "openvino", "", ()),
            ("int8", "int8", "openvino", "_openvino_tokenizers", ("--no-fused-kernels",)),
            ("int8", "int8", "openvino", "_no_static_branch", ("--static-tokens", "0")),
            ("int8", "int8", "openvino", "_host_tokenizer", ("--tokenizer", "host")),
            ("int8ort", "int8", "onnxruntime", "", ()),
            ("cold", "fp32", "openvino", "", ()),
            ("cold", "fp32", "onnxruntime", "", ()),
            ("int8both", "int8", "auto", "", ()),  # both INT8 layouts x both runtimes, the fastest timed here
        )
        for run in {p[0] for p in plan}:
            edgetl("export", str(tmp / "intents" / run))
        for run, precision, target, suffix, extra in plan:
            name = f"{target}_{precision}_bundle{suffix}"
            bundles[name] = out = tmp / name
            src = tmp / "intents" / run / ("" if target == "auto" else "model.onnx")  # auto: the run and its layouts
            edgetl("compile", str(src), "--target", target, "--out", str(out), *extra)
        val = [it.text for it in load_text_dataset(str(DATA), 0, False, lambda m: None).val]
        with contextlib.ExitStack() as stack:
            predictors = {k: stack.enter_context(Predictor(v)) for k, v in bundles.items()}
            fns = {k: labeller(p) for k, p in predictors.items()}
            fns["by_hand"] = by_hand(tmp / "intents" / "cold", tmp)
            lat = latency(fns, val)
            mixed_names = ("openvino_int8_bundle", "openvino_int8_bundle_no_static_branch", "by_hand")
            mixed = latency({k: fns[k] for k in mixed_names}, SAMPLE_TEXTS * (PER_ROUND // len(SAMPLE_TEXTS)))
            keys = ("tokenizer_ops", "static_tokens", "seq_bucket")  # OpenVINO: which tokenizer, which branches
            runtime = {k: p.info | {s: p.manifest["settings"].get(s) for s in keys} for k, p in predictors.items()}
            auto = predictors["auto_int8_bundle"].manifest["auto"]  # what `compile --target auto` timed and kept
    labels, speedup = lat.pop("labels"), lat.pop("speedup")
    result = {
        "claim": "MiniLM text path: INT8 accuracy/agreement, warm-cache speed-up, end-to-end latency vs by hand",
        "data": {
            "intents": str(DATA.relative_to(DATA.parents[3])),
            "stdlib-docstrings": f"CPython {sys.version.split()[0]}",
        },
        "sets": results,
        "latency": lat,
        "latency_speedup_p50": speedup,  # median over rounds of the per-round ratio
        "latency_mixed_lengths": {k: v for k, v in mixed.items() if k not in ("labels", "speedup")},
        "latency_mixed_lengths_speedup_p50": mixed["speedup"],
        "label_agreement_vs_by_hand": {
            k: float(np.mean(np.array(v) == labels["by_hand"])) for k, v in labels.items() if k != "by_hand"
        },
        "bundle_runtime": runtime,
        "auto": {k: auto[k] for k in ("winner", "why", "candidates", "budget")},
        "machine": auto["cpu"],  # the CPU every timing above ran on
    }
    write_result(per_cpu("text"), result)
    return result


if __name__ == "__main__":
    r = main()
    keys = ("val_acc_fp32", "val_acc_int8", "int8_agreement", "speedup_warm", "speedup_cold")
    print(json.dumps({name: {k: s[k] for k in keys} for name, s in r["sets"].items()}, indent=1))
    print(json.dumps({"latency_speedup_p50": r["latency_speedup_p50"], "latency": r["latency"]}, indent=1))
    print(json.dumps({"latency_mixed_lengths_speedup_p50": r["latency_mixed_lengths_speedup_p50"]}, indent=1))
