"""Datasets: scikit-learn's built-in digits and ImageFolder trees full of real-world junk.

Every image is decoded by `edgetl.images` (the same code the device runs); files that cannot be used are
skipped with a reason, or stop the run with `--strict`.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgetl.errors import UserError
from edgetl.images import IMAGE_EXTENSIONS, Skipper, decode_image
from edgetl.train.audit import audit_items

IGNORED_DIRS = {"__MACOSX", ".ipynb_checkpoints", ".git", ".svn", "@eaDir", "__pycache__"}


def content_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split_fingerprint(items: list[Item]) -> str:
    """Identifies a split by content and labels: later stages check they reload the same validation images."""
    rows = sorted(f"{it.key}:{it.label}" for it in items)
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


@dataclass
class Item:
    """One image. `key` is the sha256 of its content: what the feature cache is addressed by."""

    path: str
    label: int
    key: str = ""
    pixels: np.ndarray | None = None  # built-in data carries its pixels; files are read on demand
    text: str | None = None  # a text item (edgetl.train.text_data) carries its normalised text

    def load(self, min_size: tuple[int, int] | None = None) -> np.ndarray | str:
        if self.text is not None:
            return self.text
        if self.pixels is not None:
            return self.pixels
        return decode_image(Path(self.path).read_bytes(), min_size)


@dataclass
class Dataset:
    source: str
    classes: list[str]
    train: list[Item]
    val: list[Item]
    skipped: list[dict] = field(default_factory=list)  # {path, reason}
    split: str = ""
    audit: dict = field(default_factory=dict)  # edgetl.train.audit: conflicts, duplicates, leakage

    def summary(self) -> dict:
        return {
            "source": self.source,
            "split": self.split,
            "num_classes": len(self.classes),
            "train": len(self.train),
            "val": len(self.val),
            "skipped": self.skipped,
            "audit": self.audit,
        }


# --- built-in data ---------------------------------------------------------------------------------


def load_digits(seed: int, val_fraction: float = 0.2) -> Dataset:
    """scikit-learn's bundled digits: 1,797 real 8x8 scans (values 0..16) as grey RGB uint8 images."""
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError:
        raise UserError("--data digits needs scikit-learn: pip install 'edgetl[train]'") from None
    d = sk_digits()
    pixels = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    items = []
    for i, (img, label) in enumerate(zip(pixels, d.target, strict=True)):
        rgb = np.ascontiguousarray(np.repeat(img[..., None], 3, axis=2))
        key = content_key(b"digits:" + rgb.tobytes())
        items.append(Item(path=f"digits[{i}]", label=int(label), key=key, pixels=rgb))
    train, val = stratified_split(items, val_fraction, seed)
    classes = [str(c) for c in d.target_names]
    return Dataset(
        "digits", classes, train, val, split=f"stratified {1 - val_fraction:.0%}/{val_fraction:.0%}, seed {seed}"
    )


