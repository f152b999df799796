"""`edgetl export`: a run folder -> one ONNX graph (preprocessing, backbone, head, softmax/argmax) + export.json.

The graph is what ships: camera frames in (`image` uint8 [N, H, W, 3], any H and W), `probs` and `label` out,
with the run's classes, preprocessing and provenance in `metadata_props['edgetl']`. The FP32 backbone is
exported by PyTorch's maintained (dynamo) exporter at the run's fixed input size with a symbolic batch: the
TF-"same" padding arithmetic then folds to constant pads and BatchNorm folds into the convolutions. A quantized
run ships its INT8 QDQ backbone (`backbone.int8.onnx`) instead; the FP32 graph is still built, in memory, as
the middle rung of the parity ladder that every export ends with (see `edgetl.export.parity`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnx.version_converter
import torch
from torch import nn

from edgetl import __version__
from edgetl.contract import (
    EXPORT_JSON,
    FEATURES,
    FINETUNED_BLOCKS,
    FMAP,
    FP32_EXPORT,
    MODEL_FP32,
    MODEL_ONNX,
    PROBE_FILE,
    UINT8_NHWC,
)
from edgetl.deploy.onnx_safety import check_external_data
from edgetl.errors import UserError
from edgetl.export import debug_parity, parity
from edgetl.export import graph as onnx_graph
from edgetl.export.probe import write_probe
from edgetl.fileio import atomic_write_bytes
from edgetl.models.backbones import Backbone, build_backbone
from edgetl.models.heads import load_head
from edgetl.preprocess import Preprocess
from edgetl.records import RunRecord, read_run

OPSET = 18  # the fused ops' opset (Resize with `axes`); every op used here keeps its semantics from 18 on
EXAMPLE_BATCH = 2  # torch.export specializes sizes 0 and 1, so the example batch is 2 to keep N symbolic


@dataclass
class RunParts:
    """Everything of a run folder that goes into the graph."""

    root: Path
    record: dict
    pre: Preprocess
    backbone: Backbone
    head: nn.Module
    int8_onnx: Path | None  # the run's INT8 QDQ backbone, None for an FP32 run


def load_run(run_dir: Path) -> RunParts:
    record = read_run(run_dir)
    try:
        pre = Preprocess.from_dict(record["preprocess"])
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{record.path}: unreadable run record ({e}); re-run `edgetl train`") from None
    backbone = load_backbone(record)
    apply_finetuned(backbone, record)
    return RunParts(record.root, record, pre, backbone, load_head(record.head_file())[0], record.int8_backbone())


def apply_finetuned(backbone, record: RunRecord) -> None:
    """A `--unfreeze` run's fine-tuned blocks, loaded over the pretrained ones (checked against run.json's hash)."""
    if not record.get("finetune"):
        return
    from safetensors.torch import load_file

    state = load_file(str(record.file(FINETUNED_BLOCKS)))
    own = backbone.state_dict()
    wrong = [k for k, v in state.items() if k not in own or tuple(own[k].shape) != tuple(v.shape)]
    if wrong:
        raise UserError(
            f"{record.path}: {FINETUNED_BLOCKS} does not fit {backbone.cfg.name} ({wrong[0]}); re-run train"
        )
    backbone.load_state_dict({**own, **state}, strict=True)


def load_backbone(record: RunRecord):
    """The run's frozen backbone, rebuilt and checked against the weights and preprocessing it was trained with."""
    cfg, bb = record["config"], record["backbone"]
    backbone = build_backbone(cfg["backbone"], cfg.get("weights"))
    if backbone.cfg.weights_sha256 != bb.get("weights_sha256"):
        raise UserError(
            f"{record.path}: backbone weights changed since training (sha256 {backbone.cfg.weights_sha256[:12]}… "
            f"!= {str(bb.get('weights_sha256'))[:12]}…); restore the weights file or re-run `edgetl train`"
        )
    if record.is_text and backbone.cfg.preprocess.to_dict() != record["preprocess"]:
        raise UserError(f"{record.path}: the text backbone's tokenizer changed since training; restore it or re-run")
    return backbone


