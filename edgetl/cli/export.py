"""CLI commands for the export stage (thin: parse options, call one library function)."""

from __future__ import annotations

from pathlib import Path

import click

from edgetl.config import PARITY_IMAGES
from edgetl.contract import INPUT_FORMATS, UINT8_NHWC

EXAMPLES = """
\b
Examples:
  edgetl export runs/parts                                  # -> runs/parts/model.onnx + export.json
  edgetl export runs/parts --input float-nchw --out m.onnx  # raw tensor input instead of camera frames
  edgetl export runs/parts --debug-parity                   # localize the first diverging node
"""


@click.command("export", epilog=EXAMPLES)
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="ONNX file [default: RUN_DIR/model.onnx].")
@click.option(
    "--input",
    "input_format",
    type=click.Choice(list(INPUT_FORMATS)),
    default=UINT8_NHWC,
    show_default=True,
    help="uint8 camera frames [N,H,W,3] of any size, or preprocessed float32 [N,3,h,w].",
)
@click.option(
    "--fused-ops/--no-fused-ops",
    default=True,
    show_default=True,
    help="Write preprocessing and the linear pool+head as ai.edgetl nodes carrying their ONNX function bodies: "
    "any runtime runs them (ONNX Runtime inlines them, `compile` decomposes them for OpenVINO/TensorRT unless the "
    "native kernels are used). Measured faster on OpenVINO CPU (benchmarks/results/kernels.json).",
)
@click.option(
    "--debug-parity",
    is_flag=True,
    help="Compare every intermediate tensor with PyTorch; print the first diverging nodes.",
)
@click.option(
    "--max-images",
    type=click.IntRange(1),
    default=PARITY_IMAGES,
    show_default=True,
    help="Validation images the parity ladder runs on.",
)
def export_cmd(
    run_dir: Path, out: Path | None, input_format: str, fused_ops: bool, debug_parity: bool, max_images: int
) -> None:
    """Fuse preprocessing, backbone and head into one ONNX graph; check it with the parity ladder (exit 1 on failure)."""
    from edgetl.export.run import export_run

    export_run(run_dir, out, input_format, fused_ops, debug_parity, max_images, echo=click.echo)


COMMANDS: list = [export_cmd]
