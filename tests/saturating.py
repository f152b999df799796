"""A one-convolution QDQ model on which INT8 kernels that saturate 16-bit pair sums go wrong.

x86 CPUs without a 32-bit INT8 dot product (AVX2 only) multiply u8 activations by s8 weights with `vpmaddubsw`,
which adds each pair of products into a saturating 16-bit sum: 2 x 255 x 127 = 64,770 does not fit. Here half of
the output channels have every weight at 127 (each pair saturates to 32,767: the channel halves), the other half
mix +127 and -64 weights (the saturated positive pairs no longer cancel the exact negative ones), so a saturating
kernel changes the feature vector's direction: cosine 0.97 to the exact evaluation, where a VNNI CPU and ONNX
Runtime's u8u8 mode give 1.0 (measured under `qemu-x86_64 -cpu Haswell`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

C, K = 64, 16


def saturating_model(path: Path) -> Path:
    w = np.full((K, C, 3, 3), 127, np.int8)
    w[K // 2 :, C // 2 :] = -64
    inits = [
        numpy_helper.from_array(np.array(0.02, np.float32), "xs"),
        numpy_helper.from_array(np.array(0, np.uint8), "xz"),
        numpy_helper.from_array(w, "wq"),
        numpy_helper.from_array(np.full(K, 0.01, np.float32), "ws"),
        numpy_helper.from_array(np.zeros(K, np.int8), "wz"),
        numpy_helper.from_array(np.array(60.0, np.float32), "ys"),
        numpy_helper.from_array(np.array(0, np.int8), "yz"),
    ]
    nodes = qdq_conv("input")
    graph = helper.make_graph(
        nodes,
        "saturating",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", C, 8, 8])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", K])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)


def qdq_conv(x: str) -> list:
    """u8 activations (xs, xz) x s8 weights (wq, ws, wz) -> 3x3 convolution -> s8 (ys, yz) -> pooled `features`."""
    return [
        helper.make_node("QuantizeLinear", [x, "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0),
        helper.make_node("Conv", ["xd", "wd"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["conv", "ys", "yz"], ["yq"]),
        helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["yd"]),
        helper.make_node("GlobalAveragePool", ["yd"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["features"]),
    ]


def probe_inputs(n: int = 4) -> np.ndarray:
    """Activations that quantize to 250..255: every pair sum is at its largest."""
    return np.random.default_rng(1).uniform(5.0, 5.1, (n, C, 8, 8)).astype(np.float32)


# --- a classifier bundle on the same arithmetic -------------------------------------------------------

CLASSES = ["bright", "other"]


def saturating_classifier(folder: Path) -> Path:
    """model.onnx (edgetl's export contract: uint8 frames [N, H, W, 3] in, probs and label out) whose label flips
    where INT8 sums saturate, plus the export.json and probe.npz `edgetl export` would write beside it.

    Channel 0 has every weight at 127 (its pair sums saturate: the channel halves), channel 1 every weight at 64
    (2 x 255 x 64 fits in 16 bits: exact). The head computes ch0 - 1.5 ch1: positive (class 0) when exact, as
    ch0 = 2 ch1 x 127/128; negative (class 1) once ch0 halves."""
    import hashlib
    import io
    import json

    import onnxruntime as ort

    from edgetl.preprocess import Preprocess

    w = np.full((2, 3, 3, 3), 127, np.int8)
    w[1] = 64
    inits = [
        numpy_helper.from_array(np.array(1.0, np.float32), "xs"),
        numpy_helper.from_array(np.array(0, np.uint8), "xz"),
        numpy_helper.from_array(w, "wq"),
        numpy_helper.from_array(np.full(2, 0.01, np.float32), "ws"),
        numpy_helper.from_array(np.zeros(2, np.int8), "wz"),
        numpy_helper.from_array(np.array(100.0, np.float32), "ys"),
        numpy_helper.from_array(np.array(0, np.int8), "yz"),
        numpy_helper.from_array(np.array([[0.002, -0.003], [0.0, 0.0]], np.float32), "fc_w"),
    ]
    nodes = [
        helper.make_node("Cast", ["image"], ["image_f"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["image_f"], ["nchw"], perm=[0, 3, 1, 2]),
        *qdq_conv("nchw"),
        helper.make_node("Gemm", ["features", "fc_w"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        helper.make_node("ArgMax", ["probs"], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "saturating_classifier",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", "H", "W", 3])],
        [
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    meta = {
        "version": "0.1.0",
        "run_id": "test-saturating",
        "classes": CLASSES,
        "preprocess": Preprocess(size=(8, 8)).to_dict(),
        "input_format": "uint8-nhwc",
        "backbone": {"name": "test:saturating", "weights_sha256": "0" * 64},
        "precision": "int8",
        "quantize": {"target": "onnxruntime"},
    }
    helper.set_model_props(model, {"edgetl": json.dumps(meta)})
    onnx.checker.check_model(model, full_check=True)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    data = model.SerializeToString()
    path.write_bytes(data)
    frames = bright_frames()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # what edgetl.export.probe does
    probs, label = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"]).run(None, {"image": frames})
    buf = io.BytesIO()
    np.savez_compressed(buf, frames=frames, probs=probs, label=label)
    (folder / "probe.npz").write_bytes(buf.getvalue())
    probe = {"file": "probe.npz", "sha256": hashlib.sha256(buf.getvalue()).hexdigest(), "images": len(frames)}
    record = {"model": "model.onnx", "onnx_sha256": hashlib.sha256(data).hexdigest(), "passed": True}
    (folder / "export.json").write_text(json.dumps({**record, "stages": [], "probe": {**probe, "reference": "ort"}}))
    return path


def bright_frames(n: int = 4) -> np.ndarray:
    return np.random.default_rng(2).integers(250, 256, (n, 8, 8, 3), dtype=np.uint8)
