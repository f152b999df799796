"""The probe an INT8 export carries to the device: a few validation frames and what the graph outputs for them.

A device cannot run `onnx` (the device side never imports it), so the reference is computed here, at export:
ONNX Runtime with every graph optimization off runs the QDQ pairs as written (float convolutions on dequantized
values: the INT8 arithmetic the graph defines, without any CPU's INT8 kernels). The device runs the same frames
through its own runtime and compares (edgetl.deploy.fidelity): a CPU whose INT8 kernels saturate shows up there,
on the bundle's own images, with what it costs.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import onnx

from edgetl.contract import LABEL, PROBS
from edgetl.export.parity import feed
from edgetl.fileio import atomic_write_bytes
from edgetl.preprocess import Preprocess, resize_bilinear

PROBE_FRAMES = 8


def write_probe(model: onnx.ModelProto, frames: list[np.ndarray], pre: Preprocess, input_format: str, out: Path):
    """probe.npz beside the model (frames resized to the model's input size, uint8; expected probs and labels);
    returns its export.json entry."""
    small = np.stack([_fit(frames[i], pre.size) for i in _picks(len(frames))])
    probs, label = _reference(model).run([PROBS, LABEL], feed(list(small), pre, input_format))
    return _save(out, frames=small, probs=probs, label=label)


def write_text_probe(model: onnx.ModelProto, texts: list[str], pre, out: Path) -> dict:
    """The same for a text model (token ids in): a few validation texts, each run alone as predict runs it."""
    chosen = [texts[i] for i in _picks(len(texts))]
    sess = _reference(model)
    rows = [sess.run([PROBS, LABEL], pre([t]).feeds()) for t in chosen]
    probs = np.concatenate([r[0] for r in rows])
    label = np.concatenate([r[1] for r in rows])
    return _save(out, texts=np.array(chosen), probs=probs, label=label)


def _picks(n: int) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, min(PROBE_FRAMES, n)).round().astype(int))


def _reference(model: onnx.ModelProto):
    from edgetl.deploy.ort_session import session

    return session(model.SerializeToString(), level="ORT_DISABLE_ALL")


def _save(out: Path, probs: np.ndarray, label: np.ndarray, **inputs: np.ndarray) -> dict:
    buf = io.BytesIO()
    np.savez_compressed(buf, **inputs, probs=probs.astype(np.float32), label=label.astype(np.int64))
    atomic_write_bytes(out, buf.getvalue())
    import onnxruntime

    return {
        "file": out.name,
        "sha256": hashlib.sha256(buf.getvalue()).hexdigest(),
        "images": len(label),
        "reference": f"onnxruntime {onnxruntime.__version__}, graph optimizations off (QDQ emulated in float)",
    }


def _fit(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if tuple(frame.shape[:2]) == tuple(size):
        return frame
    return np.clip(np.rint(resize_bilinear(frame[None], size)[0]), 0, 255).astype(np.uint8)
