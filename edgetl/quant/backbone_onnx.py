"""The frozen FP32 backbone as ONNX (pooled features, fixed spatial size, dynamic batch): what is quantized.

It is `edgetl export`'s own backbone graph (`edgetl.export.model.export_backbone`, PyTorch's dynamo exporter
at the fused graph's opset) with the global pooling kept inside, simplified by onnxslim.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from edgetl.contract import FEATURES

INPUT, OUTPUT = "input", FEATURES


def source_sha(*functions) -> str:
    import inspect

    return hashlib.sha256("".join(inspect.getsource(f) for f in functions).encode()).hexdigest()[:16]


def exporter_version(text: bool = False) -> str:
    """What shapes the cached FP32 backbone graph besides weights and preprocessing."""
    import torch

    if text:
        from edgetl.export.graph import keep_name_scopes
        from edgetl.export.text import export_text_encoder

        return f"torch {torch.__version__} {source_sha(export_text_encoder, keep_name_scopes)}"
    from edgetl.export.graph import keep_name_scopes, slim
    from edgetl.export.model import OPSET, FeatureMap, export_backbone

    code = source_sha(export_backbone, FeatureMap, slim, keep_name_scopes)
    return f"torch {torch.__version__} opset {OPSET} {code}"


def export_backbone_onnx(backbone, pre, path: Path) -> Path:
    """Pooled-feature backbone (`input` [N, 3, h, w] -> `features` [N, D]) written to `path`."""
    from edgetl.export.graph import slim
    from edgetl.export.model import export_backbone
    from edgetl.fileio import atomic_write_bytes

    model = slim(export_backbone(backbone, pre, pooled=True))
    readable_names(model)
    atomic_write_bytes(path, model.SerializeToString())
    return path


def readable_names(model) -> None:
    """Name each node after the module it came from, `/<module path>/<OpType>` (`/blocks/0/0/bn1/Conv`),
    from the exporter's name-scope metadata: the names sensitivity reports and `--quant-ignore` use."""
    import ast

    from edgetl.export.graph import NAME_SCOPES
    from edgetl.export.parity import SCOPE

    seen: dict[str, int] = {}
    for node in model.graph.node:
        props = {p.key: p.value for p in node.metadata_props}
        scopes = [s for s in ast.literal_eval(props.get(NAME_SCOPES, "[]")) if s.startswith(SCOPE + ".")]
        path = scopes[-1].split(".", 1)[1].removeprefix("model.") if scopes else ""
        base = "/" + "/".join([*filter(None, path.split(".")), node.op_type])
        count = seen.get(base, 0)
        seen[base] = count + 1
        node.name = base if count == 0 else f"{base}_{count}"
