"""Untrusted inputs: ONNX external data that escapes the model folder, hostile or tampered bundles."""

from __future__ import annotations

import io
import os
import tarfile
import time
from pathlib import Path

import onnx
import pytest

from edgetl.deploy.artifact import MANIFEST
from edgetl.deploy.bundle import extract, open_bundle, package
from edgetl.deploy.onnx_safety import check_external_data, check_location
from edgetl.deploy.targets import CompileOptions, get_target
from edgetl.errors import UserError
from tests.deploy.conftest import external_data_model

# --- ONNX external data ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("/etc/passwd", "absolute path"),
        ("../secret.bin", "'..'"),
        ("sub/../../secret.bin", "'..'"),
        ("C:\\secret.bin", "absolute path"),
        ("missing.bin", "no such file"),
    ],
)
def test_external_data_outside_folder_is_refused(tmp_path, location, message):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 8)
    folder = tmp_path / "model"
    folder.mkdir()
    with pytest.raises(UserError, match=message):
        check_external_data(external_data_model(folder, location))


def test_external_data_through_symlink_is_refused(tmp_path):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 8)
    folder = tmp_path / "model"
    folder.mkdir()
    os.symlink(tmp_path / "secret.bin", folder / "weights.bin")
    with pytest.raises(UserError, match="symlink"):
        check_external_data(external_data_model(folder, "weights.bin"))


def test_external_data_inside_folder_is_accepted(tmp_path, colour_onnx):
    model = onnx.load(colour_onnx)
    path = tmp_path / "model.onnx"
    (tmp_path / "weights").mkdir()
    onnx.save(model, path, save_as_external_data=True, location="weights/data.bin", size_threshold=0)
    assert check_external_data(path) == [(tmp_path / "weights" / "data.bin").resolve()]
    assert check_location(path, "weights/data.bin").name == "data.bin"


def test_compile_refuses_escaping_model_before_any_runtime_reads_it(tmp_path):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 8)
    folder = tmp_path / "model"
    folder.mkdir()
    for target in ("onnxruntime", "openvino", "tensorrt"):
        with pytest.raises(UserError, match="'..'"):
            get_target(target).compile(
                external_data_model(folder, "../secret.bin"), tmp_path / target, CompileOptions()
            )
        assert not (tmp_path / target).exists()


def test_not_an_onnx_file(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not protobuf")
    with pytest.raises(UserError, match="model.onnx"):
        check_external_data(bad)


# --- bundles -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_bundle(tmp_path_factory, colour_onnx) -> Path:
    root = tmp_path_factory.mktemp("bundle")
    get_target("onnxruntime").compile(colour_onnx, root / "ort", CompileOptions())
    package(root / "ort", root / "ort.tar.gz")
    return root / "ort.tar.gz"


def _with_extra_member(good: Path, out: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(good) as src, tarfile.open(out, "w:gz") as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m))
        dst.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return out


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, linkname, size
    return info


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (_member("../evil.txt", size=4), "unsafe file name"),
        (_member("/tmp/evil.txt", size=4), "unsafe file name"),
        (_member("sub/../../evil.txt", size=4), "unsafe file name"),
        (_member("evil", tarfile.SYMTYPE, "/etc/passwd"), "is a link"),
        (_member("evil", tarfile.LNKTYPE, "model.onnx"), "is a link"),
        (_member("evil", tarfile.CHRTYPE), "device or special file"),
        (_member("evil", tarfile.FIFOTYPE), "device or special file"),
        (_member("extra.txt", size=4), "not listed"),
        (_member("model.onnx", size=4), "appears twice"),
    ],
)
def test_hostile_bundles_are_refused(tmp_path, good_bundle, member, message):
    bad = _with_extra_member(good_bundle, tmp_path / "bad.tar.gz", member, b"evil"[: member.size])
    with pytest.raises(UserError, match=message):
        extract(bad, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()


def test_tampered_file_is_refused(tmp_path, good_bundle):
    unpacked = tmp_path / "unpacked"
    extract(good_bundle, unpacked)
    model = unpacked / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(UserError, match="does not match its sha256"):
        package(unpacked, tmp_path / "again.tar.gz")
    with tarfile.open(tmp_path / "tampered.tar.gz", "w:gz") as tar:
        for name in (MANIFEST, "model.onnx"):
            tar.add(unpacked / name, arcname=name)
    with pytest.raises(UserError, match="model.onnx does not match its sha256"):
        extract(tmp_path / "tampered.tar.gz", tmp_path / "out")


def test_not_a_bundle(tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tar")
    with pytest.raises(UserError, match="not a readable bundle"), open_bundle(junk):
        pass
    with pytest.raises(UserError, match="no such bundle"), open_bundle(tmp_path / "nope.tar.gz"):
        pass


def test_bundle_round_trip_is_deterministic(tmp_path, monkeypatch, good_bundle):
    with open_bundle(good_bundle) as artifact:
        assert artifact.target == "onnxruntime" and artifact.model_path.is_file()
        package(artifact.root, tmp_path / "again.tar.gz")
        os.utime(artifact.model_path, (1, 1))  # neither file times nor the clock may leak into the bytes
        monkeypatch.setattr(time, "time", lambda: 2_000_000_000.0)  # gzip stamps time.time() unless told not to
        package(artifact.root, tmp_path / "twice.tar.gz")
        monkeypatch.undo()
    again = (tmp_path / "again.tar.gz").read_bytes()
    assert again and again == (tmp_path / "twice.tar.gz").read_bytes() == good_bundle.read_bytes()
    with tarfile.open(tmp_path / "again.tar.gz") as tar:
        assert tar.getnames()[0] == MANIFEST
        assert all(m.isfile() and m.uid == 0 and m.mtime == 0 for m in tar.getmembers())
