"""The INT8 backbone up to a cut point: `train --unfreeze N --quantize int8 --ft-prefix int8` trains the unfrozen
blocks on the activations the shipped INT8 prefix computes, not on the FP32 prefix's (the default).

The cut is the input of a block group (`blocks.4`): in the FP32 backbone graph, the one tensor that the group's
nodes (named `/blocks/4/...` by the exporter) read from outside the group. The quantizers keep the FP32 graph's
tensor names, so the same tensor exists in the INT8 graph, as the float input of the group's first quantizer; the
INT8 graph is cut there (onnx.utils.extract_model) and run by the runtime and mode the INT8 features use.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from edgetl.errors import UserError
from edgetl.fileio import sha256_file
from edgetl.quant.backbone_onnx import INPUT


def cut_tensor(fp32: Path, group: str) -> str:
    """The tensor that enters block group `group` (e.g. "blocks.4") in the FP32 backbone graph."""
    import onnx

    graph = onnx.load(str(fp32), load_external_data=False).graph
    prefix = "/" + group.replace(".", "/") + "/"
    nodes = [n for n in graph.node if n.name.startswith(prefix)]
    made = {o for n in nodes for o in n.output}
    constants = {t.name for t in graph.initializer}
    entering = sorted({i for n in nodes for i in n.input if i and i not in made and i not in constants})
    if len(entering) != 1:
        raise UserError(
            f"--unfreeze with --quantize int8: cannot find where {group} starts in the backbone graph "
            f"({len(entering)} entering tensors); use --unfreeze all, or train without --quantize and quantize after"
        )
    return entering[0]


def cut_model(int8: Path, fp32: Path, group: str, folder: Path) -> Path:
    """The INT8 graph from the image to the input of `group`, written once into `folder` (keyed by the INT8
    graph's bytes and the cut)."""
    import onnx.utils

    tensor = cut_tensor(fp32, group)
    key = hashlib.sha256(f"{sha256_file(int8)}|{tensor}".encode()).hexdigest()[:24]
    path = Path(folder) / f"{key}.cut.onnx"
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{time.time_ns()}.tmp.onnx")
        onnx.utils.extract_model(str(int8), str(tmp), [INPUT], [tensor])
        tmp.replace(path)
    return path
