"""The uint8 path of the graph equals training-time preprocessing on the same JPEG files."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgetl.export import model as export
from edgetl.export.graph import mark_all_outputs
from edgetl.export.run import export_run
from edgetl.images import decode_image


@pytest.mark.parametrize("fused_ops", [True, False])
def test_same_jpeg_through_graph_and_training_pipeline(tmp_path, tiny_run, image_dir, fused_ops):
    parts = export.load_run(tiny_run)
    export_run(tiny_run, tmp_path / "m.onnx", fused_ops=fused_ops, echo=lambda line: None)
    model, names = mark_all_outputs(onnx.load(tmp_path / "m.onnx"))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    files = sorted(image_dir.glob("*/*.jpg"))[:6]
    assert len({decode_image(f.read_bytes()).shape for f in files}) > 1  # several frame sizes
    for f in files:
        frame = decode_image(f.read_bytes())
        x = parts.pre(frame[None])
        with torch.inference_mode():
            logits = parts.head(parts.backbone.forward_features(torch.from_numpy(x)))
        got = dict(zip(names, sess.run(names, {"image": frame[None]}), strict=True))
        np.testing.assert_allclose(got["input"], x, atol=1e-4)  # normalized units: resize + scale/bias agree
        if not fused_ops:  # with fused ops the logits live inside PoolHead's function body
            np.testing.assert_allclose(got["logits"], logits.numpy(), atol=1e-4)
        np.testing.assert_allclose(got["probs"], torch.softmax(logits, 1).numpy(), atol=1e-5)
        assert got["label"][0] == int(logits.argmax())
