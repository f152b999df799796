"""NumPy references: the definition of each fused op. Every kernel and decomposition is tested against these.

`Preprocess` reuses `edgetl.preprocess` (the spec stored in every artifact), so the op cannot drift from what
training used. `PoolHead` argmaxes the logits (not the probabilities, whose rounding can create ties) and keeps
the first index on ties, like ONNX ArgMax and `np.argmax`.
"""

from __future__ import annotations

import numpy as np

from edgetl.preprocess import Preprocess


def preprocess(frames: np.ndarray, pre: Preprocess) -> np.ndarray:
    """uint8 [N, H, W, 3] -> float32 [N, 3, h, w] (resize, then `x * scale + bias` per channel)."""
    if frames.dtype != np.uint8:
        raise TypeError(f"Preprocess takes uint8 frames, got {frames.dtype}")
    return pre(frames)


def pool_head(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x [N, C, H, W], weight [K, C], bias [K] -> (probs float32 [N, K], label int64 [N])."""
    pooled = x.astype(np.float32, copy=False).mean(axis=(2, 3), dtype=np.float32)
    logits = pooled @ weight.astype(np.float32).T + bias.astype(np.float32)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    return probs, logits.argmax(axis=1).astype(np.int64)
