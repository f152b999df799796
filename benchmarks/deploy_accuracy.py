"""Claim: the OpenVINO INT8 bundle and the ONNX Runtime bundle label the digits validation images, read from
PNG files through `edgetl predict`'s code path, within 1 point of the val_acc that training reported.

Runs `edgetl demo` (train INT8 -> export -> compile -> package -> predict) in a scratch folder and writes
benchmarks/results/deploy_accuracy.json.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from edgetl.demo import run_demo
from edgetl.fileio import atomic_write_bytes

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> dict:
    with tempfile.TemporaryDirectory(prefix="edgetl-deploy-acc-") as tmp:
        summary = run_demo(Path(tmp) / "demo", Path(tmp) / "cache")
    result = {
        "claim": "bundle accuracy on the digits val images (PNG files) vs run.json val_acc",
        "val_acc_run": summary["val_acc_run"],
        "bundles": {
            target: {
                **d,
                "bundle": Path(d["bundle"]).name,
                "delta_points": (d["accuracy"] - summary["val_acc_run"]) * 100,
            }
            for target, d in summary["deployed"].items()
        },
    }
    RESULTS.mkdir(exist_ok=True)
    atomic_write_bytes(RESULTS / "deploy_accuracy.json", (json.dumps(result, indent=1) + "\n").encode())
    for target, d in result["bundles"].items():
        print(
            f"{target:12s} accuracy {d['accuracy']:.4f} vs run.json {summary['val_acc_run']:.4f} ({d['delta_points']:+.2f} pt)"
        )
    return result


if __name__ == "__main__":
    main()
