"""`edgetl probe`: kNN, linear probe, LogME and a from-scratch CNN on the same data, and the verdict they give.

LogME is checked against answers known without it: the log-evidence formula evaluated directly (matrix inverse
and log-determinant, no SVD) at the converged alpha and beta, the evidence being at a maximum there, and features
that determine the labels scoring above random ones. The linear probe must equal what `edgetl train` reports.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgetl.config import TrainCfg
from edgetl.train import probe
from edgetl.train.probe import ProbeCfg, knn_cv, knn_predict, logme, logme_evidence, logme_fit, run_probe
from tests.conftest import run_cli

# --- LogME -----------------------------------------------------------------------------------------------------


def direct_evidence(f: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """LogME eq. (2) as written: A = alpha I + beta F^T F, m = beta A^-1 F^T y, log|A| by slogdet."""
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ y)
    res = np.sum((f @ m - y) ** 2)
    return float(
        n / 2 * np.log(beta) + d / 2 * np.log(alpha) - n / 2 * np.log(2 * np.pi)
        - beta / 2 * res - alpha / 2 * m @ m - np.linalg.slogdet(a)[1] / 2
    )  # fmt: skip


def svd_parts(f: np.ndarray, y: np.ndarray):
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    return s**2, u.T @ y, float(y @ y)


@pytest.mark.parametrize("n, d", [(80, 12), (30, 50)])  # more samples than features, and fewer
def test_logme_evidence_equals_the_formula_evaluated_directly_and_is_maximal(n: int, d: int):
    rng = np.random.default_rng(1)
    latent = rng.standard_normal((n, 4))
    f = latent @ rng.standard_normal((4, d)) + 0.1 * rng.standard_normal((n, d))
    y = (latent[:, 0] + 0.3 * rng.standard_normal(n) > 0).astype(np.float64)
    s2, z, y_sq = svd_parts(f, y)
    alpha, beta, iters = logme_fit(s2, z, y_sq, n)
    assert iters < 50  # converged, to an interior maximum
    best = direct_evidence(f, y, alpha, beta)
    assert logme_evidence(s2, z, y_sq, n, d, alpha, beta) == pytest.approx(best, rel=1e-10)
    assert logme_evidence(s2, z, y_sq, n, d, 0.3, 2.0) == pytest.approx(direct_evidence(f, y, 0.3, 2.0), rel=1e-10)
    for da, db in [(1.01, 1), (0.99, 1), (1, 1.01), (1, 0.99), (1.01, 1.01), (0.99, 0.99)]:
        assert direct_evidence(f, y, alpha * da, beta * db) < best  # a fixed point of the updates is the maximum
    assert best > noise_only(y)  # the features explain y better than noise does


def noise_only(y: np.ndarray) -> float:
    """The evidence where w = 0 (alpha -> infinity) and beta is at its best, n / |y|^2: y is pure noise."""
    n = len(y)
    return float(-n / 2 * (np.log(2 * np.pi * (y @ y) / n) + 1))


def test_logme_of_features_that_explain_nothing_is_the_noise_only_evidence():
    """More features than samples, random, labels unrelated: the maximum is at alpha -> infinity, where the
    evidence is known in closed form; the iteration must stop there, not run to overflow."""
    rng = np.random.default_rng(1)
    f = rng.standard_normal((30, 50))
    y = (rng.standard_normal(30) > 0).astype(np.float64)
    s2, z, y_sq = svd_parts(f, y)
    alpha, beta, iters = logme_fit(s2, z, y_sq, 30)
    assert iters < probe.LOGME_MAX_ITER and alpha > 1e6 and beta == pytest.approx(30 / y_sq, rel=1e-6)
    assert logme_evidence(s2, z, y_sq, 30, 50, alpha, beta) == pytest.approx(noise_only(y), rel=1e-8)


def test_logme_ranks_features_that_determine_the_labels_above_random_ones():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 50)
    informative = np.eye(4)[y] @ rng.standard_normal((4, 32)) + 0.3 * rng.standard_normal((200, 32))
    noise = rng.standard_normal((200, 32))
    good, bad = logme(informative, y), logme(noise, y)
    assert good["score"] > bad["score"] + 0.5
    assert len(good["per_class"]) == 4 and good["score"] == pytest.approx(np.mean(good["per_class"]))
    # the score is the mean of the per-class evidences, each the direct formula at its own optimum / n
    col = (y == 2).astype(np.float64)
    alpha, beta, _ = logme_fit(*svd_parts(informative, col), 200)
    assert good["per_class"][2] == pytest.approx(direct_evidence(informative, col, alpha, beta) / 200, rel=1e-9)


# --- kNN -------------------------------------------------------------------------------------------------------


def test_knn_votes_by_majority_and_breaks_ties_by_the_nearest_neighbour():
    train = probe.l2_normalise(np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.6, 0.4]], np.float32))
    labels = np.array([0, 0, 1, 1, 2])
    query = probe.l2_normalise(np.array([[1, 0.05], [0.05, 1], [0.5, 0.5]], np.float32))
    assert knn_predict(train, labels, query, 3).tolist() == [0, 1, 2]  # [0.5, 0.5]: 2 first, then 0 and 1 once each
    assert knn_predict(train, labels, query, 1).tolist() == [0, 1, 2]


def test_knn_cv_is_deterministic_stratified_and_can_fail():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    clusters = np.eye(3)[y] * 3 + rng.standard_normal((120, 3)) * 0.3
    a, b = knn_cv(clusters, y, seed=4), knn_cv(clusters, y, seed=4)
    assert a == b and a["acc"] == 1.0 and a["k"] == 10 and len(a["fold_acc"]) == 5
    shuffled = knn_cv(clusters, rng.permutation(y), seed=4)  # labels unrelated to the features: near chance
    assert shuffled["acc"] < 0.6
    folds = probe.stratified_folds(y, 5, seed=4)
    assert all(np.bincount(folds[y == c]).tolist() == [8] * 5 for c in range(3))
    assert not np.array_equal(folds, probe.stratified_folds(y, 5, seed=5))
    small = np.r_[0:6, 40:46, 80:86]  # 6 per class: a class keeps 4 or 5 in each training fold
    assert knn_cv(clusters[small], y[small])["k"] == 4


# --- the verdict -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "linear, scratch, key",
    [
        (0.961, 0.986, "little_gain"),  # digits (measured): scratch beats the frozen features
        (0.95, 0.9405, "little_gain"),  # within 1 point
        (1.0, 1.0, "little_gain"),
        (1.0, 0.9, "frozen"),
        (0.98, 0.5, "frozen"),
        (0.97, 0.5, "fine_tune"),
        (0.90, 0.88, "fine_tune"),
        (0.90, None, "fine_tune"),  # no scratch baseline: never "gains little"
    ],
)
def test_the_verdict_rule(linear: float, scratch: float | None, key: str):
    assert probe.verdict(linear, scratch) == key


# --- the whole probe on real features --------------------------------------------------------------------------


def tiny(data: Path, **kw) -> TrainCfg:
    return TrainCfg(data=str(data), backbone="test_tiny", progress=False, extract_batch=8, **kw)


def test_linear_probe_equals_train_val_acc_and_shares_its_cache(image_folder: Path, tmp_path: Path):
    """A probe after `edgetl train --cache-features` reads the run's own cache entry (no miss) and its linear
    probe is the run's val_acc; kNN and the scratch CNN run on the same real images."""
    from edgetl.train.run import run_train

    run = run_train(tiny(image_folder, out=tmp_path / "run", seed=3))
    got = run_probe(ProbeCfg(tiny(image_folder, seed=3), scratch_steps=30))
    assert got["linear"]["val_acc"] == run["metrics"]["val_acc"]
    assert got["cache"]["keys"] == run["cache"]["keys"]
    assert (got["cache"]["hits"], got["cache"]["misses"]) == (36, 0)
    assert got["data"]["images"] == 36 and (got["data"]["train"], got["data"]["val"]) == (
        run["data"]["train"],
        run["data"]["val"],
    )
    assert 0 <= got["knn"]["acc"] <= 1 and got["scratch"]["steps"] == 30 and got["scratch"]["size"] == 32
    assert got["verdict"]["key"] == probe.verdict(got["linear"]["val_acc"], got["scratch"]["val_acc"])
    again = run_probe(ProbeCfg(tiny(image_folder, seed=3), scratch_steps=30))
    for part in ("knn", "linear", "logme"):
        assert again[part] == got[part]
    assert again["scratch"]["val_acc"] == got["scratch"]["val_acc"]
    assert again["scratch"]["final_loss"] == got["scratch"]["final_loss"]  # the same CNN, step for step


