"""`edgetl probe`: is transfer worth it on this data, before any fine-tuning?

Four numbers on the same data, then one verdict:

1. kNN accuracy: stratified `folds`-fold cross-validation over train + val (every usable image is scored once),
   cosine similarity on L2-normalised cached features, majority vote of the k = 10 nearest (a tie goes to the
   tied class holding the nearest neighbour). The folds come from the seed, over the images sorted by content,
   so they do not depend on the split. k is capped at the smallest class of a training fold; 10 keeps the vote
   stable without reaching past the 32 training images per class of a 40-per-class folder.
2. Linear probe: today's head (edgetl.train.fit, L-BFGS logistic regression) on the run's own train/val split,
   through `Pipeline.train_cached`: exactly the val_acc `edgetl train --cache-features` reports for the same
   data, backbone, seed and size (tested).
3. LogME (You et al., ICML 2021): the mean over classes of the log evidence per sample of a Bayesian linear
   regression from the features to the class's one-hot column, alpha and beta maximised by the paper's fixed-
   point updates over the SVD of the features (`logme`). Higher is better; it compares backbones on the same
   data (its scale depends on the data), so the verdict does not read it.
4. From scratch: a small CNN trained on the raw images for a fixed budget (edgetl.train.scratch), scored on the
   same val split as the linear probe.

The verdict, L = linear probe, S = scratch (val accuracies; 1 point = 0.01):

- S >= L - 1 point: "transfer gains little here (the scratch baseline is as good)". A network trained from
  nothing in a minute matches the frozen features: the pretrained backbone buys no accuracy (it may still buy
  training time, or robustness the val split does not measure).
- else L >= 0.98: "frozen is enough". The frozen features are within 2 points of perfect; fine-tuning cannot
  gain more than that on this val split.
- else: "fine-tune the last blocks". Transfer beats scratch by more than a point, but the frozen features leave
  more than 2 points: adapting the top of the backbone is where to look for the rest. A pointer, not a promise:
  on the textures below, `edgetl train --unfreeze 3` with its defaults got 0.875, under the frozen 0.917.

kNN and LogME are reported, not read: kNN (no training) sat below the linear probe on every dataset measured, and
LogME has no scale of its own. Thresholds: 1 point is the repo's own bar for "the same accuracy" (INT8 vs FP32,
edgetl.verdict) and about one image of a 100-image val split; 0.98 leaves 2 such images. Measured (Lite0,
defaults, benchmarks/probe.py, docs/results.md): digits L 0.961, S 0.986 (S ahead by 2.5 points: gains little);
distinct photos, 40 per class, L 1.0, S 1.0 (gains little); textures, 40 per class, L 0.917, S 0.750 (16.7
points behind, L 8 points under 0.98: fine-tune). The digits and textures margins are several times the bar; the
distinct photos are a tie at the ceiling, where one scratch mistake in 48 val images would say "frozen is
enough" instead (true there too). The verdicts stay the same with 500 or 1500 scratch steps.

Features are the FP32 ones `edgetl train --cache-features` caches, read through `Pipeline.features`: a probe
after a train (or a train after a probe) of the same data, backbone and size computes nothing twice.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from edgetl import __version__
from edgetl.config import TrainCfg
from edgetl.errors import UserError
from edgetl.fileio import atomic_write_bytes
from edgetl.machine import cpu_info
from edgetl.train.cache import CacheStats
from edgetl.train.fit import one_blas_thread
from edgetl.train.pipeline import Pipeline

K, FOLDS = 10, 5
SAME = 0.01  # 1 point: scratch this close to the linear probe is "as good"
FROZEN_ENOUGH = 0.98  # linear probe at or above this: frozen is enough
LOGME_MAX_ITER, LOGME_TOL = 1000, 1e-10
PROBE_JSON = "probe.json"
VERDICTS = {
    "little_gain": "transfer gains little here (the scratch baseline is as good)",
    "frozen": "frozen is enough",
    "fine_tune": "fine-tune the last blocks",
}
RULE = (
    f"scratch >= linear - {SAME:g}: little_gain; else linear >= {FROZEN_ENOUGH}: frozen; else fine_tune "
    "(edgetl/train/probe.py)"
)


@dataclass(frozen=True)
class ProbeCfg:
    train: TrainCfg  # data, backbone, weights, img_size, seed, cache_dir, strict, threads, progress
    k: int = K
    folds: int = FOLDS
    scratch_steps: int | None = None  # None: edgetl.train.scratch.STEPS; 0: no scratch baseline
    out: Path | None = None  # writes OUT/probe.json
    json_path: Path | None = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.k < 1:
            raise UserError(f"--k {self.k}: must be at least 1")
        if self.folds < 2:
            raise UserError(f"--folds {self.folds}: must be at least 2")
        if self.scratch_steps is not None and self.scratch_steps < 0:
            raise UserError(f"--scratch-steps {self.scratch_steps}: must be 0 (no scratch baseline) or more")
        for path, option in self.targets():
            if path.is_dir():
                raise UserError(f"{option} {path}: is a folder; name a file")
            if path.exists() and not self.overwrite:
                raise UserError(f"{option} {path}: already exists; choose another file or pass --overwrite")

    def targets(self) -> list[tuple[Path, str]]:
        found = [(Path(self.json_path), "--json")] if self.json_path else []
        return found + ([(Path(self.out) / PROBE_JSON, "--out")] if self.out else [])


# --- kNN -------------------------------------------------------------------------------------------------------


def stratified_folds(y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold index per row: each class's rows in a seeded random order, dealt round-robin over the folds."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), np.int64)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        fold[members[rng.permutation(len(members))]] = np.arange(len(members)) % folds
    return fold


def knn_predict(train_x: np.ndarray, train_y: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    """Majority vote of the k most cosine-similar rows (inputs already L2-normalised); on a tie, the tied class
    of the nearest neighbour. Neighbours are ordered by similarity, then by row: the same answer every run."""
    sims = query @ train_x.T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    labels = train_y[order]  # [q, k], nearest first
    counts = np.zeros((len(query), int(train_y.max()) + 1), np.int64)
    np.add.at(counts, (np.arange(len(query))[:, None], labels), 1)
    tied = counts[np.arange(len(query))[:, None], labels] == counts.max(1, keepdims=True)
    return labels[np.arange(len(query)), tied.argmax(1)]


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_cv(x: np.ndarray, y: np.ndarray, k: int = K, folds: int = FOLDS, seed: int = 0) -> dict:
    """Stratified k-fold kNN accuracy (every row scored once, by a model that never saw it)."""
    x, y = l2_normalise(x), np.asarray(y, np.int64)
    fold = stratified_folds(y, folds, seed)
    k_used = max(1, min(k, *(_smallest(y[fold != f]) for f in range(folds))))
    pred = np.empty_like(y)
    per_fold = []
    for f in range(folds):
        test = fold == f
        if not test.any():
            continue
        pred[test] = knn_predict(x[~test], y[~test], x[test], k_used)
        per_fold.append(float(np.mean(pred[test] == y[test])))
    return {"acc": float(np.mean(pred == y)), "k": k_used, "folds": folds, "fold_acc": per_fold, "metric": "cosine"}


def _smallest(y: np.ndarray) -> int:
    counts = np.bincount(y)
    return int(counts[counts > 0].min())


# --- LogME -----------------------------------------------------------------------------------------------------


def logme_evidence(s2: np.ndarray, z: np.ndarray, y_sq: float, n: int, d: int, alpha: float, beta: float) -> float:
    """Log evidence log p(y | F, alpha, beta) from the SVD of F (singular values squared `s2`, z = U^T y over
    the r = len(s2) left singular vectors, y_sq = |y|^2), LogME eq. (2):
    n/2 log beta + d/2 log alpha - n/2 log 2pi - beta/2 |Fm - y|^2 - alpha/2 |m|^2 - 1/2 log|alpha I + beta F^T F|.
    """
    lam = alpha + beta * s2
    m2 = np.sum((beta * np.sqrt(s2) * z / lam) ** 2)  # |m|^2, m in the right singular basis
    res = np.sum((alpha * z / lam) ** 2) + max(y_sq - float(np.sum(z**2)), 0.0)  # |Fm - y|^2
    logdet = float(np.sum(np.log(lam))) + (d - len(s2)) * np.log(alpha)
    return float(
        n / 2 * np.log(beta) + d / 2 * np.log(alpha) - n / 2 * np.log(2 * np.pi)
        - beta / 2 * res - alpha / 2 * m2 - logdet / 2
    )  # fmt: skip


def logme_fit(s2: np.ndarray, z: np.ndarray, y_sq: float, n: int) -> tuple[float, float, int]:
    """alpha, beta maximising the evidence by the fixed-point updates of LogME's Algorithm 1 (MacKay's):
    gamma = sum beta s2 / (alpha + beta s2), alpha = gamma / |m|^2, beta = (n - gamma) / |Fm - y|^2, from
    alpha = beta = 1, until the evidence changes by less than LOGME_TOL (relative). Where the features explain
    nothing of y the maximum is at alpha -> infinity (w = 0, y is noise): alpha grows, the evidence converges to
    -n/2 (log(2 pi |y|^2 / n) + 1) and the loop stops there."""
    alpha, beta, last = 1.0, 1.0, None
    d = len(s2)  # the evidence's alpha terms outside the span of F cancel: (d - r) log alpha twice, halved
    for it in range(1, LOGME_MAX_ITER + 1):
        lam = alpha + beta * s2
        gamma = float(np.sum(beta * s2 / lam))
        m2 = float(np.sum((beta * np.sqrt(s2) * z / lam) ** 2))
        res = float(np.sum((alpha * z / lam) ** 2)) + max(y_sq - float(np.sum(z**2)), 0.0)
        alpha, beta = gamma / max(m2, 1e-300), (n - gamma) / max(res, 1e-300)
        now = logme_evidence(s2, z, y_sq, n, d, alpha, beta)
        if last is not None and abs(now - last) <= LOGME_TOL * abs(now):
            return alpha, beta, it
        last = now
    return alpha, beta, LOGME_MAX_ITER


def logme(x: np.ndarray, y: np.ndarray) -> dict:
    """LogME of features x [n, d] for integer labels y: mean over classes of the maximised log evidence / n."""
    f = np.asarray(x, np.float64)
    y = np.asarray(y, np.int64)
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    keep = s > s.max(initial=0.0) * max(n, d) * np.finfo(np.float64).eps  # numerical rank, as numpy.linalg
    u, s2 = u[:, keep], s[keep] ** 2
    per_class, iters = [], []
    for c in range(int(y.max()) + 1):
        col = (y == c).astype(np.float64)
        z = u.T @ col
        alpha, beta, it = logme_fit(s2, z, float(col @ col), n)
        per_class.append(logme_evidence(s2, z, float(col @ col), n, d, alpha, beta) / n)
        iters.append(it)
    return {"score": float(np.mean(per_class)), "per_class": per_class, "iterations": max(iters)}


# --- verdict and the whole probe -------------------------------------------------------------------------------


def verdict(linear: float, scratch: float | None) -> str:
    """The verdict's key in VERDICTS (rule in the module docstring; RULE)."""
    if scratch is not None and scratch >= linear - SAME - 1e-9:
        return "little_gain"
    return "frozen" if linear >= FROZEN_ENOUGH else "fine_tune"


