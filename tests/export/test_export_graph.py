"""The exported graph: I/O contract, metadata round trip, folded BatchNorm, dynamic batch, export.json."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgetl.errors import UserError
from edgetl.export.graph import NAME_SCOPES, add_head, read_metadata
from edgetl.export.run import export_run


def test_export_json_contract(exported):
    path, report = exported
    on_disk = json.loads((path.parent / "export.json").read_text())
    assert on_disk == report
    assert [s["name"] for s in report["stages"]] == ["pytorch-fp32", "onnx-fp32"]
    for stage in report["stages"]:
        assert {"name", "max_abs", "cosine", "top1_agreement", "passed", "vs_pytorch"} <= set(stage)
        assert stage["passed"]
    fp32 = report["stages"][1]["vs_pytorch"]
    assert fp32["max_abs"] <= 1e-4 and fp32["top1_agreement"] == 1.0
    assert report["input"] == {"format": "uint8-nhwc", "name": "image", "dtype": "uint8", "shape": ["N", "H", "W", 3]}
    assert [o["name"] for o in report["outputs"]] == ["probs", "label"]
    assert report["opset"] == 18
    import hashlib

    assert report["onnx_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_metadata_round_trip(exported, tiny_run):
    model = onnx.load(exported[0])
    meta = read_metadata(model)
    record = json.loads((tiny_run / "run.json").read_text())
    assert meta == {
        "version": record["edgetl_version"],
        "run_id": record["run_id"],
        "classes": record["classes"],
        "preprocess": record["preprocess"],
        "input_format": "uint8-nhwc",
        "backbone": {"name": "test_tiny", "weights_sha256": record["backbone"]["weights_sha256"]},
        "precision": "fp32",
        "quantize": None,
    }


def test_graph_bytes_do_not_depend_on_the_checkout(exported):
    """Only module name scopes stay on the nodes: the exporter's stack traces name absolute source paths."""
    data = exported[0].read_bytes()
    repo = Path(__file__).resolve().parents[2]
    assert b"stack_trace" not in data and os.fsencode(repo) not in data
    model = onnx.load(exported[0])
    assert {p.key for n in model.graph.node for p in n.metadata_props} <= {NAME_SCOPES}


def test_graph_is_folded_and_checked_with_fused_ops_by_default(exported):
    model = onnx.load(exported[0])
    onnx.checker.check_model(model, full_check=True)
    ops = {(n.domain, n.op_type) for n in model.graph.node}
    assert ("", "BatchNormalization") not in ops and ("", "Conv") in ops
    assert {("ai.edgetl", "Preprocess"), ("ai.edgetl", "PoolHead")} <= ops  # default: fused ops with bodies
    assert {f.name for f in model.functions} == {"Preprocess", "PoolHead"}


def test_no_fused_ops_gives_standard_ops_only(tmp_path, tiny_run):
    out = tmp_path / "std.onnx"
    export_run(tiny_run, out, fused_ops=False, echo=lambda line: None)
    model = onnx.load(out)
    assert {"Resize", "Conv", "Softmax", "ArgMax"} <= {n.op_type for n in model.graph.node}
    assert {n.domain for n in model.graph.node} <= {""} and not model.functions


def test_dynamic_batch_gives_identical_results(exported):
    sess = ort.InferenceSession(str(exported[0]), providers=["CPUExecutionProvider"])
    frames = np.random.default_rng(3).integers(0, 256, (32, 27, 45, 3), dtype=np.uint8)
    probs, labels = sess.run(["probs", "label"], {"image": frames})
    assert probs.shape == (32, 3) and labels.dtype == np.int64
    for n in (1, 2, 7):
        p, lab = sess.run(["probs", "label"], {"image": frames[:n]})
        np.testing.assert_allclose(p, probs[:n], atol=1e-6)
        np.testing.assert_array_equal(lab, labels[:n])


