"""INT8 post-training quantization of the frozen backbone into a QDQ ONNX graph, laid out per target.

| target      | quantizer                    | layout                                                          |
|-------------|------------------------------|-----------------------------------------------------------------|
| openvino    | NNCF (ONNX backend)          | NNCF's: symmetric per-channel weights, per-tensor activations   |
| onnxruntime | onnxruntime.quantize_static  | per-channel symmetric int8 weights, uint8 activations (ORT's    |
|             |                              | fast U8S8 path), activations fused with their Conv              |
| tensorrt    | onnxruntime.quantize_static  | symmetric int8 weights and activations (zero point 0), QDQ only |
|             |                              | on the inputs of Conv/MatMul/Gemm: what TensorRT expects        |

The INT8 backbone is then run by a real runtime (OpenVINO for `openvino`; ONNX Runtime for the others, the
only place the TensorRT layout's numerics can be checked on a machine without a GPU) to extract the features
the head is trained on.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from edgetl.config import MIN_CALIB, QuantizeCfg
from edgetl.data import Item
from edgetl.errors import RuntimeMissing, UserError

INPUT, OUTPUT = "input", "features"
OPSET = 17


def _source_sha(*functions) -> str:
    import inspect

    return hashlib.sha256("".join(inspect.getsource(f) for f in functions).encode()).hexdigest()[:16]


def exporter_version() -> str:
    """What shapes the cached FP32 backbone graph besides weights and preprocessing."""
    import torch

    return f"torch {torch.__version__} opset {OPSET} {_source_sha(export_backbone_onnx)}"


# --- the FP32 backbone as ONNX ----------------------------------------------------------------------


def export_backbone_onnx(backbone, size: tuple[int, int], path: Path) -> Path:
    """Pooled-feature backbone, fixed spatial size, dynamic batch; simplified (folds TF-same padding)."""
    import onnx
    import onnxslim
    import torch

    class Features(torch.nn.Module):
        def __init__(self, b) -> None:
            super().__init__()
            self.b = b

        def forward(self, x):
            return self.b.forward_features(x)

    tmp = path.with_suffix(".raw.onnx")
    try:
        torch.onnx.export(
            Features(backbone).eval(),
            torch.zeros(1, 3, *size),
            str(tmp),
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "N"}, OUTPUT: {0: "N"}},
            opset_version=OPSET,
            dynamo=False,
        )
        model = onnxslim.slim(onnx.load(str(tmp)))
    except Exception as e:  # noqa: BLE001 - any exporter failure is "this backbone cannot be quantized"
        raise UserError(
            f"--quantize int8: backbone {backbone.cfg.name} does not export to ONNX ({str(e)[:160]})"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    onnx.save(model, str(path))
    return path


# --- calibration --------------------------------------------------------------------------------------


def select_calibration(train: list[Item], n: int, seed: int) -> list[Item]:
    """A seeded subset of the TRAINING images (never validation): the whole train set if it is smaller."""
    unique = list({it.key: it for it in train}.values())
    unique.sort(key=lambda it: it.key)
    order = np.random.default_rng(seed).permutation(len(unique))
    return [unique[i] for i in order[:n]]


def calibration_hash(items: list[Item]) -> str:
    return hashlib.sha256("\n".join(sorted(it.key for it in items)).encode()).hexdigest()


def check_calibration(x: np.ndarray, requested: int) -> None:
    if len(x) < MIN_CALIB:
        raise UserError(
            f"--calib-size: only {len(x)} usable training images to calibrate INT8 (asked for {requested}); "
            f"need at least {MIN_CALIB}: add training images or train without --quantize"
        )
    flat = x.reshape(len(x), -1)
    constant = int((flat.max(1) - flat.min(1) < 1e-6).sum())
    if constant > len(x) // 2:
        raise UserError(
            f"calibration: {constant} of {len(x)} training images are constant (blank frames); "
            "INT8 ranges would be meaningless: remove blank images from the training data"
        )


# --- per-target quantizers ----------------------------------------------------------------------------


def quantize(fp32: Path, out: Path, qcfg: QuantizeCfg, calib: np.ndarray) -> Path:
    """Writes the INT8 QDQ model to `out`. Any quantizer failure becomes one line naming the way out."""
    known = _node_names(fp32)
    for name in qcfg.ignore:
        if name not in known:
            import difflib

            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}" if close else ""
            raise UserError(f"--quant-ignore {name!r}: no such layer in the backbone graph{hint}")
    try:
        if qcfg.target == "openvino":
            _quantize_nncf(fp32, out, qcfg, calib)
        else:
            _quantize_ort(fp32, out, qcfg, calib)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - the quantizers raise anything; the user needs one clear line
        raise UserError(
            f"--quantize int8: the {qcfg.target} quantizer failed on this backbone ({type(e).__name__}: "
            f"{str(e)[:160]}); try another --target or keep the failing layer in FP with --quant-ignore"
        ) from None
    return out


def _node_names(path: Path) -> list[str]:
    import onnx

    return [n.name for n in onnx.load(str(path), load_external_data=False).graph.node]


def _quantize_nncf(fp32: Path, out: Path, qcfg: QuantizeCfg, calib: np.ndarray) -> None:
    import nncf
    import onnx
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    estimators = {
        "mean_minmax": None,  # NNCF's own default for per-tensor activations
        "minmax": RangeEstimatorParametersSet.MINMAX,
        "percentile": RangeEstimatorParametersSet.MEAN_QUANTILE,
        "histogram": RangeEstimatorParametersSet.HISTOGRAM,
    }
    params = AdvancedQuantizationParameters()
    if estimators[qcfg.calib_method] is not None:
        params.activations_range_estimator_params = estimators[qcfg.calib_method]
    dataset = nncf.Dataset([{INPUT: calib[i : i + 1]} for i in range(len(calib))])
    model = nncf.quantize(
        onnx.load(str(fp32)),
        dataset,
        preset=nncf.QuantizationPreset.PERFORMANCE,
        subset_size=len(calib),
        ignored_scope=nncf.IgnoredScope(names=list(qcfg.ignore)),
        advanced_parameters=params,
        fast_bias_correction=False,
    )
    onnx.save(model, str(out))


def _quantize_ort(fp32: Path, out: Path, qcfg: QuantizeCfg, calib: np.ndarray) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calib[i : i + 1] for i in range(len(calib)))

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {INPUT: x}

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
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        weight_type=QuantType.QInt8,
        calibrate_method=methods[qcfg.calib_method],
        nodes_to_exclude=list(qcfg.ignore),
        **layout,
    )


# --- running the INT8 backbone -----------------------------------------------------------------------


# The quantizers' own code is part of every INT8 cache key: any change to a recipe below (preset, bias
# correction, layout, calibration reader) gives new keys, so a cache filled by another version is never reused.
RECIPE = _source_sha(quantize, _quantize_nncf, _quantize_ort, select_calibration)


def engine_for(target: str) -> str:
    return "openvino" if target == "openvino" else "onnxruntime"


class RuntimeExtractor:
    """The INT8 (or FP32) ONNX backbone in OpenVINO or ONNX Runtime on this CPU: the numerics that ship."""

    def __init__(self, onnx_path: Path, engine: str, context: dict, threads: int | None = None) -> None:
        self.path, self.engine, self._context, self.threads = Path(onnx_path), engine, context, threads
        self._run = None
        self.name = f"{engine}-{context.get('precision', 'int8')}"
        self.precision_used = ""

    def context(self) -> dict:
        return {"engine": self.engine, "runtime": runtime_version(self.engine), **self._context}

    def _load(self):
        if self.engine == "openvino":
            try:
                import openvino as ov
            except ImportError:
                raise RuntimeMissing("--target openvino needs OpenVINO: pip install 'edgetl[openvino]'") from None
            core = ov.Core()
            # f32 outside the quantized ops, as on a VNNI-only NUC (this AMX CPU would otherwise pick bf16).
            config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
            if self.threads:
                config["INFERENCE_NUM_THREADS"] = self.threads
            compiled = core.compile_model(str(self.path), "CPU", config)
            self.precision_used = f"int8 + {compiled.get_property('INFERENCE_PRECISION_HINT')}"
            request = compiled.create_infer_request()
            return lambda x: request.infer({0: x})[0].copy()
        import onnxruntime as ort

        so = ort.SessionOptions()
        if self.threads:
            so.intra_op_num_threads = self.threads
        session = ort.InferenceSession(str(self.path), so, providers=["CPUExecutionProvider"])
        self.precision_used = "int8 (QDQ) + fp32"
        return lambda x: session.run(None, {INPUT: x})[0]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self._run is None:
            self._run = self._load()
        return np.asarray(self._run(np.ascontiguousarray(x, np.float32)), np.float32)


def runtime_version(engine: str) -> str:
    if engine == "openvino":
        import openvino as ov

        return ov.get_version().split("-")[0]
    import onnxruntime as ort

    return ort.__version__


def quantizer_version(target: str) -> str:
    if target == "openvino":
        import nncf

        return f"nncf {nncf.__version__}"
    import onnxruntime as ort

    return f"onnxruntime.quantization {ort.__version__}"
