"""Graph surgery for `edgetl export`: splice preprocessing in front of a backbone graph, the head after it.

Both pieces are written either as edgetl's fused custom-domain nodes (`ai.edgetl::Preprocess`, `PoolHead`, see
`edgetl.ops.onnx_functions`) or as plain standard ops. The standard preprocessing is the fused node's own
function body inlined, so there is exactly one definition of the preprocessing semantics in ONNX. The standard
head is written here because it must also cover MLP heads and already-pooled INT8 backbones, and because it
keeps the boundary tensors `features` and `logits` visible by name for `--debug-parity`.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx.inliner
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from edgetl import contract
from edgetl.contract import FEATURES, FRAMES, LABEL, LOGITS, METADATA_KEY, PROBS, TENSOR
from edgetl.errors import UserError
from edgetl.ops import onnx_functions as fused
from edgetl.preprocess import Preprocess

INPUT_FORMATS = tuple(contract.INPUT_FORMATS)
NAME_SCOPES = "pkg.torch.onnx.name_scopes"  # the dynamo exporter's per-node module scopes (parity pairs by them)


def add_preprocess(model: onnx.ModelProto, pre: Preprocess, fused_ops: bool) -> None:
    """Make `image` uint8 [N, H, W, 3] (any H, W) the graph input, feeding the backbone's `input`."""
    fused.add_preprocess(model, FRAMES, TENSOR, pre, node_name="preprocess")
    if not fused_ops:
        inline(model, "Preprocess")


def add_head(model: onnx.ModelProto, features: str, head: nn.Module, pooled: bool, fused_ops: bool) -> None:
    """Append pool (unless `pooled`) + head + Softmax + ArgMax after tensor `features`; outputs `probs`, `label`.

    The label is the ArgMax of the logits (not of the probabilities, whose rounding can create ties), like
    `edgetl.ops.reference.pool_head` and the training-time accuracy.
    """
    if fused_ops and isinstance(head, nn.Linear):  # PoolHead holds a linear head; an MLP head stays standard ops
        add_fused_head(model, features, head, pooled)
        return
    graph = model.graph
    batch = _drop_output(graph, features)
    nodes: list[onnx.NodeProto] = []
    if pooled:
        current = features
    else:
        nodes += [
            helper.make_node("GlobalAveragePool", [features], ["head/pooled"], name="head/pool"),
            helper.make_node("Flatten", ["head/pooled"], [FEATURES], name="head/flatten", axis=1),
        ]
        current = FEATURES
    layers, inits = _head_layers(head, current)
    graph.node.extend(nodes + layers)
    graph.initializer.extend(inits)
    graph.node.extend(
        [
            helper.make_node("Softmax", [LOGITS], [PROBS], name="head/softmax", axis=1),
            helper.make_node("ArgMax", [LOGITS], [LABEL], name="head/argmax", axis=1, keepdims=0),
        ]
    )
    graph.output.extend(_outputs(batch, _num_classes(head)))


def add_fused_head(model: onnx.ModelProto, features: str, head: nn.Module, pooled: bool) -> None:
    """`ai.edgetl::PoolHead` (linear heads only); pooled INT8 features become a 1x1 map, whose mean is itself."""
    if not isinstance(head, nn.Linear):
        raise ValueError("the fused PoolHead holds a linear head only")
    fmap = features
    if pooled:
        fmap = "head/features_1x1"
        axes = numpy_helper.from_array(np.asarray([2, 3], np.int64), "head/unsqueeze_axes")
        model.graph.initializer.append(axes)
        model.graph.node.append(helper.make_node("Unsqueeze", [features, axes.name], [fmap], name="head/unsqueeze"))
        batch = _drop_output(model.graph, features)
        model.graph.output.append(
            helper.make_tensor_value_info(fmap, TensorProto.FLOAT, [batch, head.in_features, 1, 1])
        )
    weight = head.weight.detach().numpy()
    bias = head.bias.detach().numpy()
    fused.add_pool_head(model, fmap, weight, bias, node_name="pool_head")