def stratified_split(items: list[Item], val_fraction: float, seed: int) -> tuple[list[Item], list[Item]]:
    """Per class, a seeded shuffle; round(n * val_fraction) go to val (at least one when n >= 2)."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in sorted({it.label for it in items}):
        members = [it for it in items if it.label == label]
        order = rng.permutation(len(members))
        n_val = int(round(len(members) * val_fraction))
        if len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        else:
            n_val = 0
        val += [members[i] for i in order[:n_val]]
        train += [members[i] for i in order[n_val:]]
    return train, val


# --- image folders ---------------------------------------------------------------------------------


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name in IGNORED_DIRS


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _list_images(class_dir: Path, skip: Skipper) -> list[Path]:
    """Image files under one class folder (recursively), each real file once.

    A folder symlink is followed only where it stays inside its own class folder: one that leads up to the data
    root or sideways into another class would label that class's photos with this one. Such a link is skipped and
    named, like other junk (with --strict it stops the run). A file reached twice (through a symlinked folder or
    a file symlink inside the class) is listed once."""
    home = os.path.realpath(class_dir)
    found: list[Path] = []
    seen_dirs: set[str] = set()
    seen_files: set[str] = set()
    for root, dirs, files in os.walk(class_dir, followlinks=True, onerror=lambda e: skip(str(e.filename), e.strerror)):
        real_root = os.path.realpath(root)
        if real_root in seen_dirs:
            skip(root, "symlink loop (folder already visited)")
            dirs[:] = []
            continue
        seen_dirs.add(real_root)
        kept = []
        for d in sorted(d for d in dirs if not _is_hidden(d)):
            target = os.path.realpath(os.path.join(root, d))
            if not _inside(target, home):
                skip(
                    os.path.join(root, d),
                    f"folder symlink leads outside its class folder (to {target}); not followed, so its images are "
                    "not labelled as this class (move them into a class folder instead)",
                )
                continue
            kept.append(d)
        dirs[:] = kept
        for name in sorted(files):
            if _is_hidden(name) or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            path = Path(root) / name
            real = os.path.realpath(path)
            if real in seen_files:
                continue  # the same file through another path of this class: read once
            seen_files.add(real)
            found.append(path)
    return found


def _read(path: Path, skip: Skipper) -> bytes | None:
    try:
        if not path.is_file():
            skip(str(path), "not a regular file (broken symlink or special file)")
            return None
        return path.read_bytes()
    except OSError as e:
        skip(str(path), f"unreadable ({e.strerror or e})")
        return None


def _class_dirs(root: Path) -> dict[str, Path]:
    """Class name (NFC) -> folder. Names that differ only by case or Unicode form would be two classes whose
    labels look the same: refused, naming both."""
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not _is_hidden(p.name))
    by_fold: dict[str, Path] = {}
    for d in dirs:
        fold = unicodedata.normalize("NFC", d.name).casefold()
        if fold in by_fold:
            other = by_fold[fold]
            how = "by Unicode form (NFC vs NFD)" if other.name.casefold() != d.name.casefold() else "only by case"
            raise UserError(
                f"--data {root}: class folders {other.name!r} and {d.name!r} differ {how}; their labels would look "
                f"the same: merge them into one folder or rename one ({ascii(other.name)} vs {ascii(d.name)})"
            )
        by_fold[fold] = d
    return {unicodedata.normalize("NFC", d.name): d for d in dirs}


def _scan_split(root: Path, classes: list[str] | None, skip: Skipper) -> tuple[list[str], list[Item]]:
    if not root.is_dir():
        raise UserError(f"--data: {root} is not a folder; give an ImageFolder tree (DIR/<class>/<images>)")
    class_dirs = _class_dirs(root)
    per_class = {name: _list_images(d, skip) for name, d in class_dirs.items()}
    if classes is None:
        for name, files in per_class.items():
            if not files:
                skip(str(class_dirs[name]), "empty class folder (no image files); class dropped")
        classes = [name for name, files in per_class.items() if files]
    else:
        known = {c.casefold() for c in classes}
        for name, files in per_class.items():
            if name in classes or not files:
                continue
            why = (
                "differs only by case from a DIR/train class"
                if name.casefold() in known
                else "exists only in DIR/val (no DIR/train folder of that name)"
            )
            skip(str(class_dirs[name]), f"class {name!r} {why}: the head cannot learn it, its images are not used")
    items = []
    for label, name in enumerate(classes):
        for path in per_class.get(name, []):
            data = _read(path, skip)
            if data is not None:
                items.append(Item(path=str(path), label=label, key=content_key(data)))
    return classes, items


def load_image_folder(root: Path, seed: int, strict: bool, warn, val_fraction: float = 0.2) -> Dataset:
    """DIR/train + DIR/val when both exist, otherwise DIR/<class>/... split by content (seeded, stratified).

    Every image is audited by content key (edgetl.train.audit) before the split: the same content under two
    classes is left out, copies inside a class count once (so copies always land on one side of a split edgetl
    makes), and copies across a user-given train/val are reported as leakage."""
    skip = Skipper(strict, warn)
    root = Path(root).expanduser()
    if (root / "train").is_dir() and (root / "val").is_dir():
        classes, train = _scan_split(root / "train", None, skip)
        _, val = _scan_split(root / "val", classes, skip)
        audit = audit_items(train, val, classes, strict, warn)
        train, val, split = audit.train, audit.val, "DIR/train + DIR/val"
    else:
        classes, items = _scan_split(root, None, skip)
        audit = audit_items(items, [], classes, strict, warn)
        train, val = stratified_split(audit.train, val_fraction, seed)
        split = f"stratified {1 - val_fraction:.0%}/{val_fraction:.0%} by content, seed {seed}"
    check_classes(classes, train, root)
    return Dataset(str(root), classes, train, val, skip.skipped, split, audit.summary())


def check_classes(classes: list[str], train: list[Item], root) -> None:
    usable = {it.label for it in train}
    if len(usable) < 2:
        raise UserError(
            f"--data {root}: found {len(usable)} usable class(es) {[classes[i] for i in sorted(usable)]}; "
            "need at least two class folders with images (DIR/<class>/<image files>)"
        )


def load_dataset(data: str, seed: int, strict: bool, warn, modality: str = "image") -> Dataset:
    if modality == "text":
        from edgetl.train.text_data import load_text_dataset

        return load_text_dataset(data, seed, strict, warn)
    if data == "digits":
        return load_digits(seed)
    path = Path(data).expanduser()
    if not path.exists():
        raise UserError(f"--data: {data} does not exist; give an image folder or 'digits'")
    return load_image_folder(path, seed, strict, warn)
