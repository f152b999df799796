"""Without the native libraries nothing breaks: paths are None and OpenVINO falls back to the decomposition."""

from __future__ import annotations

import openvino as ov

from edgetl.ops import native, onnx_functions, ov_reader
from edgetl.preprocess import Preprocess


def test_absent_libraries_are_none(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "LIB_DIR", tmp_path)
    assert native.openvino_extension_path() is None
    assert native.cuda_library_path() is None
    assert native.tensorrt_plugin_path() is None
    assert native.load_openvino_extension(ov.Core()) is None


def test_openvino_falls_back_to_the_decomposition(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "LIB_DIR", tmp_path)
    ov_model = ov_reader.read_model(ov.Core(), onnx_functions.preprocess_model(Preprocess(size=(16, 20))))
    assert ov_reader.fused_ops(ov_model) == []
    assert "Interpolate" in {op.get_type_name() for op in ov_model.get_ops()}