def _head_layers(head: nn.Module, features: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Standard ops for a linear or MLP head (Dropout is the identity at inference); the last output is `logits`."""
    modules = [m for m in (head if isinstance(head, nn.Sequential) else [head]) if not isinstance(m, nn.Dropout)]
    nodes, inits, current = [], [], features
    for i, m in enumerate(modules):
        out = LOGITS if i == len(modules) - 1 else f"head/{i}"
        if isinstance(m, nn.Linear):
            w = numpy_helper.from_array(m.weight.detach().numpy().astype(np.float32), f"head/{i}.weight")
            b = numpy_helper.from_array(m.bias.detach().numpy().astype(np.float32), f"head/{i}.bias")
            inits += [w, b]
            nodes.append(helper.make_node("Gemm", [current, w.name, b.name], [out], name=f"head/{i}.gemm", transB=1))
        elif isinstance(m, nn.GELU) and m.approximate == "none":
            nodes += _gelu(current, out, f"head/{i}", inits)
        elif isinstance(m, nn.ReLU):
            nodes.append(helper.make_node("Relu", [current], [out], name=f"head/{i}.relu"))
        else:
            raise UserError(f"head: layer {type(m).__name__} cannot be exported; heads are Linear/GELU/ReLU/Dropout")
        current = out
    return nodes, inits


def _gelu(x: str, out: str, name: str, inits: list) -> list[onnx.NodeProto]:
    """Exact GELU at opset 18 (no Gelu op before 20): 0.5 * x * (1 + erf(x / sqrt(2)))."""
    consts = {"rsqrt2": 1 / np.sqrt(2.0), "half": 0.5, "one": 1.0}
    for key, value in consts.items():
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), f"{name}.{key}"))
    return [
        helper.make_node("Mul", [x, f"{name}.rsqrt2"], [f"{name}.scaled"], name=f"{name}.mul0"),
        helper.make_node("Erf", [f"{name}.scaled"], [f"{name}.erf"], name=f"{name}.erf"),
        helper.make_node("Add", [f"{name}.erf", f"{name}.one"], [f"{name}.plus1"], name=f"{name}.add"),
        helper.make_node("Mul", [x, f"{name}.plus1"], [f"{name}.xp"], name=f"{name}.mul1"),
        helper.make_node("Mul", [f"{name}.xp", f"{name}.half"], [out], name=f"{name}.mul2"),
    ]


def _num_classes(head: nn.Module) -> int:
    last = [m for m in head.modules() if isinstance(m, nn.Linear)][-1]
    return last.out_features


def _outputs(batch: str | int, classes: int) -> list[onnx.ValueInfoProto]:
    return [
        helper.make_tensor_value_info(PROBS, TensorProto.FLOAT, [batch, classes]),
        helper.make_tensor_value_info(LABEL, TensorProto.INT64, [batch]),
    ]


def _drop_output(graph: onnx.GraphProto, name: str) -> str | int:
    """Remove graph output `name` (it becomes an intermediate); return its batch dimension."""
    for i, v in enumerate(graph.output):
        if v.name == name:
            dim = v.type.tensor_type.shape.dim[0]
            del graph.output[i]
            return dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or "N")
    raise ValueError(f"graph has no output {name!r} (outputs: {[o.name for o in graph.output]})")


def inline(model: onnx.ModelProto, function: str) -> None:
    """Replace the edgetl function `function` by its body (standard ops), in place.

    Inlined nodes are named `<function>/<op>` so tables and error messages can point at them; the custom-domain
    opset import goes once nothing uses it (a standard-ops graph then loads in runtimes that know no ai.edgetl).
    """
    inlined = onnx.inliner.inline_selected_functions(model, [(fused.DOMAIN, function)])
    for i, node in enumerate(inlined.graph.node):
        if not node.name:
            node.name = f"{function.lower()}/{node.op_type}_{i}"
    used = {n.domain for n in inlined.graph.node}
    if fused.DOMAIN not in used:
        kept = [o for o in inlined.opset_import if o.domain != fused.DOMAIN]
        del inlined.opset_import[:]
        inlined.opset_import.extend(kept)
    model.CopyFrom(inlined)


def keep_name_scopes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop every node property but the module name scopes, in place.

    The dynamo exporter also writes each node's Python stack trace (absolute source paths) and FX names:
    kept, the graph's bytes would depend on where the checkout lives, and two clones would not agree.
    """
    for node in model.graph.node:
        kept = [p for p in node.metadata_props if p.key == NAME_SCOPES]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)
    return model


