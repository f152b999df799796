"""`bench --peers`: the same model through the pipelines a user would otherwise write by hand, in one run.

Peers: PyTorch eager FP32 (rebuilt from the run folder next to the ONNX), ONNX Runtime FP32, ONNX Runtime
quantize_static INT8, OpenVINO from the ONNX at its default precision (bf16 on AMX CPUs) and with an f32 hint,
OpenVINO on the given INT8 model, NNCF INT8 (nncf.quantize on the OpenVINO model, a few real images to
calibrate), next to edgetl bundles. Each takes the same uint8 camera frames (preprocessing inside the model,
as in edgetl's graph) and is written the way the runtime's documentation shows, with the thread count
matched. They are timed in interleaved rounds so machine noise hits all alike. A pipeline whose package
is missing is skipped with the reason, never silently.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgetl.bench.harness import (
    Case,
    Measured,
    batches,
    cpu_info,
    interleave,
    package_versions,
    record,
    warmup_record,
)
from edgetl.contract import FRAMES, RUN_JSON, UINT8_NHWC
from edgetl.errors import UserError


class Skip(Exception):
    """A peer that cannot run here; the message says why (shown in the table's footer)."""


@dataclass
class Source:
    """The model under test in the forms the peers need."""

    given: Path  # the ONNX the user named (may be INT8 QDQ, may hold ai.edgetl nodes)
    fp32: Path | None  # the FP32 standard-op graph of the same model; None when it cannot be had
    run_dir: Path | None  # the `edgetl train` folder next to the ONNX, if any
    given_int8: bool
    why_no_fp32: str = ""


def _has_qdq(path: Path) -> bool:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


@contextlib.contextmanager
def open_source(model: Path) -> Iterator[Source]:
    """The given ONNX (as standard ops: a by-hand pipeline has no edgetl kernels) plus its FP32 graph: itself
    when FP32, else rebuilt from the run folder beside it."""
    model = Path(model)
    if not model.is_file():
        raise UserError(f"--peers {model}: no such ONNX file; give the model.onnx written by `edgetl export`")
    from edgetl.deploy.onnx_safety import check_external_data

    check_external_data(model)  # before any runtime opens it: its external data must stay in its folder
    run_dir = model.parent if (model.parent / RUN_JSON).is_file() else None
    with tempfile.TemporaryDirectory(prefix="edgetl-peers-") as tmp:
        given = _standard_ops(model, Path(tmp))
        if not _has_qdq(given):
            yield Source(given, given, run_dir, False)
        elif run_dir is None:
            yield Source(given, None, None, True, f"{model} is INT8 and no run.json is next to it to rebuild FP32")
        else:
            yield Source(given, export_fp32(run_dir, Path(tmp) / "fp32.onnx"), run_dir, True)


def _standard_ops(model: Path, tmp: Path) -> Path:
    """`edgetl export` writes fused ai.edgetl nodes by default; OpenVINO reads only their decomposition."""
    import onnx

    from edgetl.ops.onnx_functions import DOMAIN, decompose

    proto = onnx.load(str(model))
    if not any(n.domain == DOMAIN for n in proto.graph.node):
        return model
    out = tmp / f"{model.stem}.standard-ops.onnx"
    onnx.save(decompose(proto), str(out))
    return out


def export_fp32(run_dir: Path, out: Path) -> Path:
    """The FP32 graph `edgetl export` builds as the middle rung of its parity ladder, with standard ops."""
    import onnx

    from edgetl.export.model import build_graph, export_backbone, finish, load_run, metadata

    parts = load_run(run_dir)
    graph = build_graph(parts, export_backbone(parts.backbone, parts.pre), UINT8_NHWC, fused_ops=False)
    onnx.save(finish(graph, metadata(parts, UINT8_NHWC, "fp32")), str(out))
    return out


# --- the peers --------------------------------------------------------------------------------------


def _need(path: Path | None, why: str) -> Path:
    if path is None:
        raise Skip(why)
    return path


def _import(module: str, extra: str):
    try:
        return __import__(module)
    except ImportError:
        raise Skip(f"{module} is not installed (pip install '{extra}')") from None


def pytorch_fp32(src: Source, threads: int) -> tuple[Callable, dict]:
    """Preprocessing (interpolate + normalize) + backbone + head + softmax/argmax, eager, inference mode."""
    if src.run_dir is None:
        raise Skip(f"needs the run folder (run.json, head.safetensors) next to {src.given.name}")
    torch = _import("torch", "edgetl[train]")
    from edgetl.export.model import load_run

    parts = load_run(src.run_dir)
    torch.set_num_threads(threads)
    scale, bias = (torch.from_numpy(v.reshape(1, 3, 1, 1)) for v in parts.pre.scale_bias())
    size = tuple(parts.pre.size)

    @torch.inference_mode()
    def call(frames: np.ndarray):
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
        x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)
        logits = parts.head(parts.backbone.forward_features(x * scale + bias))
        return torch.softmax(logits, 1), logits.argmax(1)

    return call, {"target": "pytorch", "precision": "fp32", "model_precision": "fp32"}


def _ort_session(path: Path, threads: int):
    _import("onnxruntime", "edgetl[onnxruntime]")
    from edgetl.deploy.ort_session import session as ort_session

    session = ort_session(path, threads, source=str(path))
    name = session.get_inputs()[0].name
    return lambda frames: session.run(None, {name: frames})


def ort_fp32(src: Source, threads: int) -> tuple[Callable, dict]:
    path = _need(src.fp32, src.why_no_fp32)
    return _ort_session(path, threads), {"target": "onnxruntime", "precision": "fp32", "model_precision": "fp32"}