def check_eval(**modules: nn.Module) -> None:
    """Refuse modules in training mode: BatchNorm would use batch statistics, Dropout would drop."""
    for label, module in modules.items():
        training = [name or type(module).__name__ for name, m in module.named_modules() if m.training]
        if training:
            raise UserError(
                f"export: the {label} has {len(training)} module(s) in training mode (e.g. {training[0]!r}); "
                "call .eval() before exporting"
            )


class FeatureMap(nn.Module):
    """The exported backbone part: [N, 3, h, w] -> [N, D, h', w'] (pooling belongs to the head/PoolHead),
    or with `pooled` -> [N, D] globally pooled features (the INT8 backbone, which ships pooled).

    The attribute is named `backbone` so node name scopes read `backbone.<module path>` (parity.SCOPE).
    """

    def __init__(self, backbone: Backbone, pooled: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.pooled = pooled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pooled:  # [N, D]: what `--quantize int8` quantizes and caches features from
            return self.backbone.forward_features(x)
        return self.backbone.forward_feature_map(x)


def export_backbone(backbone: Backbone, pre: Preprocess, pooled: bool = False) -> onnx.ModelProto:
    """FP32 backbone graph: input `input` [N, 3, h, w] (N symbolic, h and w fixed), output `fmap`
    (or `features` [N, D] when `pooled`). The one backbone exporter: `edgetl export` and `--quantize int8`."""
    example = torch.zeros(EXAMPLE_BATCH, 3, *pre.size)
    quiet = io.StringIO()  # the exporter narrates its steps on stdout
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                FeatureMap(backbone, pooled),
                (example,),
                input_names=[onnx_graph.TENSOR],
                output_names=[FEATURES if pooled else FMAP],
                opset_version=OPSET,
                dynamo=True,
                dynamic_shapes={"x": {0: torch.export.Dim("N")}},
                verbose=False,
            )
    except Exception as e:  # torch.export raises many types; the user needs the first line, not 200 frames
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise UserError(
            f"export: PyTorch could not export backbone {backbone.cfg.name} ({type(e).__name__}: {first}); "
            "pick another backbone or report it with the full log from torch.onnx.export"
        ) from None
    model = onnx_graph.keep_name_scopes(program.model_proto)
    _rename_dim(model.graph.input[0], "N")
    _rename_dim(model.graph.output[0], "N")
    return model


def _rename_dim(value: onnx.ValueInfoProto, name: str) -> None:
    value.type.tensor_type.shape.dim[0].dim_param = name


def load_int8_backbone(path: Path) -> onnx.ModelProto:
    """The run's QDQ backbone (`input` -> `features` [N, D]), its external data checked before loading."""
    check_external_data(path)
    model = onnx.load(str(path))
    names = ([i.name for i in model.graph.input], [o.name for o in model.graph.output])
    if names != ([onnx_graph.TENSOR], [FEATURES]):
        raise UserError(f"{path}: expected input 'input' and output 'features', found {names}; re-run `edgetl train`")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < OPSET:
        model = onnx.version_converter.convert_version(model, OPSET)
    return model


def build_graph(parts: RunParts, backbone: onnx.ModelProto, input_format: str, fused_ops: bool) -> onnx.ModelProto:
    """Simplified backbone graph, preprocessing spliced in front, head behind; metadata is added by the caller.

    onnxslim runs on the backbone alone, where the shape arithmetic lives: its shape inference does not know
    Resize's `axes` (opset 18) and would corrupt the preprocessing, which is already minimal.
    """
    model = onnx_graph.slim(backbone)
    features = model.graph.output[0].name
    pooled = features == FEATURES
    if input_format == UINT8_NHWC:
        onnx_graph.add_preprocess(model, parts.pre, fused_ops)
    onnx_graph.add_head(model, features, parts.head, pooled, fused_ops)
    model.graph.name = "edgetl"
    return model


