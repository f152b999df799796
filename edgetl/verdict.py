"""One rule for an INT8 run, applied by `edgetl train` (which flags it) and `edgetl export` (which refuses it).

The numbers it reads are run.json's metrics: `int8_drop` (FP32 recipe's val accuracy minus the INT8 model's),
`int8_agreement` (labels of the deployable INT8 model, INT8 backbone + its own head, against the deployable FP32
model, FP32 backbone + its own head, on val: what shipping INT8 changes for a user). Measured on digits over
seeds 0-4 and three layouts: agreement 0.97-0.99, drop within +-0.6 points (benchmarks/results/int8_spread.json).
"""

from __future__ import annotations

COLLAPSE_DROP = 0.10  # a drop this large means the INT8 model is broken: the run fails, export refuses it
MIN_AGREEMENT = 0.90  # fewer labels kept than this: broken as well (train exits 1, export refuses)
WARN_AGREEMENT = 0.97  # below the measured spread: shipped, with a warning and the fix
FIX = "--quant-auto-fallback (keeps the sensitive layers in floating point), a larger --calib-size, or --calib-method"


def int8_verdict(drop: float, agreement: float, max_drop: float) -> tuple[str, list[str]]:
    """(status, warnings): "collapsed" must not ship, "degraded" ships with a warning, "ok"."""
    broken = []
    if drop > COLLAPSE_DROP:
        broken.append(f"val accuracy fell {drop * 100:.1f} points below FP32 (more than {COLLAPSE_DROP * 100:.0f})")
    if not agreement >= MIN_AGREEMENT:  # NaN counts as broken
        broken.append(f"it keeps only {agreement:.4f} of the FP32 model's labels (less than {MIN_AGREEMENT})")
    if broken:
        return "collapsed", [
            f"INT8 COLLAPSED: {'; '.join(broken)}; this model must not ship (export refuses it). Fix: {FIX}"
        ]
    weak = []
    if drop > max_drop:
        weak.append(f"INT8 costs {drop * 100:.1f} points of val accuracy (more than {max_drop * 100:.0f})")
    if agreement < WARN_AGREEMENT:
        weak.append(f"INT8 keeps {agreement:.4f} of the FP32 model's labels (less than {WARN_AGREEMENT})")
    if weak:
        return "degraded", [f"{'; '.join(weak)}. Fix: {FIX}"]
    return "ok", []


def verdict_of(record: dict) -> tuple[str, list[str]]:
    """The rule applied to a run.json: export judges the numbers train recorded, not a status string."""
    m, q = record.get("metrics", {}), record.get("quantize") or {}
    return int8_verdict(
        float(m.get("int8_drop", 0.0)), float(m.get("int8_agreement", 1.0)), float(q.get("max_drop", 0.01))
    )
