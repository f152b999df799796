"""`--debug-parity` localizes a mismatch the Polygraphy way: mark every node output of the graph as an output,
run it, and compare each tensor with the value it is supposed to have. The reference is PyTorch itself, not a
second ONNX evaluator: what goes wrong in an export (a wrong pad, a perturbed weight, preprocessing constants,
a quantized layer that lost too much) is wrong identically in every ONNX runtime, so runtime-vs-runtime would
see nothing. Tensors are paired with PyTorch module outputs through the exporter's own provenance: the dynamo
exporter stamps each node with the module scopes it came from (`pkg.torch.onnx.name_scopes`), so the last node
inside module M produces M's output, captured on the PyTorch side by forward hooks. The pipeline boundaries
are paired by name: `input` (NumPy `Preprocess`), `fmap`, `features`, `logits`, `probs`.
"""

from __future__ import annotations

import ast

import numpy as np
import onnx

from edgetl.export.graph import NAME_SCOPES, mark_all_outputs
from edgetl.export.parity import SCOPE, Reference, feed, session

DEBUG_TOL = {"onnx-fp32": 1e-3, "onnx-int8": 0.1}  # relative error (max_abs / max |reference|) that counts
DEBUG_IMAGES = 8


def _module_outputs(model: onnx.ModelProto) -> dict[str, str]:
    """ONNX tensor -> the deepest PyTorch module whose output it is (the last node carrying that scope)."""
    last: dict[str, str] = {}
    for node in model.graph.node:
        props = {p.key: p.value for p in node.metadata_props}
        if NAME_SCOPES not in props or not node.output:
            continue
        for scope in ast.literal_eval(props[NAME_SCOPES]):
            if scope == SCOPE or scope.startswith(SCOPE + "."):
                last[scope] = node.output[0]
    tensor_to_module: dict[str, str] = {}
    for scope, tensor in last.items():
        if len(scope) > len(tensor_to_module.get(tensor, "")):
            tensor_to_module[tensor] = scope
    return tensor_to_module


def debug_rows(model: onnx.ModelProto, ref: Reference, frames, input_format: str, tol: float) -> list[dict]:
    """One row per graph tensor that has a PyTorch counterpart, in graph order, with its error."""
    shape = max({f.shape for f in frames}, key=lambda s: sum(f.shape == s for f in frames))
    group = [f for f in frames if f.shape == shape][:DEBUG_IMAGES]
    expected = ref.tensors(ref.pre(np.stack(group)))
    marked, names = mark_all_outputs(model)
    values = dict(zip(names, session(marked).run(names, feed(group, ref.pre, input_format)), strict=True))
    modules = _module_outputs(model)
    producer = {o: n for n in model.graph.node for o in n.output}
    rows = []
    for tensor in names:
        source = modules.get(tensor, tensor if tensor in expected else None)
        if source is None or tensor not in values or values[tensor].shape != expected[source].shape:
            continue
        got, want = values[tensor].astype(np.float64), expected[source].astype(np.float64)
        max_abs = float(np.abs(got - want).max())
        rel = max_abs / max(float(np.abs(want).max()), 1e-12)
        cos = float((got * want).sum() / max(np.linalg.norm(got) * np.linalg.norm(want), 1e-30))
        node = producer.get(tensor)
        rows.append(
            {
                "node": node.name if node else tensor,
                "op": node.op_type if node else "",
                "tensor": tensor,
                "pytorch": source,
                "max_abs": max_abs,
                "rel": rel,
                "cosine": cos,
                "diverged": rel > tol,
            }
        )
    return rows


def first_divergence(model: onnx.ModelProto, rows: list[dict]) -> dict | None:
    """The first diverging compared tensor, and the nodes that may have caused it.

    Not every node has a PyTorch counterpart (a node inserted by hand or by a tool carries no module scope), so
    the culprit is searched backwards from the first diverging tensor: every node that feeds it without passing
    through a tensor that matched. The earliest of these `suspects` is reported as the first diverging node.
    """
    first = next((r for r in rows if r["diverged"]), None)
    if first is None:
        return None
    good = {r["tensor"] for r in rows if not r["diverged"]}
    producer = {o: n for n in model.graph.node for o in n.output}
    order = {id(n): i for i, n in enumerate(model.graph.node)}
    seen: dict[int, onnx.NodeProto] = {}
    stack = [first["tensor"]]
    while stack:
        node = producer.get(stack.pop())
        if node is None or id(node) in seen:
            continue
        seen[id(node)] = node
        stack += [t for t in node.input if t and t not in good]
    suspects = sorted(seen.values(), key=lambda n: order[id(n)])
    return {
        **first,
        "node": suspects[0].name,
        "op": suspects[0].op_type,
        "compared_node": first["node"],
        "suspects": [f"{n.name} ({n.op_type})" for n in suspects],
    }


def format_rows(model: onnx.ModelProto, rows: list[dict], before: int = 2, limit: int = 8) -> list[str]:
    """The last matching rows before the first divergence, the first `limit` diverging ones, and the culprit."""
    culprit = first_divergence(model, rows)
    if culprit is None:
        return [f"all {len(rows)} compared tensors match PyTorch within tolerance"]
    first = rows.index(next(r for r in rows if r["diverged"]))
    shown = rows[max(first - before, 0) : first] + [r for r in rows[first:] if r["diverged"]][:limit]
    lines = [f"{'':2}{'node':<40} {'op':<12} {'pytorch module / tensor':<44} {'max_abs':>10} {'rel':>9} {'cosine':>8}"]
    for r in shown:
        mark = "✗ " if r["diverged"] else "  "
        lines.append(
            f"{mark}{r['node'][:40]:<40} {r['op'][:12]:<12} {r['pytorch'][:44]:<44} "
            f"{r['max_abs']:>10.3e} {r['rel']:>9.2e} {r['cosine']:>8.5f}"
        )
    lines.append(
        f"first diverging node: {culprit['node']} ({culprit['op']}); nodes between the last match and "
        f"the first mismatch ({culprit['tensor']}): {', '.join(culprit['suspects'])}"
    )
    return lines
