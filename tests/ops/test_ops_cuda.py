"""The CUDA kernels against the NumPy reference (kernels/cuda_harness.py); skipped where no GPU is visible."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parents[2] / "kernels" / "cuda_harness.py"


def _harness():
    spec = importlib.util.spec_from_file_location("edgetl_cuda_harness", HARNESS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cuda_kernels_match_the_reference():
    harness = _harness()
    opened = harness.open_cuda()
    if isinstance(opened, str):
        pytest.skip(f"CUDA kernels not run: {opened}")
    assert harness.run_all(*opened) == []
