"""The one declared preprocessing spec, stored in every run and artifact and never re-derived.

Semantics (identical in NumPy, torch, the ONNX graph and the fused `Preprocess` kernel):

1. a uint8 RGB frame [H, W, 3] of any size (a JPEG file is decoded with libjpeg's DCT scaling straight to the
   smallest 1/2, 1/4 or 1/8 scale still at least `size` when `jpeg_draft` is on: the same in training and on
   the device, and much cheaper than decoding every pixel of a large photo to throw most of them away),
2. resized straight to `size` (no crop) with bilinear interpolation, half-pixel centres, source
   coordinates clamped at the border, no antialiasing (= ONNX `Resize(mode=linear,
   coordinate_transformation_mode=half_pixel)` = `torch.nn.functional.interpolate(bilinear,
   align_corners=False, antialias=False)`), computed in float32 on the 0..255 values,
3. normalized per channel: `(x / 255 - mean) / std`,
4. laid out as float32 NCHW.

Bilinear without antialiasing is chosen because every runtime and our fused kernel implement exactly that,
so training-time and device-time inputs agree to float rounding. This module imports only NumPy.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from edgetl.contract import MAX_INPUT_SIDE, MIN_SIDE
from edgetl.errors import UserError

INTERPOLATIONS = ("bilinear",)


@dataclass(frozen=True)
class Preprocess:
    size: tuple[int, int]  # (height, width) of the network input
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # in 0..1 units, in channel_order
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: str = "bilinear"
    resize: str = "stretch"  # the whole frame is resized to `size`; no crop
    channel_order: str = "RGB"
    layout: str = "NCHW"
    jpeg_draft: bool = True  # JPEG files: decode at a reduced DCT scale, never below `size` (see module doc)

    def __post_init__(self) -> None:
        h, w = self.size
        if min(h, w) < MIN_SIDE or max(h, w) > MAX_INPUT_SIDE:
            raise UserError(f"--img-size: {h}x{w} is out of range; use a size between {MIN_SIDE} and {MAX_INPUT_SIDE}")
        if self.interpolation not in INTERPOLATIONS:
            raise UserError(
                f"preprocess: interpolation {self.interpolation!r} unsupported; use one of {INTERPOLATIONS}"
            )
        if self.channel_order not in ("RGB", "BGR") or self.layout != "NCHW" or self.resize != "stretch":
            raise UserError("preprocess: only RGB/BGR channel order, NCHW layout and 'stretch' resize are supported")
        if any(s <= 0 for s in self.std):
            raise UserError(f"preprocess: std must be positive, got {self.std}")

    # --- serialization -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["size"] = list(self.size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        return cls(
            size=tuple(int(v) for v in d["size"]),
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
            interpolation=d.get("interpolation", "bilinear"),
            resize=d.get("resize", "stretch"),
            channel_order=d.get("channel_order", "RGB"),
            layout=d.get("layout", "NCHW"),
            jpeg_draft=bool(d.get("jpeg_draft", True)),
        )

    def key(self) -> str:
        """Canonical JSON: part of every feature-cache key."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def decode_min_size(self) -> tuple[int, int] | None:
        """What `edgetl.images.decode_image(data, min_size)` needs for files decoded for this spec."""
        return self.size if self.jpeg_draft else None

    # --- derived constants used by every implementation ----------------------------------------
    def scale_bias(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel `y = x * scale + bias` on 0..255 values (what the graph and kernels compute)."""
        std = np.asarray(self.std, np.float32)
        mean = np.asarray(self.mean, np.float32)
        scale = (1.0 / (255.0 * std)).astype(np.float32)
        bias = (-mean / std).astype(np.float32)
        return scale, bias

    # --- NumPy implementation (the reference; used in training and on the device) ---------------
    def __call__(self, frames: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """uint8 frames [N, H, W, 3] (or a list of [H, W, 3] of different sizes) -> float32 [N, 3, h, w]."""
        if isinstance(frames, np.ndarray) and frames.ndim == 4:
            return self._normalize(resize_bilinear(frames, self.size))
        if not len(frames):
            return self._empty()
        if len({np.shape(f) for f in frames}) == 1:  # one vectorized call; the same numbers as one by one
            return self(np.stack(frames))
        return np.concatenate([self(np.asarray(f)[None]) for f in frames])

    def _normalize(self, resized_nhwc: np.ndarray) -> np.ndarray:
        if self.channel_order == "BGR":
            resized_nhwc = resized_nhwc[..., ::-1]
        scale, bias = self.scale_bias()
        x = resized_nhwc * scale + bias
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)

    def _empty(self) -> np.ndarray:
        return np.zeros((0, 3, *self.size), np.float32)


def _axis_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half-pixel source indices and weights along one axis (border-clamped, no antialias)."""
    scale = n_in / n_out
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = (src - i0).astype(np.float32)
    return i0, i1, w1


def resize_bilinear(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8/float [N, H, W, C] -> float32 [N, h, w, C]; separable, O(output) (no dense matrices)."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames [N, H, W, 3], got shape {frames.shape}")
    n, h_in, w_in, _ = frames.shape
    h, w = size
    y0, y1, wy = _axis_weights(h_in, h)
    x0, x1, wx = _axis_weights(w_in, w)
    wy = wy[None, :, None, None]
    # rows are gathered before the float conversion (exact for uint8): memory O(N * h * W_in), not O(N * H * W)
    rows = frames[:, y0].astype(np.float32) * (1.0 - wy) + frames[:, y1].astype(np.float32) * wy  # [N, h, W_in, C]
    wx = wx[None, None, :, None]
    return rows[:, :, x0] * (1.0 - wx) + rows[:, :, x1] * wx
