"""Fixtures for the training side: small real image folders written with Pillow, isolated cache dirs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

COLORS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}


def make_folder(root: Path, per_class: int = 12, size: tuple[int, int] = (24, 20), seed: int = 0) -> Path:
    """ImageFolder tree; each class a noisy colour, so even a tiny random backbone separates them."""
    rng = np.random.default_rng(seed)
    for name, color in COLORS.items():
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noise = rng.integers(-40, 40, (size[1], size[0], 3))
            arr = np.clip(np.array(color) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(d / f"{name}_{i:03d}.png")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "data")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("EDGETL_CACHE_DIR", str(cache))
    return cache


def tiny_cfg(data: Path, out: Path, **kw):
    from edgetl.config import TrainCfg

    base = dict(data=str(data), backbone="test_tiny", out=out, epochs=3, progress=False, extract_batch=8)
    base.update(kw)
    return TrainCfg(**base)
