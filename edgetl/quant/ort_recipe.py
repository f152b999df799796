"""`--target onnxruntime` and `--target tensorrt`: onnxruntime.quantize_static, QDQ, with each runtime's layout
(ORT: uint8 activations for its fast U8S8 path; TensorRT: symmetric int8, QDQ only on Conv/MatMul/Gemm inputs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgetl.quant.calibration import feeds_reader, sample_feeds
from edgetl.train.config import QuantizeCfg


def quantize_ort(fp32: Path, out: Path, qcfg: QuantizeCfg, calib: np.ndarray) -> None:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
        "distribution": CalibrationMethod.Distribution,
    }
    if qcfg.target == "tensorrt":
        layout = {
            "activation_type": QuantType.QInt8,
            "op_types_to_quantize": ["Conv", "MatMul", "Gemm"],
            "extra_options": {
                "ActivationSymmetric": True,
                "WeightSymmetric": True,
                "OpTypesToExcludeOutputQuantization": ["Conv", "MatMul", "Gemm"],
            },
        }
    else:
        layout = {"activation_type": QuantType.QUInt8, "extra_options": {"WeightSymmetric": True}}
    quantize_static(
        str(fp32),
        str(out),
        feeds_reader(sample_feeds(calib)),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        weight_type=QuantType.QInt8,
        calibrate_method=methods[qcfg.calib_method],
        nodes_to_exclude=list(qcfg.ignore),
        **layout,
    )