def _scratch(p: Pipeline, extracted, steps: int | None) -> dict:
    if p.text:
        return {"skipped": "the data is text; the scratch baseline is an image CNN"}
    if steps == 0:
        return {"skipped": "--scratch-steps 0"}
    from edgetl.train.features import decode
    from edgetl.train.scratch import STEPS, scratch_preprocess, train_scratch

    pre = scratch_preprocess(p.pre)
    kept_t, xt = decode([it for it in p.ds.train if it.key in extracted.features], pre, p.skip)
    kept_v, xv = decode([it for it in p.ds.val if it.key in extracted.features], pre, p.skip)
    yt, yv = np.array([it.label for it in kept_t]), np.array([it.label for it in kept_v])
    steps = STEPS if steps is None else steps
    res = train_scratch(xt, yt, xv, yv, len(p.ds.classes), p.cfg.seed, steps, p.cfg.threads or 1)
    return res.to_dict()


def measure(p: Pipeline, cfg: ProbeCfg) -> tuple[dict, dict]:
    """(numbers, timing) of the four measurements on the pipeline's cached FP32 features."""
    timing = {}
    extracted = p.features(p.fp32_extractor())
    keys = sorted({it.key: it.label for it in p.ds.train + p.ds.val if it.key in extracted.features}.items())
    if len(keys) < cfg.folds or len({lab for _, lab in keys}) < 2:
        raise UserError(f"--data {p.ds.source}: {len(keys)} usable images; the probe needs at least {cfg.folds}")
    x_all = np.stack([extracted.features[k] for k, _ in keys])
    y_all = np.array([lab for _, lab in keys])
    t = time.perf_counter()
    with one_blas_thread():  # multi-threaded BLAS on a busy 2-core machine: SVD 0.8 s -> 23 s (measured)
        knn = knn_cv(x_all, y_all, cfg.k, cfg.folds, p.cfg.seed)
        timing["knn_s"] = time.perf_counter() - t
        res, extra = p.train_cached(extracted)
        timing["linear_s"] = extra["train_s"]
        t = time.perf_counter()
        lm = logme(x_all, y_all)
        timing["logme_s"] = time.perf_counter() - t
    t = time.perf_counter()
    scratch = _scratch(p, extracted, cfg.scratch_steps)
    timing["scratch_s"] = time.perf_counter() - t
    linear = {"val_acc": res.val_acc, "solver": res.solver, "iterations": res.epochs_run}
    return {"knn": knn, "linear": linear, "logme": lm, "scratch": scratch, "images": len(keys)}, timing


