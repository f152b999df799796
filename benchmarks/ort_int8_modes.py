"""Claim: what ONNX Runtime's non-saturating u8u8 INT8 kernels cost against its default ones, on this CPU.

`Predictor` opens an ONNX Runtime INT8 *image* bundle in u8u8 (session.x64quantprecision) at once on a CPU without
VNNI, and a *text* bundle only where its probe fails (edgetl/deploy/predictor.py). This measures both modes on the
same bundles, in one process, interleaved (ROUNDS rounds, each mode once per round; ratio = median of the per-round
ratios; > 1: u8u8 slower):

  image   the demo's model (digits, 64 px, INT8 laid out for OpenVINO, as `make demo` compiles it for ONNX
          Runtime) and the ONNX Runtime layout (`run-ort`): the 359 val frames of the seed-0 split, one per call
  text    MiniLM on tests/data/text/intents.csv, trained with --quantize int8 --target onnxruntime (ONNX Runtime's
          dynamic quantization, the text bundles Predictor keeps in the default kernels): its 318 texts, one per call

Also the labels of each mode against the labels (images) or against each other (text). Run it alone.
Writes benchmarks/results/ort_int8_modes.json (ort_int8_modes.avx2.json on a CPU without VNNI).
"""

from __future__ import annotations

import csv
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import EDGETL, WORK, _bundle, _export, _run, per_cpu, write_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from edgetl.deploy.bundle import open_bundle  # noqa: E402
from edgetl.deploy.predictor import Predictor  # noqa: E402
from edgetl.deploy.targets import get_target  # noqa: E402
from edgetl.machine import cpu_info, int8_dot  # noqa: E402

ROUNDS = 9
INTENTS = ROOT / "tests" / "data" / "text" / "intents.csv"


def _edgetl(*args: str) -> None:
    subprocess.run([*EDGETL, *args], check=True, stdout=subprocess.DEVNULL)


def text_bundle() -> Path:
    """The INT8 MiniLM intents run in the ONNX Runtime layout, compiled for it, built once into the bench work folder."""
    run, out = WORK / "intents-int8-ort", WORK / "build" / "intents-ort"
    if not (run / "model.onnx").is_file():
        _edgetl("train", "--data", str(INTENTS), "--backbone", "minilm", "--quantize", "int8",
                "--target", "onnxruntime", "--out", str(run), "--overwrite", "--no-progress")  # fmt: skip
        _edgetl("export", str(run))
    if not (out / "manifest.json").is_file():
        _edgetl("compile", str(run / "model.onnx"), "--target", "onnxruntime", "--out", str(out))
    return out


def digits_val() -> tuple[list[np.ndarray], np.ndarray]:
    from edgetl.data import load_dataset

    ds = load_dataset("digits", 0, False, print)
    return [it.load() for it in ds.val], np.array([it.label for it in ds.val])


def compare(bundle: Path, inputs: list, feeds) -> dict:
    """Both modes on one bundle: median seconds for all inputs, the per-round ratio, each mode's labels."""
    target = get_target("onnxruntime")
    with open_bundle(bundle) as artifact:
        runners = {mode: target.load(artifact, precise=mode == "u8u8") for mode in ("default", "u8u8")}
        made = [feeds(x) for x in inputs]  # input preparation is the same for both: outside the timing
        labels = {m: np.array([int(r.infer(f)["label"].reshape(-1)[0]) for f in made]) for m, r in runners.items()}
        seconds: dict[str, list[float]] = {m: [] for m in runners}
        for _ in range(ROUNDS):
            for mode, runner in runners.items():
                start = time.perf_counter()
                for f in made:
                    runner.infer(f)
                seconds[mode].append(time.perf_counter() - start)
    ratios = [u / d for u, d in zip(seconds["u8u8"], seconds["default"], strict=True)]
    return {
        "bundle": str(bundle),
        "inputs": len(inputs),
        "median_s": {m: statistics.median(v) for m, v in seconds.items()},
        "u8u8_vs_default": statistics.median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
        "labels": labels,
    }


def main() -> dict:
    run, run_ort = _run("run", "openvino"), _run("run-ort", "onnxruntime")
    images = {  # the default export of each layout, compiled for ONNX Runtime
        "image, OpenVINO layout (what make demo compiles)": _bundle(
            _export(run, WORK / "fused" / "model.onnx"), "demo-ort", "onnxruntime"
        ),
        "image, ONNX Runtime layout": _bundle(_export(run_ort, run_ort / "model.onnx"), "ort-int8", "onnxruntime"),
    }
    frames, truth = digits_val()
    rows = {}
    for name, bundle in images.items():
        with Predictor(bundle) as predictor:
            row = compare(bundle, frames, predictor.feeds)
        labels = row.pop("labels")
        row["accuracy"] = {m: float((v == truth).mean()) for m, v in labels.items()}
        rows[name] = row
    texts = [r["text"] for r in csv.DictReader(INTENTS.open(encoding="utf-8"))]
    bundle = text_bundle()
    with Predictor(bundle) as predictor:
        row = compare(bundle, texts, predictor.text_feeds)
    labels = row.pop("labels")
    row["labels_equal"] = float((labels["default"] == labels["u8u8"]).mean())
    rows["text, MiniLM intents (ONNX Runtime layout: dynamic quantization)"] = row
    cpu = cpu_info()
    result = {
        "claim": "ONNX Runtime INT8: u8u8 (session.x64quantprecision) vs default kernels, same bundles, interleaved",
        "machine": cpu,
        "int8_dot": int8_dot(cpu),
        "rounds": ROUNDS,
        "rows": rows,
        "note": "u8u8_vs_default > 1: u8u8 slower",
    }
    write_result(per_cpu("ort_int8_modes"), result)
    for name, row in rows.items():
        quality = row.get("accuracy") or {"labels equal": row["labels_equal"]}
        print(f"{name}: u8u8 {row['u8u8_vs_default']:.2f}x the default's time; {quality}")
    return result


if __name__ == "__main__":
    main()
