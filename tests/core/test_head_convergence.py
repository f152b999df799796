"""The head converges whatever the folder size: 10, 40 and 400 real-photo crops per class, default options.

edgetl's val accuracy is checked against scikit-learn's LogisticRegression fitted on the very same cached
features and split (the probe a practitioner would write by hand): a head that stops early, or an optimizer
schedule that is too short for a small folder, falls below it. The MLP head (AdamW) must converge too, also with
a single epoch asked for (its schedule has a floor in optimizer steps).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgetl.config import TrainCfg
from edgetl.train.pipeline import Pipeline, rows
from edgetl.train.run import run_train

pytest.importorskip("skimage")
from tests.photos import make_photo_folder  # noqa: E402

pytestmark = pytest.mark.slow  # the real ImageNet EfficientNet-Lite0, at 64 px


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("photos")
    return {n: make_photo_folder(root / f"distinct-{n}", n, size=64) for n in (10, 40, 400)}


def _cfg(data: Path, out: Path, cache: Path, **kw) -> TrainCfg:
    return TrainCfg(data=str(data), img_size=64, out=out, cache_dir=cache, progress=False, **kw)


def _sklearn_probe(cfg: TrainCfg) -> float:
    from sklearn.linear_model import LogisticRegression

    p = Pipeline(cfg)
    got = p.features(p.fp32_extractor())  # warm: the features the run was trained on
    xt, yt, _ = rows(p.ds.train, got.features)
    xv, yv, _ = rows(p.ds.val, got.features)
    return float(LogisticRegression(max_iter=2000).fit(xt, yt).score(xv, yv))


@pytest.mark.parametrize("per_class", [10, 40, 400])
def test_linear_head_matches_the_sklearn_probe_at_every_size(folders, tmp_path: Path, per_class: int):
    cfg = _cfg(folders[per_class], tmp_path / "run", tmp_path / "cache")
    record = run_train(cfg)
    probe = _sklearn_probe(_cfg(folders[per_class], tmp_path / "probe", tmp_path / "cache"))
    assert record["head"]["solver"] == "lbfgs"
    assert record["metrics"]["val_acc"] >= probe - 0.01, (record["metrics"]["val_acc"], probe)
    if per_class >= 40:
        assert record["metrics"]["val_acc"] >= 0.95  # six visually distinct classes


@pytest.mark.parametrize("epochs", [1, 30])
def test_mlp_head_converges_on_a_small_folder_whatever_the_epochs(folders, tmp_path: Path, epochs: int):
    record = run_train(_cfg(folders[10], tmp_path / "run", tmp_path / "cache", head="mlp", epochs=epochs))
    assert record["head"]["solver"] == "adamw"
    assert record["metrics"]["val_acc"] >= 0.9, record["metrics"]


def test_class_weights_balance_a_skewed_folder(tmp_path: Path):
    """One class with 4x the images of the others: the balanced loss weights are n / (k * count), float32."""
    from edgetl.train.fit import class_weights

    y = np.array([0] * 40 + [1] * 10 + [2] * 10)
    w = class_weights(y, 3, balanced=True)
    assert w.dtype == np.float32
    np.testing.assert_allclose(w, [60 / 120, 60 / 30, 60 / 30], rtol=1e-6)
    assert class_weights(y, 3, balanced=False) is None
    assert np.isclose(float((w[y]).sum()), len(y))  # weighted count equals the number of images
    assert class_weights(np.array([0, 0, 2]), 3, balanced=True)[1] == 0  # an absent class weighs nothing
