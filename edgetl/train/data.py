"""Datasets: scikit-learn's built-in digits and ImageFolder trees full of real-world junk.

Every image becomes a uint8 RGB array [H, W, 3]. A file that cannot be used is skipped with a reason
(or stops the run with `--strict`); it is never silently misread. Only NumPy and Pillow are imported here,
so the device side (predict) decodes images exactly as training did.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from edgetl.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
IGNORED_DIRS = {"__MACOSX", ".ipynb_checkpoints", ".git", ".svn", "@eaDir", "__pycache__"}
MAX_PIXELS = 64_000_000  # larger frames are refused as decompression bombs (a 64 MP photo still passes)
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file must fail, not decode into grey garbage


class BadImage(Exception):
    """A file that is not a usable image; the message is the reason shown to the user."""


def decode_image(data: bytes, min_size: tuple[int, int] | None = None) -> np.ndarray:
    """Bytes -> uint8 RGB [H, W, 3], EXIF orientation applied, 16-bit scaled (not clipped to white).

    `min_size` (h, w): a JPEG is decoded at the smallest DCT scale (1/1..1/8) that keeps it at least that big
    (`Preprocess.decode_min_size`; training and the device pass the same value, so they see the same pixels).
    """
    if not data:
        raise BadImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise BadImage(f"{w}x{h} pixels exceeds the {MAX_PIXELS:,}-pixel limit (decompression bomb?)")
                orientation = im.getexif().get(0x0112, 1)
                if min_size is not None and im.format == "JPEG":
                    h, w = min_size if orientation < 5 else min_size[::-1]  # 5..8 swap width and height
                    im.draft(None, (w, h))
                im.load()
                if orientation != 1:  # transpose (a full copy) only when EXIF asks for it
                    im = ImageOps.exif_transpose(im)
                return _to_rgb(im)
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage(f"decompression bomb refused ({e})") from None
    except UnidentifiedImageError:
        raise BadImage("not an image (unrecognized format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise BadImage(f"truncated or corrupt image ({e})") from None


def _to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode == "RGB":  # the common case (JPEG photos): one copy out of Pillow, no conversion
        return np.asarray(im, dtype=np.uint8)
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        a = np.clip(np.round(a * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        a = np.zeros_like(a) if hi <= lo else (a - lo) / (hi - lo) * 255.0
        return np.repeat(np.round(a).astype(np.uint8)[..., None], 3, axis=2)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))


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

    def load(self, min_size: tuple[int, int] | None = None) -> np.ndarray:
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

    def summary(self) -> dict:
        return {
            "source": self.source,
            "split": self.split,
            "num_classes": len(self.classes),
            "train": len(self.train),
            "val": len(self.val),
            "skipped": self.skipped,
        }


class Skipper:
    """Collects skipped files; with strict=True the first one stops the run (exit 2)."""

    def __init__(self, strict: bool, warn) -> None:
        self.strict = strict
        self.warn = warn
        self.skipped: list[dict] = []

    def __call__(self, path: str, reason: str) -> None:
        if self.strict:
            raise UserError(f"{path}: {reason} (remove or fix the file, or drop --strict to skip it)")
        if any(s["path"] == path for s in self.skipped):  # seen by an earlier stage of the same run
            return
        self.warn(f"skipping {path}: {reason}")
        self.skipped.append({"path": path, "reason": reason})


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


def _list_images(class_dir: Path, skip: Skipper) -> list[Path]:
    """Image files under one class folder (recursively), following symlinks but never looping."""
    found: list[Path] = []
    seen_dirs: set[tuple[int, int]] = set()
    for root, dirs, files in os.walk(class_dir, followlinks=True, onerror=lambda e: skip(str(e.filename), e.strerror)):
        try:
            st = os.stat(root)
        except OSError as e:
            skip(root, f"unreadable folder ({e.strerror})")
            dirs[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen_dirs:
            skip(root, "symlink loop (folder already visited)")
            dirs[:] = []
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if not _is_hidden(d))
        for name in sorted(files):
            if _is_hidden(name) or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            found.append(Path(root) / name)
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
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not _is_hidden(p.name))
    per_class = {d.name: _list_images(d, skip) for d in class_dirs}
    if classes is None:
        for name, files in per_class.items():
            if not files:
                skip(str(root / name), "empty class folder (no image files); class dropped")
        classes = [name for name, files in per_class.items() if files]
    items = []
    for label, name in enumerate(classes):
        for path in per_class.get(name, []):
            data = _read(path, skip)
            if data is not None:
                items.append(Item(path=str(path), label=label, key=content_key(data)))
    return classes, items


def load_image_folder(root: Path, seed: int, strict: bool, warn, val_fraction: float = 0.2) -> Dataset:
    """DIR/train + DIR/val when both exist, otherwise DIR/<class>/... split (seeded, stratified)."""
    skip = Skipper(strict, warn)
    root = Path(root).expanduser()
    if (root / "train").is_dir() and (root / "val").is_dir():
        classes, train = _scan_split(root / "train", None, skip)
        _, val = _scan_split(root / "val", classes, skip)
        split = "DIR/train + DIR/val"
    else:
        classes, items = _scan_split(root, None, skip)
        train, val = stratified_split(items, val_fraction, seed)
        split = f"stratified {1 - val_fraction:.0%}/{val_fraction:.0%}, seed {seed}"
    check_classes(classes, train, root)
    return Dataset(str(root), classes, train, val, skip.skipped, split)


def check_classes(classes: list[str], train: list[Item], root) -> None:
    usable = {it.label for it in train}
    if len(usable) < 2:
        raise UserError(
            f"--data {root}: found {len(usable)} usable class(es) {[classes[i] for i in sorted(usable)]}; "
            "need at least two class folders with images (DIR/<class>/<image files>)"
        )


def load_dataset(data: str, seed: int, strict: bool, warn) -> Dataset:
    if data == "digits":
        return load_digits(seed)
    path = Path(data).expanduser()
    if not path.exists():
        raise UserError(f"--data: {data} does not exist; give an image folder or 'digits'")
    return load_image_folder(path, seed, strict, warn)