def record(p: Pipeline, cfg: ProbeCfg, got: dict, timing: dict) -> dict:
    key = verdict(got["linear"]["val_acc"], got["scratch"].get("val_acc"))
    images = got.pop("images")
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "edgetl_version": __version__,
        "config": {**p.cfg.to_dict(), "k": cfg.k, "folds": cfg.folds, "scratch_steps": cfg.scratch_steps},
        "data": {
            **{k: v for k, v in p.ds.summary().items() if k != "audit"},
            **p.used,
            "images": images,
            "skipped": p.skip.skipped,
        },
        "classes": p.ds.classes,
        "backbone": {"name": p.bcfg.name, "weights_sha256": p.bcfg.weights_sha256, "num_features": p.bcfg.num_features},
        "preprocess": p.pre.to_dict(),
        **got,
        "verdict": {"key": key, "line": VERDICTS[key], "rule": RULE},
        "cache": {
            "dir": str(p.cache_dir),
            "keys": [c.key for c in p.caches],
            **CacheStats.total([c.stats for c in p.caches]).to_dict(),
        },
        "timing": {**p.timing, **timing, "total_s": time.perf_counter() - p.t0},
        "cpu": cpu_info(),
    }


def write_json(path: Path, doc: dict, option: str) -> None:
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(Path(path), (json.dumps(doc, indent=2) + "\n").encode())
    except OSError as e:
        raise UserError(f"{option} {path}: cannot write ({e.strerror or e}); choose a writable path") from None


