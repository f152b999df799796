"""Feature extraction: run the frozen backbone once per image, through the feature cache.

An Extractor is whatever computes pooled features from preprocessed batches: PyTorch eager FP32 here, an
INT8 backbone in OpenVINO / ONNX Runtime in `edgetl.quantize`. Its `context()` goes into the cache key.

Batches are fixed slices of the *sorted content keys* and run only their missing images (see `extract`), so an
interrupted run resumes with exactly the batches it had not finished: features come out bit-identical.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edgetl.cache import FeatureCache
from edgetl.data import BadImage, Item, Skipper
from edgetl.preprocess import Preprocess
from edgetl.progress import bar


class Extractor(Protocol):
    name: str

    def context(self) -> dict: ...

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


class TorchExtractor:
    """PyTorch eager FP32: the reference numerics, and the `--no-cache-features` baseline."""

    name = "torch-fp32"

    def __init__(self, build: Callable) -> None:
        self._build = build
        self._backbone = None

    @property
    def backbone(self):
        if self._backbone is None:  # built on first use: a warm cache never constructs the network
            self._backbone = self._build()
        return self._backbone

    def context(self) -> dict:
        import torch

        return {"engine": "torch", "precision": "fp32", "runtime": torch.__version__.split("+")[0]}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.backbone.forward_features(torch.from_numpy(x)).numpy()


@dataclass
class Extracted:
    features: dict[str, np.ndarray]  # content key -> [D]
    images: int = 0  # images run through the backbone in this call
    seconds: float = 0.0  # wall time of the backbone runs (decode + preprocess + backbone)

    @property
    def images_per_s(self) -> float | None:
        return self.images / self.seconds if self.seconds > 0 and self.images else None


def _unique_by_key(items: list[Item]) -> dict[str, Item]:
    first: dict[str, Item] = {}
    for it in items:
        first.setdefault(it.key, it)
    return first


def extract(
    items: list[Item],
    extractor: Extractor,
    pre: Preprocess,
    skip: Skipper,
    cache: FeatureCache,
    batch_size: int = 64,
    progress: bool = True,
) -> Extracted:
    """Features for every decodable item (content keys -> [D]); misses are computed and written to the cache.

    Batches are fixed slices of *all* the sorted content keys, and a batch runs only its missing keys: a run
    killed at any point resumes with exactly the batches it had not finished, so the features come out
    bit-identical to an uninterrupted run. Files that do not decode are remembered by content (never retried,
    still reported every run), so they cannot shift batch boundaries either.
    """
    by_key = _unique_by_key(items)
    found = cache.lookup(set(by_key))
    bad = cache.bad_keys(set(by_key))
    for key, reason in sorted(bad.items()):
        skip(by_key[key].path, reason)
    ordered = sorted(by_key)
    todo_total = sum(1 for k in ordered if k not in found and k not in bad)
    cache.stats.hits += len(found)
    cache.stats.misses += todo_total
    out = Extracted(dict(found))
    with bar(f"extract ({extractor.name})", todo_total, progress) as b:
        for start in range(0, len(ordered), batch_size):
            todo = [k for k in ordered[start : start + batch_size] if k not in found and k not in bad]
            if not todo:
                continue
            t0 = time.perf_counter()
            kept, x = decode([by_key[k] for k in todo], pre, skip, on_bad=lambda it, why: cache.mark_bad(it.key, why))
            keys = [it.key for it in kept]
            if keys:
                feats = np.asarray(extractor(x), dtype=np.float32)
                cache.write_shard(keys, feats)
                out.features.update(zip(keys, feats, strict=True))
            out.seconds += time.perf_counter() - t0
            out.images += len(keys)
            b.advance(len(todo))
    return out


def decode(
    items: list[Item], pre: Preprocess, skip: Skipper, on_bad: Callable[[Item, str], None] | None = None
) -> tuple[list[Item], np.ndarray]:
    """Preprocessed inputs [n, 3, h, w] for every decodable item; the others are skipped with their reason.

    `on_bad` hears about files whose *content* is unusable (not about unreadable paths: those may come back).
    """
    kept, xs = [], []
    for it in items:
        try:
            frame = it.load(pre.decode_min_size)
        except BadImage as e:
            skip(it.path, str(e))
            if on_bad:
                on_bad(it, str(e))
            continue
        except OSError as e:
            skip(it.path, f"unreadable ({e.strerror or e})")
            continue
        xs.append(pre(frame[None]))
        kept.append(it)
    return kept, (np.concatenate(xs) if xs else np.zeros((0, 3, *pre.size), np.float32))
