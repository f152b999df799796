"""The NumPy references against an independent implementation (PyTorch), so the definition itself is checked."""

from __future__ import annotations

import numpy as np
import pytest

from edgetl.ops import reference
from tests.ops.ops_testing import POOL_HEAD_CASES, PREPROCESS_CASES

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("case", PREPROCESS_CASES, ids=str)
def test_preprocess_reference_matches_torch_bilinear(case, rng):
    frames, pre = case.draw(rng)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    if pre.channel_order == "BGR":
        x = x.flip(1)
    resized = torch.nn.functional.interpolate(x, size=pre.size, mode="bilinear", align_corners=False, antialias=False)
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    expected = ((resized / 255 - mean) / std).numpy()
    np.testing.assert_allclose(reference.preprocess(frames, pre), expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("case", POOL_HEAD_CASES, ids=str)
def test_pool_head_reference_matches_torch(case, rng):
    x, weight, bias = case.draw(rng)
    logits = torch.nn.functional.linear(
        torch.from_numpy(x).mean((2, 3)), torch.from_numpy(weight), torch.from_numpy(bias)
    )
    probs, label = reference.pool_head(x, weight, bias)
    np.testing.assert_allclose(probs, torch.softmax(logits, 1).numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(label, logits.argmax(1).numpy())


def test_preprocess_reference_rejects_float_frames():
    frames = np.zeros((1, 8, 8, 3), np.float32)
    with pytest.raises(TypeError, match="uint8"):
        reference.preprocess(frames, PREPROCESS_CASES[0].draw(np.random.default_rng(0))[1])
