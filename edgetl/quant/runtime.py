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
            from edgetl.deploy.targets.openvino import runtime_precision

            self.precision_used = runtime_precision(compiled)
            request = compiled.create_infer_request()
            return lambda feeds: request.infer(feeds)[0].copy()
        from edgetl.deploy.ort_session import session as ort_session

        session = ort_session(self.path, self.threads)
        import onnx

        ops = {n.op_type for n in onnx.load(str(self.path), load_external_data=False).graph.node}
        self.precision_used = "int8 (dynamic) + fp32" if "DynamicQuantizeLinear" in ops else "int8 (QDQ) + fp32"
        return lambda feeds: session.run(None, feeds)[0]

    def __call__(self, x: np.ndarray | Tokens) -> np.ndarray:
        if self._run is None:
            self._run = self._load()
        feeds = x.feeds() if isinstance(x, Tokens) else {INPUT: np.ascontiguousarray(x, np.float32)}
        return np.asarray(self._run(feeds), np.float32)


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
