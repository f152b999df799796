"""`edgetl train --quantize int8`: the head is trained on the features of the INT8 backbone that ships.

Steps: FP32 features (cached) and the FP32 recipe's accuracy; calibration on training images only; the
backbone quantized for the target (QDQ ONNX, cached by settings + calibration hash); the runtime checked against
an exact evaluation of that graph on this CPU (edgetl.quant.fidelity), so the INT8 features are the graph's own,
whatever CPU trains; INT8 features extracted (cached; the key covers quantization settings, the calibration
hash and the evaluation mode); the deployed head trained on them; accuracy drop, top-1 agreement of the two
deployable models, feature cosine and speed reported, and judged by one rule (edgetl.verdict) that
`edgetl export` applies too; optionally the fallback search.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from edgetl.contract import HEAD_FP32
from edgetl.errors import UserError
from edgetl.fileio import atomic_write_bytes, sha256_file
from edgetl.models.heads import head_bytes, head_logits, head_meta
from edgetl.progress import info
from edgetl.quant.backbone_onnx import export_backbone_onnx, exporter_version
from edgetl.quant.calibration import calibration_hash, check_calibration, select_calibration
from edgetl.quant.fidelity import MODES, PROBE, choose, cosines, describe
from edgetl.quant.ort_recipe import DYNAMIC
from edgetl.quant.quantize import RECIPE, quantize
from edgetl.quant.runtime import RuntimeExtractor, engine_for, quantizer_version
from edgetl.quant.sensitivity import rank_layers
from edgetl.records import INT8_BACKBONE
from edgetl.train.features import decode
from edgetl.train.pipeline import Pipeline
from edgetl.verdict import MIN_AGREEMENT, int8_verdict

MAX_FALLBACK_LAYERS = 8
FORCE_MODE = "EDGETL_INT8_MODE"  # runtime | precise | emulated: how INT8 features are computed, whatever was measured


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
        self._calib: tuple[list, np.ndarray] | None = None
        self._sha: dict[Path, str] = {}
        self.fidelity: dict = {}

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
        return self._decoded(items)[1]

    def _decoded(self, items) -> tuple[list, np.ndarray]:
        if self._calib is None:
            kept, x = decode(items, self.p.pre, self.p.skip)
            check_calibration(x, self.q.calib_size)
            self._calib = (kept, x)
        return self._calib

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

    def extractor(self, qcfg, items, calib_hash: str, fp32_feats: dict | None = None) -> RuntimeExtractor:
        """The INT8 backbone run the way that computes what its graph says on this CPU (edgetl.quant.fidelity)."""
        path = self.int8_onnx(qcfg, items, calib_hash)
        context = {
            "precision": "int8",
            "quantize": {**qcfg.key(), "calib_sha256": calib_hash, "quantizer": quantizer_version(qcfg.target)},
            "model_sha256": self._sha.setdefault(path, sha256_file(path)),  # features follow the model's bytes
        }

        def make(engine: str, mode: str) -> RuntimeExtractor:
            return RuntimeExtractor(path, engine, context, self.p.cfg.threads, mode)

        kept, x = self._decoded(items)
        probe = [it.key for it in kept[:PROBE]]
        fp32_feats = fp32_feats or {}
        fp32 = np.stack([fp32_feats[k] for k in probe]) if probe and all(k in fp32_feats for k in probe) else None
        mode, self.fidelity = choose(path, engine_for(qcfg.target), make, x[: len(probe)], fp32, self.models)
        forced = os.environ.get(FORCE_MODE)
        if forced:  # benchmarks: what another CPU kind chose, computed here (u8u8 and the emulation are exact)
            if forced not in MODES:
                raise UserError(f"${FORCE_MODE}={forced!r}: choose one of {', '.join(MODES)}")
            mode = forced
            how = f"{describe(engine_for(qcfg.target), mode)}; forced by ${FORCE_MODE}"
            self.fidelity = {**self.fidelity, "mode": mode, "features_from": how}
        return make(engine_for(qcfg.target), mode)

    # --- one INT8 evaluation ----------------------------------------------------------------------
    def evaluate(self, qcfg, items, calib_hash, fp32: tuple):
        """(extractor, INT8 features, INT8 head, {int8_agreement, feature_cosine}); `fp32`: (features, head)."""
        fp32_feats, fp32_head = fp32
        ext = self.extractor(qcfg, items, calib_hash, fp32_feats)
        got = self.p.features(ext)
        res, extra = self.p.train_cached(got)
        self.p.timing["train_s"] = extra["train_s"]
        val = self.p.ds.val
        return (
            ext,
            got,
            res,
            {
                "int8_agreement": agreement(val, (res.head, got.features), (fp32_head, fp32_feats)),
                "feature_cosine": feature_cosine(val, got.features, fp32_feats),
            },
        )


def agreement(val: list, int8: tuple, fp32: tuple) -> float:
    """Top-1 agreement of the deployable INT8 model (INT8 features, the head trained on them) with the deployable
    FP32 model (FP32 features, the FP32 recipe's head) on val, paired by content key: what shipping INT8 changes
    for a user, on every target. `int8`, `fp32`: (head, features by content key)."""
    (head8, feats8), (head32, feats32) = int8, fp32
    keys = [it.key for it in val if it.key in feats8 and it.key in feats32]
    if not keys:
        return float("nan")
    on_int8 = head_logits(head8, np.stack([feats8[k] for k in keys])).argmax(1)
    on_fp32 = head_logits(head32, np.stack([feats32[k] for k in keys])).argmax(1)
    return float(np.float32(np.count_nonzero(on_int8 == on_fp32)) / np.float32(len(keys)))  # as torch's mean


def feature_cosine(val: list, int8: dict[str, np.ndarray], fp32: dict[str, np.ndarray]) -> float:
    """Mean cosine of INT8 and FP32 pooled features of the same val images: how faithful the quantized backbone
    is, whatever head sits on it."""
    keys = [it.key for it in val if it.key in int8 and it.key in fp32]
    if not keys:
        return float("nan")
    return float(cosines(np.stack([int8[k] for k in keys]), np.stack([fp32[k] for k in keys])).mean())


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
    p.audit_near_duplicates(fp32_feats)
    res32, _ = p.train_cached(fp32_feats)
    items, chash = r.calibration()
    qcfg = r.q
    reference = (fp32_feats.features, res32.head)
    ext, got, res, quality = r.evaluate(qcfg, items, chash, reference)
    drop = res32.val_acc - res.val_acc

    def hurt() -> bool:
        return drop > qcfg.max_drop or not quality["int8_agreement"] >= MIN_AGREEMENT

    ranking: list[dict] = []
    if qcfg.auto_fallback and hurt() and p.text:
        info("the fallback search ranks convolution layers of image backbones; for a text encoder use --quant-ignore")
    elif qcfg.auto_fallback and hurt():
        info(
            f"INT8 costs {drop * 100:.1f} points, agreement {quality['int8_agreement']:.4f}: searching for sensitive "
            "layers"
        )
        ranking = rank_layers(r.fp32_onnx(), ext.path, r.calib_x(items)[:64])
        k = 1
        while hurt() and k <= min(MAX_FALLBACK_LAYERS, len(ranking)):  # keep 1, 2, 4, 8 layers FP
            worst = tuple(row["layer"] for row in ranking[:k])
            trial = dataclasses.replace(qcfg, ignore=tuple(dict.fromkeys(qcfg.ignore + worst)))
            info(f"fallback: keeping {k} layer(s) in floating point: {', '.join(trial.ignore)}")
            ext, got, res, quality = r.evaluate(trial, items, chash, reference)
            qcfg, drop, k = trial, res32.val_acc - res.val_acc, k * 2
    timing = _timing(p, r, ext, got, items)
    status, warnings = int8_verdict(drop, quality["int8_agreement"], qcfg.max_drop)
    p.files[INT8_BACKBONE] = ext.path  # written with the head and run.json, as one unit
    fp32_head = keep_fp32_head(p, res32.head)
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
        "features_from": r.fidelity.get("features_from"),
        "fidelity": r.fidelity,
        "onnx": INT8_BACKBONE,
        **fp32_head,
        "status": status,
        "max_drop": qcfg.max_drop,
        "sensitivity": ranking,
        "auto_fallback": qcfg.auto_fallback,
    }
    metrics = {"val_acc_fp32": res32.val_acc, **quality, "int8_drop": drop}
    p.timing.update(timing)
    return res, {"metrics": metrics, "quantize": quant, "warnings": warnings}


def keep_fp32_head(p: Pipeline, head) -> dict:
    """An image run keeps the FP32 recipe's head too (fitted on the FP32 features: the reference its INT8 model is
    judged against), written with the run folder; `edgetl export` joins it to the FP32 backbone (MODEL_FP32), a
    `compile RUN --target auto` candidate. Returns run.json's quantize entry naming it."""
    if p.text:  # only image runs export the FP32 graph
        return {}
    p.files[HEAD_FP32] = head_bytes(head, head_meta(p.cfg.head, p.bcfg.num_features, len(p.ds.classes)))
    return {"fp32_head": HEAD_FP32}


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
