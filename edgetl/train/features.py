"""Feature extraction: run the frozen backbone once per image, through the feature cache.

An Extractor is whatever computes pooled features from preprocessed batches: PyTorch eager FP32 here, an
INT8 backbone in OpenVINO / ONNX Runtime in `edgetl.quant.runtime`. Its `context()` goes into the cache key.

Batches are fixed slices of the *sorted content keys* and run only their missing images (see `extract`), so an
interrupted run resumes with exactly the batches it had not finished: features come out bit-identical.

Decoding and preprocessing the next batch (Pillow and NumPy release the GIL) overlaps the backbone running the
current one, so a cold extraction costs little more than the backbone itself (benchmarks/extraction.py).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from edgetl.data.items import Item
from edgetl.images import BadImage, Skipper
from edgetl.preprocess import Preprocess
from edgetl.progress import bar
from edgetl.train.cache import FeatureCache


class Extractor(Protocol):
    name: str

    def context(self) -> dict: ...

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


def auto_batch(size: tuple[int, int]) -> int:
    """Extraction batch for an input size: 64 up to 128x128 px, then fewer so a batch's activations stay in
    cache (Lite0 channels-last at 224 px: 32 img/s at batch 16, 20 at 64; measured); a power of two, >= 8."""
    fit = 64 * 128 * 128 // (size[0] * size[1])
    return max(8, min(64, 1 << max(fit, 1).bit_length() - 1))


def torch_version() -> str:
    """torch's release for cache keys ("2.14.1", local build tag dropped), read without importing torch."""
    from importlib.metadata import version

    return version("torch").split("+")[0]


class TorchExtractor:
    """PyTorch eager FP32: the reference numerics, and the `--no-cache-features` baseline.

    It runs its own copy of the backbone with BatchNorm folded into the convolutions (backbones/fold.py; kept
    unfolded when the fold does not verify) in channels-last: oneDNN's convolutions are faster in that layout
    on x86 than in NCHW (benchmarks/extraction.py), and as deterministic: bit-identical features at 1 or 2
    threads and any batch of 16 or more (smaller batches take other kernels, as in NCHW; tested). Fold and
    layout are part of `context()`, so features from other numerics are not mixed in; whether the fold verifies
    depends only on the backbone and its weights, which the cache key holds too.
    """

    name = "torch-fp32"

    def __init__(self, build: Callable) -> None:
        self._build = build
        self._backbone = None

    @property
    def backbone(self):
        if self._backbone is None:  # built on first use: a warm cache never constructs the network
            import torch

            from edgetl.models.backbones.fold import fold_batchnorm

            # a copy: the caller's module (exported to ONNX later) keeps its weights, BatchNorm and layout
            original = self._build()
            probe = torch.randn((2, 3, *original.cfg.preprocess.size), generator=torch.Generator().manual_seed(0))
            net = fold_batchnorm(original, probe) or copy.deepcopy(original)
            self._backbone = net.to(memory_format=torch.channels_last)
        return self._backbone

    def context(self) -> dict:
        return {
            "engine": "torch",
            "precision": "fp32",
            "memory_format": "channels_last",
            "batchnorm": "folded where verified",
            "runtime": torch_version(),
        }

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            t = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
            return self.backbone.forward_features(t).contiguous().numpy()


@dataclass
class Extracted:
    features: dict[str, np.ndarray]  # content key -> [D]
    images: int = 0  # images run through the backbone in this call
    seconds: float = 0.0  # wall time of the batches run (decode + preprocess + backbone + shard writes)

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
    batches = [
        [by_key[k] for k in ordered[start : start + batch_size] if k not in found and k not in bad]
        for start in range(0, len(ordered), batch_size)
    ]
    batches = [b for b in batches if b]
    out = Extracted(dict(found))
    t0 = time.perf_counter()
    with bar(f"extract ({extractor.name})", todo_total, progress) as b, ThreadPoolExecutor(1) as pool:
        ahead = pool.submit(_decode_batch, batches[0], pre) if batches else None
        for i, todo in enumerate(batches):
            decoded = ahead.result()
            if i + 1 < len(batches):  # the next batch decodes while the backbone runs this one
                ahead = pool.submit(_decode_batch, batches[i + 1], pre)
            decoded.report(skip, on_bad=lambda it, why: cache.mark_bad(it.key, why))
            keys = [it.key for it in decoded.kept]
            if keys:
                feats = np.asarray(extractor(decoded.x), dtype=np.float32)
                cache.write_shard(keys, feats)
                out.features.update(zip(keys, feats, strict=True))
            out.images += len(keys)
            b.advance(len(todo))
    out.seconds = time.perf_counter() - t0 if out.images else 0.0
    return out


@dataclass
class _Decoded:
    kept: list[Item]
    x: np.ndarray
    failed: list[tuple[Item, str, bool]] = field(default_factory=list)  # (item, reason, content is unusable)

    def report(self, skip: Skipper, on_bad: Callable[[Item, str], None] | None) -> None:
        """Skips reported from the caller's thread, in item order."""
        for it, why, bad_content in self.failed:
            skip(it.path, why)
            if bad_content and on_bad:
                on_bad(it, why)


def _decode_batch(items: list[Item], pre: Preprocess) -> _Decoded:
    kept, frames, failed = [], [], []
    for it in items:
        try:
            frames.append(it.load(pre.decode_min_size))
            kept.append(it)
        except BadImage as e:
            failed.append((it, str(e), True))
        except OSError as e:
            failed.append((it, f"unreadable ({e.strerror or e})", False))
    return _Decoded(kept, pre(frames), failed)


def decode(
    items: list[Item], pre: Preprocess, skip: Skipper, on_bad: Callable[[Item, str], None] | None = None
) -> tuple[list[Item], np.ndarray]:
    """Preprocessed inputs [n, 3, h, w] for every decodable item; the others are skipped with their reason.

    `on_bad` hears about files whose *content* is unusable (not about unreadable paths: those may come back).
    """
    decoded = _decode_batch(items, pre)
    decoded.report(skip, on_bad)
    return decoded.kept, decoded.x