def ort_int8(src: Source, threads: int, calibration: Sequence[np.ndarray], workdir: Path) -> tuple[Callable, dict]:
    """quantize_static as its docs show: QDQ, per-channel int8 weights, uint8 activations, MinMax calibration."""
    path = _need(src.fp32, src.why_no_fp32)
    _import("onnxruntime", "edgetl[onnxruntime]")
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from edgetl.quant.calibration import feeds_reader

    out = workdir / "ort-int8.onnx"
    quantize_static(
        str(path),
        str(out),
        feeds_reader({FRAMES: f} for f in calibration),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return _ort_session(out, threads), {"target": "onnxruntime", "precision": "int8", "model_precision": "int8"}


def _ov_compile(model, config: dict, model_precision: str) -> tuple[Callable, dict]:
    ov = _import("openvino", "edgetl[openvino]")
    from edgetl.deploy.targets.ov_runner import runtime_precision

    compiled = ov.Core().compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    precision = runtime_precision(compiled)
    return (lambda frames: request.infer({0: frames})), {
        "target": "openvino",
        "precision": precision,
        "model_precision": model_precision,
    }


def openvino_default(src: Source, threads: int) -> tuple[Callable, dict]:
    return _ov_compile(str(_need(src.fp32, src.why_no_fp32)), {}, "fp32")


def openvino_f32(src: Source, threads: int) -> tuple[Callable, dict]:
    return _ov_compile(str(_need(src.fp32, src.why_no_fp32)), {"INFERENCE_PRECISION_HINT": "f32"}, "fp32")


def openvino_given_int8(src: Source, threads: int) -> tuple[Callable, dict]:
    if not src.given_int8:
        raise Skip(f"{src.given.name} is FP32 (the NNCF row is its INT8 variant)")
    return _ov_compile(str(src.given), {}, "int8")


def nncf_int8(src: Source, threads: int, calibration: Sequence[np.ndarray]) -> tuple[Callable, dict]:
    """nncf.quantize on the OpenVINO model with the benchmark's real images as the calibration set."""
    path = _need(src.fp32, src.why_no_fp32)
    ov = _import("openvino", "edgetl[openvino]")
    nncf = _import("nncf", "nncf")
    model = ov.Core().read_model(str(path))
    quantized = nncf.quantize(model, nncf.Dataset(list(calibration)), subset_size=len(calibration))
    return _ov_compile(quantized, {}, "int8")


# --- building and timing ----------------------------------------------------------------------------


def peer_cases(
    src: Source, frames: Sequence[np.ndarray], batch: int, threads: int, workdir: Path, say: Callable[[str], None]
) -> tuple[list[Case], list[tuple[str, str]]]:
    """Every by-hand pipeline that can run here as a Case, and (name, reason) for those that cannot."""
    calibration = [f[None] for f in frames]
    builders = {
        "pytorch eager fp32": lambda: pytorch_fp32(src, threads),
        "onnxruntime fp32": lambda: ort_fp32(src, threads),
        "onnxruntime quantize_static int8": lambda: ort_int8(src, threads, calibration, workdir),
        "openvino default (from fp32 onnx)": lambda: openvino_default(src, threads),
        "openvino f32 hint (from fp32 onnx)": lambda: openvino_f32(src, threads),
        "openvino (given int8 onnx)": lambda: openvino_given_int8(src, threads),
        "nncf int8 (openvino)": lambda: nncf_int8(src, threads, calibration),
    }
    inputs = [np.stack(group) for group in batches(list(frames), batch)]
    versions = package_versions("torch", "onnxruntime", "openvino", "nncf")
    cases, skipped = [], []
    for name, build in builders.items():
        say(f"preparing {name}")
        try:
            call, fields = build()
        except Skip as e:
            skipped.append((name, str(e)))
            continue
        fields |= {
            "pipeline": "by-hand",
            "device": "CPU",
            "threads": threads,
            "streams": 1,
            "batch": batch,
            "mode": "model",
            "input_shape": list(inputs[0].shape),
            "input_format": UINT8_NHWC,
            "versions": {k: v for k, v in versions.items() if k in ("edgetl", "python", "numpy", fields["target"])},
            "cpu": cpu_info(),
        }
        cases.append(Case(name, call, inputs, fields))
    return cases, skipped


def run_interleaved(
    cases: Sequence[Case], rounds: int, duration_s: float, warmup_s: float, tick: Callable[[int, int], None]
) -> tuple[list[dict], bool]:
    """Each case gets duration_s in total, as `rounds` blocks alternating with the others; Ctrl-C keeps what ran.

    Records also hold `rounds_p50_ms` (one p50 per block), so ratios can be taken round by round. With no
    warm-up the first call is the first timed one, and its latency is recorded as the first call's all the same.
    """
    blocks: dict[int, list[list[float]]] = {id(c): [] for c in cases}
    warmups: dict[int, dict] = {}
    on_warmup = lambda case, warmup: warmups.__setitem__(id(case), warmup)  # noqa: E731
    interrupted = False
    try:
        timed = interleave(cases, rounds, duration_s / rounds, 3, warmup_s, on_warmup)
        for n, (_, case, block) in enumerate(timed, 1):
            blocks[id(case)].append(block)
            tick(n, rounds * len(cases))
    except KeyboardInterrupt:
        interrupted = True
    results = []
    for case in cases:
        done = blocks[id(case)]
        samples = [s for block in done for s in block]
        if samples:
            warmup = warmups.get(id(case)) or warmup_record(warmup_s, 0.0, 0, done[0][0])
            r = record(case, Measured(samples, sum(samples) / 1e3, interrupted, warmup))
            results.append(r | {"rounds_p50_ms": [round(float(np.median(b)), 4) for b in done]})
    return results, interrupted
