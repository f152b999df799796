"""`--data URL`: image folders read through fsspec (issue 32) follow the local folder rules, item for item.

The trees are real fsspec filesystems: `memory://` and `file://` URLs of a tmp_path tree, holding real PNG and
JPEG files and the junk users keep next to them. The same tree read as a local path and as a URL gives the same
classes, content keys, labels and split."""

from __future__ import annotations

import io
import subprocess
import sys
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pytest
from PIL import Image

from edgetl.data import load_dataset
from edgetl.data.items import Item
from edgetl.data.urls import join
from edgetl.errors import UserError
from edgetl.images import BadImage


def _image(seed: int, fmt: str) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


def junk_tree() -> tuple[dict[str, bytes], list[str]]:
    """(relative path -> bytes, empty folders): three classes of photos and the junk found next to them."""
    files = {}
    for c, name in enumerate(("cat", "dog", "owl")):
        for i in range(5):
            fmt, ext = ("PNG", "png") if i % 2 else ("JPEG", "jpg")
            files[f"{name}/{name}_{i}.{ext}"] = _image(10 * c + i, fmt)
    files["owl/night/deep/owl_9.png"] = _image(99, "PNG")  # nested folders inside a class count
    files["owl/night/owl_8.JPEG"] = _image(98, "JPEG")  # upper-case extension
    files["cat/.hidden.png"] = _image(97, "PNG")  # hidden file: not read, though a valid image
    files["cat/.thumbs/cat_t.png"] = _image(96, "PNG")  # hidden folder inside a class
    files["dog/notes.txt"] = b"not an image"
    files["dog/broken.jpg"] = b"this is not a JPEG at all"  # read and keyed; skipped when decoded
    files["cat/same.png"] = files["dog/same.png"] = _image(95, "PNG")  # one photo in two classes
    files["cat/copy.png"] = files["cat/cat_1.png"]  # a copy inside a class: kept once
    files["__MACOSX/cat/._cat_0.jpg"] = b"resource fork"
    files[".git/x.png"] = _image(94, "PNG")
    files["stray.png"] = _image(93, "PNG")  # an image outside any class folder
    return files, ["empty"]


def write_tree(fs, root: str, files: dict[str, bytes], empty: list[str]) -> None:
    for rel, data in files.items():
        fs.makedirs(f"{root}/{rel}".rsplit("/", 1)[0], exist_ok=True)
        fs.pipe_file(f"{root}/{rel}", data)
    for rel in empty:
        fs.makedirs(f"{root}/{rel}", exist_ok=True)


@pytest.fixture
def memory_root():
    """A fresh folder in fsspec's (process-wide) memory filesystem, removed afterwards."""
    fs = fsspec.filesystem("memory")
    root = f"/edgetl-test-{uuid.uuid4().hex[:8]}"
    yield fs, root
    if fs.exists(root):
        fs.rm(root, recursive=True)


def _load(data: str, strict: bool = False):
    warnings: list[str] = []
    return load_dataset(data, seed=0, strict=strict, warn=warnings.append), warnings


def _rel(path: str, source: str) -> str:
    base = source.rstrip("/") + "/"
    assert path.startswith(base), (path, source)
    return path[len(base) :]


def _view(ds) -> dict:
    """A dataset without where it was read from: what must be the same for a path and a URL."""
    return {
        "classes": ds.classes,
        "split": ds.split,
        "train": [(it.key, it.label, _rel(it.path, ds.source)) for it in ds.train],
        "val": [(it.key, it.label, _rel(it.path, ds.source)) for it in ds.val],
        "skipped": [(_rel(s["path"], ds.source), s["reason"]) for s in ds.skipped],
        "audit": {
            k: v for k, v in ds.audit.items() if k not in ("conflicts", "duplicate_examples", "leakage_examples")
        },
        "leakage": [(_rel(x["train"], ds.source), _rel(x["val"], ds.source)) for x in ds.audit["leakage_examples"]],
        "conflicts": [sorted(_rel(p, ds.source) for p in c["paths"]) for c in ds.audit["conflicts"]],
    }


