"""`edgetl train`: picks the flow (FP32, or INT8 with `--quantize`), then records and saves the run once."""

from __future__ import annotations

from edgetl.config import TrainCfg
from edgetl.progress import info
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
    from edgetl.models.backbones.split import resolve
    from edgetl.train.finetune import apply, finetune

    resolve(p.cfg.unfreeze, p.backbone())  # a bad --unfreeze stops before any feature is computed
    frozen = p.features(p.fp32_extractor())
    p.audit_near_duplicates(frozen)
    lp, _ = p.train_cached(frozen)
    t = p.timing
    report = {"val_acc_frozen": lp.val_acc, **finetune(p, lp.head)}
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


def run_train(cfg: TrainCfg) -> dict:
    """The whole `edgetl train` job; returns run.json's content (also written to the run folder)."""
    p = Pipeline(cfg)
    if cfg.unfreeze:
        res, extras = run_finetuned(p)
    elif cfg.quantize is not None:
        from edgetl.train.int8 import run_quantized  # nncf / onnxruntime.quantization load only when asked for

        res, extras = run_quantized(p)
    else:
        res, extras = run_fp32(p)
    record = p.record(res, extras)
    p.save(res, record)
    info(f"wrote {p.out / 'run.json'}")
    return record
