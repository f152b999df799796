"""`edgetl demo` (what `make demo` runs): the whole pipeline on the built-in digits, end to end.

train (INT8 backbone, cached features) -> export (one ONNX graph + parity) -> compile for OpenVINO and ONNX
Runtime -> package -> predict every validation image *from image files* through each bundle, and check the
deployed accuracy against what training reported. Writes `<out>/demo.json` and prints one screen.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from edgetl.config import QuantizeCfg, TrainCfg
from edgetl.contract import MODEL_ONNX
from edgetl.data import load_dataset
from edgetl.fileio import atomic_write_bytes
from edgetl.progress import info, warn

TARGETS = ("openvino", "onnxruntime")


def write_val_images(run: dict, folder: Path) -> list[tuple[Path, int]]:
    """The run's validation images as PNG files (what a user would point predict at), with their labels."""
    cfg = run["config"]
    ds = load_dataset(cfg["data"], cfg["seed"], False, warn)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, it in enumerate(ds.val):
        path = folder / f"{i:04d}_{ds.classes[it.label]}.png"
        Image.fromarray(it.load()).save(path)
        out.append((path, it.label))
    return out


def bundle_accuracy(bundle: Path, images: list[tuple[Path, int]]) -> dict:
    from edgetl.deploy.predictor import Predictor

    with Predictor(bundle) as predictor:
        preds = list(predictor.predict_files([p for p, _ in images], 1, True, warn))
        ms = [p.ms for p in preds]
        acc = float(np.mean([p.label == y for p, (_, y) in zip(preds, images, strict=True)]))
        return {
            "bundle": str(bundle),
            "accuracy": acc,
            "images": len(preds),
            "model_precision": predictor.manifest["precision"]["model"],  # int8; runtime: what ran elsewhere
            "precision": predictor.info.get("precision"),
            "median_ms": float(np.median(ms)),
        }


def run_demo(out: Path, cache_dir: Path | None = None) -> dict:
    from edgetl.deploy.bundle import package
    from edgetl.deploy.targets import CompileOptions, get_target
    from edgetl.export.run import export_run
    from edgetl.train.run import run_train
    from edgetl.train.summary import print_train_summary

    out = Path(out)
    run_dir = out / "run"
    cfg = TrainCfg(out=run_dir, overwrite=True, quantize=QuantizeCfg(), compare_fp32=True, cache_dir=cache_dir)
    record = run_train(cfg)
    print_train_summary(record)
    exported = export_run(run_dir, echo=info)
    images = write_val_images(record, out / "val-images")
    deployed = {}
    for target in TARGETS:
        artifact = get_target(target).compile(run_dir / MODEL_ONNX, out / "build" / target, CompileOptions())
        bundle = out / f"digits-{target}.tar.gz"
        package(artifact.root, bundle)
        deployed[target] = bundle_accuracy(bundle, images)
    summary = {
        "val_acc_run": record["metrics"]["val_acc"],
        "val_acc_fp32": record["metrics"].get("val_acc_fp32"),
        "int8_agreement": record["metrics"].get("int8_agreement"),
        "extract_speedup_vs_fp32_eager": record["timing"].get("extract_speedup_vs_fp32_eager"),
        "parity": exported["stages"],
        "deployed": deployed,
    }
    atomic_write_bytes(out / "demo.json", (json.dumps(summary, indent=1) + "\n").encode())
    print_demo_summary(summary, out)
    return summary


def print_demo_summary(s: dict, out: Path) -> None:
    from rich.table import Table

    from edgetl.train.summary import out as console

    t = Table(
        title="edgetl demo: deployed bundles on the digits validation images (from PNG files)", title_justify="left"
    )
    for col in ("target", "precision: model / runtime", "accuracy", "vs run.json", "median ms / image"):
        t.add_column(col)
    for target, d in s["deployed"].items():
        delta = (d["accuracy"] - s["val_acc_run"]) * 100
        t.add_row(
            target,
            f"{d['model_precision']} / {d['precision']}",
            f"{d['accuracy']:.4f}",
            f"{delta:+.1f} pt",
            f"{d['median_ms']:.2f}",
        )
    console.print(t)
    stages = ", ".join(f"{st['name']} agreement {st['top1_agreement']:.3f}" for st in s["parity"])
    console.print(f"parity ladder: {stages}")
    console.print(f"next: edgetl predict {out}/digits-openvino.tar.gz {out}/val-images/0000_*.png --top-k 3")
