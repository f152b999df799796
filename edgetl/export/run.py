"""`edgetl export` of a run folder: the image or the sentence exporter, picked by the run's own record."""

from __future__ import annotations

from pathlib import Path

from edgetl.contract import UINT8_NHWC
from edgetl.errors import UserError
from edgetl.export import parity
from edgetl.records import layout_dirs, read_run


def export_run(
    run_dir: Path,
    out: Path | None = None,
    input_format: str = UINT8_NHWC,
    fused_ops: bool = True,
    debug_parity: bool = False,
    max_images: int = parity.MAX_IMAGES,
    echo=print,
    with_fp32: bool = True,
) -> dict:
    """Write the fused graph and export.json; returns export.json's content. An INT8 image run's FP32 model too
    (model.fp32.onnx, edgetl.export.model.fp32_model), once per run: not for its other layouts' folders.

    The parity ladder runs after the files are written (so a failing model can be inspected) and raises
    `parity.ParityFailed` (exit 1) when a stage is out of tolerance.
    """
    layouts = layout_dirs(run_dir)
    if layouts and out is not None:
        raise UserError(f"--out {out}: {run_dir} holds {len(layouts) + 1} INT8 layouts, each exported into its own run "
                        "folder; drop --out")  # fmt: skip
    if read_run(run_dir).is_text:  # sentences in: the tokenizer, not image preprocessing, goes in front
        from edgetl.export.text import export_text_run

        if input_format != UINT8_NHWC or debug_parity:
            raise UserError(f"{run_dir}: a text run takes neither --input nor --debug-parity; drop them")
        doc = export_text_run(run_dir, out, max_images, echo)
    else:
        from edgetl.export.model import export_image_run

        doc = export_image_run(run_dir, out, input_format, fused_ops, debug_parity, max_images, echo, with_fp32)
    for sub in layouts:  # `train --target A,B`: every layout's graph, for `compile RUN --target auto`
        echo(f"layout {sub.name}: {sub}")
        export_run(sub, None, input_format, fused_ops, debug_parity, max_images, echo, with_fp32=False)
    return doc
