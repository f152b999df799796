"""One class per image: folder symlinks, copies, label conflicts and leakage, found by content key.

Each case is a folder as users keep them (symlinks that point up, sideways or in a loop, the same photo saved
in two classes, copies across a DIR/train + DIR/val), made of real files on disk."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgetl.data.audit import near_duplicates
from edgetl.data.folders import load_image_folder
from edgetl.errors import UserError
from tests.core.conftest import make_folder


def _scan(root: Path, strict: bool = False):
    warnings: list[str] = []
    return load_image_folder(root, seed=0, strict=strict, warn=warnings.append), warnings


def _labels_by_name(ds) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for it in ds.train + ds.val:
        out.setdefault(Path(it.path).name, set()).add(ds.classes[it.label])
    return out


def test_folder_symlink_up_to_the_data_root_is_not_followed(image_folder: Path):
    os.symlink("..", image_folder / "red" / "loop")  # red/loop -> the data root: every class again, as red
    ds, warnings = _scan(image_folder)
    assert len(ds.train) + len(ds.val) == 36  # 3 classes x 12, each once
    assert all(labels == {name.split("_")[0]} for name, labels in _labels_by_name(ds).items())
    assert any("leads outside its class folder" in s["reason"] and s["path"].endswith("loop") for s in ds.skipped)
    assert any("loop" in w for w in warnings)


def test_folder_symlink_sideways_into_another_class_is_not_followed(image_folder: Path):
    os.symlink(image_folder / "green", image_folder / "red" / "more")
    ds, _ = _scan(image_folder)
    assert all(labels == {name.split("_")[0]} for name, labels in _labels_by_name(ds).items())
    assert any(s["path"].endswith("more") and "outside its class folder" in s["reason"] for s in ds.skipped)


def test_folder_symlink_inside_its_class_is_followed_and_read_once(image_folder: Path):
    nested = image_folder / "red" / "2024" / "june"
    nested.mkdir(parents=True)
    Image.fromarray(np.full((20, 24, 3), (180, 20, 40), np.uint8)).save(nested / "extra.png")
    os.symlink(nested, image_folder / "red" / "june_link")  # the same folder twice, inside the class
    os.symlink(image_folder / "red", image_folder / "red" / "2024" / "back")  # and a loop
    ds, _ = _scan(image_folder)
    names = [Path(it.path).name for it in ds.train + ds.val]
    assert names.count("extra.png") == 1 and len(names) == 37
    assert any("symlink loop" in s["reason"] for s in ds.skipped)


def test_strict_stops_on_a_symlink_leading_out(image_folder: Path):
    os.symlink("..", image_folder / "red" / "loop")
    with pytest.raises(UserError, match=r"loop: folder symlink leads outside its class folder.*--strict"):
        _scan(image_folder, strict=True)


def test_the_same_photo_in_two_classes_is_a_conflict_left_out(image_folder: Path):
    photo = (image_folder / "red" / "red_003.png").read_bytes()
    (image_folder / "green" / "copy_of_red.png").write_bytes(photo)
    ds, warnings = _scan(image_folder)
    audit = ds.audit
    assert audit["label_conflicts"] == 1
    assert sorted(audit["conflicts"][0]["classes"]) == ["green", "red"]
    assert {Path(p).name for p in audit["conflicts"][0]["paths"]} == {"red_003.png", "copy_of_red.png"}
    kept = {Path(it.path).name for it in ds.train + ds.val}
    assert "red_003.png" not in kept and "copy_of_red.png" not in kept
    assert any("label conflict" in w for w in warnings)
    with pytest.raises(UserError, match="label conflict.*red_003.png"):
        _scan(image_folder, strict=True)


def test_copies_inside_a_class_count_once_and_land_on_one_side(image_folder: Path):
    red = image_folder / "red"
    for i in range(12):  # every red image twice
        (red / f"copy_{i:03d}.png").write_bytes((red / f"red_{i:03d}.png").read_bytes())
    ds, _ = _scan(image_folder)
    assert ds.audit["duplicates_in_class"] == 12
    keys = [it.key for it in ds.train + ds.val]
    assert len(keys) == len(set(keys)) == 36
    assert not {it.key for it in ds.train} & {it.key for it in ds.val}


def test_exact_copies_across_user_train_and_val_are_leakage(tmp_path: Path):
    root = tmp_path / "d"
    make_folder(root / "train", per_class=5)
    make_folder(root / "val", per_class=2, seed=1)
    (root / "val" / "blue" / "leaked.png").write_bytes((root / "train" / "blue" / "blue_001.png").read_bytes())
    ds, warnings = _scan(root)
    assert ds.audit["exact_leakage"] == 1
    ex = ds.audit["leakage_examples"][0]
    assert ex["val"].endswith("leaked.png") and ex["train"].endswith("blue_001.png")
    assert any(w.startswith("LEAKAGE") for w in warnings)


def test_a_class_only_in_val_is_named(tmp_path: Path):
    root = tmp_path / "d"
    make_folder(root / "train", per_class=4)
    make_folder(root / "val", per_class=2, seed=1)
    (root / "val" / "purple").mkdir()
    Image.fromarray(np.full((20, 24, 3), (120, 0, 120), np.uint8)).save(root / "val" / "purple" / "p.png")
    ds, warnings = _scan(root)
    assert ds.classes == ["blue", "green", "red"] and len(ds.val) == 6
    assert any("'purple' exists only in DIR/val" in s["reason"] for s in ds.skipped)
    with pytest.raises(UserError, match="purple"):
        _scan(root, strict=True)


@pytest.mark.parametrize("other", ["Red", unicodedata.normalize("NFD", "rédd"), "RÉDD"])
def test_class_folders_that_differ_only_by_case_or_unicode_form_are_refused(tmp_path: Path, other: str):
    root = make_folder(tmp_path / "d", per_class=3)
    first = "red" if other == "Red" else unicodedata.normalize("NFC", "rédd")
    (root / "red").rename(root / first)
    (root / other).mkdir()
    (root / other / "x.png").write_bytes((root / "green" / "green_000.png").read_bytes())
    with pytest.raises(UserError, match="differ (only by case|by Unicode form)"):
        _scan(root)


def test_near_duplicates_across_train_and_val_are_found_by_feature_cosine():
    from edgetl.data.items import Item

    rng = np.random.default_rng(0)
    train = [Item(f"t{i}.png", 0, key=f"t{i}") for i in range(50)]
    val = [Item(f"v{i}.png", 0, key=f"v{i}") for i in range(20)]
    feats = {it.key: rng.normal(size=64).astype(np.float32) for it in train + val}
    feats["v7"] = feats["t31"] + 0.05 * rng.normal(size=64).astype(np.float32)  # a slightly edited copy
    found = near_duplicates(train, val, feats)
    assert found["count"] == 1
    assert found["examples"][0]["val"] == "v7.png" and found["examples"][0]["train"] == "t31.png"
    assert found["examples"][0]["cosine"] > found["threshold_cosine"]


@pytest.mark.slow
def test_a_lightly_edited_copy_across_train_and_val_is_a_near_duplicate(tmp_path: Path):
    """Real photos through the real backbone: a val image that is a train photo made 6% brighter and re-saved as
    JPEG is found by its cached features (not by its bytes, which differ)."""
    from PIL import ImageEnhance

    from edgetl.config import TrainCfg
    from edgetl.train.run import run_train
    from tests.photos import make_photo_folder

    root = tmp_path / "photos"
    make_photo_folder(root / "train", per_class=6)
    make_photo_folder(root / "val", per_class=2, seed=7)
    source = sorted((root / "train" / "cat").iterdir())[0]
    edited = ImageEnhance.Brightness(Image.open(source).convert("RGB")).enhance(1.06)
    edited.save(root / "val" / "cat" / "edited_copy.jpg", quality=92)
    cfg = TrainCfg(data=str(root), out=tmp_path / "r", progress=False, cache_dir=tmp_path / "cache", img_size=128)
    near = run_train(cfg)["data"]["audit"]["near_duplicates"]
    assert near["checked"] and near["count"] >= 1
    pair = next(e for e in near["examples"] if e["val"].endswith("edited_copy.jpg"))
    assert pair["train"] == str(source) and pair["cosine"] > near["threshold_cosine"]
