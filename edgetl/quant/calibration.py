"""Calibration: a seeded subset of the training images (never validation), its hash, its sanity checks, and
the one ONNX Runtime calibration reader."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

from edgetl.config import MIN_CALIB
from edgetl.data.items import Item
from edgetl.errors import UserError
from edgetl.quant.backbone_onnx import INPUT
from edgetl.texts import Tokens


def select_calibration(train: list[Item], n: int, seed: int) -> list[Item]:
    """A seeded subset of the TRAINING images (never validation): the whole train set if it is smaller."""
    unique = list({it.key: it for it in train}.values())
    unique.sort(key=lambda it: it.key)
    order = np.random.default_rng(seed).permutation(len(unique))
    return [unique[i] for i in order[:n]]


def calibration_hash(items: list[Item]) -> str:
    return hashlib.sha256("\n".join(sorted(it.key for it in items)).encode()).hexdigest()


def check_calibration(x: np.ndarray | Tokens, requested: int) -> None:
    if len(x) < MIN_CALIB:
        raise UserError(
            f"--calib-size: only {len(x)} usable training images to calibrate INT8 (asked for {requested}); "
            f"need at least {MIN_CALIB}: add training images or train without --quantize"
        )
    if isinstance(x, Tokens):
        return  # texts were checked one by one when read (edgetl.texts.check_text)
    flat = x.reshape(len(x), -1)
    constant = int((flat.max(1) - flat.min(1) < 1e-6).sum())
    if constant > len(x) // 2:
        raise UserError(
            f"calibration: {constant} of {len(x)} training images are constant (blank frames); "
            "INT8 ranges would be meaningless: remove blank images from the training data"
        )


def sample_feeds(calib: np.ndarray | Tokens) -> list[dict[str, np.ndarray]]:
    """One input dict per calibration sample (a batch of one): preprocessed images, or one text's tokens."""
    if isinstance(calib, Tokens):
        return [calib[i : i + 1].feeds() for i in range(len(calib))]
    return [{INPUT: calib[i : i + 1]} for i in range(len(calib))]


def feeds_reader(feeds: Iterable[dict[str, np.ndarray]]):
    """ONNX Runtime's CalibrationDataReader over input feeds, one dict per calibration batch. It also serves a
    range of them at a time (`set_range`), so ONNX Runtime can calibrate in strides (`stride_for`)."""
    from onnxruntime.quantization import CalibrationDataReader

    items = list(feeds)

    class Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(items)

        def __len__(self) -> int:
            return len(items)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._it = iter(items[start_index:end_index])

        def get_next(self):
            return next(self._it, None)

    return Feeds()


def stride_for(n: int, most: int = 32) -> int:
    """The largest divisor of n up to `most`: ONNX Runtime's strided calibration needs one. Histogram calibrators
    (percentile, entropy, distribution) keep every activation of every sample they are given until they bin them:
    at 224 px 128 images took 9 GB and 512 ran out of 24 GiB; in strides of 32, memory stays at one stride's."""
    return max(d for d in range(1, min(most, n) + 1) if n % d == 0)
