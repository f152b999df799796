"""Claims for the text path (MiniLM on tests/data/text/intents.csv, default options), measured in one run:

1. val accuracy FP32 vs INT8 (OpenVINO/NNCF) within 1 point, top-1 agreement >= 0.97;
2. warm feature cache vs `--no-cache-features` at 30 epochs (the default): >= 50x (run.json timing.total_s);
3. end-to-end string -> label p50 of the OpenVINO bundle (tokenizer in the graph, `Predictor.predict_text`)
   vs the by-hand way (transformers' tokenizer in Python + ONNX Runtime FP32 encoder+head graph, batch 1):
   goal >= 2x. Both run the same validation sentences, interleaved in rounds, so machine noise hits both.

Every `edgetl train` is a fresh process. Run it alone on the machine. Writes benchmarks/results/text.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import write_result

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "text" / "intents.csv"
ROUNDS, PER_ROUND = 5, 40


def edgetl(*args: str) -> None:
    cmd = [sys.executable, "-m", "edgetl", *args]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def train(out: Path, cache: Path, *extra: str) -> dict:
    edgetl("train", "--data", str(DATA), "--backbone", "minilm", "--out", str(out), "--cache-dir", str(cache),
           "--epochs", "30", "--no-progress", *extra)  # fmt: skip
    return json.loads((out / "run.json").read_text())


def by_hand(run: Path, tmp: Path):
    """What a user writes without edgetl: HF tokenizer + ONNX Runtime on the FP32 encoder+head graph."""
    import onnxruntime as ort

    from edgetl.export.text import build_text_graph, export_text_encoder, load_text_parts
    from edgetl.export.tokenizers import hf_tokenizer

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


def latency(fns: dict, texts: list[str]) -> dict:
    for fn in fns.values():  # warm-up: first-call allocations are not latency
        for t in texts[:5]:
            fn(t)
    times: dict[str, list[float]] = {k: [] for k in fns}
    labels: dict[str, list[int]] = {k: [] for k in fns}
    for r in range(ROUNDS):
        batch = texts[(r * PER_ROUND) % len(texts) :][:PER_ROUND]
        for name, fn in fns.items():
            for t in batch:
                start = time.perf_counter()
                labels[name].append(fn(t))
                times[name].append((time.perf_counter() - start) * 1000)
    return {k: {"p50_ms": float(np.percentile(v, 50)), "p90_ms": float(np.percentile(v, 90)), "n": len(v)}
            for k, v in times.items()} | {"labels": labels}  # fmt: skip


def main() -> dict:
    from edgetl.deploy.predictor import Predictor
    from edgetl.train.text_data import load_text_dataset

    with tempfile.TemporaryDirectory(prefix="edgetl-text-bench-") as tmp:
        tmp = Path(tmp)
        cold = train(tmp / "cold", tmp / "cache")
        warm = train(tmp / "warm", tmp / "cache")
        nocache = train(tmp / "nocache", tmp / "cache-unused", "--no-cache-features")
        int8 = train(tmp / "int8", tmp / "cache", "--quantize", "int8")
        edgetl("export", str(tmp / "int8"))
        edgetl("compile", str(tmp / "int8" / "model.onnx"), "--target", "openvino", "--out", str(tmp / "ov"))
        val = [it.text for it in load_text_dataset(str(DATA), 0, False, lambda m: None).val]
        with Predictor(tmp / "ov") as predictor:
            fns = {"openvino_bundle": lambda t: predictor.predict_text(t).label, "by_hand": by_hand(tmp / "int8", tmp)}
            lat = latency(fns, val)
            runtime = predictor.info
    labels = lat.pop("labels")
    m = int8["metrics"]
    result = {
        "claim": "MiniLM text path: INT8 accuracy/agreement, warm-cache speed-up, end-to-end latency vs by hand",
        "data": str(DATA.relative_to(DATA.parents[3])),
        "val_texts": int8["data"]["val"],
        "val_acc_fp32": m["val_acc_fp32"],
        "val_acc_int8": m["val_acc"],
        "int8_drop_points": m["int8_drop"] * 100,
        "int8_agreement": m["int8_agreement"],
        "quantize": {k: int8["quantize"][k] for k in ("target", "method", "precision_used", "status")},
        "total_s": {
            "cold": cold["timing"]["total_s"],
            "warm": warm["timing"]["total_s"],
            "no_cache": nocache["timing"]["total_s"],
        },  # fmt: skip
        "val_acc_no_cache": nocache["metrics"]["val_acc"],
        "speedup_warm": nocache["timing"]["total_s"] / warm["timing"]["total_s"],
        "speedup_cold": nocache["timing"]["total_s"] / cold["timing"]["total_s"],
        "latency": lat,
        "latency_speedup_p50": lat["by_hand"]["p50_ms"] / lat["openvino_bundle"]["p50_ms"],
        "label_agreement_bundle_vs_by_hand": float(np.mean(np.array(labels["openvino_bundle"]) == labels["by_hand"])),
        "bundle_runtime": runtime,
        "versions": int8["versions"],
    }
    write_result("text", result)
    return result


if __name__ == "__main__":
    r = main()
    print(json.dumps({k: r[k] for k in ("val_acc_fp32", "val_acc_int8", "int8_agreement", "speedup_warm",
                                        "latency_speedup_p50")}, indent=1))  # fmt: skip
