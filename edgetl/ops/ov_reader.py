"""Reading ONNX models that contain edgetl nodes into OpenVINO: the fused kernels, or their decomposition.

OpenVINO's ONNX frontend (checked with 2026.4) does not expand model-local functions: a custom-domain node is
either mapped by a loaded extension or rejected. So without the extension the model is handed over with the
edgetl functions inlined (`onnx_functions.decompose`), which OpenVINO reads as plain standard ops.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx

from edgetl.ops import native
from edgetl.ops.onnx_functions import DOMAIN, decompose


def read_model(core: Any, model: onnx.ModelProto | str | Path, fused: bool = True) -> Any:
    """An `openvino.Model`: edgetl nodes become the fused ops when `fused` and the extension is built, else the
    decomposition. `fused_ops(result)` says which happened; the compile step records it in the artifact."""
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    uses_edgetl = any(n.domain == DOMAIN for n in proto.graph.node)
    if uses_edgetl and not (fused and native.load_openvino_extension(core)):
        proto = decompose(proto)
    return core.read_model(proto.SerializeToString(), b"")


def fused_ops(ov_model: Any) -> list[str]:
    """Names of the edgetl fused ops in an `openvino.Model` (empty when it runs the decomposition)."""
    return sorted({op.get_type_name() for op in ov_model.get_ops() if op.get_type_info().version_id == "edgetl"})
