"""Does this CPU's runtime compute what the INT8 graph says? Measured against an exact evaluation, per run.

On x86 CPUs without a 32-bit INT8 dot product (AVX2 only, or AVX-512 without VNNI), ONNX Runtime's and OpenVINO's
u8 x s8 kernels sum pairs of products in 16 bits and saturate: the features they compute can be far from the
graph's (measured on the digits TensorRT layout under an emulated Haswell CPU: mean cosine 0.73 to the exact
evaluation for ONNX Runtime, 0.64 for OpenVINO). A head trained on such features fits a model no Jetson and no
VNNI CPU computes, so before any INT8 feature is extracted the runtime is checked on a few calibration images:

- exact: `onnx.reference` evaluates the QDQ graph as its operators define it (NumPy, slow, a few images);
- each runtime installed here (OpenVINO, ONNX Runtime) on the same images: cosine to exact, per image;
- the features are extracted by the first of these that is faithful (worst image >= MIN_COSINE): the target's
  own runtime; for ONNX Runtime, its non-saturating u8u8 mode (`session.x64quantprecision`); else ONNX Runtime
  with every graph optimization off, which runs the QDQ pairs as written (float convolutions on dequantized
  values: an emulation of the INT8 arithmetic, which agrees with exact to a cosine of 0.9994 or better).

The result is cached beside the INT8 model, keyed by the CPU (model and flags) and the runtimes' versions.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

import numpy as np

from edgetl.fileio import atomic_write_bytes
from edgetl.machine import cpu_id, cpu_info, int8_dot

PROBE = 8  # calibration images (or texts) the runtimes are checked on
# Worst-image cosine to the exact evaluation that counts as faithful. Measured on this project's machines:
# faithful runtimes (AVX-512 VNNI; OpenVINO and ONNX Runtime; the three layouts on digits) 0.9964 or more;
# saturating AVX2 kernels (emulated Haswell, the same graphs) 0.53 to 0.96.
MIN_COSINE = 0.99
MODES = ("runtime", "precise", "emulated")


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a = a.reshape(len(a), -1)
    b = b.reshape(len(b), -1)
    norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    return (a * b).sum(1) / norms


def exact(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The graph's output as its operators define it (onnx.reference; QDQ ops need opset 19 or later there)."""
    import onnx
    import onnx.version_converter
    from onnx.reference import ReferenceEvaluator

    model = onnx.load(str(path))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 19:
        model = onnx.version_converter.convert_version(model, 19)
    return np.asarray(ReferenceEvaluator(model).run(None, feeds)[0], np.float32)


def _row(name: str, got: np.ndarray, ref: np.ndarray, fp32: np.ndarray | None) -> dict:
    c = cosines(got, ref)
    row = {"evaluator": name, "cosine_to_exact": round(float(c.mean()), 6), "worst": round(float(c.min()), 6)}
    if fp32 is not None:
        row["feature_cosine"] = round(float(cosines(got, fp32).mean()), 6)
    row["faithful"] = bool(c.min() >= MIN_COSINE)
    return row


def choose(path: Path, engine: str, make, x, fp32: np.ndarray | None, cache_dir: Path) -> tuple[str, dict]:
    """(the mode to extract INT8 features with, the fidelity record for run.json).

    `make(engine, mode)` builds an extractor; `x` is the probe batch (images or Tokens), `fp32` its FP32 features
    (for each evaluator's feature cosine). Every installed runtime is measured, for the record; the target's
    engine decides the mode."""
    from edgetl.quant.runtime import runtime_version

    feeds = make(engine, "runtime").feeds(x)
    engines = [e for e in ("openvino", "onnxruntime") if _installed(e)]
    key = _key(path, feeds, {e: runtime_version(e) for e in engines})
    cached = cache_dir / f"{path.stem}.fidelity-{key}.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        saved = json.loads(cached.read_text())
        return saved["mode"], saved["record"]
    ref, reference = _reference(path, feeds, make, x)
    rows = [{"evaluator": reference, "cosine_to_exact": 1.0, "worst": 1.0, "faithful": True}]
    if fp32 is not None:
        rows[0]["feature_cosine"] = round(float(cosines(ref, fp32).mean()), 6)
    chosen = None
    for e in sorted(engines, key=lambda e: e != engine):  # the target's engine first
        for mode in MODES[:2] if e == "onnxruntime" else MODES[:1]:
            row = _row(
                f"{e} {runtime_version(e)}" + (" (x64quantprecision)" if mode == "precise" else ""),
                make(e, mode)(x),
                ref,
                fp32,
            )
            rows.append(row)
            if e == engine and chosen is None and row["faithful"]:
                chosen = mode
            if row["faithful"]:
                break
    if chosen is None:
        row = _row("onnxruntime, QDQ emulated (optimizations off)", make("onnxruntime", "emulated")(x), ref, fp32)
        rows.append(row)
        chosen = "emulated"
    cpu = cpu_info()
    record = {
        "probe": len(ref),
        "min_cosine": MIN_COSINE,
        "cpu": cpu,
        "int8_dot": int8_dot(cpu),
        "evaluators": rows,
        "features_from": describe(engine, chosen),
        "mode": chosen,
    }
    with contextlib.suppress(OSError):  # a cache, best effort: the next run measures again
        atomic_write_bytes(cached, json.dumps({"mode": chosen, "record": record}, indent=1).encode())
    return chosen, record


def _reference(path: Path, feeds: dict, make, x) -> tuple[np.ndarray, str]:
    """onnx.reference where it can evaluate the graph; else (its NumPy kernels fail on some transformer graphs)
    the float emulation, which matches it to a cosine of 0.9994 or better where both run."""
    try:
        return exact(path, feeds), "exact (onnx.reference)"
    except Exception as e:  # noqa: BLE001 - the reference evaluator raises whatever its NumPy kernels raise
        why = (str(e).splitlines() or [type(e).__name__])[0][:80]
        return make("onnxruntime", "emulated")(x), f"onnxruntime QDQ emulation (onnx.reference failed: {why})"


def describe(engine: str, mode: str) -> str:
    if mode == "runtime":
        return f"{engine} (faithful on this CPU)"
    if mode == "precise":
        return "onnxruntime with session.x64quantprecision (its default u8s8 kernels saturate on this CPU)"
    return (
        f"onnxruntime with optimizations off: the QDQ graph emulated in float ({engine}'s INT8 kernels are not "
        "faithful on this CPU)"
    )


def _installed(engine: str) -> bool:
    from importlib.util import find_spec

    return find_spec(engine) is not None


def _key(path: Path, feeds: dict[str, np.ndarray], versions: dict) -> str:
    h = hashlib.sha256()
    h.update(Path(path).read_bytes())
    for name in sorted(feeds):
        h.update(name.encode())
        h.update(np.ascontiguousarray(feeds[name]).tobytes())
    h.update(json.dumps([versions, cpu_id(), MIN_COSINE, MODES]).encode())
    return h.hexdigest()[:16]
