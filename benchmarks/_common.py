"""Shared by the latency benchmarks: the demo models and bundles, built once into a reusable work folder.

Every latency script needs the same real artifacts (the default task: EfficientNet-Lite0 on digits at 64x64,
INT8), built the way a user builds them with the CLI. Building takes minutes, timing takes seconds, so the
folder ($EDGETL_BENCH_WORK, default /tmp/edgetl-bench-work) is kept and reused; delete it to rebuild.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
WORK = Path(os.environ.get("EDGETL_BENCH_WORK", "/tmp/edgetl-bench-work"))
EDGETL = [sys.executable, "-m", "edgetl"]


def _edgetl(*args: str) -> None:
    env = {**os.environ, "EDGETL_CACHE_DIR": os.environ.get("EDGETL_CACHE_DIR", str(WORK / "cache"))}
    print("+ edgetl " + " ".join(args), flush=True)
    subprocess.run([*EDGETL, *args], check=True, env=env, stdout=subprocess.DEVNULL)


def _run(name: str, target: str) -> Path:
    run = WORK / name
    if not (run / "run.json").is_file():
        _edgetl("train", "--quantize", "int8", "--target", target, "--out", str(run), "--overwrite", "--no-progress")
    return run


def _export(run: Path, out: Path, *flags: str) -> Path:
    if not out.is_file():
        _edgetl("export", str(run), "--out", str(out), *flags)
    return out


def _bundle(onnx: Path, name: str, target: str, *flags: str) -> Path:
    bundle = WORK / f"{name}.tar.gz"
    if not bundle.is_file():
        _edgetl("compile", str(onnx), "--target", target, "--out", str(WORK / "build" / name), *flags)
        _edgetl("package", str(WORK / "build" / name), "--out", str(bundle))
    return bundle


def artifacts() -> dict[str, Path]:
    """The demo runs, exported graphs and bundles (built on first use):

    run            INT8 run laid out for OpenVINO (NNCF);  model.onnx: its standard-op export (--no-fused-ops)
    run-ort        INT8 run laid out for ONNX Runtime (quantize_static)
    fp32.onnx      the FP32 graph of `run` (what `edgetl export` builds as the parity ladder's middle rung)
    ov-fused       `export` + `compile --target openvino`: edgetl's defaults (fused ops, native kernels)
    ov             `export --no-fused-ops` + `compile --target openvino` (standard ops)
    ov-float       `export --input float-nchw --no-fused-ops` + `compile --target openvino` (preprocessing outside)
    ort-fp32       fp32.onnx + `compile --target onnxruntime`
    ort-int8       run-ort's default export + `compile --target onnxruntime`
    auto           `export` + `compile --target auto`: the fastest faithful runtime, timed on this machine
    """
    from edgetl.compare.peers import export_fp32

    WORK.mkdir(parents=True, exist_ok=True)
    run, run_ort = _run("run", "openvino"), _run("run-ort", "onnxruntime")
    model = _export(run, run / "model.onnx", "--no-fused-ops")
    fp32 = WORK / "fp32.onnx"
    if not fp32.is_file():
        export_fp32(run, fp32)
    fused = _export(run, WORK / "fused" / "model.onnx")
    return {
        "run": run,
        "model": model,
        "fp32": fp32,
        "ov-fused": _bundle(fused, "ov-fused", "openvino", "--fused-kernels"),
        "auto": _bundle(fused, "auto", "auto"),
        "ov": _bundle(model, "ov", "openvino"),
        "ov-float": _bundle(
            _export(run, WORK / "float" / "model.onnx", "--input", "float-nchw", "--no-fused-ops"),
            "ov-float",
            "openvino",
        ),
        "ort-fp32": _bundle(fp32, "ort-fp32", "onnxruntime"),
        "ort-int8": _bundle(_export(run_ort, run_ort / "model.onnx"), "ort-int8", "onnxruntime"),
    }


def p50(samples: list[float]) -> float:
    return float(np.median(samples))


def write_result(name: str, doc: dict) -> Path:
    """benchmarks/results/<name>.json, written atomically."""
    from edgetl.bench.report import write_json

    path = RESULTS / f"{name}.json"
    write_json(path, doc)
    return path


def per_cpu(name: str) -> str:
    """The result name for a timing whose winner depends on the CPU's INT8 kernels: `name` on a CPU with a 32-bit
    INT8 dot product (VNNI/AMX: the published rows), `name.avx2` on an x86 CPU without one, `name.<arch>` elsewhere,
    so one CPU kind's run never overwrites another's (issue 33: the same table on every CPU kind)."""
    from edgetl.machine import cpu_class

    kind = cpu_class()
    return name if kind == "vnni" else f"{name}.{kind}"


def bar_plot(
    path: Path, labels: list[str], values: list[float], colors: list[str], title: str, xlabel: str, notes: list[str]
) -> None:
    """One horizontal bar per pipeline, value printed at the bar's end, the claims' ratios under the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 0.42 * len(labels) + 1.4 + 0.45 * len(notes)))
    y = np.arange(len(labels))[::-1]
    ax.barh(y, values, color=colors)
    for yi, v in zip(y, values, strict=True):
        ax.text(v, yi, f" {v:.2f}", va="center", fontsize=8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_xlim(0, max(values) * 1.15)
    wrapped = [textwrap.fill(note, 100) for note in notes]
    ax.set_title(title + "\n" + "\n".join(wrapped), fontsize=9, loc="left")
    fig.tight_layout()
    save_plot(fig, path)


def save_plot(fig, path: Path) -> None:
    """Write a figure atomically (rendered in memory, then temp file + rename) and close it."""
    import matplotlib.pyplot as plt

    from edgetl.bench.report import save_figure

    try:
        save_figure(fig, path)
    finally:
        plt.close(fig)
