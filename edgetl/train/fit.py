"""Head training on (cached) backbone features: a convex solver for the linear head, AdamW for the MLP.

The linear head is multinomial logistic regression, fitted to convergence with full-batch L-BFGS (what
scikit-learn's LogisticRegression does): no learning rate or epoch count to get wrong, the same optimum on 10
or 10,000 images per class, and bit-identical results from the same features. It needs the features in memory,
so it is the default only with the feature cache; with the backbone in the loop (`--no-cache-features`) the
linear head is trained by AdamW, an epoch at a time.

The MLP head uses AdamW with a cosine schedule, label smoothing and early stopping on validation accuracy;
its schedule is counted in optimizer steps (at least `MIN_STEPS` whatever `--epochs` says, so a folder of 50
images still gets a converged head). Both solvers weight the loss by inverse class frequency (`balanced`).

The same code runs on cached features (an index into a NumPy array) or with the frozen backbone in the loop
(`--no-cache-features`: the baseline the cache has to beat); only the `FeatureSource` differs. An explicit
`--solver lbfgs --no-cache-features` runs the backbone at every solver evaluation (one pass per evaluation).

The L-BFGS path is NumPy only (edgetl.train.lbfgs, a port of torch.optim.LBFGS): a warm run that fits the
default linear head never imports torch here; AdamW imports it when it runs.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from edgetl.models.heads import LinearHead, head_logits
from edgetl.progress import bar
from edgetl.train.lbfgs import minimize

if TYPE_CHECKING:
    import torch
    from torch import nn

MIN_STEPS = 300  # AdamW steps at the least: 30 epochs of a 200-image folder are 90 steps, far from converged
LBFGS_C = 1.0  # inverse L2 strength, scikit-learn's default: mean CE + |W|^2 / (2 C n)
LBFGS_MAX_ITER = 500
LBFGS_TOL = 1e-5  # max |gradient| at which the solver stops: converged (1e-4 left up to 0.5 pt on digits)
LBFGS_BLOCK = 256  # rows per block of the loss and gradient (about 1.3 MB of Lite0 features: stays in L2)
LBFGS_HISTORY = (
    50  # correction pairs kept: 105 evaluations to converge on digits vs 154 with 20 (torch default 100: 112)
)


@dataclass
class FeatureSource:
    """`get(idx)` returns float32 features [len(idx), D] of those training rows (idx: a NumPy index array);
    `val()` all validation features. NumPy arrays both: the L-BFGS head never needs torch."""

    get: Callable[[np.ndarray], np.ndarray]
    val: Callable[[], np.ndarray]
    n_train: int
    cached: bool = False  # features are in memory: a full-batch solver may keep them between evaluations
    threads: int | None = None  # torch threads while training with AdamW; None: leave the process setting alone


def cached_source(train_x: np.ndarray, val_x: np.ndarray) -> FeatureSource:
    # One thread: a head's matmuls are too small to split, and two threads on a busy 2-core machine made
    # training 2-6x slower (measured); one thread also keeps the float sums in one order: same head every run.
    return FeatureSource(lambda idx: train_x[idx], lambda: val_x, len(train_x), cached=True, threads=1)


def backbone_source(extractor, train_x: np.ndarray, val_x: np.ndarray, batch: int = 64) -> FeatureSource:
    """Runs the frozen backbone (any Extractor) on preprocessed images every time features are asked for."""

    def run(x: np.ndarray) -> np.ndarray:
        return np.concatenate([extractor(x[i : i + batch]) for i in range(0, len(x), batch)])

    return FeatureSource(get=lambda idx: run(train_x[idx]), val=lambda: run(val_x), n_train=len(train_x))


@dataclass
class HeadResult:
    head: LinearHead | nn.Module  # L-BFGS: a NumPy LinearHead; AdamW: a torch module (eval mode)
    val_acc: float
    solver: str
    best_epoch: int | None  # AdamW: the epoch whose weights were kept; L-BFGS: None (one converged fit)
    epochs_run: int  # AdamW: epochs run; L-BFGS: solver iterations
    history: list[dict] = field(default_factory=list)


def fit_summary(res: HeadResult) -> dict:
    """What run.json keeps of a fit: L-BFGS makes hundreds of loss evaluations (one row each would bury the
    record), so it keeps their count and the first and final loss; AdamW keeps its per-epoch rows (at most
    --epochs)."""
    out = {"solver": res.solver, "iterations": res.epochs_run}
    if res.history:
        out.update(first_loss=res.history[0]["loss"], final_loss=res.history[-1]["loss"])
    if res.solver == "lbfgs":
        out["evaluations"] = len(res.history)
    else:
        out["epochs"] = res.history
    return out


def solver_for(cfg) -> str:
    if getattr(cfg, "solver", "auto") != "auto":
        return cfg.solver
    return "lbfgs" if cfg.head == "linear" and getattr(cfg, "cache_features", True) else "adamw"


def class_weights(y: np.ndarray, num_classes: int, balanced: bool) -> np.ndarray | None:
    """n / (k * count) per class, float32 (scikit-learn's 'balanced'); None when off. Rounded as torch did it
    (`n / tensor` is `tensor.reciprocal() * n`), so heads stay bit-identical to those trained before."""
    if not balanced:
        return None
    y = np.asarray(y)
    counts = np.bincount(y, minlength=num_classes).astype(np.float32)
    present = counts > 0
    w = np.zeros(num_classes, np.float32)
    w[present] = np.float32(1) / (np.float32(np.count_nonzero(present)) * counts[present]) * np.float32(len(y))
    return w


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy, as float32 (torch's `.float().mean()`, the value run.json has always held)."""
    if len(y) == 0:
        return float("nan")
    return float(np.float32(np.count_nonzero(logits.argmax(1) == y)) / np.float32(len(y)))


def fit_head(
    source: FeatureSource,
    y_train: np.ndarray,
    y_val: np.ndarray,
    num_features: int,
    num_classes: int,
    cfg,
    progress: bool = True,
) -> HeadResult:
    """cfg: any object with head, solver, epochs, batch_size, lr, weight_decay, label_smoothing, patience,
    balanced, seed. The L-BFGS solver runs in NumPy alone (no torch import); AdamW imports torch."""
    yt, yv = np.asarray(y_train, np.int64), np.asarray(y_val, np.int64)
    if solver_for(cfg) == "lbfgs":
        return _fit_lbfgs(source, yt, yv, num_features, num_classes, cfg, progress)
    return _fit_adamw(source, yt, yv, num_features, num_classes, cfg, progress)


class SoftmaxLoss:
    """Class-weighted mean cross-entropy of `x @ W.T + b` plus `lam/2 |W|^2`, and its gradient, in NumPy.

    Computed over fixed blocks of LBFGS_BLOCK rows, one BLAS thread per block, blocks spread over a few
    threads and summed in block order: the result is bit-identical whatever the number of threads (tested),
    and faster than torch autograd on one thread (torch's single-thread GEMM is slow for a 10-column output)."""

    def __init__(self, y: np.ndarray, num_classes: int, weight: np.ndarray | None, lam: float, workers: int):
        w = np.ones(num_classes, np.float32) if weight is None else np.asarray(weight, np.float32)
        sw = w[y]
        self.sw = sw / sw.sum()
        self.y, self.lam = y, np.float32(lam)
        self.onehot = np.eye(num_classes, dtype=np.float32)[y]
        self.blocks = [slice(i, min(i + LBFGS_BLOCK, len(y))) for i in range(0, len(y), LBFGS_BLOCK)]
        self.pool = ThreadPoolExecutor(max(1, workers))

    def _block(self, x: np.ndarray, sl: slice, wt: np.ndarray, b: np.ndarray):
        xs = x[sl]
        z = xs @ wt
        z += b
        m = z.max(1, keepdims=True)
        e = np.exp(z - m)
        s = e.sum(1, keepdims=True)
        nll = m[:, 0] + np.log(s[:, 0]) - z[np.arange(len(z)), self.y[sl]]
        g = e / s - self.onehot[sl]
        g *= self.sw[sl, None]
        return float(np.dot(self.sw[sl], nll)), g.T @ xs, g.sum(0)

    def __call__(self, x: np.ndarray, w: np.ndarray, b: np.ndarray, gw: np.ndarray, gb: np.ndarray) -> float:
        """Loss at (w, b); the gradient is written into gw, gb. Call it inside `one_blas_thread()`."""
        wt = np.ascontiguousarray(w.T)  # [D, k]: OpenBLAS is ~1.5x slower on the transposed view (measured)
        parts = list(self.pool.map(lambda sl: self._block(x, sl, wt, b), self.blocks))
        np.multiply(w, self.lam, out=gw)
        gb[:] = 0
        loss = 0.5 * float(self.lam) * float(np.dot(w.ravel(), w.ravel()))
        for part_loss, part_gw, part_gb in parts:  # block order: the same sums at any thread count
            loss += part_loss
            np.add(gw, part_gw, out=gw)
            np.add(gb, part_gb, out=gb)
        return loss


def one_blas_thread():
    from threadpoolctl import threadpool_limits  # entering it costs ~ms: once per fit, not per evaluation

    return threadpool_limits(1)


def _workers() -> int:
    return min(4, len(os.sched_getaffinity(0)))


def _fit_lbfgs(source: FeatureSource, yt, yv, num_features: int, num_classes: int, cfg, progress) -> HeadResult:
    """Full-batch multinomial logistic regression on the raw features (bias not penalized), as scikit-learn.

    Raw, not standardized: standardizing magnifies near-constant feature dimensions, where INT8 rounding noise
    is most of the signal, and cost 0.5-1 pt of INT8/FP32 agreement on digits (measured). edgetl.train.lbfgs
    (torch.optim.LBFGS ported to NumPy) drives the parameters, W and b in one flat vector; the loss and its
    gradient come from SoftmaxLoss."""
    if cfg.head != "linear":
        raise ValueError("the L-BFGS solver fits a linear head only; use solver='adamw' for an MLP")
    everything = np.arange(source.n_train)
    x = np.asarray(source.get(everything), np.float32) if source.cached else None  # no cache: see closure
    k, nw = num_classes, num_classes * num_features
    lam = 1.0 / (LBFGS_C * max(len(yt), 1))
    loss_fn = SoftmaxLoss(yt, num_classes, class_weights(yt, num_classes, cfg.balanced), lam, _workers())
    history: list[dict] = []

    def closure(flat: np.ndarray) -> tuple[float, np.ndarray]:
        feats = x if x is not None else np.asarray(source.get(everything), np.float32)  # no cache: the backbone
        grad = np.empty_like(flat)
        w, gw = flat[:nw].reshape(k, num_features), grad[:nw].reshape(k, num_features)
        loss = loss_fn(feats, w, flat[nw:], gw, grad[nw:])
        history.append({"eval": len(history) + 1, "loss": loss})
        return loss, grad

    try:
        with bar("train head (L-BFGS)", None, progress), one_blas_thread():
            got = minimize(
                closure,
                np.zeros(nw + k, np.float32),
                lr=1.0,
                max_iter=LBFGS_MAX_ITER,
                history_size=LBFGS_HISTORY,
                tolerance_grad=LBFGS_TOL,
                tolerance_change=1e-9,
                line_search_fn="strong_wolfe",
            )
    finally:
        loss_fn.pool.shutdown()
    head = LinearHead(got.x[:nw].reshape(k, num_features).copy(), got.x[nw:].copy())
    return HeadResult(head, accuracy(head(source.val()), yv), "lbfgs", None, got.n_iter, history)


def _epoch_order(n: int, gen: torch.Generator) -> torch.Tensor:
    import torch

    return torch.randperm(n, generator=gen)


def _fit_adamw(source: FeatureSource, yt, yv, num_features: int, num_classes: int, cfg, progress) -> HeadResult:
    """AdamW (torch, imported here) with the source's torch thread count and the run's seed."""
    import torch

    before = torch.get_num_threads()
    if source.threads:
        torch.set_num_threads(source.threads)
    try:
        torch.manual_seed(cfg.seed)
        return _adamw(source, torch.as_tensor(yt, dtype=torch.long), yv, num_features, num_classes, cfg, progress)
    finally:
        torch.set_num_threads(before)


def _adamw(source: FeatureSource, yt, yv, num_features: int, num_classes: int, cfg, progress) -> HeadResult:
    """AdamW, cosine schedule over at least MIN_STEPS steps; each of `--epochs` rounds ends with a validation.

    A round is one epoch, or several when the data is small (so that epochs x rounds >= MIN_STEPS); patience
    counts rounds. The weights of the best round on validation are kept.
    """
    import torch
    from torch import nn

    from edgetl.models.heads import build_head

    gen = torch.Generator().manual_seed(cfg.seed)
    head = build_head(cfg.head, num_features, num_classes)
    steps_per_epoch = math.ceil(len(yt) / cfg.batch_size)
    per_round = max(1, math.ceil(MIN_STEPS / (cfg.epochs * steps_per_epoch)))
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * per_round * steps_per_epoch)
    weight = class_weights(yt.numpy(), num_classes, cfg.balanced)
    weight = None if weight is None else torch.from_numpy(weight)
    loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
    best = (-1.0, 0, copy.deepcopy(head.state_dict()))
    history, since_best = [], 0
    with bar("train head", cfg.epochs, progress) as b:
        for epoch in range(1, cfg.epochs + 1):
            head.train()
            total, seen = 0.0, 0
            for _ in range(per_round):
                order = _epoch_order(len(yt), gen)
                for i in range(0, len(order), cfg.batch_size):
                    idx = order[i : i + cfg.batch_size]
                    loss = loss_fn(head(torch.from_numpy(source.get(idx.numpy()))), yt[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    total, seen = total + float(loss.detach()) * len(idx), seen + len(idx)
            head.eval()
            acc = accuracy(head_logits(head, source.val()), yv)
            history.append({"epoch": epoch * per_round, "loss": total / max(seen, 1), "val_acc": acc})
            b.update(status=f"val acc {acc:.3f}")
            b.advance()
            if acc > best[0]:
                best, since_best = (acc, epoch * per_round, copy.deepcopy(head.state_dict())), 0
            else:
                since_best += 1
                if cfg.patience and since_best >= cfg.patience:
                    break
    head.load_state_dict(best[2])
    head.eval()
    return HeadResult(head, best[0], "adamw", best[1], len(history) * per_round, history)
