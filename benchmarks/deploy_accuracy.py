"""Claims: the OpenVINO INT8 bundle and the ONNX Runtime bundle label the digits validation images, read from
PNG files through `edgetl predict`'s code path, within 1 point of the val_acc that training reported; and the
export's parity ladder on the default INT8 run (ONNX FP32 vs PyTorch, INT8 graph vs FP32).

Runs `edgetl demo` (train INT8 -> export -> compile -> package -> predict) in a scratch folder and writes
benchmarks/results/deploy_accuracy.json.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from _common import write_result

from edgetl.cli.demo import run_demo


def main() -> dict:
    with tempfile.TemporaryDirectory(prefix="edgetl-deploy-acc-") as tmp:
        summary = run_demo(Path(tmp) / "demo", Path(tmp) / "cache")
    result = {
        "claim": "bundle accuracy on the digits val images (PNG files) vs run.json val_acc",
        "val_acc_run": summary["val_acc_run"],
        "val_acc_fp32": summary["val_acc_fp32"],
        "int8_agreement": summary["int8_agreement"],
        "export_parity": summary["parity"],  # export.json's ladder: PyTorch FP32 -> ONNX FP32 -> ONNX INT8
        "bundles": {
            target: {
                **d,
                "bundle": Path(d["bundle"]).name,
                "delta_points": (d["accuracy"] - summary["val_acc_run"]) * 100,
            }
            for target, d in summary["deployed"].items()
        },
    }
    write_result("deploy_accuracy", result)
    for target, d in result["bundles"].items():
        print(
            f"{target:12s} accuracy {d['accuracy']:.4f} vs run.json {summary['val_acc_run']:.4f} ({d['delta_points']:+.2f} pt)"
        )
    return result


if __name__ == "__main__":
    main()
