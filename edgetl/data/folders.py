"""Image datasets: scikit-learn's built-in digits and ImageFolder trees full of real-world junk.

Every image is decoded by `edgetl.images` (the same code the device runs); files that cannot be used are
skipped with a reason, or stop the run with `--strict`.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgetl.data.audit import audit_items
from edgetl.data.items import IGNORED_DIRS, Dataset, Item, check_classes, content_key, stratified_split
from edgetl.errors import UserError
from edgetl.images import IMAGE_EXTENSIONS, Skipper

# --- built-in data ---------------------------------------------------------------------------------


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images [1797, 8, 8] float64 0..16, labels) from the CSV inside scikit-learn's wheel, read as
    `sklearn.datasets.load_digits` reads it, without importing scikit-learn (about 0.9 s of a warm run)."""
    import gzip
    from importlib.util import find_spec

    spec = find_spec("sklearn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if path is None or not path.is_file():
        raise UserError("--data digits needs scikit-learn: pip install 'edgetl[train]'")
    with gzip.open(path, "rt") as f:
        data = np.loadtxt(f, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


def load_digits(seed: int, val_fraction: float = 0.2) -> Dataset:
    """scikit-learn's bundled digits: 1,797 real 8x8 scans (values 0..16) as grey RGB uint8 images."""
    images, target = digits_arrays()
    pixels = np.round(images * (255.0 / 16.0)).astype(np.uint8)
    items = []
    for i, (img, label) in enumerate(zip(pixels, target, strict=True)):
        rgb = np.ascontiguousarray(np.repeat(img[..., None], 3, axis=2))
        key = content_key(b"digits:" + rgb.tobytes())
        items.append(Item(path=f"digits[{i}]", label=int(label), key=key, pixels=rgb))
    train, val = stratified_split(items, val_fraction, seed)
    classes = [str(c) for c in range(10)]
    return Dataset(
        "digits", classes, train, val, split=f"stratified {1 - val_fraction:.0%}/{val_fraction:.0%}, seed {seed}"
    )


# --- image-folder rules, shared by local folders (here) and URLs (edgetl.data.urls) --------------------


def is_hidden(name: str) -> bool:
    return name.startswith(".") or name in IGNORED_DIRS


def walk_order(parts: tuple[str, ...]) -> tuple:
    """Sort key of a file's path inside its class folder giving os.walk's order with sorted names: a folder's
    files first, then its subfolders, depth first. Both loaders list a class in this order, so the seeded split
    picks the same images from a tree read as a path or as a URL."""
    return (*((1, d) for d in parts[:-1]), (0, parts[-1]))


def class_folders(names: list[str], root) -> dict[str, str]:
    """Class name (NFC) -> folder name, sorted, hidden ones left out. Names that differ only by case or Unicode
    form would be two classes whose labels look the same: refused, naming both."""
    names = sorted(n for n in names if not is_hidden(n))
    by_fold: dict[str, str] = {}
    for name in names:
        fold = unicodedata.normalize("NFC", name).casefold()
        if fold in by_fold:
            other = by_fold[fold]
            how = "by Unicode form (NFC vs NFD)" if other.casefold() != name.casefold() else "only by case"
            raise UserError(
                f"--data {root}: class folders {other!r} and {name!r} differ {how}; their labels would look "
                f"the same: merge them into one folder or rename one ({ascii(other)} vs {ascii(name)})"
            )
        by_fold[fold] = name
    return {unicodedata.normalize("NFC", n): n for n in names}


def pick_classes(per_class: dict[str, list], classes: list[str] | None, where: dict[str, str], skip: Skipper):
    """The classes of a split: with `classes` None (DIR/train or a single tree) the non-empty class folders, the
    empty ones skipped; otherwise (DIR/val) `classes`, and a folder not among them is skipped with why."""
    if classes is None:
        for name, files in per_class.items():
            if not files:
                skip(where[name], "empty class folder (no image files); class dropped")
        return [name for name, files in per_class.items() if files]
    known = {c.casefold() for c in classes}
    for name, files in per_class.items():
        if name in classes or not files:
            continue
        why = (
            "differs only by case from a DIR/train class"
            if name.casefold() in known
            else "exists only in DIR/val (no DIR/train folder of that name)"
        )
        skip(where[name], f"class {name!r} {why}: the head cannot learn it, its images are not used")
    return classes


Scan = Callable[[str | None, list[str] | None], tuple[list[str], list[Item]]]


def build_dataset(
    source: str, scan: Scan, train_val: bool, seed: int, skip: Skipper, warn, val_fraction: float
) -> Dataset:
    """DIR/train + DIR/val when `train_val`, otherwise DIR/<class>/... split by content (seeded, stratified).
    `scan(subfolder or None, classes or None)` gives a split's (classes, items).

    Every image is audited by content key (edgetl.data.audit) before the split: the same content under two
    classes is left out, copies inside a class count once (so copies always land on one side of a split edgetl
    makes), and copies across a user-given train/val are reported as leakage."""
    if train_val:
        classes, train = scan("train", None)
        _, val = scan("val", classes)
        audit = audit_items(train, val, classes, skip.strict, warn)
        train, val, split = audit.train, audit.val, "DIR/train + DIR/val"
    else:
        classes, items = scan(None, None)
        audit = audit_items(items, [], classes, skip.strict, warn)
        train, val = stratified_split(audit.train, val_fraction, seed)
        split = f"stratified {1 - val_fraction:.0%}/{val_fraction:.0%} by content, seed {seed}"
    check_classes(classes, train, source)
    return Dataset(source, classes, train, val, skip.skipped, split, audit.summary())


# --- local image folders ---------------------------------------------------------------------------


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
        for d in sorted(d for d in dirs if not is_hidden(d)):
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
            if is_hidden(name) or not name.lower().endswith(IMAGE_EXTENSIONS):
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


def _scan_split(root: Path, classes: list[str] | None, skip: Skipper) -> tuple[list[str], list[Item]]:
    if not root.is_dir():
        raise UserError(f"--data: {root} is not a folder; give an ImageFolder tree (DIR/<class>/<images>)")
    folders = class_folders([p.name for p in root.iterdir() if p.is_dir()], root)
    per_class = {name: _list_images(root / d, skip) for name, d in folders.items()}
    classes = pick_classes(per_class, classes, {name: str(root / d) for name, d in folders.items()}, skip)
    items = []
    for label, name in enumerate(classes):
        for path in per_class.get(name, []):
            data = _read(path, skip)
            if data is not None:
                items.append(Item(path=str(path), label=label, key=content_key(data)))
    return classes, items


def load_image_folder(root: Path, seed: int, strict: bool, warn, val_fraction: float = 0.2) -> Dataset:
    """DIR/train + DIR/val when both exist, otherwise DIR/<class>/... split by content (`build_dataset`)."""
    skip = Skipper(strict, warn)
    root = Path(root).expanduser()
    train_val = (root / "train").is_dir() and (root / "val").is_dir()

    def scan(sub: str | None, classes: list[str] | None) -> tuple[list[str], list[Item]]:
        return _scan_split(root / sub if sub else root, classes, skip)

    return build_dataset(str(root), scan, train_val, seed, skip, warn, val_fraction)
