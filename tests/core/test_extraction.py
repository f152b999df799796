"""Extraction speed-ups must not change a bit: channels-last FP32, the prefetching loop, batched preprocessing
and the blocked logistic-regression loss, each against the plain computation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgetl.data.items import Item
from edgetl.images import Skipper
from edgetl.models.backbones import build_backbone
from edgetl.preprocess import Preprocess
from edgetl.train.cache import FeatureCache
from edgetl.train.features import TorchExtractor, auto_batch, decode_batch, extract
from edgetl.train.fit import SoftmaxLoss, class_weights, one_blas_thread


@pytest.fixture(scope="module")
def lite0():
    return build_backbone("efficientnet_lite0")


def at_threads(n: int, fn):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(n)
        return fn()
    finally:
        torch.set_num_threads(before)


def test_channels_last_features_are_the_same_at_any_thread_count_and_batch(lite0):
    # batches of 16 or more: below that oneDNN picks other kernels at one thread (in NCHW as well)
    x = np.random.default_rng(0).standard_normal((32, 3, 64, 64)).astype(np.float32)
    ext = TorchExtractor(lambda: lite0)
    one = at_threads(1, lambda: np.concatenate([ext(x[:16]), ext(x[16:])]))
    two = at_threads(2, lambda: ext(x))
    np.testing.assert_array_equal(one, two)
    with torch.inference_mode():
        nchw = lite0.forward_features(torch.from_numpy(x)).numpy()
    assert np.abs(two - nchw).max() <= 1e-5 * np.abs(nchw).max()  # float rounding, not a different network
    assert ext.context()["memory_format"] == "channels_last"  # and so never mixed with NCHW-era cache entries
    assert all(p.is_contiguous() for p in lite0.parameters())  # the caller's module (exported later) untouched


def test_a_short_batch_is_padded_so_its_features_do_not_depend_on_the_threads(lite0):
    # the last batch of a run (or of a shard): one process and Ray workers with other thread counts agree bitwise
    x = np.random.default_rng(1).standard_normal((5, 3, 64, 64)).astype(np.float32)
    ext = TorchExtractor(lambda: lite0)
    one, two = at_threads(1, lambda: ext(x)), at_threads(2, lambda: ext(x))
    assert one.shape == (5, lite0.cfg.num_features)
    np.testing.assert_array_equal(one, two)


def test_auto_batch_follows_the_input_size():
    assert auto_batch((64, 64)) == 64
    assert auto_batch((128, 128)) == 64
    assert auto_batch((224, 224)) == 16
    assert auto_batch((512, 512)) == 16


def test_batched_preprocess_equals_one_frame_at_a_time():
    rng = np.random.default_rng(1)
    pre = Preprocess(size=(48, 40))
    frames = [rng.integers(0, 256, (37, 53, 3), dtype=np.uint8) for _ in range(4)]
    np.testing.assert_array_equal(pre(frames), np.concatenate([pre(f[None]) for f in frames]))
    mixed = frames + [rng.integers(0, 256, (20, 90, 3), dtype=np.uint8)]
    np.testing.assert_array_equal(pre(mixed)[-1:], pre(mixed[-1][None]))


def test_prefetching_extract_equals_decode_then_backbone_and_reports_bad_files(tmp_path: Path, image_folder: Path):
    from edgetl.data.folders import load_image_folder

    (image_folder / "red" / "broken.png").write_bytes(b"not a png")
    skipped: list[str] = []
    ds = load_image_folder(image_folder, seed=0, strict=False, warn=skipped.append)
    items = ds.train + ds.val
    pre = Preprocess(size=(32, 32))
    ext = TorchExtractor(lambda: build_backbone("test_tiny"))
    warnings: list[str] = []
    skip = Skipper(False, warnings.append)
    cache = FeatureCache(tmp_path / "c", {"test": 1}, warnings.append).open()
    got = extract(items, ext, pre, skip, cache, batch_size=5, progress=False)
    good = [it for it in items if not it.path.endswith("broken.png")]
    ref = decode_batch(good, pre)
    expected = dict(zip([it.key for it in ref.kept], ext(ref.x), strict=True))
    assert set(got.features) == set(expected)
    for k, v in expected.items():
        np.testing.assert_array_equal(got.features[k], v)
    assert [s["path"] for s in skip.skipped] == [str(image_folder / "red" / "broken.png")]
    assert cache.bad_keys({it.key for it in items})  # remembered by content: never decoded again


def test_softmax_loss_is_the_same_at_any_thread_count_and_matches_autograd():
    rng = np.random.default_rng(2)
    n, d, k = 700, 96, 5  # three blocks of rows, the last one short
    x = rng.random((n, d), dtype=np.float32)
    y = rng.integers(0, k, n)
    w = rng.standard_normal((k, d)).astype(np.float32) * 0.1
    b = rng.standard_normal(k).astype(np.float32)
    weight = class_weights(y, k, True)
    out = {}
    with one_blas_thread():
        for workers in (1, 3):
            gw, gb = np.empty_like(w), np.empty_like(b)
            loss = SoftmaxLoss(y, k, weight, 1e-3, workers)(x, w, b, gw, gb)
            out[workers] = (loss, gw, gb)
    assert out[1][0] == out[3][0]
    np.testing.assert_array_equal(out[1][1], out[3][1])
    np.testing.assert_array_equal(out[1][2], out[3][2])
    tw, tb = torch.from_numpy(w).requires_grad_(), torch.from_numpy(b).requires_grad_()
    ref = torch.nn.functional.cross_entropy(
        torch.from_numpy(x) @ tw.T + tb, torch.from_numpy(y), weight=torch.from_numpy(weight)
    )
    ref = ref + 0.5e-3 * (tw * tw).sum()
    ref.backward()
    assert out[1][0] == pytest.approx(float(ref.detach()), rel=1e-5)
    np.testing.assert_allclose(out[1][1], tw.grad.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out[1][2], tb.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_items_that_vanish_between_listing_and_decoding_are_skipped_not_fatal(tmp_path: Path):
    pre = Preprocess(size=(16, 16))
    decoded = decode_batch([Item(str(tmp_path / "gone.png"), 0, key="k")], pre)
    assert decoded.kept == [] and decoded.x.shape == (0, 3, 16, 16)
    assert decoded.failed[0][1].startswith("unreadable") and decoded.failed[0][2] is False
