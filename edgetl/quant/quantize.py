"""Quantize the FP32 backbone graph for a target (the recipe per target: nncf_recipe.py, ort_recipe.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgetl.config import QuantizeCfg
from edgetl.errors import UserError
from edgetl.quant.backbone_onnx import source_sha
from edgetl.quant.calibration import feeds_reader, sample_feeds, select_calibration
from edgetl.quant.nncf_recipe import quantize_nncf, to_signed_int8
from edgetl.quant.ort_recipe import quantize_ort, quantize_text_dynamic


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
        if qcfg.target in ("openvino", "tensorrt"):
            quantize_nncf(fp32, out, qcfg, calib, signed=qcfg.target == "tensorrt")
        else:
            quantize_ort(fp32, out, qcfg, calib)
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


# The quantizers' own code is part of every INT8 cache key: any change to a recipe below (preset, bias
# correction, layout, calibration reader) gives new keys, so a cache filled by another version is never reused.
RECIPE = source_sha(
    quantize,
    quantize_nncf,
    to_signed_int8,
    quantize_ort,
    quantize_text_dynamic,
    feeds_reader,
    sample_feeds,
    select_calibration,
)
