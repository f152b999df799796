"""Fused edgetl ops vs their ONNX decomposition on OpenVINO CPU, measured in one run.

    python benchmarks/kernels_bench.py [--model exported.onnx] [--rounds 7] [--iters 30]

Per op (Preprocess, PoolHead) and batch (1, 8): the fused kernel (edgetl's extension) against the decomposition
OpenVINO runs without it, plus OpenVINO's own PrePostProcessor doing the same preprocessing (u8 NHWC -> linear
resize -> mean/scale -> f32 NCHW). Then a whole model: backbone + fused ops vs backbone + decomposition. With
--model, that is the given exported model (with edgetl nodes); otherwise a representative one is built here:
timm `tf_efficientnet_lite0` with random weights (never downloaded), exported at 64x64, wrapped in both ops.

Variants are interleaved round by round and each is reported as the median over rounds of the mean per-call
latency, so machine noise hits all of them alike. All run with INFERENCE_PRECISION_HINT=f32 (the fused ops
compute in f32; a bf16 decomposition would be faster and wrong by ~1e-2). Writes benchmarks/results/kernels.json
and kernels.png; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import openvino as ov

from edgetl.ops import native, onnx_functions, ov_reader, reference
from edgetl.preprocess import Preprocess

RESULTS = Path(__file__).resolve().parent / "results"
CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}
FRAME = (480, 640)  # a VGA camera frame
NET_SIZE = (224, 224)
FEATURES = (1280, 7, 7)  # EfficientNet-Lite0 at 224
CLASSES = 10


def _request(compiled: ov.CompiledModel, feeds: dict[str, np.ndarray]) -> Callable[[], None]:
    """A zero-argument call running one inference on inputs bound once (no per-call copies)."""
    request = compiled.create_infer_request()
    for name, array in feeds.items():
        request.set_tensor(name, ov.Tensor(np.ascontiguousarray(array), shared_memory=True))
    request.infer()  # warm-up: first-inference allocations and shape inference
    return request.infer


def measure(variants: dict[str, Callable[[], None]], rounds: int, iters: int) -> dict[str, dict]:
    """Interleaved rounds; per variant the median over rounds of the mean ms per call."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, call in variants.items():
            start = time.perf_counter()
            for _ in range(iters):
                call()
            samples[name].append((time.perf_counter() - start) * 1e3 / iters)
    return {name: {"ms": statistics.median(s), "rounds_ms": [round(v, 4) for v in s]} for name, s in samples.items()}


def _compile(core: ov.Core, model: onnx.ModelProto, fused: bool) -> ov.CompiledModel:
    ov_model = ov_reader.read_model(core, model, fused=fused)
    if fused and not ov_reader.fused_ops(ov_model):
        raise SystemExit(f"error: the OpenVINO extension is not built in {native.LIB_DIR}; run `make kernels`")
    return core.compile_model(ov_model, "CPU", CONFIG)


def ppp_preprocess(core: ov.Core, pre: Preprocess) -> ov.CompiledModel:
    """OpenVINO's PrePostProcessor doing Preprocess in front of an identity model: the built-in alternative."""
    from openvino.preprocess import PrePostProcessor, ResizeAlgorithm

    param = ov.opset13.parameter([-1, 3, *pre.size], ov.Type.f32, name="x")
    model = ov.Model([ov.opset13.result(param)], [param], "identity")
    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_spatial_dynamic_shape()
    steps = ppp.input().preprocess()
    if pre.channel_order == "BGR":
        steps.reverse_channels()
    steps.convert_element_type(ov.Type.f32).resize(ResizeAlgorithm.RESIZE_LINEAR)
    steps.mean([m * 255 for m in pre.mean]).scale([s * 255 for s in pre.std])
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    return core.compile_model(ppp.build(), "CPU", CONFIG)


