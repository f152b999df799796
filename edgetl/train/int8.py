"""`edgetl train --quantize int8`: the head is trained on the features of the INT8 backbone that ships.

Steps: FP32 features (cached) and the FP32 recipe's accuracy; calibration on training images only; the
backbone quantized for the target (QDQ ONNX, cached by settings + calibration hash); INT8 features extracted
by a real runtime (cached; the key covers quantization settings and the calibration hash); the deployed head
trained on them; accuracy drop, top-1 agreement and speed reported; optionally the fallback search.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from edgetl.errors import UserError
from edgetl.fileio import atomic_write_bytes, sha256_file
from edgetl.progress import info
from edgetl.quant.backbone_onnx import export_backbone_onnx, exporter_version
from edgetl.quant.calibration import calibration_hash, check_calibration, select_calibration
from edgetl.quant.ort_recipe import DYNAMIC
from edgetl.quant.quantize import RECIPE, quantize
from edgetl.quant.runtime import RuntimeExtractor, engine_for, quantizer_version
from edgetl.quant.sensitivity import rank_layers
from edgetl.train.features import decode
from edgetl.train.pipeline import Pipeline

COLLAPSE_DROP = 0.10  # a drop this large means the INT8 model is broken: the run fails, export refuses it
MAX_FALLBACK_LAYERS = 8


class Int8Run:
    def __init__(self, p: Pipeline) -> None:
        self.p = p
        self.q = p.cfg.quantize
        self.models = p.cache_dir / "models"
        try:
            self.models.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(
                f"--cache-dir {p.cache_dir}: cannot write there ({e.strerror}); choose a writable folder"
            ) from None
        self._calib_x: np.ndarray | None = None
        self._sha: dict[Path, str] = {}

    # --- FP32 reference ---------------------------------------------------------------------------
    def fp32_onnx(self) -> Path:
        recipe = f"{self.p.bcfg.weights_sha256}|{self.p.pre.key()}|{exporter_version(self.p.text)}"
        tag = hashlib.sha256(recipe.encode()).hexdigest()[:24]
        path = self.models / f"{tag}.fp32.onnx"
        if not path.exists():
            tmp = path.with_name(f".{path.name}.{time.time_ns()}.tmp.onnx")
            if self.p.text:  # the same exporter as `edgetl export` (token ids in, pooled features out)
                from edgetl.export.text import export_text_encoder

                atomic_write_bytes(tmp, export_text_encoder(self.p.backbone()).SerializeToString())
            else:
                export_backbone_onnx(self.p.backbone(), self.p.pre, tmp)
            tmp.replace(path)
        return path

    # --- calibration + quantization ---------------------------------------------------------------
    def calibration(self):
        items = select_calibration(self.p.ds.train, self.q.calib_size, self.p.cfg.seed)
        return items, calibration_hash(items)

    def calib_x(self, items) -> np.ndarray:
        if self._calib_x is None:
            _, x = decode(items, self.p.pre, self.p.skip)
            check_calibration(x, self.q.calib_size)
            self._calib_x = x
        return self._calib_x

    def int8_onnx(self, qcfg, items, calib_hash: str) -> Path:
        # Keyed by everything that shapes the model, the FP32 graph's bytes and edgetl's quantization recipe
        # included: a cache written by another edgetl version or recipe is never mistaken for this one.
        fp32 = self.fp32_onnx()
        fp32_sha = self._sha.setdefault(fp32, sha256_file(fp32))
        blob = json.dumps([qcfg.key(), calib_hash, quantizer_version(qcfg.target), fp32_sha, RECIPE])
        path = self.models / f"{hashlib.sha256(blob.encode()).hexdigest()[:24]}.int8.onnx"
        if not path.exists():
            t = time.perf_counter()
            tmp = path.with_name(f".{path.name}.{time.time_ns()}.tmp.onnx")
            quantize(self.fp32_onnx(), tmp, qcfg, self.calib_x(items))
            tmp.replace(path)
            self.p.timing["quantize_s"] = self.p.timing.get("quantize_s", 0.0) + time.perf_counter() - t
        return path

    def extractor(self, qcfg, items, calib_hash: str) -> RuntimeExtractor:
        path = self.int8_onnx(qcfg, items, calib_hash)
        context = {
            "precision": "int8",
            "quantize": {**qcfg.key(), "calib_sha256": calib_hash, "quantizer": quantizer_version(qcfg.target)},
            "model_sha256": self._sha.setdefault(path, sha256_file(path)),  # features follow the model's bytes
        }
        return RuntimeExtractor(path, engine_for(qcfg.target), context, self.p.cfg.threads)

    # --- one INT8 evaluation ----------------------------------------------------------------------
    def evaluate(self, qcfg, items, calib_hash, fp32_feats: dict[str, np.ndarray]):
        ext = self.extractor(qcfg, items, calib_hash)
        got = self.p.features(ext)
        res, extra = self.p.train_cached(got)
        self.p.timing["train_s"] = extra["train_s"]
        return ext, got, res, agreement(res.head, self.p.ds.val, got.features, fp32_feats)


def agreement(head, val: list, int8: dict[str, np.ndarray], fp32: dict[str, np.ndarray]) -> float:
    """Top-1 agreement of ONE head (the deployed one, trained on INT8 features) on the INT8 and the FP32
    features of the same validation images, paired by content key: on every target this is what it means."""
    keys = [it.key for it in val if it.key in int8 and it.key in fp32]
    if not keys:
        return float("nan")
    with torch.inference_mode():
        on_int8 = head(torch.from_numpy(np.stack([int8[k] for k in keys]))).argmax(1)
        on_fp32 = head(torch.from_numpy(np.stack([fp32[k] for k in keys]))).argmax(1)
    return float((on_int8 == on_fp32).float().mean())


def _throughput(extractor, x: np.ndarray, batch: int) -> float:
    extractor(x[:batch])  # warm-up: compile / first-run allocations are not throughput
    t = time.perf_counter()
    for i in range(0, len(x), batch):
        extractor(x[i : i + batch])
    return len(x) / (time.perf_counter() - t)


def run_quantized(p: Pipeline) -> tuple:
    """The INT8 flow: (the head trained on INT8 features, run.json extras: metrics, quantize, warnings)."""
    r = Int8Run(p)
    fp32 = p.fp32_extractor()
    fp32_feats = p.features(fp32)
    res32, _ = p.train_cached(fp32_feats)
    items, chash = r.calibration()
    qcfg = r.q
    ext, got, res, agree = r.evaluate(qcfg, items, chash, fp32_feats.features)
    drop = res32.val_acc - res.val_acc
    ranking: list[dict] = []
    if qcfg.auto_fallback and drop > qcfg.max_drop and p.text:
        info("the fallback search ranks convolution layers of image backbones; for a text encoder use --quant-ignore")
    elif qcfg.auto_fallback and drop > qcfg.max_drop:
        info(
            f"INT8 costs {drop * 100:.1f} points (more than {qcfg.max_drop * 100:.0f}): searching for sensitive layers"
        )
        ranking = rank_layers(r.fp32_onnx(), ext.path, r.calib_x(items)[:64])
        k = 1
        while drop > qcfg.max_drop and k <= min(MAX_FALLBACK_LAYERS, len(ranking)):  # keep 1, 2, 4, 8 layers FP
            worst = tuple(row["layer"] for row in ranking[:k])
            trial = dataclasses.replace(qcfg, ignore=tuple(dict.fromkeys(qcfg.ignore + worst)))
            info(f"fallback: keeping {k} layer(s) in floating point: {', '.join(trial.ignore)}")
            ext, got, res, agree = r.evaluate(trial, items, chash, fp32_feats.features)
            qcfg, drop, k = trial, res32.val_acc - res.val_acc, k * 2
    timing = _timing(p, r, ext, got, items)
    status, warnings = _verdict(drop, res32.val_acc, qcfg)
    atomic_write_bytes(_ensure(p.out) / "backbone.int8.onnx", ext.path.read_bytes())
    quant = {
        "target": qcfg.target,
        "method": DYNAMIC if p.text and qcfg.target == "onnxruntime" else qcfg.calib_method,
        "calib_size": len(items),
        "calib_requested": r.q.calib_size,
        "calib_sha256": chash,
        "calib_from": "train",
        "ignored": list(qcfg.ignore),
        "quantizer": quantizer_version(qcfg.target),
        "engine": f"{ext.engine} {ext.context()['runtime']}",
        "precision_used": ext.precision_used,
        "onnx": "backbone.int8.onnx",
        "status": status,
        "sensitivity": ranking,
        "auto_fallback": qcfg.auto_fallback,
    }
    metrics = {"val_acc_fp32": res32.val_acc, "int8_agreement": agree, "int8_drop": drop}
    p.timing.update(timing)
    return res, {"metrics": metrics, "quantize": quant, "warnings": warnings}


def _ensure(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    return out


def _timing(p: Pipeline, r: Int8Run, ext, got, items) -> dict:
    t: dict = {}
    if got.images_per_s:
        t["extract_images_per_s"] = got.images_per_s
    if p.cfg.compare_fp32 or not got.images_per_s:
        # Both extractors over the same preprocessed training images, in this run, same batch size.
        x = r.calib_x(items)
        t["extract_images_per_s"] = _throughput(ext, x, p.extract_batch)
        if p.cfg.compare_fp32:
            t["extract_images_per_s_fp32_eager"] = _throughput(p.fp32_extractor(), x, p.extract_batch)
            t["extract_speedup_vs_fp32_eager"] = t["extract_images_per_s"] / t["extract_images_per_s_fp32_eager"]
        t["extract_throughput_images"] = len(x)
    return t


def _verdict(drop: float, acc32: float, qcfg) -> tuple[str, list[str]]:
    if drop > COLLAPSE_DROP:
        return "collapsed", [
            f"INT8 COLLAPSED: val accuracy fell {drop * 100:.1f} points below FP32 ({acc32:.4f}); this model must not "
            "ship (export refuses it). Fix: --quant-auto-fallback, a larger --calib-size, or --calib-method percentile"
        ]
    if drop > qcfg.max_drop:
        return "degraded", [
            f"INT8 costs {drop * 100:.1f} points of val accuracy (more than {qcfg.max_drop * 100:.0f}). "
            "Fix: --quant-auto-fallback keeps the few sensitive layers in FP; or raise --calib-size"
        ]
    return "ok", []
