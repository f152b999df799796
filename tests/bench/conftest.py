"""Fixtures for the bench tests: the deploy tests' tiny colour models compiled into real bundles, and photos.

The colour models come from tests/deploy/conftest.py (loaded under its own module name, so the two conftest
files never shadow each other). Everything here runs real runtimes on tiny inputs in well under a second.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from edgetl.deploy.targets import CompileOptions, get_target
from tests.deploy import conftest as deploy_fixtures

# The `bench --json` contract of issue 6: every result carries these keys.
CONTRACT = {
    "latency_ms",
    "throughput_ips",
    "iterations",
    "duration_s",
    "mode",
    "target",
    "device",
    "precision",
    "threads",
    "batch",
    "versions",
    "cpu",
}


@pytest.fixture(scope="session")
def colour_onnx(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.onnx"
    onnx.save(deploy_fixtures.make_model("uint8-nhwc"), path)
    return path


@pytest.fixture(scope="session")
def bundles(tmp_path_factory, colour_onnx) -> dict[str, Path]:
    """Compiled folders (bundles in every respect but the tar) for OpenVINO and ONNX Runtime."""
    root = tmp_path_factory.mktemp("bundles")
    return {
        target: get_target(target).compile(colour_onnx, root / target, CompileOptions()).root
        for target in ("openvino", "onnxruntime")
    }


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> Path:
    """A folder of distinct JPEG/PNG photos (noisy colour fields of different sizes)."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(3)
    for i, rgb in enumerate(deploy_fixtures.COLOURS.values()):
        pixels = np.clip(np.asarray(rgb) + rng.integers(-30, 30, (36 + 4 * i, 48, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"photo{i}.{'png' if i % 2 else 'jpg'}")
    return root
