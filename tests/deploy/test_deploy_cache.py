"""What a second `edgetl predict` of the same bundle reuses, and when it must not: the bundle unpacked once into the
cache (keyed by the archive's sha256; every file checked at each open, by hash or, where this machine hashed that very
file before, by stat: edgetl.deploy.opened) and the INT8 probe's result (per model, CPU kind, runtime version and
device)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgetl.deploy import artifact, fidelity, opened
from edgetl.deploy import bundle as bundle_module
from edgetl.deploy.bundle import open_bundle, package
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


def test_another_cpu_kind_runs_the_probe_again_and_both_results_are_kept(bundle, cache, monkeypatch):
    """Two CPU kinds sharing a cache (a home folder on NFS) each run the probe once, not at every switch."""
    with Predictor(bundle):
        pass
    here = fidelity.cpu_key()
    monkeypatch.setattr(fidelity, "cpu_key", lambda: ["another-cpu", [], "x86_64"])
    with Predictor(bundle) as other:
        assert "checked" not in other.fidelity
    monkeypatch.setattr(fidelity, "cpu_key", lambda: here)
    with Predictor(bundle) as back:
        assert back.fidelity["checked"] == "probe run earlier on this CPU"
    (kept,) = (cache / "probe").iterdir()
    assert kept.name == sha256_file(back.root / back.manifest["model"]) + ".json"
    assert len(json.loads(kept.read_text())) == 2


@pytest.fixture
def settle_at_once(monkeypatch):
    """Files count as settled as soon as written (the 2 s racy window of edgetl.deploy.opened, here 0)."""
    monkeypatch.setattr(opened, "RACY_NS", 0)


def no_hashing(monkeypatch):
    def refuse(path):
        raise AssertionError(f"hashed {path}")

    monkeypatch.setattr(bundle_module, "sha256_file", refuse)
    monkeypatch.setattr(artifact, "sha256_file", refuse)


def test_a_bundle_opened_again_is_checked_by_stat_not_hashed(bundle, cache, settle_at_once, monkeypatch):
    with open_bundle(bundle) as first:  # unpacks: its files too recent to record in real time
        folder = first.root
    with open_bundle(bundle):  # hashes the archive and every file, then records their stats
        pass
    assert len(list((cache / "bundles" / opened.OPENED).iterdir())) == 1
    no_hashing(monkeypatch)
    with open_bundle(bundle) as third:
        assert third.root == folder and third.content_addressed


def test_a_cached_file_changed_with_its_size_and_mtime_kept_is_hashed_again(bundle, cache, settle_at_once, monkeypatch):
    """The write shows in ctime, which no user call sets back: the copy is hashed, found changed and unpacked again."""
    for _ in range(2):
        with open_bundle(bundle) as opened_bundle:
            model = opened_bundle.root / opened_bundle.manifest["model"]
            want = opened_bundle.manifest["files"][opened_bundle.manifest["model"]]
    st = model.stat()
    model.write_bytes(b"\0" * st.st_size)
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))
    with open_bundle(bundle) as again:
        assert sha256_file(again.root / again.manifest["model"]) == want


def test_a_bundle_copied_over_in_place_opens_as_the_new_bundle(bundle, cache, tmp_path, settle_at_once):
    """Same path, same inode, mtime set back: the other bundle's content is what opens."""
    copy = tmp_path / "b.tar.gz"
    shutil.copy(bundle, copy)
    for _ in range(2):
        with open_bundle(copy) as first:
            classes = first.manifest["classes"]
    with open_bundle(copy) as first:
        other = tmp_path / "other"
        shutil.copytree(first.root, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["classes"] = [f"renamed-{c}" for c in classes]
    (other / "manifest.json").write_text(json.dumps(manifest))
    package(other, tmp_path / "other.tar.gz")
    st = copy.stat()
    copy.write_bytes((tmp_path / "other.tar.gz").read_bytes())  # in place: the inode stays
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert copy.stat().st_ino == st.st_ino
    with open_bundle(copy) as now:
        assert now.manifest["classes"] == manifest["classes"]


def test_files_written_within_the_racy_window_are_never_trusted_by_stat(bundle, cache):
    """Right after unpacking (real time), a second open hashes again and records nothing."""
    for _ in range(2):
        with open_bundle(bundle):
            pass
    assert not (cache / "bundles" / opened.OPENED).exists()


def test_an_unwritable_cache_unpacks_to_a_temp_folder(bundle, tmp_path, monkeypatch):
    """A cache that cannot be written (here its path runs through a file) costs time, never the prediction."""
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("EDGETL_CACHE_DIR", str(tmp_path / "a-file" / "cache"))
    with Predictor(bundle) as p:
        assert tmp_path not in p.root.parents and p.fidelity["faithful"]
        root = p.root
    assert not root.exists()  # the temp folder is removed with the predictor


def test_a_cache_whose_times_cannot_be_set_is_still_read(bundle, cache, settle_at_once, monkeypatch):
    """A read-only cache (a mounted image of a device's cache): marking a copy as recently used fails, opening does
    not, on the stat path and on the hashing one."""
    for _ in range(2):
        with open_bundle(bundle):
            pass

    def refuse(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(os, "utime", refuse)
    with open_bundle(bundle) as by_stat:
        assert by_stat.content_addressed
    shutil.rmtree(cache / "bundles" / opened.OPENED)
    with open_bundle(bundle) as by_hash:
        assert by_hash.root == by_stat.root