def metadata(parts: RunParts, input_format: str, precision: str) -> dict:
    """The provenance contract read by compile/predict; keep these keys stable."""
    rec = parts.record
    return {
        "version": __version__,
        "run_id": rec.get("run_id"),
        "classes": rec["classes"],
        "preprocess": parts.pre.to_dict(),
        "input_format": input_format,
        "backbone": {"name": rec["backbone"]["name"], "weights_sha256": rec["backbone"]["weights_sha256"]},
        "precision": precision,
        "quantize": rec.get("quantize"),
    }


def finish(model: onnx.ModelProto, meta: dict) -> onnx.ModelProto:
    model.producer_name, model.producer_version = "edgetl", __version__
    onnx_graph.set_metadata(model, meta)
    onnx.checker.check_model(model, full_check=True)
    return model


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    return onnx.ModelProto.FromString(model.SerializeToString())


def _graphs(parts: RunParts, backbone: onnx.ModelProto, input_format: str, fused_ops: bool):
    """(the FP32 fused graph, the INT8 one or None, the INT8 backbone alone or None); `backbone`: the FP32 one."""
    fp32 = build_graph(parts, _copy(backbone), input_format, fused_ops)
    fp32 = finish(fp32, metadata(parts, input_format, "fp32"))
    if parts.int8_onnx is None:
        return fp32, None, None
    int8_backbone = load_int8_backbone(parts.int8_onnx)
    int8 = build_graph(parts, _copy(int8_backbone), input_format, fused_ops)
    return fp32, finish(int8, metadata(parts, input_format, "int8")), int8_backbone


def load_fp32_head(parts: RunParts, echo) -> nn.Module | None:
    """An INT8 image run's FP32 head (run.json quantize.fp32_head, checked against its sha256: a damaged file is
    one UserError), None where the run has none (an FP32 run, one trained by an older edgetl) or it was removed."""
    name = (parts.record.get("quantize") or {}).get("fp32_head")
    if parts.int8_onnx is None or not name:
        return None
    if not (parts.root / name).exists():
        echo(f"note: {parts.root / name} is missing: {MODEL_FP32} (the FP32 model) is not written")
        return None
    head = load_head(parts.record.file(name))[0]
    check_eval(**{"FP32 head": head})
    return head


def fp32_model(parts: RunParts, ref: parity.Reference, backbone: onnx.ModelProto, frames, labels, input_format: str,
               fused_ops: bool, folder: Path) -> dict:  # fmt: skip
    """An INT8 run's FP32 model, the FP32 backbone + `ref.head` (fitted on FP32 features), as MODEL_FP32 in
    `folder`, checked by an FP32 run's parity (ONNX Runtime vs PyTorch); returns its export.json entry."""
    own = dataclasses.replace(parts, head=ref.head, int8_onnx=None)
    graph = build_graph(own, backbone, input_format, fused_ops)
    graph = finish(graph, {**metadata(own, input_format, "fp32"), "quantize": None})
    data = graph.SerializeToString()
    atomic_write_bytes(folder / MODEL_FP32, data)
    stages = parity.ladder(ref, frames, labels, input_format, graph, None)
    inp, outputs = onnx_graph.io_description(graph)
    return parity.export_report(
        folder / MODEL_FP32, data, graph, False, stages, head=parts.record["quantize"]["fp32_head"],
        fused_ops=fused_ops, input={"format": input_format, **inp}, outputs=outputs, images=len(frames),
    )  # fmt: skip


def _fp32_lines(entry: dict | None) -> list[str]:
    if entry is None:
        return []
    head = f"{entry['model']} (the FP32 model: FP32 backbone + {entry['head']}, {entry['nodes']} nodes)"
    return [head] + ["  " + line for line in parity.stage_lines(entry["stages"], entry["images"])]


