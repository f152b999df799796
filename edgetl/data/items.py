"""What a dataset is, whatever it holds: items addressed by content, the split, its fingerprint."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgetl.errors import UserError
from edgetl.images import decode_image

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
    text: str | None = None  # a text item (edgetl.data.text) carries its normalised text

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
