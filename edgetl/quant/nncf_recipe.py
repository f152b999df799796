"""`--target openvino`: NNCF's ONNX backend (symmetric per-channel weights, per-tensor activations)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgetl.config import QuantizeCfg
from edgetl.quant.calibration import sample_feeds
from edgetl.texts import Tokens


def quantize_nncf(fp32: Path, out: Path, qcfg: QuantizeCfg, calib: np.ndarray | Tokens) -> None:
    import nncf
    import onnx
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    estimators = {
        "mean_minmax": None,  # NNCF's own default for per-tensor activations
        "minmax": RangeEstimatorParametersSet.MINMAX,
        "percentile": RangeEstimatorParametersSet.MEAN_QUANTILE,
        "histogram": RangeEstimatorParametersSet.HISTOGRAM,
    }
    params = AdvancedQuantizationParameters()
    if qcfg.overflow_fix:  # NNCF's default fixes the first layer only; ENABLE halves every layer's weight range
        params.overflow_fix = OverflowFix.ENABLE
    if estimators[qcfg.calib_method] is not None:
        params.activations_range_estimator_params = estimators[qcfg.calib_method]
    dataset = nncf.Dataset(sample_feeds(calib))
    # a sentence encoder: NNCF's transformer scheme (keeps LayerNorm/Softmax paths in floating point)
    # (NNCF's full bias correction cannot rebuild this ONNX graph's subgraphs: its fast variant, NNCF's default)
    text = isinstance(calib, Tokens)
    extra = {"model_type": nncf.ModelType.TRANSFORMER} if text else {}
    model = nncf.quantize(
        onnx.load(str(fp32)),
        dataset,
        preset=nncf.QuantizationPreset.PERFORMANCE,
        subset_size=len(calib),
        ignored_scope=nncf.IgnoredScope(names=list(qcfg.ignore)),
        advanced_parameters=params,
        fast_bias_correction=text,
        **extra,
    )
    onnx.save(model, str(out))
