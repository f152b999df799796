"""Claims about the INT8 backbone on the default task (Lite0, digits, 64x64), one run per target:

- INT8 val accuracy within 1.0 point of the FP32 recipe, top-1 agreement >= 0.97 (OpenVINO, the default);
- extraction with the INT8 backbone >= 5x the images/s of PyTorch eager FP32 (`--compare-fp32`: both over
  the same preprocessed training images, same batch size, in the same process);
- the backbone quantized for TensorRT (symmetric, QDQ on Conv inputs) is within 1.0 point when run in ONNX
  Runtime, the only way to check its numerics without a GPU.

Writes benchmarks/results/quantize.json and .png.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import RESULTS, save_plot, write_result

TARGETS = ("openvino", "tensorrt", "onnxruntime")


def train(out: Path, cache: Path, target: str) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "edgetl",
        "train",
        "--quantize",
        "int8",
        "--target",
        target,
        "--compare-fp32",
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
        "--no-progress",
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "run.json").read_text())


def main() -> dict:
    rows = {}
    with tempfile.TemporaryDirectory(prefix="edgetl-quant-bench-") as tmp:
        for target in TARGETS:
            r = train(Path(tmp) / target, Path(tmp) / "cache", target)
            m, t, q = r["metrics"], r["timing"], r["quantize"]
            rows[target] = {
                "val_acc_int8": m["val_acc"],
                "val_acc_fp32": m["val_acc_fp32"],
                "drop_points": m["int8_drop"] * 100,
                "int8_agreement": m["int8_agreement"],
                "engine": q["engine"],
                "precision_used": q["precision_used"],
                "method": q["method"],
                "calib_size": q["calib_size"],
                "extract_images_per_s_int8": t["extract_images_per_s"],
                "extract_images_per_s_fp32_eager": t["extract_images_per_s_fp32_eager"],
                "speedup_vs_fp32_eager": t["extract_speedup_vs_fp32_eager"],
                "quantize_s": t.get("quantize_s"),
            }
            print(
                f"{target:12s} INT8 {m['val_acc']:.4f} vs FP32 {m['val_acc_fp32']:.4f} "
                f"(drop {m['int8_drop'] * 100:+.2f} pt, agreement {m['int8_agreement']:.4f}); extraction "
                f"{t['extract_speedup_vs_fp32_eager']:.1f}x PyTorch FP32 eager ({q['engine']})"
            )
    result = {"task": "efficientnet_lite0 on digits, 64x64, calib from train", "targets": rows}
    write_result("quantize", result)
    plot(rows)
    return result


def plot(rows: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    names = list(rows)
    x = range(len(names))
    a1.bar([i - 0.2 for i in x], [rows[n]["val_acc_fp32"] for n in names], 0.4, label="FP32 recipe")
    a1.bar([i + 0.2 for i in x], [rows[n]["val_acc_int8"] for n in names], 0.4, label="INT8 (deployed)")
    a1.set_xticks(list(x), names)
    a1.set_ylim(0.9, 1.0)
    a1.set_ylabel("val accuracy")
    a1.legend(loc="lower right")
    a1.set_title("accuracy: INT8 vs FP32 features")
    a2.bar(names, [rows[n]["speedup_vs_fp32_eager"] for n in names], color="#55a868")
    a2.axhline(5, color="red", ls="--", lw=1, label="5x claim")
    a2.set_ylabel("images/s vs PyTorch eager FP32")
    a2.set_title("extraction speed-up, same images, one run")
    a2.legend()
    fig.tight_layout()
    save_plot(fig, RESULTS / "quantize.png")


if __name__ == "__main__":
    main()
