"""`edgetl extract`: fill the feature cache without training, so `edgetl train --cache-features` on the same data and
options finds every feature cached.

The same data reading, skipping, content keys, extractors and cache contexts as `edgetl train` (it runs the same
Pipeline stages): FP32 features always; the cut point's activations with `--unfreeze N`; the INT8 backbone's
features with `--quantize int8` (quantized from the same calibration images, so every job builds the same model).
`--shard i/N` runs the i-th of N contiguous runs of batches (edgetl.train.features.Shard); `--ray` runs them on a
Ray cluster (edgetl.train.ray_extract). Either way the cache ends up as one process would have written it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial

from edgetl.config import TrainCfg
from edgetl.errors import UserError
from edgetl.train.features import Extracted, Shard, TorchExtractor
from edgetl.train.pipeline import Pipeline


@dataclass(frozen=True)
class ScaleCfg:
    shard: Shard = Shard()
    ray: str | None = None  # auto | HOST:PORT | ray://HOST:PORT
    workers: int | None = None  # Ray actors [default: the cluster's CPUs / threads per worker]
    threads_per_worker: int = 1

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise UserError("--workers must be at least 1")
        if self.threads_per_worker < 1:
            raise UserError("--threads-per-worker must be at least 1")
        if self.ray is None and (self.workers is not None or self.threads_per_worker != 1):
            raise UserError("--workers / --threads-per-worker size the Ray pool: add --ray auto (or --ray ADDRESS)")


def factory(p: Pipeline, extractor):
    """A picklable recipe that builds `extractor` again in another process (a Ray actor)."""
    from edgetl.models.backbones import build_backbone
    from edgetl.quant.runtime import RuntimeExtractor
    from edgetl.train.finetune import CutExtractor, cut_extractor

    cfg = p.cfg
    if isinstance(extractor, RuntimeExtractor):
        return partial(
            RuntimeExtractor, extractor.path, extractor.engine, extractor._context, None, extractor.mode
        )  # threads None: the runtime's own default in each actor (--threads-per-worker sizes torch only)
    if isinstance(extractor, CutExtractor):
        return partial(cut_extractor, cfg.backbone, cfg.weights, cfg.unfreeze)
    if isinstance(extractor, TorchExtractor):
        return partial(TorchExtractor, partial(build_backbone, cfg.backbone, cfg.weights))
    from edgetl.train.features import TorchTextExtractor

    if isinstance(extractor, TorchTextExtractor):
        return partial(TorchTextExtractor, partial(build_backbone, cfg.backbone, cfg.weights))
    raise UserError(f"--ray: the {extractor.name} extractor cannot run on Ray workers; drop --ray")


class RayRunners:
    """Pipeline.runner_for under --ray: one RayRunner per extractor, kept for the report's per-worker timing."""

    def __init__(self, p: Pipeline, scale: ScaleCfg) -> None:
        self.p, self.scale, self.made = p, scale, []

    def __call__(self, extractor, cache):
        from edgetl.machine import cpu_id
        from edgetl.train.ray_extract import RayRunner

        s = self.scale
        runner = RayRunner(
            s.ray,
            factory(self.p, extractor),
            str(cache.root),
            cache.context,
            cache.dtype.__name__,
            s.workers,
            s.threads_per_worker,
            cpu_id(),  # kernels differ per CPU kind (oneDNN, INT8 runtimes): their last bits may too
        )
        self.made.append(runner)
        return runner


def run_extract(cfg: TrainCfg, scale: ScaleCfg) -> dict:
    """Fills the cache; returns what was done per extractor (hits, computed images, images/s, the context key)."""
    t0 = time.perf_counter()
    p = Pipeline(cfg, run_folder=False)
    p.shard = scale.shard
    if scale.ray:
        from edgetl.train.ray_extract import connect

        t = time.perf_counter()
        connect(scale.ray)  # an unreachable address stops before any model is built
        p.timing["ray_connect_s"] = time.perf_counter() - t
        p.runner_for = RayRunners(p, scale)
    frozen = p.features(p.fp32_extractor())
    rows = [_row("fp32", p, frozen)]
    fp32 = p.caches[-1]
    if cfg.unfreeze:
        rows.append(_cut(p, frozen.features))
    if cfg.quantize is not None and cfg.unfreeze:
        rows.append(
            {"what": "int8", "skipped": "--unfreeze: INT8 features follow the fine-tuned blocks (train makes them)"}
        )
    elif cfg.quantize is not None:  # every INT8 layout asked for (`--target A,B`), as train lays them out
        rows += [_int8(p, fp32, cfg.quantize.for_target(t)) for t in (cfg.quantize.target, *cfg.layouts)]
    return {
        "data": p.ds.source,
        "images": len({it.key for it in p.ds.train + p.ds.val}),
        "shard": str(scale.shard),
        "ray": scale.ray,
        "cache_dir": str(p.cache_dir),
        "extract_batch": p.extract_batch,
        "skipped": p.skip.skipped,
        "rows": rows,
        "timing": {**p.timing, "ray": [r.timing for r in getattr(p.runner_for, "made", [])]},
        "seconds": time.perf_counter() - t0,
    }


def _row(what: str, p: Pipeline, got: Extracted) -> dict:
    cache = p.caches[-1]
    return {
        "what": what,
        "context": cache.key,
        "hits": cache.stats.hits,
        "computed": got.images,
        "seconds": got.seconds,
        "images_per_s": got.images_per_s,
        "first_batch": got.first,  # (seconds, images): start-up and model load, then the first batch
        "steady_images_per_s": got.steady_images_per_s,
    }


def _cut(p: Pipeline, fp32: dict) -> dict:
    """The cut-point cache as `train --unfreeze N` fills it (with --ft-prefix int8: the INT8 prefix's)."""
    import numpy as np

    from edgetl.models.backbones.split import block_names, resolve, split
    from edgetl.train.finetune import cut_name, cut_source

    backbone = p.backbone()
    n = resolve(p.cfg.unfreeze, backbone)
    if n == len(block_names(backbone)):  # --unfreeze all (or N >= the block count)
        return {
            "what": "cut",
            "skipped": "--unfreeze all trains from the inputs (images, token ids): there is no cut point to cache",
        }
    cut = cut_name(backbone, n)
    extractor, computed_by = cut_source(p, split(backbone, n)[0], cut, fp32)
    got = p.features(extractor, dtype=np.float16)
    return {**_row(f"cut {cut}", p, got), "computed_by": computed_by}


def _int8(p: Pipeline, fp32_cache, qcfg) -> dict:
    """The INT8 backbone as `train --quantize int8` builds it (same calibration, same model, same fidelity mode)."""
    from edgetl.train.int8 import Int8Run

    r = Int8Run(p)
    items, chash = r.calibration()
    probe = {it.key for it in items}
    ext = r.extractor(qcfg, items, chash, fp32_cache.lookup(probe))
    row = _row(f"int8 {qcfg.target}", p, p.features(ext))
    return {**row, "engine": ext.engine, "mode": ext.mode, "features_from": r.fidelity.get("features_from")}
