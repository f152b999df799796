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


MIN_BATCH = 16  # oneDNN picks other kernels for fewer images at one thread: their last bits depend on the threads


def auto_batch(size: tuple[int, int]) -> int:
    """Extraction batch for an input size: 64 up to 128x128 px, then fewer so a batch's activations stay in
    cache (Lite0 channels-last at 224 px: 32 img/s at batch 16, 20 at 64; measured); a power of two, >= 16."""
    fit = 64 * 128 * 128 // (size[0] * size[1])
    return max(MIN_BATCH, min(64, 1 << max(fit, 1).bit_length() - 1))


def padded(x: np.ndarray) -> np.ndarray:
    """A short batch (the last one, or what is missing of one) repeated up to MIN_BATCH rows: each row's features
    then come from the same kernels at any thread count, so one process and N Ray workers with other thread
    counts write bit-identical features (a row's features do not depend on the other rows)."""
    if 0 < len(x) < MIN_BATCH:
        return np.concatenate([x, np.repeat(x[-1:], MIN_BATCH - len(x), axis=0)])
    return x


def torch_version() -> str:
    """torch's release for cache keys ("2.14.1", local build tag dropped), read without importing torch."""
    from importlib.metadata import version

    return version("torch").split("+")[0]


class TorchExtractor:
    """PyTorch eager FP32: the reference numerics, and the `--no-cache-features` baseline.

    It runs its own copy of the backbone with BatchNorm folded into the convolutions (backbones/fold.py; kept
    unfolded when the fold does not verify) in channels-last: oneDNN's convolutions are faster in that layout
    on x86 than in NCHW (benchmarks/extraction.py), and as deterministic: bit-identical features at 1 or 2
    threads and any batch of 16 or more (smaller batches take other kernels, as in NCHW, so they are `padded`;
    tested). Fold, layout and padding are part of `context()`, so features from other numerics are not mixed in.
    Whether the fold verifies depends only on the backbone and its weights, which the cache key holds too.
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
            "min_batch": MIN_BATCH,
            "runtime": torch_version(),
        }

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            t = torch.from_numpy(padded(x)).contiguous(memory_format=torch.channels_last)
            return self.backbone.forward_features(t).contiguous().numpy()[: len(x)]


class TorchTextExtractor:
    """PyTorch eager FP32 features of tokenized batches: the reference numerics and the no-cache baseline. Here,
    not beside the text backbone: a warm text run builds it to key the cache, and must not import torch for that."""

    name = "torch-fp32"

    def __init__(self, build: Callable) -> None:
        self._build = build

    def context(self) -> dict:
        return {"engine": "torch", "precision": "fp32", "runtime": torch_version()}

    def __call__(self, tokens) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self._build().forward_features(tokens).contiguous().numpy()


@dataclass
class Extracted:
    features: dict[str, np.ndarray]  # content key -> [D]
    images: int = 0  # images run through the backbone in this call
    seconds: float = 0.0  # wall time of the batches run (decode + preprocess + backbone + cache writes)
    first: tuple[float, int] | None = None  # (seconds, images) to the first finished batch: model load + start-up

    @property
    def images_per_s(self) -> float | None:
        return self.images / self.seconds if self.seconds > 0 and self.images else None

    @property
    def steady_images_per_s(self) -> float | None:
        """The rate after the first batch: what the rest of a large data set runs at, start-up costs left out."""
        if self.first is None or self.seconds <= self.first[0] or self.images <= self.first[1]:
            return None
        return (self.images - self.first[1]) / (self.seconds - self.first[0])


def _unique_by_key(items: list[Item]) -> dict[str, Item]:
    first: dict[str, Item] = {}
    for it in items:
        first.setdefault(it.key, it)
    return first


@dataclass(frozen=True)
class Shard:
    """`--shard i/N`: the i-th (0-based) of N contiguous runs of extraction batches, batches being fixed slices of
    the sorted content keys. N jobs on any scheduler cover the data exactly once, each batch whole, so their
    features are bit-identical to one process's."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, spec: str | None) -> Shard:
        from edgetl.errors import UserError

        if not spec:
            return cls()
        i, sep, n = str(spec).partition("/")
        try:
            shard = cls(int(i), int(n)) if sep else None
        except ValueError:
            shard = None
        if shard is None or shard.count < 1 or not 0 <= shard.index < shard.count:
            raise UserError(f"--shard {spec}: give i/N with 0 <= i < N (e.g. 0/4, 1/4, 2/4, 3/4 for four jobs)")
        return shard

    def batches(self, total: int) -> range:
        return range(self.index * total // self.count, (self.index + 1) * total // self.count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass
class Plan:
    """What one extraction call runs: its batches (index in the whole run, missing items), hits, bad content."""

    found: dict[str, np.ndarray]
    bad: dict[str, str]
    batches: list[tuple[int, list[Item]]]

    @property
    def todo(self) -> int:
        return sum(len(b) for _, b in self.batches)


def plan(items: list[Item], cache: FeatureCache, skip: Skipper, batch_size: int, shard: Shard | None = None) -> Plan:
    """Batches are fixed slices of *all* the sorted content keys, and a batch runs only its missing keys: a run
    killed at any point resumes with exactly the batches it had not finished, so the features come out
    bit-identical to an uninterrupted run. Files that do not decode are remembered by content (never retried,
    still reported every run), so they cannot shift batch boundaries either. A shard keeps its run of batches."""
    by_key = _unique_by_key(items)
    ordered = sorted(by_key)
    starts = range(0, len(ordered), batch_size)
    mine = (shard or Shard()).batches(len(starts))
    wanted = {k for b in mine for k in ordered[starts[b] : starts[b] + batch_size]}
    found = cache.lookup(wanted)
    bad = cache.bad_keys(wanted)
    for key, reason in sorted(bad.items()):
        skip(by_key[key].path, reason)
    batches = [
        (b, [by_key[k] for k in ordered[starts[b] : starts[b] + batch_size] if k not in found and k not in bad])
        for b in mine
    ]
    return Plan(found, bad, [(b, todo) for b, todo in batches if todo])


def extract(
    items: list[Item],
    extractor: Extractor,
    pre: Preprocess,
    skip: Skipper,
    cache: FeatureCache,
    batch_size: int = 64,
    progress: bool = True,
    shard: Shard | None = None,
    runner=None,
) -> Extracted:
    """Features for every decodable item of the shard (content keys -> [D]); misses are computed and written to the
    cache, here or by `runner` (edgetl.train.ray_extract: the same batches in a Ray Data pipeline, written by its
    workers; it returns no features, the cache holds them)."""
    work = plan(items, cache, skip, batch_size, shard)
    cache.stats.hits += len(work.found)
    cache.stats.misses += work.todo
    out = Extracted(dict(work.found))
    t0 = time.perf_counter()
    with bar(f"extract ({extractor.name})", work.todo, progress) as b:

        def done(decoded: _Decoded, n: int) -> None:
            decoded.report(skip, lambda it, why: cache.mark_bad(it.key, why))
            b.advance(n)
            out.first = out.first or (time.perf_counter() - t0, n)

        if runner is not None:
            out.images = runner.run(work.batches, pre, done)
        else:
            _run_here(work.batches, extractor, pre, cache, out, done)
    out.seconds = time.perf_counter() - t0 if out.images else 0.0
    return out


def _run_here(batches, extractor: Extractor, pre: Preprocess, cache: FeatureCache, out: Extracted, done) -> None:
    """Decoding and preprocessing the next batch overlaps the backbone running this one."""
    with ThreadPoolExecutor(1) as pool:
        ahead = pool.submit(decode_batch, batches[0][1], pre) if batches else None
        for i, (_, todo) in enumerate(batches):
            decoded = ahead.result()
            if i + 1 < len(batches):
                ahead = pool.submit(decode_batch, batches[i + 1][1], pre)
            keys = [it.key for it in decoded.kept]
            if keys:
                feats = np.asarray(extractor(decoded.x), dtype=np.float32)
                cache.write_shard(keys, feats)
                out.features.update(zip(keys, feats, strict=True))
            out.images += len(keys)
            done(decoded, len(todo))


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


def decode_batch(items: list[Item], pre: Preprocess) -> _Decoded:
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
    decoded = decode_batch(items, pre)
    decoded.report(skip, on_bad)
    return decoded.kept, decoded.x
