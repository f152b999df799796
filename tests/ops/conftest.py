"""Fixtures of the fused-op tests. Inputs are fresh random draws on every run; the seed is printed, so a failure
can be replayed with EDGETL_TEST_SEED=<seed>."""

from __future__ import annotations

import os
import secrets

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    seed = int(os.environ.get("EDGETL_TEST_SEED", secrets.randbits(32)))
    print(f"EDGETL_TEST_SEED={seed}")
    return np.random.default_rng(seed)
