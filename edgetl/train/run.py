"""`edgetl train`: picks the flow (FP32, or INT8 with `--quantize`), then records and saves the run once."""

from __future__ import annotations

from edgetl.config import TrainCfg
from edgetl.errors import UserError
from edgetl.progress import info
from edgetl.records import LAYOUTS
from edgetl.train.fit import HeadResult
from edgetl.train.pipeline import Pipeline


def run_fp32(p: Pipeline) -> tuple[HeadResult, dict]:
    """The head on FP32 eager features: from the cache, or with the backbone in the loop."""
    extractor = p.fp32_extractor()
    if p.cfg.cache_features:
        extracted = p.features(extractor)
        p.audit_near_duplicates(extracted)
        res, extra = p.train_cached(extracted)
        p.timing["train_s"] = extra["train_s"]
        if extracted.images_per_s:
            p.timing["extract_images_per_s"] = extracted.images_per_s
    else:
        res, extra = p.train_uncached(extractor)
        p.timing.update(extract_s=0.0, train_s=extra["train_s"])
    return res, {}


def run_finetuned(p: Pipeline) -> tuple[HeadResult, dict]:
    """`--unfreeze N`: LP on the frozen features, then the last N blocks fine-tuned (edgetl.train.finetune); the
    shipped head is fitted on the fine-tuned backbone's features (INT8 ones with --quantize), as for a frozen run."""
    from edgetl.models.backbones.split import block_names, resolve
    from edgetl.train.finetune import apply, finetune

    n = resolve(p.cfg.unfreeze, p.backbone())  # a bad --unfreeze stops before any feature is computed
    if p.cfg.ft_prefix == "int8" and p.text:
        raise UserError("--ft-prefix int8: a text encoder trains on its FP32 prefix (it is quantized after); drop it")
    if p.cfg.ft_prefix == "int8" and n == len(block_names(p.backbone())):
        raise UserError("--ft-prefix int8: --unfreeze all has no frozen prefix to quantize; drop --ft-prefix")
    frozen = p.features(p.fp32_extractor())
    p.audit_near_duplicates(frozen)
    lp, _ = p.train_cached(frozen)
    t = p.timing
    report = {"val_acc_frozen": lp.val_acc, **finetune(p, lp.head, frozen.features)}
    apply(p, report)
    if p.cfg.quantize is not None:
        from edgetl.train.int8 import run_quantized

        res, extras = run_quantized(p)
    else:
        got = p.features(p.fp32_extractor())
        res, extra = p.train_cached(got)
        t["train_s"] = extra["train_s"]
        extras = {}
    return res, {**extras, "finetune": report}


def train_layouts(cfg: TrainCfg, out) -> list[dict]:
    """`--target A,B`: one run folder per layout besides A (written before A's, which carries them over), from the
    same FP32 features (computed once: the other layouts read them from the cache) and the same calibration
    images; each with its own INT8 features, head, accuracy and agreement."""
    import dataclasses
    import shutil

    if cfg.overwrite and (out / LAYOUTS).is_dir():
        shutil.rmtree(out / LAYOUTS)  # the layouts of the run being overwritten
    rows = []
    for target in cfg.layouts:
        sub = dataclasses.replace(
            cfg,
            quantize=cfg.quantize.for_target(target),
            out=out / LAYOUTS / target,
            layouts=(),
            overwrite=True,
        )
        info(f"layout {target}: training its head on its own INT8 features")
        rows.append(layout_row(run_train(sub), f"{LAYOUTS}/{target}"))
    return rows


def layout_row(record: dict, folder: str) -> dict:
    m, q = record["metrics"], record["quantize"]
    keep = ("val_acc", "val_acc_fp32", "int8_agreement", "int8_drop")
    return {"target": q["target"], "dir": folder, "status": q["status"], **{k: m.get(k) for k in keep}}


def run_train(cfg: TrainCfg) -> dict:
    """The whole `edgetl train` job; returns run.json's content (also written to the run folder)."""
    if cfg.layouts and cfg.unfreeze:
        raise UserError("--target A,B with --unfreeze: fine-tune for one --target at a time")
    p = Pipeline(cfg)
    layouts = train_layouts(cfg, p.out) if cfg.layouts else []  # written first: the run folder carries them over
    if cfg.unfreeze:
        res, extras = run_finetuned(p)
    elif cfg.quantize is not None:
        from edgetl.train.int8 import run_quantized  # nncf / onnxruntime.quantization load only when asked for

        res, extras = run_quantized(p)
    else:
        res, extras = run_fp32(p)
    record = p.record(res, extras)
    if layouts:
        record["layouts"] = [layout_row(record, "."), *layouts]
    p.save(res, record)
    info(f"wrote {p.out / 'run.json'}")
    return record