def slim(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxslim, then each surviving node gets its metadata_props back (onnxslim drops them).

    Those props hold the PyTorch module scopes that `--debug-parity` pairs tensors with.
    """
    import onnxslim

    props = {n.name: list(n.metadata_props) for n in model.graph.node if n.name}
    slimmed = onnxslim.slim(model)
    for node in slimmed.graph.node:
        if node.name in props and not node.metadata_props:
            node.metadata_props.extend(props[node.name])
    unshare_quant_params(slimmed)
    return slimmed


QUANT_PARAMS = {"QuantizeLinear": (1, 2), "DequantizeLinear": (1, 2), "MatMulInteger": (2, 3)}


def unshare_quant_params(model: onnx.ModelProto) -> int:
    """Give every quantization scale / zero point its own initializer again; returns how many were copied.

    onnxslim merges equal initializers, so layers end up sharing one all-zeros zero-point tensor. ONNX Runtime's
    non-saturating mode for CPUs without VNNI (session.x64quantprecision) rewrites each layer's zero point and
    fails to load such a graph ("Attempt to replace the existing tensor"); the graph means the same either way."""
    inits = {t.name: t for t in model.graph.initializer}
    seen: set[str] = set()
    copies = 0
    for node in model.graph.node:
        for i in QUANT_PARAMS.get(node.op_type, ()):
            name = node.input[i] if i < len(node.input) else ""
            if name not in inits:
                continue
            if name in seen:
                copy = onnx.TensorProto()
                copy.CopyFrom(inits[name])
                copy.name = f"{name}__{copies}"
                model.graph.initializer.append(copy)
                node.input[i] = copy.name
                copies += 1
            seen.add(name)
    return copies


def set_metadata(model: onnx.ModelProto, meta: dict) -> None:
    """Put the provenance JSON under metadata_props['edgetl'], replacing an older value, keeping other keys."""
    others = {p.key: p.value for p in model.metadata_props if p.key != METADATA_KEY}
    helper.set_model_props(model, {**others, METADATA_KEY: json.dumps(meta, sort_keys=True)})


def read_metadata(model: onnx.ModelProto) -> dict:
    for p in model.metadata_props:
        if p.key == METADATA_KEY:
            return json.loads(p.value)
    raise UserError(f"model has no '{METADATA_KEY}' metadata; it was not written by `edgetl export`")


def mark_all_outputs(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A copy whose every node output is a graph output (Polygraphy's `mark all`); all their names in graph order."""
    marked = onnx.ModelProto()
    marked.CopyFrom(model)
    existing = {o.name for o in marked.graph.output}
    names = [o for n in marked.graph.node for o in n.output if o]
    marked.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names if name not in existing)
    return marked, names


def io_description(model: onnx.ModelProto) -> tuple[dict, list[dict]]:
    """(input, outputs) as export.json records them: name, dtype, shape (symbolic dims as strings)."""

    def describe(v: onnx.ValueInfoProto) -> dict:
        t = v.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]
        return {"name": v.name, "dtype": helper.tensor_dtype_to_np_dtype(t.elem_type).name, "shape": shape}

    return describe(model.graph.input[0]), [describe(o) for o in model.graph.output]
