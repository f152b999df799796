"""The ONNX side: custom-domain nodes whose function decomposition runs in ONNX Runtime and in OpenVINO without
edgetl's extension, and the splicing API the exporter uses."""

from __future__ import annotations

import numpy as np
import onnx
import openvino as ov
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgetl.ops import onnx_functions, ov_reader, reference
from edgetl.preprocess import Preprocess
from tests.ops.ops_testing import (
    POOL_HEAD_CASES,
    PREPROCESS_CASES,
    assert_pool_head_matches,
    assert_preprocess_matches,
    compile_openvino,
    poisoned,
    run_onnxruntime,
    run_openvino,
)


def _preprocess_outputs(frames: np.ndarray, pre: Preprocess) -> dict[str, np.ndarray]:
    return {"x": poisoned((frames.shape[0], 3, *pre.size), np.float32)}


def _pool_head_outputs(x: np.ndarray, weight: np.ndarray) -> dict[str, np.ndarray]:
    return {"probs": poisoned((x.shape[0], weight.shape[0]), np.float32), "label": poisoned((x.shape[0],), np.int64)}


def test_models_pass_the_onnx_checker():
    rng = np.random.default_rng(0)
    onnx.checker.check_model(onnx_functions.preprocess_model(Preprocess(size=(16, 24))), full_check=True)
    weight, bias = rng.standard_normal((4, 8)).astype(np.float32), np.zeros(4, np.float32)
    onnx.checker.check_model(onnx_functions.pool_head_model(weight, bias), full_check=True)


@pytest.mark.parametrize("case", PREPROCESS_CASES, ids=str)
def test_preprocess_decomposition_onnxruntime(case, rng):
    frames, pre = case.draw(rng)
    out = run_onnxruntime(onnx_functions.preprocess_model(pre), {"frames": frames}, _preprocess_outputs(frames, pre))
    assert_preprocess_matches(out["x"], frames, pre, "decomposed")


@pytest.mark.parametrize("case", POOL_HEAD_CASES, ids=str)
def test_pool_head_decomposition_onnxruntime(case, rng):
    x, weight, bias = case.draw(rng)
    model = onnx_functions.pool_head_model(weight, bias)
    out = run_onnxruntime(model, {"features": x}, _pool_head_outputs(x, weight))
    assert_pool_head_matches(out["probs"], out["label"], x, weight, bias)


def test_preprocess_decomposition_openvino_any_frame_size(rng):
    """One compiled model (dynamic N, H, W) serves every case: frames of any size."""
    core = ov.Core()
    pre = PREPROCESS_CASES[0].draw(rng)[1]
    ov_model = ov_reader.read_model(core, onnx_functions.preprocess_model(pre), fused=False)
    assert ov_reader.fused_ops(ov_model) == []
    compiled = compile_openvino(core, ov_model)
    for case in PREPROCESS_CASES:
        frames = case.draw(rng)[0]
        out = run_openvino(compiled, {"frames": frames}, _preprocess_outputs(frames, pre))
        assert_preprocess_matches(out["x"], frames, pre, "decomposed")


@pytest.mark.parametrize("case", POOL_HEAD_CASES, ids=str)
def test_pool_head_decomposition_openvino(case, rng):
    x, weight, bias = case.draw(rng)
    core = ov.Core()
    ov_model = ov_reader.read_model(core, onnx_functions.pool_head_model(weight, bias), fused=False)
    assert ov_reader.fused_ops(ov_model) == []
    out = run_openvino(compile_openvino(core, ov_model), {"features": x}, _pool_head_outputs(x, weight))
    assert_pool_head_matches(out["probs"], out["label"], x, weight, bias)


def _tiny_backbone(channels: int) -> onnx.ModelProto:
    """float [N, 3, h, w] -> 1x1 Conv -> Relu -> feature map [N, channels, h, w], like an exported backbone."""
    w = numpy_helper.from_array(np.random.default_rng(1).standard_normal((channels, 3, 1, 1)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w"], ["conv"]), helper.make_node("Relu", ["conv"], ["fmap"])],
        "backbone",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 16, 20])],
        [helper.make_tensor_value_info("fmap", TensorProto.FLOAT, ["batch", channels, 16, 20])],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def test_splicing_around_a_backbone(rng):
    pre = Preprocess(size=(16, 20), mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4))
    weight = rng.standard_normal((5, 6)).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32)
    model = _tiny_backbone(6)
    onnx_functions.add_preprocess(model, "frames", "image", pre)
    onnx_functions.add_pool_head(model, "fmap", weight, bias)
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["frames"]
    assert [o.name for o in model.graph.output] == ["probs", "label"]
    assert model.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"

    frames = rng.integers(0, 256, (3, 31, 45, 3), dtype=np.uint8)
    out = run_onnxruntime(
        model, {"frames": frames}, {"probs": poisoned((3, 5), np.float32), "label": poisoned((3,), np.int64)}
    )
    w = onnx.numpy_helper.to_array(model.graph.initializer[0])[:, :, 0, 0]
    fmap = np.maximum(np.einsum("oc,nchw->nohw", w, reference.preprocess(frames, pre)), 0)
    assert_pool_head_matches(out["probs"], out["label"], fmap, weight, bias)


def test_old_opset_is_refused():
    model = _tiny_backbone(2)
    model.opset_import[0].version = 13
    with pytest.raises(ValueError, match="opset >= 18"):
        onnx_functions.add_preprocess(model, "frames", "image", Preprocess(size=(16, 20)))


def test_decompose_leaves_only_standard_ops():
    model = onnx_functions.decompose(onnx_functions.preprocess_model(Preprocess(size=(16, 20))))
    assert {n.domain for n in model.graph.node} == {""} and len(model.functions) == 0
