"""Fixtures for the deploy tests: tiny models that follow the export contract, and real image files.

The models are built with onnx.helper (no torch needed) and are designed so the right answer is known:
a "colour classifier" whose class is the dominant channel of the picture (0 red, 1 green, 2 blue).
`reference_probs` computes the same function in NumPy, so every runtime can be checked against it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from edgetl.preprocess import Preprocess

CLASSES = ["red", "green", "blue"]
PREPROCESS = Preprocess(size=(16, 16), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
COLOURS = {"red": (220, 30, 40), "green": (20, 200, 50), "blue": (30, 40, 210)}
GAIN = 4.0  # logits = GAIN * mean(relu(x + 1)) per channel: soft enough that probs are not all 0/1


def _const(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def _preprocess_nodes(pre: Preprocess) -> tuple[list, list]:
    """uint8 NHWC frames of any size -> normalized float NCHW at pre.size (the in-graph preprocessing)."""
    scale, bias = pre.scale_bias()
    inits = [
        _const("pre_hw", np.asarray(pre.size, np.int64)),
        _const("pre_scale", scale.reshape(1, 3, 1, 1)),
        _const("pre_bias", bias.reshape(1, 3, 1, 1)),
        _const("slice_start", np.asarray([0], np.int64)),
        _const("slice_end", np.asarray([2], np.int64)),
    ]
    nodes = [
        helper.make_node("Cast", ["image"], ["image_f"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["image_f"], ["image_nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Shape", ["image_nchw"], ["image_shape"]),
        helper.make_node("Slice", ["image_shape", "slice_start", "slice_end"], ["image_nc"]),
        helper.make_node("Concat", ["image_nc", "pre_hw"], ["resize_sizes"], axis=0),
        helper.make_node(
            "Resize",
            ["image_nchw", "", "", "resize_sizes"],
            ["resized"],
            mode="linear",
            coordinate_transformation_mode="half_pixel",
        ),
        helper.make_node("Mul", ["resized", "pre_scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "pre_bias"], ["input"]),
    ]
    return nodes, inits


def _network_nodes() -> tuple[list, list]:
    """input float NCHW -> probs [N, 3], label [N]."""
    inits = [
        _const("conv_w", np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1)),
        _const("conv_b", np.ones(3, np.float32)),
        _const("fc_w", (GAIN * np.eye(3)).astype(np.float32)),
        _const("fc_b", np.zeros(3, np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["conv"]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["features"]),
        helper.make_node("Gemm", ["features", "fc_w", "fc_b"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        helper.make_node("ArgMax", ["probs"], ["label"], axis=1, keepdims=0),
    ]
    return nodes, inits


def make_model(input_format: str = "uint8-nhwc") -> onnx.ModelProto:
    net_nodes, net_inits = _network_nodes()
    h, w = PREPROCESS.size
    if input_format == "uint8-nhwc":
        pre_nodes, pre_inits = _preprocess_nodes(PREPROCESS)
        graph_input = helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", "H", "W", 3])
    else:
        pre_nodes, pre_inits = [], []
        graph_input = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, h, w])
    outputs = [
        helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", len(CLASSES)]),
        helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
    ]
    graph = helper.make_graph(pre_nodes + net_nodes, "colour", [graph_input], outputs, pre_inits + net_inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    meta = {
        "version": "0.1.0",
        "run_id": "test-colour",
        "classes": CLASSES,
        "preprocess": PREPROCESS.to_dict(),
        "input_format": input_format,
        "backbone": {"name": "test:colour", "weights_sha256": "0" * 64},
        "precision": "fp32",
        "quantize": None,
    }
    helper.set_model_props(model, {"edgetl": json.dumps(meta)})
    onnx.checker.check_model(model, full_check=True)
    return model


def reference_probs(frame: np.ndarray) -> np.ndarray:
    """What the colour model computes for one uint8 RGB frame, in NumPy."""
    x = PREPROCESS(frame[None])[0]
    logits = GAIN * np.maximum(x + 1.0, 0.0).mean(axis=(1, 2))
    e = np.exp(logits - logits.max())
    return e / e.sum()


def quantize_model(fp32_path: Path, out: Path) -> Path:
    """A real INT8 QDQ model (ONNX Runtime's quantize_static), metadata updated to precision int8."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Frames(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            frames = [rng.integers(0, 256, (1, 20, 24, 3), dtype=np.uint8) for _ in range(4)]
            frames += [np.broadcast_to(np.asarray(rgb, np.uint8), (1, 20, 24, 3)).copy() for rgb in COLOURS.values()]
            self._it = iter([{"image": f} for f in frames])

        def get_next(self):
            return next(self._it, None)

    quantize_static(
        str(fp32_path),
        str(out),
        Frames(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["Conv", "Gemm"],
    )
    model = onnx.load(out)
    meta = json.loads(next(p.value for p in model.metadata_props if p.key == "edgetl"))
    meta.update(precision="int8", quantize={"method": "ort-quantize_static", "calibration": len(COLOURS) + 4})
    helper.set_model_props(model, {"edgetl": json.dumps(meta)})
    onnx.save(model, out)
    return out


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def colour_onnx(models_dir) -> Path:
    path = models_dir / "uint8" / "model.onnx"
    path.parent.mkdir()
    onnx.save(make_model("uint8-nhwc"), path)
    return path


@pytest.fixture(scope="session")
def colour_float_onnx(models_dir) -> Path:
    path = models_dir / "float" / "model.onnx"
    path.parent.mkdir()
    onnx.save(make_model("float-nchw"), path)
    return path


@pytest.fixture(scope="session")
def colour_int8_onnx(models_dir, colour_onnx) -> Path:
    path = models_dir / "int8" / "model.onnx"
    path.parent.mkdir()
    return quantize_model(colour_onnx, path)


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> dict[str, Path]:
    """Real JPEG/PNG files of different sizes, named by their true class, plus a broken one."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    files = {}
    for i, (name, rgb) in enumerate(COLOURS.items()):
        h, w = 30 + 7 * i, 41 - 5 * i
        noise = rng.integers(-20, 20, (h, w, 3))
        pixels = np.clip(np.asarray(rgb) + noise, 0, 255).astype(np.uint8)
        ext = ".png" if i % 2 else ".jpg"
        files[name] = root / f"{name}{ext}"
        Image.fromarray(pixels).save(files[name])
    files["broken"] = root / "broken.jpg"
    files["broken"].write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return files


def external_data_model(folder: Path, location: str) -> Path:
    """A model whose weight claims to live in `location` (written by hand, as an attacker would)."""
    weight = numpy_helper.from_array(np.ones((2,), np.float32), "w")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "8")):
        weight.external_data.add(key=key, value=value)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [weight],
    )
    path = folder / "model.onnx"
    onnx.save(helper.make_model(graph), path)
    return path
