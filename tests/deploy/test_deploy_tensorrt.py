"""TensorRT: the settings, manifest and trtexec logic run everywhere; the real builder only where TensorRT is.

TensorRT cannot be installed on the CI machines (its PyPI packages download from NVIDIA's index), so the
builder's call sequence is checked once against a recording stand-in for the `tensorrt` module (a mock of
TensorRT only, and it says nothing about whether TensorRT accepts the calls); the real build and run are
in `test_real_engine_matches_numpy`, which skips with the reason where TensorRT or a GPU is absent.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from edgetl.deploy.bundle import open_bundle, package
from edgetl.deploy.targets import CompileOptions, get_target
from edgetl.deploy.targets.tensorrt_plan import BuildSettings, engine_mismatch, on_device_steps
from edgetl.errors import RuntimeMissing, UserError
from tests.deploy.conftest import reference_probs

TRT_MISSING = get_target("tensorrt").available()


def test_profile_and_trtexec_command():
    s = BuildSettings("image", "uint8-nhwc", (480, 640), "int8", max_batch=8)
    assert s.profile() == ((1, 480, 640, 3), (1, 480, 640, 3), (8, 480, 640, 3))
    assert s.flags() == ["INT8", "FP16"]
    assert s.trtexec() == (
        "trtexec --onnx=model.onnx --saveEngine=model.engine --minShapes=image:1x480x640x3 "
        "--optShapes=image:1x480x640x3 --maxShapes=image:8x480x640x3 --int8 --fp16 "
        "--memPoolSize=workspace:1024M --timingCacheFile=timing.cache"
    )
    f = BuildSettings("input", "float-nchw", (224, 224), "fp32", max_batch=4)
    assert f.profile()[2] == (4, 3, 224, 224) and f.flags() == [] and "--fp16" not in f.trtexec()
    assert BuildSettings.from_dict(s.to_dict()) == s and s.key() != f.key()
    with pytest.raises(UserError, match="--precision bf16"):
        BuildSettings("image", "uint8-nhwc", (8, 8), "bf16")


def test_token_ids_profile_covers_every_sequence_length():
    s = BuildSettings("input_ids", "token-ids", (0, 0), "fp16", max_batch=4, max_length=128)
    assert s.profiles() == {name: ((1, 1), (1, 32), (4, 128)) for name in ("input_ids", "attention_mask")}
    assert "--minShapes=input_ids:1x1,attention_mask:1x1 " in s.trtexec()
    assert "--maxShapes=input_ids:4x128,attention_mask:4x128 " in s.trtexec()
    assert BuildSettings.from_dict(s.to_dict()) == s
    with pytest.raises(UserError, match="max_length"):
        BuildSettings("input_ids", "token-ids", (0, 0), "fp16")


def test_engine_mismatch_means_rebuild():
    here = {"tensorrt": "10.3.0", "gpu": "Orin", "compute_capability": "8.7"}
    assert engine_mismatch(dict(here), here) is None
    assert "no engine" in engine_mismatch(None, here)
    assert "tensorrt 10.1.0" in engine_mismatch({**here, "tensorrt": "10.1.0"}, here)
    assert "compute_capability 9.0" in engine_mismatch({**here, "compute_capability": "9.0"}, here)


@pytest.mark.skipif(TRT_MISSING is None, reason="TensorRT is installed here: the engine-less path is not taken")
def test_compile_without_tensorrt_writes_onnx_and_steps_not_an_engine(tmp_path, colour_int8_onnx):
    artifact = get_target("tensorrt").compile(colour_int8_onnx, tmp_path / "trt", CompileOptions(max_batch=8))
    m = artifact.manifest
    assert sorted(m["files"]) == ["BUILD_ON_DEVICE.txt", "model.onnx"] and m["model"] == "model.onnx"
    assert m["engine"] is None and m["precision"]["runtime"] is None and m["precision"]["requested"] == "int8"
    assert m["settings"]["max_batch"] == 8 and m["settings"]["frame_size"] == [16, 16]
    assert m["on_device"]["trtexec"] == BuildSettings.from_dict(m["settings"]).trtexec()
    steps = (artifact.root / "BUILD_ON_DEVICE.txt").read_text()
    assert "edgetl build-engine trt.tar.gz" in steps and "--int8" in steps
    assert not list(artifact.root.glob("*.engine"))
    package(artifact.root, tmp_path / "trt.tar.gz")
    with open_bundle(tmp_path / "trt.tar.gz") as opened, pytest.raises(RuntimeMissing, match="edgetl\\[tensorrt\\]"):
        get_target("tensorrt").load(opened)
    from edgetl.deploy.targets.tensorrt import build_engine_bundle

    with pytest.raises(RuntimeMissing, match="build-engine: .*pip install"):
        build_engine_bundle(tmp_path / "trt.tar.gz", None)


def test_fp32_model_builds_fp16_by_default(tmp_path, colour_onnx):
    if TRT_MISSING is None:
        pytest.skip("TensorRT is installed here: covered by the real builder test")
    m = get_target("tensorrt").compile(colour_onnx, tmp_path / "trt", CompileOptions()).manifest
    assert m["settings"]["precision"] == "fp16" and "--fp16" in m["on_device"]["trtexec"]
    assert on_device_steps(BuildSettings.from_dict(m["settings"])).count("trtexec") == 2


class _Recorder:
    """Stands in for the `tensorrt` module (a mock of TensorRT only): records every call made on it."""

    def __init__(self, calls: list) -> None:
        self._calls = calls

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self._calls.append((name, args, kwargs))
            if name == "parse_from_file":
                return True
            if name == "build_serialized_network":
                return b"serialized-by-the-stand-in"
            if name == "serialize":
                return b"timing"
            return _Recorder(self._calls)

        return call


def test_builder_calls_follow_the_settings_with_a_tensorrt_stand_in(tmp_path, monkeypatch):
    calls: list = []
    fake = types.SimpleNamespace(
        Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None}),
        Builder=lambda logger: _Recorder(calls),
        OnnxParser=lambda net, logger: _Recorder(calls),
        MemoryPoolType=types.SimpleNamespace(WORKSPACE="WORKSPACE"),
        BuilderFlag=types.SimpleNamespace(FP16="FP16", INT8="INT8"),
    )
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    from edgetl.deploy.targets import tensorrt as trt_target

    monkeypatch.setattr(
        trt_target, "device_identity", lambda: {"tensorrt": "stand-in", "gpu": "none", "compute_capability": "0.0"}
    )
    settings = BuildSettings("image", "uint8-nhwc", (32, 48), "int8", max_batch=4)
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    info = trt_target.build_engine(tmp_path / "model.onnx", settings, tmp_path / "e.engine", tmp_path / "t.cache")
    names = [c[0] for c in calls]
    assert names.index("parse_from_file") < names.index("build_serialized_network")
    assert ("set_memory_pool_limit", ("WORKSPACE", 1024 << 20), {}) in calls
    assert [c[1][0] for c in calls if c[0] == "set_flag"] == ["INT8", "FP16"]
    assert ("set_shape", ("image", (1, 32, 48, 3), (1, 32, 48, 3), (4, 32, 48, 3)), {}) in calls
    assert ("set_timing_cache" in names) and (tmp_path / "t.cache").read_bytes() == b"timing"
    assert info["settings_key"] == settings.key()


@pytest.mark.skipif(TRT_MISSING is not None, reason=f"TensorRT is not usable here: {TRT_MISSING}")
def test_real_engine_matches_numpy(tmp_path, colour_onnx):
    from edgetl.deploy.targets.tensorrt import device_identity

    try:
        device_identity()
    except RuntimeError as e:
        pytest.skip(f"no usable GPU: {e}")
    artifact = get_target("tensorrt").compile(
        colour_onnx, tmp_path / "trt", CompileOptions(precision="fp32", max_batch=2)
    )
    assert artifact.manifest["engine"]["compute_capability"] and (artifact.root / "model.engine").is_file()
    frame = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    with get_target("tensorrt").load(artifact) as runner:
        out = runner.infer({"image": frame[None]})
    np.testing.assert_allclose(out["probs"][0], reference_probs(frame), atol=1e-4)