def test_memory_and_file_urls_read_a_tree_exactly_as_the_local_loader(tmp_path, memory_root):
    files, empty = junk_tree()
    local = tmp_path / "photos"
    write_tree(fsspec.filesystem("file"), str(local), files, empty)
    mem_fs, mem_root = memory_root
    write_tree(mem_fs, mem_root, files, empty)

    by_path, path_warnings = _load(str(local))
    by_file_url, _ = _load(local.as_uri())
    by_memory, memory_warnings = _load(f"memory://{mem_root}")

    expected = _view(by_path)
    assert _view(by_file_url) == expected
    assert _view(by_memory) == expected
    assert len(path_warnings) == len(memory_warnings)
    # the rules themselves: three classes, the empty folder skipped with its reason, hidden/junk never listed
    assert expected["classes"] == ["cat", "dog", "owl"]
    assert expected["skipped"] == [("empty", "empty class folder (no image files); class dropped")]
    used = {rel for _, _, rel in expected["train"] + expected["val"]}
    assert "owl/night/deep/owl_9.png" in used and "owl/night/owl_8.JPEG" in used and "dog/broken.jpg" in used
    assert not {rel for rel in used if "hidden" in rel or "thumbs" in rel or rel.endswith(".txt")}
    assert expected["conflicts"] == [["cat/same.png", "dog/same.png"]]
    assert expected["audit"]["duplicates_in_class"] == 1
    assert len(used) == 5 + 6 + 7  # cat (copy once, same.png out), dog (+ broken, same.png out), owl (+ 2 nested)


def test_url_items_carry_the_full_url_and_load_like_local_files(tmp_path):
    files, empty = junk_tree()
    local = tmp_path / "photos"
    write_tree(fsspec.filesystem("file"), str(local), files, empty)
    url = local.as_uri()
    ds, _ = _load(url)
    by_path, _ = _load(str(local))
    pixels = {it.key: it for it in by_path.train + by_path.val}
    for it in ds.train + ds.val:
        assert it.path.startswith(url + "/")
        reopened = Item(it.path, it.label, it.key)  # what another process rebuilds from the path alone
        if it.path.endswith("broken.jpg"):
            with pytest.raises(BadImage):
                reopened.load()
        else:
            np.testing.assert_array_equal(reopened.load(), pixels[it.key].load())


def test_a_relative_file_url_becomes_absolute(tmp_path, monkeypatch):
    files, empty = junk_tree()
    write_tree(fsspec.filesystem("file"), str(tmp_path / "photos"), files, empty)
    monkeypatch.chdir(tmp_path)
    ds, _ = _load("file://photos")
    assert ds.source == (tmp_path / "photos").as_uri()
    assert all(it.path.startswith(ds.source + "/") for it in ds.train + ds.val)


def test_train_and_val_folders_at_a_url(tmp_path, memory_root):
    train, _ = junk_tree()
    files = {f"train/{rel}": data for rel, data in train.items() if rel.count("/") and rel[0] != "."}
    files["val/cat/v0.png"] = _image(200, "PNG")
    files["val/dog/v1.jpg"] = _image(201, "JPEG")
    files["val/dog/leak.jpg"] = train["dog/dog_0.jpg"]  # a train image again in val
    files["val/fox/f0.png"] = _image(202, "PNG")  # a class only in val
    local = tmp_path / "split"
    write_tree(fsspec.filesystem("file"), str(local), files, [])
    fs, root = memory_root
    write_tree(fs, root, files, [])

    by_path, _ = _load(str(local))
    by_url, warnings = _load(f"memory://{root}")
    assert _view(by_url) == _view(by_path)
    assert by_url.split == "DIR/train + DIR/val" and by_url.classes == ["cat", "dog", "owl"]
    assert by_url.audit["exact_leakage"] == 1 and any("LEAKAGE" in w for w in warnings)
    assert any(s["path"] == f"memory://{root}/val/fox" and "only in DIR/val" in s["reason"] for s in by_url.skipped)


def test_class_folders_differing_only_by_case_are_refused_at_a_url(memory_root):
    fs, root = memory_root
    write_tree(fs, root, {"Cat/a.png": _image(1, "PNG"), "cat/b.png": _image(2, "PNG")}, [])
    with pytest.raises(UserError, match=r"class folders 'Cat' and 'cat' differ only by case"):
        _load(f"memory://{root}")