def test_float_input_format(tmp_path, tiny_run):
    out = tmp_path / "m.onnx"
    report = export_run(tiny_run, out, input_format="float-nchw", echo=lambda line: None)
    assert report["input"]["name"] == "input" and report["input"]["shape"] == ["N", 3, 32, 32]
    assert read_metadata(onnx.load(out))["input_format"] == "float-nchw"
    assert (tmp_path / "export.json").is_file() and report["passed"]


def test_fused_ops_graph_runs_in_onnxruntime(tmp_path, tiny_run):
    out = tmp_path / "fused.onnx"
    report = export_run(tiny_run, out, fused_ops=True, echo=lambda line: None)
    model = onnx.load(out)
    assert {(n.domain, n.op_type) for n in model.graph.node} >= {("ai.edgetl", "Preprocess"), ("ai.edgetl", "PoolHead")}
    assert {f.name for f in model.functions} == {"Preprocess", "PoolHead"}
    assert report["passed"] and report["fused_ops"] is True


def test_unknown_input_format_is_a_user_error(tiny_run):
    with pytest.raises(UserError, match="--input"):
        export_run(tiny_run, input_format="nv12")


def _head_only_graph(head, fused_ops: bool) -> onnx.ModelProto:
    """A graph whose input is a feature map [N, 4, 2, 2], with the head spliced behind it."""
    from onnx import TensorProto, helper

    fmap = helper.make_tensor_value_info("fmap", TensorProto.FLOAT, ["N", 4, 2, 2])
    model = helper.make_model(helper.make_graph([], "g", [fmap], [fmap]), opset_imports=[helper.make_opsetid("", 18)])
    add_head(model, "fmap", head, pooled=False, fused_ops=fused_ops)
    onnx.checker.check_model(model, full_check=True)
    return model


def test_mlp_head_matches_pytorch():
    import torch

    from edgetl.models.heads import build_head

    torch.manual_seed(0)
    head = build_head("mlp", 4, 3, hidden=8).eval()
    x = np.random.default_rng(0).normal(size=(5, 4, 2, 2)).astype(np.float32)
    sess = ort.InferenceSession(_head_only_graph(head, False).SerializeToString(), providers=["CPUExecutionProvider"])
    probs, labels = sess.run(["probs", "label"], {"fmap": x})
    with torch.inference_mode():
        logits = head(torch.from_numpy(x).mean((2, 3)))
    np.testing.assert_allclose(probs, torch.softmax(logits, 1).numpy(), atol=1e-6)
    np.testing.assert_array_equal(labels, logits.argmax(1).numpy())
    fused = _head_only_graph(head, True)  # fused ops where they fit: an MLP head stays in standard ops
    assert not any(n.domain == "ai.edgetl" for n in fused.graph.node)


def test_int8_run_with_fused_ops(tmp_path, int8_run):
    report = export_run(int8_run, tmp_path / "model.onnx", fused_ops=True, echo=lambda line: None)
    assert report["passed"] and [s["name"] for s in report["stages"]][-1] == "onnx-int8"


def test_peers_see_the_default_fused_export_as_standard_ops_that_openvino_reads(tmp_path, exported):
    """`bench --peers` times by-hand pipelines: they get the decomposition, which plain OpenVINO can read."""
    import openvino as ov

    from edgetl.compare.peers import open_source

    with open_source(exported[0]) as src:
        model = onnx.load(str(src.given))
        assert not any(n.domain == "ai.edgetl" for n in model.graph.node) and not src.given_int8
        compiled = ov.Core().compile_model(str(src.given), "CPU")
        frames = np.random.default_rng(0).integers(0, 256, (2, 30, 40, 3), dtype=np.uint8)
        ref = ort.InferenceSession(str(exported[0]), providers=["CPUExecutionProvider"]).run(
            ["probs"], {"image": frames}
        )
        np.testing.assert_allclose(compiled(frames)[0], ref[0], atol=1e-3)
