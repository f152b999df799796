"""The stages of one `edgetl train` run (data, backbone, cached features, head fit, run.json), shared by the
FP32 flow (`edgetl.train.run`) and the INT8 flow (`edgetl.train.int8`); `edgetl.train.run.run_train` picks one.

The run folder holds `head.safetensors` and `run.json` (the contract later stages and users' scripts read:
config, classes, preprocess, backbone, metrics, cache, data.skipped, data.audit, timing, files), written as one
unit (edgetl.records).
"""

from __future__ import annotations

import platform
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import numpy as np

from edgetl import __version__
from edgetl.config import TrainCfg
from edgetl.contract import FINETUNED_BLOCKS
from edgetl.data import load_dataset
from edgetl.data.audit import near_duplicates
from edgetl.data.items import Dataset, Item, split_fingerprint
from edgetl.errors import UserError
from edgetl.images import Skipper
from edgetl.models.backbones import build_backbone, describe_backbone
from edgetl.models.heads import head_bytes, head_meta
from edgetl.preprocess import Preprocess
from edgetl.progress import warn
from edgetl.records import HEAD, write_run_folder
from edgetl.texts import TextPreprocess
from edgetl.train.cache import CacheStats, FeatureCache, default_cache_dir
from edgetl.train.features import (
    Extracted,
    Extractor,
    Shard,
    TorchExtractor,
    TorchTextExtractor,
    auto_batch,
    decode,
    extract,
)
from edgetl.train.fit import HeadResult, backbone_source, cached_source, fit_head, fit_summary

TEXT_BATCH = 32  # texts per extraction batch (padded to the longest of the batch)
DIGITS_IMG_SIZE = 64  # Lite0 on 8x8 digits: 0.956 val acc at 64 px, 0.939 at 128 and slower (measured, AVX-512 Intel)


def resolve_out(cfg: TrainCfg, run_id: str) -> Path:
    out = Path(cfg.out) if cfg.out else Path("runs") / run_id
    if (out / "run.json").exists() and not cfg.overwrite:
        raise UserError(f"--out {out}: already holds a run (run.json); choose another folder or pass --overwrite")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder; choose another path")
    return out


def run_preprocess(backbone_pre, cfg: TrainCfg):
    if isinstance(backbone_pre, TextPreprocess):
        if cfg.img_size:
            raise UserError(f"--img-size: {cfg.backbone} reads text, not images; drop --img-size")
        return backbone_pre
    size = cfg.img_size or (DIGITS_IMG_SIZE if cfg.data == "digits" else None)
    if size is None:
        return backbone_pre
    return Preprocess.from_dict({**backbone_pre.to_dict(), "size": [size, size]})


def cache_context(bcfg, pre: Preprocess, extractor: Extractor) -> dict:
    return {
        "backbone": bcfg.name,
        "weights_sha256": bcfg.weights_sha256,
        "preprocess": pre.to_dict(),
        **extractor.context(),
    }


def rows(items: list[Item], features: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, list[Item]]:
    kept = [it for it in items if it.key in features]
    if not kept:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64), kept
    return np.stack([features[it.key] for it in kept]), np.array([it.label for it in kept]), kept


def check_finite(rows, what: str) -> None:
    """Refuse feature rows (vectors, or activations at a cut: any shape, one per input) holding NaN or Inf."""
    bad = sum(not np.isfinite(r).all() for r in rows)
    if bad:
        raise UserError(
            f"--backbone: {bad} feature vectors from {what} hold NaN or Inf; the backbone's weights or the input are "
            "broken: check --weights (and --backbone), then re-run"
        )


def check_usable(ds: Dataset, train: list[Item]) -> None:
    labels = {it.label for it in train}
    if len(labels) < 2:
        raise UserError(
            f"--data {ds.source}: only {len(labels)} class(es) have usable training images; need at least two"
        )
    for i, name in enumerate(ds.classes):
        if i not in labels:
            warn(f"class {name!r} has no usable training image; the head can never predict it")


