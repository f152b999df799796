"""The content audit of a dataset, from content keys computed anyway (the feature cache is addressed by them).

- The same content under two classes is a label conflict: it cannot be both, so it is left out of train and val
  (with --strict the run stops), and every conflict is listed with its paths.
- Copies inside one class are counted and kept once: a file reached twice must not count twice.
- Exact copies across a user-given DIR/train and DIR/val are leakage: val accuracy would score memorised images.
  (A split edgetl makes is by content, so copies always land on the same side.)
- Near-duplicates across train and val (lightly edited copies, heavily overlapping crops) are found on the
  cached FP32 features: their cosine, centred on the train mean, above NEAR_DUPLICATE_COSINE.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from edgetl.errors import UserError

if TYPE_CHECKING:
    from edgetl.data.items import Item

EXAMPLES = 5  # pairs listed in run.json and warnings; the counts are complete
# Centred cosine of Lite0 features (measured, 20 val images per set): a brightness edit of +8% scores 0.976-0.997,
# an 80% resize 0.92-0.97, JPEG quality 70 0.81-0.92; distinct images score at most 0.954 on digits (val->train max)
# and 0.92 at the 99th percentile of the 12-class textures, while overlapping crops of one photo (the 6-class photo
# folder) reach 0.98. 0.98 flags the light edits and the near-identical crops, not merely similar images.
NEAR_DUPLICATE_COSINE = 0.98


@dataclass
class Audit:
    train: list[Item]
    val: list[Item]
    conflicts: list[dict] = field(default_factory=list)  # {key, classes, paths}
    duplicates: int = 0  # extra copies inside a class (kept once)
    duplicate_examples: list[list[str]] = field(default_factory=list)
    leakage: list[dict] = field(default_factory=list)  # exact copies across a user-given train/val

    def summary(self) -> dict:
        return {
            "label_conflicts": len(self.conflicts),
            "conflicts": self.conflicts,
            "duplicates_in_class": self.duplicates,
            "duplicate_examples": self.duplicate_examples,
            "exact_leakage": len(self.leakage),
            "leakage_examples": self.leakage[:EXAMPLES],
        }


def audit_items(
    train: list[Item], val: list[Item], classes: list[str], strict: bool, warn, noun: str = "image"
) -> Audit:
    """Conflicts out, copies once; `val` empty when edgetl makes the split itself (after this audit). `noun`: what
    the items are, in the messages (image, text)."""
    labels: dict[str, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    for it in train + val:
        labels[it.key][it.label].append(it.path)
    conflicts = []
    for key, by_label in labels.items():
        if len(by_label) > 1:
            paths = [p for lab in sorted(by_label) for p in by_label[lab]]
            names = [classes[lab] for lab in sorted(by_label)]
            if strict:
                raise UserError(
                    f"label conflict: the same {noun} is {names[0]!r} ({paths[0]}) and {names[1]!r} "
                    f"({by_label[sorted(by_label)[1]][0]}); keep it under one label (or drop --strict to leave it out)"
                )
            conflicts.append({"key": key, "classes": names, "paths": paths})
    bad = {c["key"] for c in conflicts}
    audit = Audit([], [], conflicts)
    audit.train = _once(train, bad, audit)
    audit.val = _once(val, bad, audit)
    in_train = {it.key: it.path for it in audit.train}
    audit.leakage = [
        {"key": it.key, "train": in_train[it.key], "val": it.path} for it in audit.val if it.key in in_train
    ]
    _warn(audit, warn, noun)
    return audit


def _once(items: list[Item], conflicts: set[str], audit: Audit) -> list[Item]:
    kept: dict[str, Item] = {}
    for it in items:
        if it.key in conflicts:
            continue
        if it.key in kept:
            audit.duplicates += 1
            if len(audit.duplicate_examples) < EXAMPLES:
                audit.duplicate_examples.append([kept[it.key].path, it.path])
            continue
        kept[it.key] = it
    return list(kept.values())


def _warn(audit: Audit, warn, noun: str) -> None:
    for c in audit.conflicts[:EXAMPLES]:
        warn(
            f"label conflict: the same {noun} is in {' and '.join(repr(n) for n in c['classes'])} "
            f"({', '.join(c['paths'])}); left out of train and val"
        )
    if len(audit.conflicts) > EXAMPLES:
        warn(f"... and {len(audit.conflicts) - EXAMPLES} more label conflicts (run.json data.audit.conflicts)")
    if audit.duplicates:
        warn(f"{audit.duplicates} duplicate {noun}(s) inside a class: each content is used once")
    if audit.leakage:
        first = audit.leakage[0]
        warn(
            f"LEAKAGE: {len(audit.leakage)} val {noun}(s) are exact copies of train {noun}s (e.g. {first['val']} = "
            f"{first['train']}); val accuracy overstates: remove the copies from the val folder or file"
        )


def near_duplicates(
    train: list[Item], val: list[Item], features: dict[str, np.ndarray], threshold: float = NEAR_DUPLICATE_COSINE
) -> dict:
    """Val images whose cached features have a cosine above `threshold` with some train image's, with the
    closest pairs as examples. Features are centred on the train mean first: pooled post-ReLU features all share a
    large positive mean, which puts any two digits at a raw cosine near 0.92. Blocked over val (memory [256, n])."""
    tr = [it for it in train if it.key in features]
    va = [it for it in val if it.key in features]
    out = {"threshold_cosine": threshold, "count": 0, "val_images": len(va), "examples": []}
    if not tr or not va:
        return out
    t = np.stack([features[it.key] for it in tr]).astype(np.float64)
    mean = t.mean(0)
    t = _unit(t - mean)
    pairs = []
    for start in range(0, len(va), 256):
        sims = _unit(np.stack([features[it.key] for it in va[start : start + 256]]) - mean) @ t.T
        for i, j in enumerate(sims.argmax(1)):
            if sims[i, j] > threshold:
                pairs.append((float(sims[i, j]), va[start + i].path, tr[j].path))
    pairs.sort(reverse=True)
    out["count"] = len(pairs)
    out["examples"] = [{"cosine": round(c, 4), "val": v, "train": t} for c, v, t in pairs[:EXAMPLES]]
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
