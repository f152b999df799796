"""The frozen FP32 backbone as ONNX (pooled features, fixed spatial size, dynamic batch): what is quantized."""

from __future__ import annotations

import hashlib
from pathlib import Path

from edgetl.errors import UserError

INPUT, OUTPUT = "input", "features"
OPSET = 17


def source_sha(*functions) -> str:
    import inspect

    return hashlib.sha256("".join(inspect.getsource(f) for f in functions).encode()).hexdigest()[:16]


def exporter_version(text: bool = False) -> str:
    """What shapes the cached FP32 backbone graph besides weights and preprocessing."""
    import torch

    if text:
        from edgetl.export.text import export_text_encoder

        return f"torch {torch.__version__} {source_sha(export_text_encoder)}"
    return f"torch {torch.__version__} opset {OPSET} {source_sha(export_backbone_onnx)}"


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
