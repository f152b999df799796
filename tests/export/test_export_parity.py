"""The parity ladder's verdicts and --debug-parity naming a node that was deliberately perturbed."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgetl.cli.main import main
from edgetl.export import debug_parity, parity
from edgetl.export import model as export
from edgetl.export.graph import read_metadata
from edgetl.export.run import export_run


def _reference(run):
    parts = export.load_run(run)
    frames, _ = parity.val_frames(parts.record, 16)
    return parity.Reference(parts.backbone, parts.head, parts.pre), frames


def test_debug_parity_names_the_perturbed_initializer(exported, tiny_run):
    ref, frames = _reference(tiny_run)
    model = onnx.load(exported[0])
    healthy = debug_parity.debug_rows(model, ref, frames, "uint8-nhwc", debug_parity.DEBUG_TOL["onnx-fp32"])
    assert debug_parity.first_divergence(model, healthy) is None
    assert any(r["pytorch"].startswith("backbone.model.") for r in healthy)  # paired through module scopes

    conv = [n for n in model.graph.node if n.op_type == "Conv"][1]
    weights = next(t for t in model.graph.initializer if t.name == conv.input[1])
    weights.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weights) * 1.5, weights.name))
    rows = debug_parity.debug_rows(model, ref, frames, "uint8-nhwc", debug_parity.DEBUG_TOL["onnx-fp32"])
    first = debug_parity.first_divergence(model, rows)
    assert first is not None and first["node"] == conv.name and first["compared_node"] == conv.name
    assert f"first diverging node: {conv.name} (Conv)" in debug_parity.format_rows(model, rows)[-1]


def _scaled_backbone(real):
    """export_backbone with a Mul(1.1) inserted after the first ReLU: the ladder must fail and point at it."""

    def export_backbone(backbone, pre):
        model = real(backbone, pre)
        relu = next(n for n in model.graph.node if n.op_type == "Relu")
        original = relu.output[0]
        relu.output[0] = original + "_unscaled"
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(1.1, np.float32), "perturb_gain"))
        mul = helper.make_node("Mul", [relu.output[0], "perturb_gain"], [original], name="perturb_mul")
        model.graph.node.insert(list(model.graph.node).index(relu) + 1, mul)
        return model

    return export_backbone


def test_failed_stage_exits_1_and_debug_parity_names_the_node(tmp_path, tiny_run, monkeypatch, capsys):
    monkeypatch.setattr(export, "export_backbone", _scaled_backbone(export.export_backbone))
    out = tmp_path / "bad.onnx"
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tiny_run), "--out", str(out), "--debug-parity"])
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert "first diverging node: perturb_mul" in captured.out
    assert "parity stage onnx-fp32 failed" in captured.err
    report = json.loads((tmp_path / "export.json").read_text())  # written anyway, for inspection
    assert not report["passed"] and report["debug_parity"]["onnx-fp32"]["node"] == "perturb_mul"


def test_failed_stage_without_debug_says_what_to_run(tmp_path, tiny_run, monkeypatch, capsys):
    monkeypatch.setattr(export, "export_backbone", _scaled_backbone(export.export_backbone))
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tiny_run), "--out", str(tmp_path / "bad.onnx")])
    assert exit_info.value.code == 1
    assert "--debug-parity" in capsys.readouterr().err


def test_int8_run_ships_the_qdq_backbone(tmp_path, int8_run):
    out = tmp_path / "model.onnx"
    report = export_run(int8_run, out, echo=lambda line: None)
    assert [s["name"] for s in report["stages"]] == ["pytorch-fp32", "onnx-fp32", "onnx-int8"]
    int8 = report["stages"][2]
    assert int8["vs"] == "onnx-fp32" and int8["passed"]
    assert int8["vs_int8_backbone"]["top1_agreement"] == 1.0  # the export adds nothing to the INT8 numerics
    assert int8["vs_int8_backbone"]["max_abs"] < 1e-3
    assert int8["top1_agreement"] >= parity.INT8_MIN_AGREEMENT
    model = onnx.load(out)
    assert "QuantizeLinear" in {n.op_type for n in model.graph.node}
    meta = read_metadata(model)
    assert meta["precision"] == "int8" and meta["quantize"]["onnx"] == "backbone.int8.onnx"


def _negated_int8_features(real):
    """build_graph with the INT8 backbone's pooled features negated before the head: an export bug that only
    the comparison with the run's own INT8 backbone can see (the FP32 rung is untouched)."""

    def build_graph(parts, backbone, input_format, fused_ops):
        if backbone.graph.output[0].name == "features":
            producer = next(n for n in backbone.graph.node if "features" in n.output)
            producer.output[list(producer.output).index("features")] = "features_raw"
            backbone.graph.node.append(helper.make_node("Neg", ["features_raw"], ["features"], name="perturb_neg"))
        return real(parts, backbone, input_format, fused_ops)

    return build_graph


def test_int8_graph_must_reproduce_its_own_backbone(tmp_path, int8_run, monkeypatch):
    monkeypatch.setattr(export, "build_graph", _negated_int8_features(export.build_graph))
    with pytest.raises(parity.ParityFailed, match="its own INT8 backbone|the run's own INT8 backbone"):
        export_run(int8_run, tmp_path / "model.onnx", echo=lambda line: None)
