"""The INT8 (or FP32) ONNX backbone run by a real runtime on this CPU: the features the head is trained on."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgetl.errors import RuntimeMissing
from edgetl.quant.backbone_onnx import INPUT
from edgetl.texts import Tokens


def engine_for(target: str) -> str:
    return "openvino" if target == "openvino" else "onnxruntime"


class RuntimeExtractor:
    """The INT8 (or FP32) ONNX backbone in OpenVINO or ONNX Runtime on this CPU: the numerics that ship.

    `mode` (edgetl.quant.fidelity): "runtime" runs the engine as a device does; "precise" is ONNX Runtime with its
    non-saturating u8u8 kernels; "emulated" is ONNX Runtime with optimizations off (QDQ run as written, in float).
    Only a mode other than "runtime" enters the cache context, so features of the default mode keep their keys.
    """

    def __init__(
        self, onnx_path: Path, engine: str, context: dict, threads: int | None = None, mode: str = "runtime"
    ) -> None:
        if mode != "runtime":
            engine = "onnxruntime"
        self.path, self.engine, self._context, self.threads, self.mode = Path(onnx_path), engine, context, threads, mode
        self._run = None
        self.name = f"{engine}-{context.get('precision', 'int8')}" + ("" if mode == "runtime" else f"-{mode}")
        self.precision_used = ""

    def context(self) -> dict:
        extra = {} if self.mode == "runtime" else {"int8_mode": self.mode}
        return {"engine": self.engine, "runtime": runtime_version(self.engine), **self._context, **extra}

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
            from edgetl.deploy.targets.ov_runner import runtime_precision

            self.precision_used = runtime_precision(compiled)
            request = compiled.create_infer_request()
            return lambda feeds: request.infer(feeds)[0].copy()
        from edgetl.deploy.ort_session import PRECISE_INT8
        from edgetl.deploy.ort_session import session as ort_session

        level = "ORT_DISABLE_ALL" if self.mode == "emulated" else "ORT_ENABLE_ALL"
        config = PRECISE_INT8 if self.mode == "precise" else None
        session = ort_session(self.path, self.threads, level, config=config)
        import onnx

        ops = {n.op_type for n in onnx.load(str(self.path), load_external_data=False).graph.node}
        kind = "dynamic" if "DynamicQuantizeLinear" in ops else "QDQ"
        how = {"runtime": "", "precise": ", u8u8 kernels", "emulated": ", emulated in fp32"}[self.mode]
        self.precision_used = f"int8 ({kind}{how}) + fp32"
        return lambda feeds: session.run(None, feeds)[0]

    @staticmethod
    def feeds(x: np.ndarray | Tokens) -> dict[str, np.ndarray]:
        return x.feeds() if isinstance(x, Tokens) else {INPUT: np.ascontiguousarray(x, np.float32)}

    def __call__(self, x: np.ndarray | Tokens) -> np.ndarray:
        if self._run is None:
            self._run = self._load()
        return np.asarray(self._run(self.feeds(x)), np.float32)


def runtime_version(engine: str) -> str:
    if engine == "openvino":
        import openvino as ov

        return ov.get_version().split("-")[0]
    import onnxruntime as ort

    return ort.__version__


def quantizer_version(target: str) -> str:
    if target in ("openvino", "tensorrt"):
        import nncf

        return f"nncf {nncf.__version__}"
    import onnxruntime as ort

    return f"onnxruntime.quantization {ort.__version__}"