def test_an_object_that_fails_to_read_is_skipped_with_its_reason(memory_root, monkeypatch):
    fs, root = memory_root
    files = {f"{c}/{c}{i}.png": _image(10 * k + i, "PNG") for k, c in enumerate("ab") for i in range(3)}
    files["a/odd[1].png"] = _image(50, "PNG")  # a glob character in the name: read literally, one by one
    write_tree(fs, root, files, [])
    real = fs.cat_file

    def cat_file(path, *args, **kwargs):
        if path.endswith("b1.png"):
            raise PermissionError("Access Denied")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(fs, "cat_file", cat_file)
    ds, warnings = _load(f"memory://{root}")
    assert ds.skipped == [
        {"path": f"memory://{root}/b/b1.png", "reason": "unreadable (PermissionError: Access Denied)"}
    ]
    assert f"memory://{root}/a/odd[1].png" in {it.path for it in ds.train + ds.val}
    assert len(ds.train) + len(ds.val) == 6
    with pytest.raises(UserError, match=r"b1.png: unreadable \(PermissionError: Access Denied\).*--strict"):
        _load(f"memory://{root}", strict=True)


@pytest.mark.parametrize("protocol, package", [("s3", "s3fs"), ("gs", "gcsfs"), ("gcs", "gcsfs")])
def test_a_protocol_whose_package_is_missing_names_the_package(protocol, package, monkeypatch):
    import importlib

    registry = importlib.import_module("fsspec.registry")  # the module (fsspec.registry is also a mapping)
    # make the package missing where the scale extra installed it: None in sys.modules stops its import
    monkeypatch.setitem(sys.modules, package, None)
    known = {k: v for k, v in registry._registry.items() if k not in ("s3", "s3a", "gs", "gcs")}
    monkeypatch.setattr(registry, "_registry", known)
    with pytest.raises(UserError) as e:
        _load(f"{protocol}://bucket/photos")
    assert str(e.value) == (
        f"--data {protocol}://bucket/photos: reading {protocol}:// needs the {package} package: "
        f"pip install 'edgetl[scale]' (or {package})"
    )
    with pytest.raises(UserError, match=f"needs the {package} package"):  # a worker reopening one image
        Item(f"{protocol}://bucket/photos/cat/1.jpg", 0).load()


def test_bad_urls_are_one_line_errors(tmp_path, memory_root, monkeypatch):
    fs, root = memory_root
    write_tree(fs, root, {"cat/a.png": _image(1, "PNG")}, [])
    cases = {
        "nope://bucket/photos": "unknown protocol nope://",
        f"memory://{root}/missing": f"--data memory://{root}/missing does not exist",
        (tmp_path / "missing").as_uri(): "does not exist",
        f"memory://{root}/cat/a.png": "is not a folder",
    }
    for url, message in cases.items():
        with pytest.raises(UserError, match=message) as e:
            _load(url)
        assert "\n" not in str(e.value)

    def expired(*args, **kwargs):
        raise RuntimeError("The provided token has expired.\nRequest id: 1234")

    monkeypatch.setattr(fs, "find", expired)
    with pytest.raises(UserError) as e:
        _load(f"memory://{root}")
    assert str(e.value) == f"--data memory://{root}: cannot list it (RuntimeError: The provided token has expired.)"


def test_an_object_gone_after_listing_is_unreadable_not_a_crash(memory_root):
    fs, root = memory_root
    write_tree(fs, root, {"cat/a.png": _image(1, "PNG")}, [])
    item = Item(f"memory://{root}/cat/a.png", 0)
    assert item.load().shape == (12, 10, 3)
    fs.rm(f"{root}/cat/a.png")
    with pytest.raises(OSError):  # what extraction skips as "unreadable"
        item.load()


def test_text_data_at_a_url_is_refused():
    with pytest.raises(UserError, match="text data is read from local files"):
        load_dataset("s3://bucket/texts.csv", 0, False, print, modality="text")


def test_join_adds_the_path_to_the_link_that_holds_it():
    assert join("s3://b/p", "cat", "1.jpg") == "s3://b/p/cat/1.jpg"
    assert join("s3://b/p/", "cat") == "s3://b/p/cat"
    assert join("memory://", "cat") == "memory://cat"
    assert join("zip://inner::s3://b/x.zip", "cat") == "zip://inner/cat::s3://b/x.zip"
    assert join("simplecache::s3://b/p", "cat") == "simplecache::s3://b/p/cat"


def test_local_folders_never_import_fsspec(tmp_path):
    """A local folder (and digits) keeps the plain read: fsspec is imported only for a URL."""
    files, empty = junk_tree()
    write_tree(fsspec.filesystem("file"), str(tmp_path / "photos"), files, empty)
    code = (
        "import sys\nfrom edgetl.data import load_dataset\n"
        f"ds = load_dataset({str(tmp_path / 'photos')!r}, 0, False, lambda m: None)\n"
        "ds.train[0].load()\nprint('fsspec' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=Path.cwd())
    assert out.stdout.strip() == "False", out.stderr
