"""What a second `edgetl predict` of the same bundle reuses, and when it must not: the bundle unpacked once into the
cache (keyed by the archive's sha256, every file re-hashed at each open) and the INT8 probe's result (per model,
CPU kind, runtime version and device)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgetl.deploy import fidelity
from edgetl.deploy.bundle import package
from edgetl.deploy.predictor import Predictor
from edgetl.fileio import sha256_file
from tests.saturating import saturating_classifier


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cached")
    model = saturating_classifier(root / "export")
    out = root / "ort"
    cmd = [sys.executable, "-m", "edgetl", "compile", str(model), "--target", "onnxruntime", "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    package(out, root / "ort.tar.gz")
    return root / "ort.tar.gz"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("EDGETL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_bundle_is_unpacked_once_and_its_probe_run_once(bundle, cache):
    with Predictor(bundle) as first:
        folder = first.root
        assert folder == cache / "bundles" / sha256_file(bundle)
        assert first.fidelity["faithful"] and "checked" not in first.fidelity
    with Predictor(bundle) as second:
        assert second.root == folder
        assert second.fidelity["checked"] == "probe run earlier on this CPU"
        assert "probe run earlier on this CPU" in second.fidelity_line()
    assert folder.is_dir()  # kept for the next call


def test_a_cached_copy_changed_on_disk_is_unpacked_again(bundle, cache):
    with Predictor(bundle) as first:
        model = first.root / first.manifest["model"]
        want = sha256_file(model)
    model.write_bytes(b"not the model")
    with Predictor(bundle) as second:
        assert sha256_file(second.root / second.manifest["model"]) == want


def test_another_cpu_kind_runs_the_probe_again(bundle, cache, monkeypatch):
    with Predictor(bundle):
        pass
    monkeypatch.setattr(fidelity, "cpu_id", lambda: "another-cpu")
    with Predictor(bundle) as other:
        assert "checked" not in other.fidelity


def test_an_unwritable_cache_unpacks_to_a_temp_folder(bundle, tmp_path, monkeypatch):
    """A cache that cannot be written (here its path runs through a file) costs time, never the prediction."""
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("EDGETL_CACHE_DIR", str(tmp_path / "a-file" / "cache"))
    with Predictor(bundle) as p:
        assert tmp_path not in p.root.parents and p.fidelity["faithful"]
        root = p.root
    assert not root.exists()  # the temp folder is removed with the predictor