def test_cli_prints_the_table_and_writes_the_same_json_twice(image_folder: Path, tmp_path: Path, capsys):
    argv = ["probe", "--data", image_folder, "--backbone", "test_tiny", "--scratch-steps", "20", "--no-progress"]
    code, out, err = run_cli(capsys, *argv, "--json", tmp_path / "p.json", "--out", tmp_path / "run")
    assert code == 0, err
    for row in ("kNN", "linear probe", "LogME", "from scratch", "verdict:"):
        assert row in out
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc == json.loads((tmp_path / "run" / "probe.json").read_text())
    assert f"verdict: {doc['verdict']['line']}" in " ".join(out.split())  # rich wraps long lines
    assert doc["verdict"]["line"] == probe.VERDICTS[doc["verdict"]["key"]]
    assert doc["config"]["backbone"] == "test_tiny" and doc["classes"] == ["blue", "green", "red"]
    assert {"extract_s", "knn_s", "linear_s", "logme_s", "scratch_s", "total_s"} <= set(doc["timing"])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--k", "0"], "error: --k 0: must be at least 1"),
        (["--folds", "1"], "error: --folds 1: must be at least 2"),
        (["--scratch-steps", "-1"], "error: --scratch-steps -1: must be 0 (no scratch baseline) or more"),
        (["--json", "EXISTING"], "already exists; choose another file or pass --overwrite"),
        (["--img-size", "2"], "error: --img-size: 2x2 is out of range"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(image_folder: Path, tmp_path: Path, capsys, extra, message):
    existing = tmp_path / "existing.json"
    existing.write_text("{}")
    extra = [str(existing) if a == "EXISTING" else a for a in extra]
    code, _, err = run_cli(capsys, "probe", "--data", image_folder, "--backbone", "test_tiny", "--no-progress", *extra)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err
    assert existing.read_text() == "{}"


def test_missing_data_names_the_option(tmp_path: Path, capsys):
    code, _, err = run_cli(capsys, "probe", "--data", tmp_path / "nope", "--no-progress")
    assert code == 2 and err.startswith("error: --data") and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_lite0_on_real_textures_says_fine_tune(tmp_path: Path, capsys):
    """The real backbone on a small real-photo folder (12 grey texture classes, 20 per class, 64 px), end to end
    through the CLI: the frozen features beat a CNN from scratch but stay below the ceiling, so the verdict is
    to fine-tune. The scratch budget is cut to 100 steps for time; at the default 1000 steps and 40 per class the
    verdict is the same (scratch 0.75 vs linear 0.9: benchmarks/probe.py)."""
    pytest.importorskip("skimage")
    from tests.photos import make_photo_folder

    root = make_photo_folder(tmp_path / "textures", per_class=20, kind="textures")
    argv = ["probe", "--data", root, "--img-size", "64", "--scratch-steps", "100", "--no-progress"]
    code, out, err = run_cli(capsys, *argv, "--json", tmp_path / "probe.json")
    assert code == 0, err
    got = json.loads((tmp_path / "probe.json").read_text())
    lin, sc, knn = got["linear"]["val_acc"], got["scratch"]["val_acc"], got["knn"]["acc"]
    assert 0.7 < lin < probe.FROZEN_ENOUGH and sc < lin - 0.05 and knn > 0.7  # measured 0.833, 0.646, 0.842
    assert got["verdict"]["key"] == "fine_tune" and "verdict: fine-tune the last blocks" in out
    noise = np.random.default_rng(0).standard_normal((240, got["backbone"]["num_features"]))
    assert got["logme"]["score"] > logme(noise, np.repeat(np.arange(12), 20))["score"]
