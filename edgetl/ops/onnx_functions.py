"""The fused ops in ONNX: custom-domain nodes that carry their own decomposition as model-local functions.

A node `ai.edgetl::Preprocess` / `ai.edgetl::PoolHead` plus a FunctionProto of the same name in
`ModelProto.functions` means:
- ONNX Runtime, TensorRT and OpenVINO *without* edgetl's extension inline the function: standard ops, same
  semantics (see `edgetl.ops.reference`);
- OpenVINO *with* the extension (`edgetl.ops.native.load_openvino_extension`) maps the node to the fused kernel.

Both functions are generic: the per-model constants travel as node attributes (`size`, `scale`, `bias`,
`channels`), which the function body reads by reference and the native kernels read directly, so one node
definition serves every runtime. Frames may have any height and width (Resize takes output sizes only).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.inliner
import onnx.parser
from onnx import TensorProto, helper, numpy_helper

from edgetl.contract import DOMAIN, FEATURES, LABEL, PROBS
from edgetl.preprocess import Preprocess

DOMAIN_VERSION = 1
OPSET = 18  # Resize `axes` (resize H and W of NHWC without shape arithmetic) and ReduceMean with axes as input

_PREPROCESS = f"""
<domain: "{DOMAIN}", opset_import: ["" : {OPSET}]>
Preprocess <size, scale, bias, channels> (frames) => (y) {{
    xf = Cast <to = 1> (frames)
    size = Constant <value_ints: ints = @size> ()
    resized = Resize <mode = "linear", coordinate_transformation_mode = "half_pixel", axes = [1, 2]> (xf, , , size)
    channels = Constant <value_ints: ints = @channels> ()
    picked = Gather <axis = 3> (resized, channels)
    scale = Constant <value_floats: floats = @scale> ()
    bias = Constant <value_floats: floats = @bias> ()
    scaled = Mul (picked, scale)
    shifted = Add (scaled, bias)
    y = Transpose <perm = [0, 3, 1, 2]> (shifted)
}}
"""

_POOL_HEAD = f"""
<domain: "{DOMAIN}", opset_import: ["" : {OPSET}]>
PoolHead (x, weight, bias) => (probs, label) {{
    axes = Constant <value_ints = [2, 3]> ()
    pooled = ReduceMean <keepdims = 0> (x, axes)
    logits = Gemm <transB = 1> (pooled, weight, bias)
    probs = Softmax <axis = 1> (logits)
    label = ArgMax <axis = 1, keepdims = 0> (logits)
}}
"""


def preprocess_function() -> onnx.FunctionProto:
    """uint8 frames [N, H, W, 3] -> float32 [N, 3, h, w]: Cast, Resize(linear, half_pixel), channel Gather, Mul, Add."""
    return onnx.parser.parse_function(_PREPROCESS)


def pool_head_function() -> onnx.FunctionProto:
    """x [N, C, H, W], weight [K, C], bias [K] -> probs [N, K], label int64 [N] (argmax of the logits)."""
    return onnx.parser.parse_function(_POOL_HEAD)


def add_preprocess(
    model: onnx.ModelProto, input_name: str, output_name: str, pre: Preprocess, node_name: str = "edgetl_preprocess"
) -> onnx.NodeProto:
    """Insert `output_name = Preprocess(input_name)` at the front of the graph.

    Splices in front of a backbone: when `output_name` is a graph input (the float NCHW tensor) it stops being one,
    and `input_name` becomes a graph input uint8 [N, H, W, 3] with symbolic N, H, W unless something produces it.
    """
    scale, bias = pre.scale_bias()
    channels = [2, 1, 0] if pre.channel_order == "BGR" else [0, 1, 2]
    node = helper.make_node(
        "Preprocess",
        [input_name],
        [output_name],
        name=node_name,
        domain=DOMAIN,
        size=list(pre.size),
        scale=scale.tolist(),
        bias=bias.tolist(),
        channels=channels,
    )
    graph = model.graph
    graph.node.insert(0, node)
    _drop_value_info(graph.input, output_name)
    produced = {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    if input_name not in produced:
        frames = helper.make_tensor_value_info(input_name, TensorProto.UINT8, ["N", "H", "W", 3])
        graph.input.insert(0, frames)
    _register(model, preprocess_function())
    return node


def add_pool_head(
    model: onnx.ModelProto,
    feature_map_name: str,
    weight: np.ndarray,
    bias: np.ndarray,
    probs_name: str = PROBS,
    label_name: str = LABEL,
    node_name: str = "edgetl_pool_head",
) -> onnx.NodeProto:
    """Append `probs, label = PoolHead(feature_map, weight, bias)`; weight [K, C] and bias [K] become initializers.

    When `feature_map_name` is a graph output it is replaced by `probs` float32 [N, K] and `label` int64 [N].
    """
    weight = np.ascontiguousarray(weight, np.float32)
    bias = np.ascontiguousarray(bias, np.float32)
    if weight.ndim != 2 or bias.shape != (weight.shape[0],):
        raise ValueError(f"PoolHead needs weight [K, C] and bias [K], got {weight.shape} and {bias.shape}")
    w_name, b_name = f"{node_name}.weight", f"{node_name}.bias"
    graph = model.graph
    graph.initializer.extend([numpy_helper.from_array(weight, w_name), numpy_helper.from_array(bias, b_name)])
    node = helper.make_node(
        "PoolHead", [feature_map_name, w_name, b_name], [probs_name, label_name], name=node_name, domain=DOMAIN
    )
    graph.node.append(node)
    batch = _batch_dim(graph, feature_map_name)
    _drop_value_info(graph.output, feature_map_name)
    graph.output.extend(
        [
            helper.make_tensor_value_info(probs_name, TensorProto.FLOAT, [batch, weight.shape[0]]),
            helper.make_tensor_value_info(label_name, TensorProto.INT64, [batch]),
        ]
    )
    _register(model, pool_head_function())
    return node


def preprocess_model(pre: Preprocess, input_name: str = "frames", output_name: str = "x") -> onnx.ModelProto:
    """A model holding only the Preprocess node: for tests, benchmarks and standalone preprocessing."""
    model = _empty_model("edgetl_preprocess")
    add_preprocess(model, input_name, output_name, pre)
    model.graph.output.append(helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", 3, *pre.size]))
    return model


def pool_head_model(weight: np.ndarray, bias: np.ndarray, input_name: str = FEATURES) -> onnx.ModelProto:
    """A model holding only the PoolHead node over a float32 [N, C, H, W] input (C from weight [K, C])."""
    model = _empty_model("edgetl_pool_head")
    fmap = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", int(weight.shape[1]), "H", "W"])
    model.graph.input.append(fmap)
    model.graph.output.append(fmap)
    add_pool_head(model, input_name, weight, bias)
    return model


def _empty_model(name: str) -> onnx.ModelProto:
    graph = helper.make_graph([], name, [], [])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgetl")


def _register(model: onnx.ModelProto, function: onnx.FunctionProto) -> None:
    """Add the function and the opset imports it needs, once per model.

    The function body imports the model's own standard opset (runtimes reject a mismatch); the ops it uses have
    kept their semantics from opset 18 on.
    """
    imported = {o.domain: o for o in model.opset_import}
    if DOMAIN not in imported:
        model.opset_import.append(helper.make_opsetid(DOMAIN, DOMAIN_VERSION))
    if "" not in imported:
        model.opset_import.append(helper.make_opsetid("", OPSET))
    elif imported[""].version < OPSET:
        raise ValueError(f"edgetl ops need ONNX opset >= {OPSET}; the model imports opset {imported[''].version}")
    if any(f.domain == function.domain and f.name == function.name for f in model.functions):
        return
    for o in function.opset_import:
        if o.domain == "":
            o.version = max(OPSET, imported[""].version if "" in imported else OPSET)
    model.functions.append(function)


def _drop_value_info(values, name: str) -> None:  # a RepeatedCompositeContainer of ValueInfoProto
    for i, v in enumerate(values):
        if v.name == name:
            del values[i]
            return


def _batch_dim(graph: onnx.GraphProto, name: str) -> str | int:
    """The feature map's batch dimension as declared (symbolic or fixed), so the new outputs agree with it."""
    for v in [*graph.output, *graph.value_info, *graph.input]:
        if v.name == name and v.type.tensor_type.shape.dim:
            d = v.type.tensor_type.shape.dim[0]
            return d.dim_value if d.HasField("dim_value") else (d.dim_param or "N")
    return "N"


def decompose(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with every edgetl node replaced by its function body: standard ops only.

    For runtimes that neither know the fused ops nor expand model-local functions (OpenVINO's ONNX frontend).
    """
    return onnx.inliner.inline_selected_functions(model, [(DOMAIN, "Preprocess"), (DOMAIN, "PoolHead")])
