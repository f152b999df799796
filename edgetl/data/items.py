"""What a dataset is, whatever it holds: items addressed by content, the split, its fingerprint."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgetl.errors import UserError
from edgetl.images import decode_image

IGNORED_DIRS = {"__MACOSX", ".ipynb_checkpoints", ".git", ".svn", "@eaDir", "__pycache__"}
SCALE_PACKAGES = ("s3fs", "gcsfs")  # what the `scale` extra installs for object storage


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
    text: str | None = None  # a text item (edgetl.data.text) carries its normalised text

    def load(self, min_size: tuple[int, int] | None = None) -> np.ndarray | str:
        if self.text is not None:
            return self.text
        if self.pixels is not None:
            return self.pixels
        return decode_image(read_bytes(self.path), min_size)


def is_url(data: str) -> bool:
    return "://" in data


def read_bytes(path: str) -> bytes:
    """A file's bytes: a local path directly, a URL (edgetl.data.urls) through fsspec, imported only then.
    Any failure to read an object is an OSError, which callers skip as unreadable like a local file."""
    if not is_url(path):
        return Path(path).read_bytes()
    fs, inner = url_filesystem(path)
    try:
        return fs.cat_file(inner)
    except OSError:
        raise
    except Exception as e:  # e.g. a storage client's own error type
        raise OSError(explain(e)) from e


def explain(e: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


def url_filesystem(url: str):
    """(fsspec filesystem, the path inside it) for a URL. Each way this fails is one line naming the URL: no
    fsspec, an unknown protocol, the protocol's package missing (named, as fsspec names it), bad options."""
    try:
        import fsspec.core
    except ImportError:
        raise UserError(
            f"--data {url}: reading URLs needs the fsspec package: pip install 'edgetl[train]' (or fsspec)"
        ) from None
    protocol = url.split("://", 1)[0].split("::")[-1]
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as e:
        raise UserError(_missing_package(url, protocol, e)) from None
    except ValueError as e:
        if "protocol not known" in str(e).lower():
            raise UserError(
                f"--data {url}: unknown protocol {protocol}:// (fsspec reads e.g. file://, s3://, gs://, az://, "
                "hf://, memory://); give a local folder, 'digits' or such a URL"
            ) from None
        raise UserError(f"--data {url}: cannot open it ({explain(e)})") from None
    except Exception as e:
        raise UserError(f"--data {url}: cannot open it ({explain(e)})") from None


def _missing_package(url: str, protocol: str, e: ImportError) -> str:
    cause = e.__cause__ if isinstance(e.__cause__, ImportError) else e
    package = (cause.name or "").split(".")[0]
    if not package or package == "fsspec":
        from fsspec.registry import known_implementations

        package = known_implementations.get(protocol, {}).get("class", "").split(".")[0]
    if not package or package == "fsspec":
        return f"--data {url}: reading {protocol}:// needs a package fsspec could not import ({explain(e)})"
    how = f"'edgetl[scale]' (or {package})" if package in SCALE_PACKAGES else package
    return f"--data {url}: reading {protocol}:// needs the {package} package: pip install {how}"


@dataclass
class Dataset:
    source: str
    classes: list[str]
    train: list[Item]
    val: list[Item]
    skipped: list[dict] = field(default_factory=list)  # {path, reason}
    split: str = ""
    audit: dict = field(default_factory=dict)  # edgetl.data.audit: conflicts, duplicates, leakage

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


def check_classes(classes: list[str], train: list[Item], root) -> None:
    usable = {it.label for it in train}
    if len(usable) < 2:
        raise UserError(
            f"--data {root}: found {len(usable)} usable class(es) {[classes[i] for i in sorted(usable)]}; "
            "need at least two class folders with images (DIR/<class>/<image files>)"
        )