def _debug_parity(graphs: list, ref, frames, input_format: str, echo) -> dict:
    """`--debug-parity`: per graph, the first nodes whose outputs diverge from PyTorch FP32 (printed too)."""
    found = {}
    for name, graph in graphs:
        rows = debug_parity.debug_rows(graph, ref, frames, input_format, debug_parity.DEBUG_TOL[name])
        found[name] = debug_parity.first_divergence(graph, rows)
        echo(f"\n{name}: intermediate tensors vs PyTorch FP32 (first diverging nodes)")
        for line in debug_parity.format_rows(graph, rows):
            echo(line)
    return found


def export_image_run(
    run_dir: Path, out, input_format: str, fused_ops: bool, debug_parity: bool, max_images: int, echo, with_fp32=True
):
    """An image run's fused graph and export.json (see `edgetl.export.run.export_run`); an INT8 run's FP32 model
    too (`with_fp32`), as MODEL_FP32 beside it."""
    if input_format not in onnx_graph.INPUT_FORMATS:
        raise UserError(f"--input: {input_format!r} unknown; choose one of {', '.join(onnx_graph.INPUT_FORMATS)}")
    parts = load_run(run_dir)
    head32 = load_fp32_head(parts, echo) if with_fp32 else None
    check_eval(backbone=parts.backbone, head=parts.head)
    out = Path(out) if out else parts.root / MODEL_ONNX
    backbone = export_backbone(parts.backbone, parts.pre)
    fp32, int8, int8_backbone = _graphs(parts, backbone, input_format, fused_ops)
    shipped = int8 if int8 is not None else fp32
    data = shipped.SerializeToString()
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, data)

    frames, labels = parity.val_frames(parts.record, max_images)
    ref = parity.Reference(parts.backbone, parts.head, parts.pre)
    stages = parity.ladder(ref, frames, labels, input_format, fp32, int8, int8_backbone)
    inp, outputs = onnx_graph.io_description(shipped)
    report = parity.export_report(
        out, data, shipped, int8 is not None, stages, fused_ops=fused_ops, input={"format": input_format, **inp},
        outputs=outputs, images=len(frames),
    )  # fmt: skip
    if int8 is not None:  # the device checks its INT8 kernels against these (edgetl.deploy.fidelity)
        report["probe"] = write_probe(int8, frames, parts.pre, input_format, out.parent / PROBE_FILE)
    if debug_parity:
        graphs = [("onnx-fp32", fp32)] + ([("onnx-int8", int8)] if int8 is not None else [])
        report["debug_parity"] = _debug_parity(graphs, ref, frames, input_format, echo)
    if head32 is not None:
        ref32 = ref.with_head(head32)  # PyTorch's features of these frames, computed once
        report[FP32_EXPORT] = fp32_model(parts, ref32, backbone, frames, labels, input_format, fused_ops, out.parent)
    atomic_write_bytes(out.parent / EXPORT_JSON, (json.dumps(report, indent=1) + "\n").encode())
    echo(
        f"wrote {out} ({report['precision']}, {report['nodes']} nodes, opset {report['opset']}) and "
        f"{out.parent / 'export.json'}"
    )
    for line in parity.stage_lines(stages, len(frames)) + _fp32_lines(report.get(FP32_EXPORT)):
        echo(line)
    parity.raise_on_failure(stages, run_dir, debug_parity)
    failed = [s for s in report.get(FP32_EXPORT, {}).get("stages", []) if not s["passed"]]
    if failed:
        raise parity.ParityFailed(
            f"{out.parent / MODEL_FP32}: parity stage {failed[0]['name']} failed: {failed[0]['check']}"
        )
    return report


__all__ = ["export_image_run", "load_run", "build_graph", "export_backbone", "check_eval"]