def run_probe(cfg: ProbeCfg) -> dict:
    """The whole `edgetl probe` job; returns probe.json's content (also written to --json / --out)."""
    train = replace(cfg.train, out=None, overwrite=False, cache_features=True, head="linear", solver="auto")
    p = Pipeline(train)
    got, timing = measure(p, cfg)
    doc = record(p, cfg, got, timing)
    for path, option in cfg.targets():
        write_json(path, doc, option)
    return doc


def print_probe_summary(r: dict) -> None:
    """The numbers as a small table (rich, as edgetl.train.summary), then the verdict line."""
    from rich.table import Table

    from edgetl.train.summary import out

    d, tm = r["data"], r["timing"]
    t = Table(title=f"edgetl probe  ·  {r['backbone']['name']} on {d['source']}", title_justify="left")
    for col, justify in (("measure", "left"), ("accuracy", "right"), ("what", "left"), ("time", "right")):
        t.add_column(col, justify=justify)
    knn, lin, lm, sc = r["knn"], r["linear"], r["logme"], r["scratch"]
    t.add_row(
        "kNN", f"{knn['acc']:.4f}", f"k={knn['k']}, cosine, {knn['folds']}-fold over {d['images']}", _s(tm["knn_s"])
    )
    t.add_row(
        "linear probe", f"{lin['val_acc']:.4f}", f"L-BFGS head, {d['train']} train / {d['val']} val", _s(tm["linear_s"])
    )
    t.add_row("LogME", f"{lm['score']:.4f}", "log evidence per sample, mean of classes", _s(tm["logme_s"]))
    if "val_acc" in sc:
        what = f"CNN {sc['params'] / 1000:.0f}k params, {sc['size']} px, {sc['steps']} steps"
        t.add_row("from scratch", f"{sc['val_acc']:.4f}", what, _s(tm["scratch_s"]))
    else:
        t.add_row("from scratch", "-", f"not run: {sc['skipped']}", "")
    t.caption = f"features: {tm['extract_s']:.1f} s ({r['cache']['hits']} cached, {r['cache']['misses']} computed)"
    out.print(t)
    out.print(f"[bold]verdict:[/] {r['verdict']['line']}  (total {tm['total_s']:.1f} s)")
    if r["verdict"]["key"] == "fine_tune":
        out.print("next: edgetl train --unfreeze N (the last N blocks and the head; docs/usage.md)")


def _s(seconds: float) -> str:
    return f"{seconds:.1f} s"