class Pipeline:
    """One `edgetl train` run. Stages are methods so both flows (run.run_fp32, int8.run_quantized) share them."""

    def __init__(self, cfg: TrainCfg, run_folder: bool = True) -> None:
        self.cfg = cfg
        self.t0 = time.perf_counter()
        self.run_id = datetime.now().strftime("%Y%m%d-%H%M%S")
        self.out = resolve_out(cfg, self.run_id) if run_folder else None  # `edgetl extract` writes only the cache
        if cfg.threads:
            import torch  # only when asked: a warm run fits the head in NumPy and never needs torch

            torch.set_num_threads(cfg.threads)
        self.bcfg = describe_backbone(cfg.backbone, cfg.weights)
        self.base_sha = self.bcfg.weights_sha256  # the pretrained file's; bcfg's changes once blocks are fine-tuned
        self.finetuned: dict | None = None  # `--unfreeze`: the fine-tuned blocks' tensors (edgetl.train.finetune)
        self.text = self.bcfg.modality == "text"
        self.ds = load_dataset(cfg.data, cfg.seed, cfg.strict, warn, self.bcfg.modality)
        self.skip = Skipper(cfg.strict, warn)
        self.skip.skipped = list(self.ds.skipped)
        self.pre = run_preprocess(self.bcfg.preprocess, cfg)
        self.extract_batch = cfg.extract_batch or (TEXT_BATCH if self.text else auto_batch(self.pre.size))
        self._backbone = None
        self.cache_dir = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()
        self.caches: list[FeatureCache] = []
        self.timing: dict[str, float] = {}
        self.used: dict[str, int] = {}
        self.files: dict[str, Path] = {}  # run files besides head and run.json (the INT8 backbone)
        self.near: dict = {"checked": False, "why": "needs --cache-features (the check reads cached features)"}
        self.shard: Shard | None = None  # `edgetl extract --shard i/N`: this job's run of batches
        self.runner_for = None  # `edgetl extract --ray`: (extractor, cache) -> a runner (edgetl.train.ray_extract)

    def backbone(self):
        if self._backbone is None:
            import torch

            # built outside inference mode even when first asked for inside it (an extractor's first batch):
            # `--unfreeze` trains these very parameters later
            with torch.inference_mode(False):
                self._backbone = build_backbone(self.cfg.backbone, self.cfg.weights)
        return self._backbone

    def fp32_extractor(self) -> TorchExtractor:
        if self.text:
            return TorchTextExtractor(self.backbone)
        return TorchExtractor(self.backbone)

    def features(self, extractor: Extractor, dtype=np.float32) -> Extracted:
        """Cached features of train + val; timing.extract_s is the wall time of this whole stage."""
        t = time.perf_counter()
        cache = FeatureCache(self.cache_dir, cache_context(self.bcfg, self.pre, extractor), warn, dtype).open()
        self.caches.append(cache)
        items = self.ds.train + self.ds.val
        runner = self.runner_for(extractor, cache) if self.runner_for else None
        got = extract(
            items, extractor, self.pre, self.skip, cache, self.extract_batch, self.cfg.progress, self.shard, runner
        )
        if got.features:
            check_finite(got.features.values(), extractor.name)
        self.timing["extract_s"] = self.timing.get("extract_s", 0.0) + time.perf_counter() - t
        self.timing["extract_batch"] = self.extract_batch
        return got

    def audit_near_duplicates(self, fp32: Extracted) -> None:
        """Val images whose FP32 features nearly equal a train image's (edgetl.data.audit), warned as leakage."""
        if self.text:
            self.near = {"checked": False, "why": "the threshold is set for image features"}
            return
        if self.finetuned is not None:  # judged on the pretrained features already: fine-tuned ones cluster a class
            return
        self.near = {"checked": True, **near_duplicates(self.ds.train, self.ds.val, fp32.features)}
        if self.near["count"]:
            ex = self.near["examples"][0]
            warn(
                f"possible LEAKAGE: {self.near['count']} val image(s) nearly duplicate a train image (feature cosine "
                f"> {self.near['threshold_cosine']}, e.g. {ex['val']} ~ {ex['train']}: {ex['cosine']}); val accuracy "
                "may overstate: check the pairs in run.json data.audit.near_duplicates"
            )

    def train_cached(self, extracted: Extracted) -> tuple[HeadResult, dict]:
        xt, yt, kept = rows(self.ds.train, extracted.features)
        xv, yv, kept_v = rows(self.ds.val, extracted.features)
        self.used = {"train": len(kept), "val": len(kept_v)}
        check_usable(self.ds, kept)
        t = time.perf_counter()
        source = cached_source(xt, xv)
        res = fit_head(source, yt, yv, self.bcfg.num_features, len(self.ds.classes), self.cfg, self.cfg.progress)
        return res, {"train_s": time.perf_counter() - t, "xv": xv, "yv": yv}

    def train_uncached(self, extractor: Extractor) -> tuple[HeadResult, dict]:
        t = time.perf_counter()
        kept_t, xt = decode(self.ds.train, self.pre, self.skip)
        kept_v, xv = decode(self.ds.val, self.pre, self.skip)
        self.used = {"train": len(kept_t), "val": len(kept_v)}
        check_usable(self.ds, kept_t)
        yt = np.array([it.label for it in kept_t])
        yv = np.array([it.label for it in kept_v])
        source = backbone_source(extractor, xt, xv, self.extract_batch)
        res = fit_head(source, yt, yv, self.bcfg.num_features, len(self.ds.classes), self.cfg, self.cfg.progress)
        return res, {"train_s": time.perf_counter() - t}

    def record(self, res: HeadResult, extras: dict) -> dict:
        cfg = self.cfg
        return {
            "run_id": self.run_id,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "edgetl_version": __version__,
            "config": cfg.to_dict(),
            "classes": self.ds.classes,
            "preprocess": self.pre.to_dict(),
            "backbone": {
                "name": self.bcfg.name,
                "weights_sha256": self.base_sha,
                "weights_source": self.bcfg.weights_source,
                "num_features": self.bcfg.num_features,
                "modality": self.bcfg.modality,
            },
            "head": {
                "kind": cfg.head,
                "file": HEAD,
                "solver": res.solver,
                "best_epoch": res.best_epoch,
                "epochs_run": res.epochs_run,
            },
            "metrics": {"val_acc": res.val_acc, "fit": fit_summary(res), **extras.get("metrics", {})},
            "cache": {
                "enabled": cfg.cache_features,
                "dir": str(self.cache_dir) if cfg.cache_features else None,
                "keys": [c.key for c in self.caches],
                **CacheStats.total([c.stats for c in self.caches]).to_dict(),
            },
            "data": {
                **self.ds.summary(),
                **self.used,  # images actually used: files that did not decode are in `skipped`
                "skipped": self.skip.skipped,
                "val_sha256": split_fingerprint(self.ds.val),
                "audit": {**self.ds.audit, "near_duplicates": self.near},
            },
            "timing": {**self.timing, "total_s": time.perf_counter() - self.t0},
            "versions": versions(self.text),
            **{k: v for k, v in extras.items() if k != "metrics"},
        }

    def save(self, res: HeadResult, record: dict) -> None:
        """The run folder as one unit: head, the INT8 backbone of a quantized run, run.json (edgetl.records)."""
        head = head_bytes(res.head, head_meta(self.cfg.head, self.bcfg.num_features, len(self.ds.classes)))
        if self.finetuned is not None:
            from safetensors.torch import save

            self.files[FINETUNED_BLOCKS] = save({k: v.contiguous() for k, v in self.finetuned.items()})
        record["timing"]["total_s"] = time.perf_counter() - self.t0
        try:
            write_run_folder(self.out, {HEAD: head, **self.files}, record)
        except OSError as e:
            raise UserError(
                f"--out {self.out}: cannot write the run folder ({e.strerror or e}); free space or choose "
                "a writable --out"
            ) from None


def versions(text: bool = False) -> dict:
    found = {
        "python": platform.python_version(),
        "torch": version("torch"),  # from the metadata, as timm's: a warm run does not import torch
        "timm": version("timm"),  # from the metadata: importing timm (torchvision, torch._dynamo) costs seconds
        "numpy": np.__version__,
    }
    if text:
        found.update(transformers=version("transformers"), tokenizers=version("tokenizers"))
    return found
