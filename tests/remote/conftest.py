"""Fixtures for the remote tests: a real OpenSSH server on a loopback port playing the device (tests/remote/sshd.py),
and real bundles compiled from the deploy tests' small synthetic models (tests/deploy/conftest.py).

The device logs in as its own user (`edgetl-device` when running as root) whose Python has no torch; every test
session gets its own folder in that user's home (`--remote-dir`), removed at the end, and one device venv there,
installed by the first deploy from wheels downloaded for the device's platform (pip's cache keeps that fast).
"""

from __future__ import annotations

import contextlib
import io
import json
import secrets
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from PIL import Image

from edgetl.cli.main import main
from edgetl.deploy.artifact import write_manifest
from edgetl.deploy.bundle import package
from edgetl.deploy.targets import CompileOptions, get_target
from tests.deploy.conftest import COLOURS, make_model, quantize_model
from tests.remote import sshd

BACKBONE_WIDTH = 262144  # the big model's "backbone": a 3 x 262144 float32 matrix, 3 MB


@pytest.fixture(scope="session")
def device():
    why = sshd.why_not()
    if why:
        pytest.skip(f"no test SSH server: {why}")
    try:
        server = sshd.start()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"the test sshd could not start here: {e}")
    yield server
    sshd.stop(server)


@pytest.fixture(scope="session")
def remote_dir(device) -> str:
    """This session's edgetl folder on the device (in the device user's home), removed afterwards."""
    name = f"edgetl-test-{secrets.token_hex(4)}"
    yield f"~/{name}"
    # the device venv is ~500 MB of small files: removed by a detached rm (seconds to tens of seconds under load)
    subprocess.Popen(["rm", "-rf", str(device.home / name)], start_new_session=True)


@pytest.fixture(scope="session")
def ssh_args(device, remote_dir) -> list[str]:
    """CLI options every remote test passes: the generated ssh_config and this session's folder."""
    return ["-F", str(device.config), "--remote-dir", remote_dir]


def backbone_model(gain: float, seed: int = 7) -> onnx.ModelProto:
    """The colour classifier with a 3 MB "backbone" branch (features @ W, averaged, times 1e-9: too small to move
    a prediction) and a head of `gain` * I. Two gains = one backbone, two heads."""
    model = make_model("uint8-nhwc")
    g = model.graph
    weights = np.random.default_rng(seed).standard_normal((3, BACKBONE_WIDTH)).astype(np.float32)
    for i, init in enumerate(g.initializer):
        if init.name == "fc_w":
            g.initializer[i].CopyFrom(numpy_helper.from_array((gain * np.eye(3)).astype(np.float32), "fc_w"))
    g.initializer.extend(
        [
            numpy_helper.from_array(weights, "big_w"),
            numpy_helper.from_array(np.asarray([1], np.int64), "big_axes"),
            numpy_helper.from_array(np.asarray(1e-9, np.float32), "big_eps"),
        ]
    )
    softmax = next(i for i, n in enumerate(g.node) if n.op_type == "Softmax")
    extra = [
        helper.make_node("MatMul", ["features", "big_w"], ["big"]),
        helper.make_node("ReduceMean", ["big", "big_axes"], ["big_mean"], keepdims=1),
        helper.make_node("Mul", ["big_mean", "big_eps"], ["big_tiny"]),
        helper.make_node("Add", ["logits", "big_tiny"], ["logits_b"]),
    ]
    g.node[softmax].input[0] = "logits_b"
    for offset, node in enumerate(extra):
        g.node.insert(softmax + offset, node)
    onnx.checker.check_model(model, full_check=True)
    return model


def build_bundle(onnx_path: Path, target: str, out: Path) -> Path:
    get_target(target).compile(onnx_path, out.with_suffix(""), CompileOptions())
    package(out.with_suffix(""), out)
    return out


@pytest.fixture(scope="session")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """ov: INT8 colour model on OpenVINO; ort: FP32 colour model on ONNX Runtime; big-a/big-b: one backbone, two
    heads (OpenVINO); big-c: another backbone (the cut-upload test); trt: the TensorRT bundle (no engine)."""
    root = tmp_path_factory.mktemp("remote-bundles")
    onnx.save(make_model("uint8-nhwc"), root / "colour.onnx")
    quantize_model(root / "colour.onnx", root / "colour-int8.onnx")
    for name, gain, seed in (("big-a", 4.0, 7), ("big-b", 5.0, 7), ("big-c", 4.0, 8)):
        onnx.save(backbone_model(gain, seed), root / f"{name}.onnx")
    made = {
        "ov": build_bundle(root / "colour-int8.onnx", "openvino", root / "ov.tar.gz"),
        "ort": build_bundle(root / "colour.onnx", "onnxruntime", root / "ort.tar.gz"),
        "trt": build_bundle(root / "colour.onnx", "tensorrt", root / "trt.tar.gz"),
    }
    for name in ("big-a", "big-b", "big-c"):
        made[name] = build_bundle(root / f"{name}.onnx", "openvino", root / f"{name}.tar.gz")
    return made


def rebundle(bundle_dir: Path, out: Path, **fields) -> Path:
    """A copy of a compiled folder with manifest fields replaced (hashes rewritten), packaged as `out`."""
    copy = out.with_suffix("")
    shutil.copytree(bundle_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    kept = {k: v for k, v in manifest.items() if k not in ("format", "edgetl_version", "created", "files")}
    write_manifest(copy, {**kept, **fields})
    package(copy, out)
    return out


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> dict[str, Path]:
    """One JPEG or PNG per colour class, named by its true class."""
    root = tmp_path_factory.mktemp("remote-images")
    rng = np.random.default_rng(3)
    files = {}
    for i, (name, rgb) in enumerate(COLOURS.items()):
        pixels = np.clip(np.asarray(rgb) + rng.integers(-25, 25, (40 + 5 * i, 52, 3)), 0, 255).astype(np.uint8)
        files[name] = root / f"{name}{'.png' if i % 2 else '.jpg'}"
        Image.fromarray(pixels).save(files[name])
    return files


def cli(*argv) -> tuple[int, str, str]:
    """`edgetl ARGV...` in this process: (exit code, stdout, stderr); usable from session fixtures too."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    return exit_info.value.code, out.getvalue(), err.getvalue()


def one_error(err: str) -> str:
    """The single `error:` line a failed command printed (and no traceback): what the user reads."""
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


@pytest.fixture(scope="session")
def installed(device, ssh_args, bundles) -> str:
    """The device env, made once per session by a first real deploy (the INT8 OpenVINO bundle); its stderr."""
    code, out, err = cli("deploy", bundles["ov"], device.alias, *ssh_args)
    assert code == 0, err
    return err