def bench_preprocess(cores: dict[str, ov.Core], batch: int, args, rng) -> dict:
    pre = Preprocess(size=NET_SIZE, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    frames = rng.integers(0, 256, (batch, *FRAME, 3), dtype=np.uint8)
    model = onnx_functions.preprocess_model(pre)
    compiled = {
        "fused": _compile(cores["ext"], model, fused=True),
        "decomposed": _compile(cores["plain"], model, fused=False),
        "openvino_ppp": ppp_preprocess(cores["plain"], pre),
    }
    ref = reference.preprocess(frames, pre)
    err = {name: float(np.abs(c({0: frames})[0] - ref).max()) for name, c in compiled.items()}
    timings = measure(
        {n: _request(c, {c.input(0).any_name: frames}) for n, c in compiled.items()}, args.rounds, args.iters
    )
    return {
        "op": "Preprocess",
        "batch": batch,
        "shape": f"{FRAME[0]}x{FRAME[1]} -> {NET_SIZE[0]}x{NET_SIZE[1]}",
        "variants": timings,
        "max_abs_err_vs_reference": err,
    }


def bench_pool_head(cores: dict[str, ov.Core], batch: int, args, rng) -> dict:
    x = rng.standard_normal((batch, *FEATURES)).astype(np.float32)
    weight = (rng.standard_normal((CLASSES, FEATURES[0])) / 30).astype(np.float32)
    bias = rng.standard_normal(CLASSES).astype(np.float32)
    model = onnx_functions.pool_head_model(weight, bias)
    compiled = {"fused": _compile(cores["ext"], model, True), "decomposed": _compile(cores["plain"], model, False)}
    ref_probs, _ = reference.pool_head(x, weight, bias)
    err = {name: float(np.abs(c({0: x})[0] - ref_probs).max()) for name, c in compiled.items()}
    timings = measure({n: _request(c, {"features": x}) for n, c in compiled.items()}, args.rounds, args.iters)
    return {
        "op": "PoolHead",
        "batch": batch,
        "shape": f"[N, {', '.join(map(str, FEATURES))}] -> {CLASSES}",
        "variants": timings,
        "max_abs_err_vs_reference": err,
    }


def default_task_model() -> tuple[onnx.ModelProto, str]:
    """The default task's exported graph (Lite0 INT8 on digits, `edgetl export` defaults: fused ops), built once
    by the shared benchmark set-up."""
    from _common import WORK, artifacts

    artifacts()
    return onnx.load(str(WORK / "fused" / "model.onnx")), "Lite0 INT8 digits, 64x64 (edgetl export)"


def bench_model(cores: dict[str, ov.Core], model: onnx.ModelProto, name: str, batch: int, args, rng) -> dict:
    compiled = {"fused": _compile(cores["ext"], model, True), "decomposed": _compile(cores["plain"], model, False)}
    frames = rng.integers(0, 256, (batch, 480, 640, 3), dtype=np.uint8)  # camera frames, as in end_to_end.py
    feeds = {model.graph.input[0].name: frames}
    fused, decomposed = (c(feeds) for c in compiled.values())
    agreement = {
        "max_abs_prob_diff": float(np.abs(fused[0] - decomposed[0]).max()),
        "labels_equal": bool((fused[1] == decomposed[1]).all()),
    }
    timings = measure({n: _request(c, feeds) for n, c in compiled.items()}, args.rounds, args.iters)
    return {
        "op": f"model: {name}",
        "batch": batch,
        "shape": "120x160 frames",
        "variants": timings,
        "fused_vs_decomposed": agreement,
    }


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({r["batch"] for r in results})
    per_row = len(results) // len(batches)
    fig, axes = plt.subplots(len(batches), per_row, figsize=(4 * per_row, 3.6 * len(batches)), squeeze=False)
    colors = {"fused": "#2a9d8f", "decomposed": "#e76f51", "openvino_ppp": "#8d99ae"}
    for ax, r in zip(axes.flat, results, strict=True):
        names = list(r["variants"])
        ms = [r["variants"][n]["ms"] for n in names]
        bars = ax.bar(names, ms, color=[colors[n] for n in names])
        ax.bar_label(bars, labels=[f"{v:.3g} ms" for v in ms], fontsize=8)
        ax.set_title(f"{textwrap.shorten(r['op'], 40)}, batch {r['batch']}\n{r['shape']}", fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
        ax.margins(y=0.15)
    for ax in axes[:, 0]:
        ax.set_ylabel("ms per call (median of rounds)", fontsize=8)
    fig.suptitle("edgetl fused ops vs decomposition, OpenVINO CPU (f32); lower is better", fontsize=10)
    fig.tight_layout()
    _atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=Path, help="an exported ONNX model with edgetl nodes [default: the default task's]"
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    cores = {"ext": ov.Core(), "plain": ov.Core()}
    model, name = (onnx.load(str(args.model)), args.model.name) if args.model else default_task_model()

    results = []
    for batch in (1, 8):
        results += [bench_preprocess(cores, batch, args, rng), bench_pool_head(cores, batch, args, rng)]
        results.append(bench_model(cores, model, name, batch, args, rng))
    for r in results:
        v = r["variants"]
        r["decomposed_over_fused"] = round(v["decomposed"]["ms"] / v["fused"]["ms"], 3)
        if "openvino_ppp" in v:
            r["ppp_over_fused"] = round(v["openvino_ppp"]["ms"] / v["fused"]["ms"], 3)
        extra = f", PPP/fused {r['ppp_over_fused']}x" if "ppp_over_fused" in r else ""
        print(f"{r['op']:<48} b{r['batch']}: fused {v['fused']['ms']:.3f} ms, decomposed {v['decomposed']['ms']:.3f} ms"
              f" -> decomposed/fused {r['decomposed_over_fused']}x{extra}")  # fmt: skip

    report = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "openvino": ov.__version__,
        },
        "config": {
            **CONFIG,
            "rounds": args.rounds,
            "iters": args.iters,
            "statistic": "median over rounds of mean ms/call",
        },
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    _atomic(args.out / "kernels.json", lambda tmp: tmp.write_text(json.dumps(report, indent=2) + "\n"))
    plot(results, args.out / "kernels.png")
    print(f"wrote {args.out / 'kernels.json'} and {args.out / 'kernels.png'}")


if __name__ == "__main__":
    main()
