"""On the device: does this CPU compute the bundle's INT8 model as the graph defines it? Measured, not assumed.

An INT8 bundle carries a probe (edgetl.export.probe): a few of the run's validation frames and the probabilities
the graph gives for them, computed at export without any CPU's INT8 kernels. The device runs the same frames
through its runtime: labels must all agree, probabilities stay within MAX_ABS_PROBS and the logits within
MAX_LOGIT_SHIFT (read off the probabilities: confident frames hide a shift in them). x86 CPUs without a 32-bit
INT8 dot product (AVX2 only, AVX-512 without VNNI) saturate 16-bit pair sums in ONNX Runtime's and OpenVINO's
u8 x s8 kernels and fail this on layouts with full-range 8-bit weights. ONNX Runtime has a non-saturating mode
(session.x64quantprecision), which `Predictor` opens image bundles in at once on such a CPU (8 probe images can
pass while the val set loses points) and switches to when the probe fails; for the other runtimes the result names
the fixes: a non-saturating layout (`edgetl train --quant-overflow-fix`), or FP32/bf16.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np

from edgetl.contract import LABEL, PROBS
from edgetl.errors import UserError
from edgetl.fileio import atomic_write_bytes
from edgetl.machine import cpu_info, cpu_key, cpu_line, int8_dot

# Largest |probability difference| on any probe frame that counts as faithful. Measured with the digits bundles
# of both layouts: OpenVINO (int8 + bf16 on an AVX-512 BF16 CPU) and ONNX Runtime at most 0.012 (0.025 at 224 px),
# the OpenVINO layout in OpenVINO under an emulated AVX2 CPU 0.054 (labels all kept); the TensorRT layout in
# OpenVINO there: 2 of 8 labels flip and probabilities move by up to 0.97.
MAX_ABS_PROBS = 0.1
# Largest median, over the probe frames, of the RMS change in centred log-probabilities (the logits up to a
# constant) on the classes the reference gives at least LOGIT_FLOOR. Confident frames keep their probabilities
# while the logits move: the demo's OpenVINO bundle under an emulated AVX2 CPU kept 8/8 labels at max |dp| 0.054
# and lost 2.2 pt on its 359 val images (0.9304 vs 0.9526); its logit shift is 1.01 (the 224-px bundle there
# 1.60). Faithful runtimes measured 0.001-0.26: OpenVINO int8 + bf16, ONNX Runtime default and u8u8, digits at
# 64 and 224 px, MiniLM intents (tests/deploy/data/probe_*.npz are two of these runs).
MAX_LOGIT_SHIFT = 0.5
LOGIT_FLOOR = 1e-6
RULE = 2  # in the cache key: results judged by an older rule are judged again
KEPT_PER_MODEL = 16  # results kept per model (CPU kinds sharing a cache, devices, runtime versions)


def check(predictor) -> dict | None:
    """The probe run through `predictor`'s runner; None when the bundle carries no probe (FP32, or older).

    A result is kept per model, probe, CPU kind, runtime version, device and precision (the cache's `probe/`):
    the same bundle opened again on this machine reads it instead of running the probe again."""
    entry = predictor.manifest.get("probe")
    if not entry:
        return None
    path, key = _cached(predictor, entry)
    try:
        kept = json.loads(path.read_text())
        kept = kept if isinstance(kept, dict) else {}
    except (OSError, ValueError):
        kept = {}
    if isinstance(kept.get(key), dict):
        return {**kept[key], "checked": "probe run earlier on this CPU"}
    result = _run(predictor, entry)
    kept = dict(list(kept.items())[-(KEPT_PER_MODEL - 1) :])
    kept[key] = result
    with contextlib.suppress(OSError):  # a read-only cache costs the next run the probe, nothing else
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(kept).encode())
    return result


def _cached(predictor, entry: dict) -> tuple[Path, str]:
    """The file of the bundle's model in the cache's probe/, named by the model's sha256 in the verified manifest
    (nothing is hashed here), and this result's key in it."""
    import sys

    from edgetl.deploy.opened import SHA256_HEX
    from edgetl.fileio import cache_root

    target = predictor.manifest["target"]  # its runtime is imported by now: the module's own version string
    runtime = str(getattr(sys.modules.get(target), "__version__", "unknown"))
    files = predictor.manifest["files"]
    model = files[predictor.manifest["model"]]
    if not SHA256_HEX.fullmatch(str(model)):
        raise UserError(f"{predictor.root}: manifest.json lists no sha256 for its model; rebuild the bundle")
    key = [files.get(entry.get("file")), cpu_key(), target, runtime, RULE, predictor.runner.info]
    return cache_root() / "probe" / f"{model}.json", json.dumps(key, sort_keys=True, default=str)


def _run(predictor, entry: dict) -> dict:
    try:
        with np.load(predictor.root / entry["file"], allow_pickle=False) as data:
            probs, label = data[PROBS], data[LABEL]
            texts = "texts" in data.files  # a text model's probe holds sentences, an image model's frames
            frames = [str(t) for t in data["texts"]] if texts else list(data["frames"])
    except (OSError, KeyError, ValueError) as e:
        raise UserError(
            f"the bundle's INT8 probe {entry.get('file')} is unreadable ({e}); rebuild the bundle"
        ) from None
    feeds = predictor.text_feeds if texts else predictor.feeds
    got = np.stack([np.asarray(predictor.runner.infer(feeds(f))[PROBS], np.float64)[0] for f in frames])
    cpu = cpu_info()
    return {
        **judge(got, probs, label),
        "reference": entry.get("reference"),
        "cpu": cpu_line(cpu),
        "int8_dot": int8_dot(cpu),
    }


def judge(got: np.ndarray, probs: np.ndarray, label: np.ndarray) -> dict:
    """The verdict on one probe run: `got` the runtime's probabilities, `probs`/`label` the graph's reference."""
    finite = bool(np.isfinite(got).all())
    max_abs = float(np.abs(got - probs).max()) if finite else float("inf")
    shift = logit_shift(got, probs) if finite else float("inf")
    agree = int((got.argmax(1) == label).sum())
    return {
        "images": len(got),
        "labels_agree": agree,
        "max_abs_probs": round(max_abs, 6),
        "logit_shift": None if shift is None else round(shift, 4),
        "faithful": agree == len(got) and max_abs <= MAX_ABS_PROBS and (shift is None or shift <= MAX_LOGIT_SHIFT),
    }


def logit_shift(got: np.ndarray, probs: np.ndarray) -> float | None:
    """Median over frames of the RMS change in centred log-probabilities, on the classes the reference gives at
    least LOGIT_FLOOR; None when no frame has two such classes (a fully confident probe says nothing here)."""
    shifts = []
    for g, r in zip(np.asarray(got, np.float64), np.asarray(probs, np.float64), strict=True):
        keep = r >= LOGIT_FLOOR
        if keep.sum() < 2:
            continue
        d = np.log(np.maximum(g[keep], 1e-30)) - np.log(r[keep])  # a class the runtime zeroes is a large shift
        shifts.append(float(np.sqrt(np.mean((d - d.mean()) ** 2))))
    return float(np.median(shifts)) if shifts else None


def line(result: dict, target: str, precise: bool = False) -> str:
    """One line for predict/bench/doctor: what this CPU's INT8 kernels cost on the probe, and the fix."""
    head = (
        f"INT8 on this CPU: {result['labels_agree']}/{result['images']} probe labels agree with the graph's "
        f"reference, max |dp| {result['max_abs_probs']:.3g}"
    )
    if result["max_abs_probs"] > MAX_ABS_PROBS:
        head += f" > {MAX_ABS_PROBS}"
    if result.get("logit_shift") is not None:
        head += f", logit shift {result['logit_shift']:.3g}"
        head += f" > {MAX_LOGIT_SHIFT}" if result["logit_shift"] > MAX_LOGIT_SHIFT else ""
    if result.get("checked"):
        head += f" ({result['checked']})"
    if result["faithful"]:
        how = " (ONNX Runtime's u8u8 kernels: its default u8s8 ones saturate here)" if precise else ""
        return f"{head}: faithful{how}"
    fixes = "compile it with --precision fp32 (or bf16) for this CPU, or retrain with --quant-overflow-fix"
    if target != "onnxruntime":
        fixes += ", or use an ONNX Runtime bundle (it has a non-saturating mode)"
    why = " (no AVX-512 VNNI, AVX-VNNI or AMX: 16-bit INT8 sums saturate)" if result["int8_dot"] == "saturating" else ""
    return f"WARNING: {head}: this CPU does not compute the INT8 model faithfully{why}; fix: {fixes}"
