"""tests.photos: the real-photo ImageFolder builder that small-data tests and benchmarks/small_data.py rely on."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

pytest.importorskip(
    "skimage", reason="real-photo folders are cut from scikit-image's sample photos: pip install scikit-image"
)

from edgetl.data.folders import load_image_folder  # noqa: E402
from edgetl.images import decode_image
from tests.photos import CLASSES, KINDS, make_photo_folder  # noqa: E402


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.*"))}


@pytest.mark.parametrize("kind, n_classes", [("distinct", 6), ("textures", 12)])
def test_classes_counts_and_formats(tmp_path: Path, kind: str, n_classes: int):
    root = make_photo_folder(tmp_path / "photos", per_class=6, size=48, kind=kind)
    classes = tuple(KINDS[kind].photos)
    assert sorted(p.name for p in root.iterdir()) == sorted(classes)
    assert len(classes) == n_classes
    files = sorted(root.rglob("*.*"))
    assert len(files) == 6 * len(classes)
    assert {p.suffix for p in files} == {".jpg", ".png"}
    for name in classes:
        assert len(list((root / name).iterdir())) == 6
    ds = load_image_folder(root, seed=0, strict=True, warn=pytest.fail)
    assert ds.classes == sorted(classes)
    assert len(ds.train) + len(ds.val) == len(files)
    assert len({it.key for it in ds.train + ds.val}) == len(files)  # every crop is distinct content


def test_files_decode_as_real_images(tmp_path: Path):
    root = make_photo_folder(tmp_path / "photos", per_class=3, size=40)
    for path in root.rglob("*.*"):
        rgb = decode_image(path.read_bytes())
        assert rgb.shape == (40, 40, 3)
        assert rgb.std() > 5  # a photo crop, not a flat colour


def test_textures_are_grey_at_64_px_by_default(tmp_path: Path):
    assert CLASSES == tuple(KINDS["distinct"].photos)
    for path in make_photo_folder(tmp_path / "textures", per_class=2, kind="textures").rglob("*.*"):
        rgb = decode_image(path.read_bytes())
        assert rgb.shape == (64, 64, 3)
        assert (rgb == rgb[..., :1]).all()  # no colour cue between classes


@pytest.mark.parametrize("kind", list(KINDS))
def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path, kind: str):
    a = _digests(make_photo_folder(tmp_path / "a", per_class=4, size=32, seed=1, kind=kind))
    b = _digests(make_photo_folder(tmp_path / "b", per_class=4, size=32, seed=1, kind=kind))
    c = _digests(make_photo_folder(tmp_path / "c", per_class=4, size=32, seed=2, kind=kind))
    assert a == b
    assert set(a.values()).isdisjoint(c.values())


def test_small_folder_is_a_prefix_of_a_larger_one(tmp_path: Path):
    small = _digests(make_photo_folder(tmp_path / "small", per_class=2, size=32))
    large = _digests(make_photo_folder(tmp_path / "large", per_class=5, size=32))
    assert all(large.get(name) == digest for name, digest in small.items())


@pytest.mark.slow
def test_a_cluttered_photo_folder_trains_to_the_ceiling(tmp_path: Path):
    """6 classes x 40 real photos with what real folders hold (tests.photos.add_clutter): every clutter item is
    skipped or audited, and the frozen ImageNet Lite0 + linear head reaches val >= 0.95 (measured 1.0; the
    folder symlink up to the root had read every class again as one: val 0.23)."""
    from edgetl.config import TrainCfg
    from edgetl.train.run import run_train
    from tests.photos import add_clutter

    root = make_photo_folder(tmp_path / "photos", per_class=40)
    expected = add_clutter(root)
    record = run_train(TrainCfg(data=str(root), out=tmp_path / "r", progress=False, cache_dir=tmp_path / "cache"))
    audit, skipped = record["data"]["audit"], {Path(s["path"]).name: s["reason"] for s in record["data"]["skipped"]}
    assert {k: audit[k] for k in expected} == expected
    assert "outside its class folder" in skipped["loop"] and "symlink loop" in skipped["again"]
    assert "empty class folder" in skipped["empty_class"] and "not an image" in skipped["notes.jpg"]
    assert record["classes"] == sorted(CLASSES)
    # 240 photos, less the one whose copy sits in another class (both left out), plus the WebP and the BMP
    assert record["data"]["train"] + record["data"]["val"] == 240 - 1 + 2
    assert record["metrics"]["val_acc"] >= 0.95
