"""Real-world junk in image folders: each case is skipped with its reason (or stops with --strict)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgetl.data.folders import load_image_folder
from edgetl.errors import UserError
from edgetl.images import BadImage, decode_image
from tests.core.conftest import make_folder


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, "PNG") if mode else Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _scan(root: Path, strict: bool = False):
    warnings: list[str] = []
    ds = load_image_folder(root, seed=0, strict=strict, warn=warnings.append)
    return ds, warnings


def _reason(ds, name: str) -> str:
    hits = [s["reason"] for s in ds.skipped if s["path"].endswith(name)]
    assert hits, f"{name} not recorded as skipped: {ds.skipped}"
    return hits[0]


def test_zero_byte_file_is_skipped_with_reason():
    with pytest.raises(BadImage, match="empty file"):
        decode_image(b"")


def test_truncated_png_is_skipped():
    data = _png(np.full((40, 40, 3), 7, np.uint8))
    with pytest.raises(BadImage, match="truncated or corrupt"):
        decode_image(data[: len(data) // 2])


def test_text_file_with_image_extension():
    with pytest.raises(BadImage, match="not an image"):
        decode_image(b"this is a README, not a JPEG\n" * 10)


def test_grayscale_palette_rgba_cmyk_become_rgb():
    gray = decode_image(_png(np.full((5, 6), 100, np.uint8)))
    assert gray.shape == (5, 6, 3) and (gray == 100).all()
    pal = Image.fromarray(np.full((4, 4, 3), (10, 20, 30), np.uint8)).convert("P", palette=Image.Palette.ADAPTIVE)
    buf = io.BytesIO()
    pal.save(buf, "PNG")
    assert tuple(decode_image(buf.getvalue())[0, 0]) == (10, 20, 30)
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 0  # fully transparent red -> composited on white
    assert tuple(decode_image(_png(rgba))[0, 0]) == (255, 255, 255)
    cmyk = Image.new("CMYK", (3, 3), (0, 255, 255, 0))  # pure red in CMYK
    buf = io.BytesIO()
    cmyk.save(buf, "JPEG")
    r, g, b = decode_image(buf.getvalue())[1, 1]
    assert r > 200 and g < 60 and b < 60


def test_16bit_png_is_scaled_not_white():
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)  # 0 .. 63000
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, "PNG")  # a uint16 array saves as a 16-bit greyscale PNG
    rgb = decode_image(buf.getvalue())
    assert rgb.min() == 0 and 240 <= rgb.max() <= 255
    assert len(np.unique(rgb)) > 32, "16-bit gradient must keep its levels, not clip to white"


def test_exif_orientation_is_applied():
    arr = np.zeros((10, 20, 3), np.uint8)  # landscape, stored with "rotate 90" in EXIF
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif)
    assert decode_image(buf.getvalue()).shape == (20, 10, 3)


def test_decompression_bomb_is_refused():
    im = Image.new("1", (9000, 9000))  # 81 MP, a few KB as PNG
    buf = io.BytesIO()
    im.save(buf, "PNG")
    with pytest.raises(BadImage, match="decompression bomb"):
        decode_image(buf.getvalue())


def test_junk_folder_trains_and_records_every_skip(image_folder: Path):
    red = image_folder / "red"
    (red / "empty.jpg").write_bytes(b"")
    (red / "notes.png").write_text("not a picture")
    good = (red / "red_000.png").read_bytes()
    (red / "cut.png").write_bytes(good[: len(good) // 2])
    (red / ".DS_Store").write_bytes(b"\0\1junk")
    (image_folder / "__MACOSX").mkdir()
    (image_folder / "__MACOSX" / "._red_000.png").write_bytes(b"junk")
    (red / ".ipynb_checkpoints").mkdir()
    (red / ".ipynb_checkpoints" / "x.png").write_bytes(b"junk")
    (image_folder / "empty_class").mkdir()
    (red / "ünïcødé 画像.png").write_bytes(_png(np.full((20, 24, 3), (190, 40, 35), np.uint8)))
    os.symlink(red, red / "loop")  # a folder symlink back to itself
    ds, warnings = _scan(image_folder)
    assert ds.classes == ["blue", "green", "red"]  # hidden folders and the empty class are not classes
    assert "empty class folder" in _reason(ds, "empty_class")
    assert "symlink loop" in _reason(ds, "loop")
    assert any(it.path.endswith("ünïcødé 画像.png") for it in ds.train + ds.val)
    all_paths = [it.path for it in ds.train + ds.val]
    assert not any(".DS_Store" in p or "__MACOSX" in p or "ipynb" in p for p in all_paths)
    # Undecodable files are found when they are decoded (extraction), through the same Skipper:
    from edgetl.train.run import run_train
    from tests.core.conftest import tiny_cfg

    record = run_train(tiny_cfg(image_folder, image_folder.parent / "run"))
    reasons = {Path(s["path"]).name: s["reason"] for s in record["data"]["skipped"]}
    assert "empty file" in reasons["empty.jpg"]
    assert "not an image" in reasons["notes.png"]
    assert "truncated or corrupt" in reasons["cut.png"]
    assert record["metrics"]["val_acc"] >= 0.0


def test_strict_stops_at_first_bad_file_naming_it(image_folder: Path):
    (image_folder / "green" / "broken.png").write_bytes(b"nope")
    from edgetl.train.run import run_train
    from tests.core.conftest import tiny_cfg

    with pytest.raises(UserError, match=r"broken\.png: not an image .*--strict"):
        run_train(tiny_cfg(image_folder, image_folder.parent / "run", strict=True))


def test_fewer_than_two_classes_is_a_clear_error(tmp_path: Path):
    make_folder(tmp_path / "one", per_class=4)
    for name in ("green", "blue"):
        for f in (tmp_path / "one" / name).iterdir():
            f.unlink()
    with pytest.raises(UserError, match="need at least two class folders"):
        _scan(tmp_path / "one")


def test_train_val_subfolders_are_used(tmp_path: Path):
    make_folder(tmp_path / "d" / "train", per_class=5)
    make_folder(tmp_path / "d" / "val", per_class=2, seed=1)
    ds, _ = _scan(tmp_path / "d")
    assert ds.split == "DIR/train + DIR/val" and len(ds.train) == 15 and len(ds.val) == 6


def test_stratified_split_is_seeded_and_keeps_every_class(image_folder: Path):
    a, _ = _scan(image_folder)
    b, _ = _scan(image_folder)
    assert [i.path for i in a.val] == [i.path for i in b.val]
    assert {i.label for i in a.val} == {0, 1, 2}


def test_jpeg_draft_decodes_at_a_reduced_scale_never_below_the_input_size():
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(buf, "JPEG")
    full = decode_image(buf.getvalue())
    small = decode_image(buf.getvalue(), min_size=(64, 64))
    assert full.shape == (480, 640, 3)
    assert small.shape == (120, 160, 3)  # 1/4 scale: 1/8 would be 60 rows, below 64
    assert decode_image(buf.getvalue(), min_size=(300, 300)).shape == (480, 640, 3)  # 1/2 would be too small
    png = _png(np.zeros((480, 640, 3), np.uint8))
    assert decode_image(png, min_size=(64, 64)).shape == (480, 640, 3)  # only JPEG has DCT scaling


def test_training_and_predict_decode_files_the_same_way(tmp_path: Path):
    from edgetl.preprocess import Preprocess
    from edgetl.train.features import decode

    path = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (400, 300, 3), dtype=np.uint8)).save(path)
    from edgetl.data.items import Item
    from edgetl.images import Skipper

    pre = Preprocess(size=(48, 48))
    _, x = decode([Item(str(path), 0)], pre, Skipper(False, print))
    expected = pre(decode_image(path.read_bytes(), pre.decode_min_size)[None])
    np.testing.assert_array_equal(x, expected)
    assert pre.decode_min_size == (48, 48)
    assert Preprocess.from_dict(pre.to_dict()) == pre


def test_digits_read_without_scikit_learn_match_its_loader():
    """The built-in digits come from the CSV in scikit-learn's wheel without importing it (start-up time); the
    arrays are scikit-learn's own."""
    from sklearn.datasets import load_digits as sk_digits

    from edgetl.data.folders import digits_arrays

    images, labels = digits_arrays()
    d = sk_digits()
    assert np.array_equal(images, d.images) and np.array_equal(labels, d.target)
