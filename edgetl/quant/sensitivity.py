"""Which layers cause the INT8 drop: error injected per layer, measured by running both graphs.

Both the FP32 and the INT8 (QDQ) backbone keep the original node and tensor names, so every Conv/Gemm/MatMul
output can be compared directly. A layer's score is the relative error of its output minus the relative
error already present at its data input: the error that *this* layer's quantization (its input quantizer,
its weights, its output quantizer) injects. Layers are ranked by that score; the fallback search then keeps
the top ones in floating point and re-checks accuracy (Polygraphy-style localisation, applied to INT8).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgetl.quant.backbone_onnx import INPUT

QUANTIZABLE = ("Conv", "Gemm", "MatMul", "ConvTranspose")


def _expose(path: Path, names: list[str]) -> bytes:
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    present = {o.name for o in model.graph.output}
    for name in names:
        if name not in present:
            model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return model.SerializeToString()


def _run(model_bytes: bytes, names: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
    from edgetl.deploy.ort_session import session as ort_session

    session = ort_session(model_bytes, level="ORT_DISABLE_ALL")  # no fusions: every named tensor stays
    return dict(zip(names, session.run(names, {INPUT: x}), strict=True))


def _float_source(tensor: str, producers: dict) -> str:
    """Walk back through DequantizeLinear/QuantizeLinear to the float tensor that was quantized."""
    node = producers.get(tensor)
    while node is not None and node.op_type in ("DequantizeLinear", "QuantizeLinear"):
        tensor = node.input[0]
        node = producers.get(tensor)
    return tensor


def _dequantized(tensor: str, consumers: dict) -> str:
    """The tensor's value as the next layer sees it: after its Quantize/Dequantize pair, if it has one."""
    for q in consumers.get(tensor, []):
        if q.op_type == "QuantizeLinear":
            for dq in consumers.get(q.output[0], []):
                if dq.op_type == "DequantizeLinear":
                    return dq.output[0]
    return tensor


def rank_layers(fp32: Path, int8: Path, x: np.ndarray, top: int = 10) -> list[dict]:
    """[{layer, op, error_in, error_out, injected}] for quantized layers, worst first.

    A layer's output error is measured after its output quantizer (if any). Its input error is measured
    before its input quantizer when that quantizer belongs to it (NNCF and TensorRT layouts quantize op
    inputs), and after it when the producer is itself a quantized layer that owns the quantizer (ONNX
    Runtime's U8 layout quantizes outputs and fuses the activation into the Conv). Tensors are matched by name.
    """
    import onnx

    fp_graph = onnx.load(str(fp32), load_external_data=False).graph
    fp_tensors = {o for n in fp_graph.node for o in n.output} | {i.name for i in fp_graph.input}
    q_graph = onnx.load(str(int8), load_external_data=False).graph
    producers = {o: n for n in q_graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in q_graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    ends = []  # (node, (fp32 name, int8 name) at input, at output)
    for n in q_graph.node:
        if n.op_type not in QUANTIZABLE:
            continue
        src, out = _float_source(n.input[0], producers), n.output[0]
        if src not in fp_tensors or out not in fp_tensors:
            continue
        owned_by_producer = src in producers and producers[src].op_type in QUANTIZABLE
        src_q = _dequantized(src, consumers) if owned_by_producer else src
        ends.append((n, (src, src_q), (out, _dequantized(out, consumers))))
    ref_names = sorted({t for _, a, b in ends for t in (a[0], b[0])})
    q_names = sorted({t for _, a, b in ends for t in (a[1], b[1])})
    ref = _run(_expose(fp32, ref_names), ref_names, x)
    got = _run(_expose(int8, q_names), q_names, x)

    def rel_err(pair: tuple[str, str]) -> float:
        r, g = ref[pair[0]], got[pair[1]]
        return float(np.linalg.norm(g - r)) / (float(np.linalg.norm(r)) or 1.0)

    rows = []
    for n, a, b in ends:
        e_in, e_out = rel_err(a), rel_err(b)
        rows.append({"layer": n.name, "op": n.op_type, "error_in": e_in, "error_out": e_out, "injected": e_out - e_in})
    rows.sort(key=lambda r: r["injected"], reverse=True)
    return rows[:top]
