"""Head training on (cached) backbone features: a convex solver for the linear head, AdamW for the MLP.

The linear head is multinomial logistic regression, fitted to convergence with full-batch L-BFGS (what
scikit-learn's LogisticRegression does): no learning rate or epoch count to get wrong, the same optimum on 10
or 10,000 images per class, and bit-identical results from the same features. It needs the features in memory,
so it is the default only with the feature cache; with the backbone in the loop (`--no-cache-features`) the
linear head is trained by AdamW, an epoch at a time.

The MLP head uses AdamW with a cosine schedule, label smoothing and early stopping on validation accuracy;
its schedule is counted in optimizer steps (at least `MIN_STEPS` whatever `--epochs` says, so a folder of 50
images still gets a converged head). Both solvers weight the loss by inverse class frequency (`balanced`).

The same code runs on cached features (an index into a tensor) or with the frozen backbone in the loop
(`--no-cache-features`: the baseline the cache has to beat); only the `FeatureSource` differs. An explicit
`--solver lbfgs --no-cache-features` runs the backbone at every solver evaluation (one pass per evaluation).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from edgetl.heads import build_head
from edgetl.progress import bar

MIN_STEPS = 300  # AdamW steps at the least: 30 epochs of a 200-image folder are 90 steps, far from converged
LBFGS_C = 1.0  # inverse L2 strength, scikit-learn's default: mean CE + |W|^2 / (2 C n)
LBFGS_MAX_ITER = 500
LBFGS_TOL = 1e-5  # max |gradient| at which the solver stops: converged (1e-4 left up to 0.5 pt on digits)


@dataclass
class FeatureSource:
    """`get(idx)` returns features [len(idx), D] for those training rows; `val()` all validation features."""

    get: Callable[[torch.Tensor], torch.Tensor]
    val: Callable[[], torch.Tensor]
    n_train: int
    cached: bool = False  # features are in memory: a full-batch solver may keep them between evaluations
    threads: int | None = None  # torch threads while training; None: leave the process setting alone


def cached_source(train_x: torch.Tensor, val_x: torch.Tensor) -> FeatureSource:
    # One thread: a head's matmuls are too small to split, and two threads on a busy 2-core machine made
    # training 2-6x slower (measured); one thread also keeps the float sums in one order: same head every run.
    return FeatureSource(lambda idx: train_x[idx], lambda: val_x, len(train_x), cached=True, threads=1)


def backbone_source(extractor, train_x: np.ndarray, val_x: np.ndarray, batch: int = 64) -> FeatureSource:
    """Runs the frozen backbone (any Extractor) on preprocessed images every time features are asked for."""

    def run(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.concatenate([extractor(x[i : i + batch]) for i in range(0, len(x), batch)]))

    return FeatureSource(get=lambda idx: run(train_x[idx.numpy()]), val=lambda: run(val_x), n_train=len(train_x))


@dataclass
class HeadResult:
    head: nn.Module
    val_acc: float
    solver: str
    best_epoch: int | None  # AdamW: the epoch whose weights were kept; L-BFGS: None (one converged fit)
    epochs_run: int  # AdamW: epochs run; L-BFGS: solver iterations
    history: list[dict] = field(default_factory=list)


def solver_for(cfg) -> str:
    if getattr(cfg, "solver", "auto") != "auto":
        return cfg.solver
    return "lbfgs" if cfg.head == "linear" and getattr(cfg, "cache_features", True) else "adamw"


def class_weights(y: torch.Tensor, num_classes: int, balanced: bool) -> torch.Tensor | None:
    """n / (k * count) per class (scikit-learn's 'balanced'); None when off."""
    if not balanced:
        return None
    counts = torch.bincount(y, minlength=num_classes).float()
    present = counts > 0
    w = torch.zeros(num_classes)
    w[present] = len(y) / (int(present.sum()) * counts[present])
    return w


def accuracy(head: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    if len(y) == 0:
        return float("nan")
    with torch.inference_mode():
        return float((head(x).argmax(1) == y).float().mean())


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
    balanced, seed."""
    before = torch.get_num_threads()
    if source.threads:
        torch.set_num_threads(source.threads)
    try:
        torch.manual_seed(cfg.seed)
        yt, yv = torch.as_tensor(y_train, dtype=torch.long), torch.as_tensor(y_val, dtype=torch.long)
        solver = solver_for(cfg)
        if solver == "lbfgs":
            return _fit_lbfgs(source, yt, yv, num_features, num_classes, cfg, progress)
        return _fit_adamw(source, yt, yv, num_features, num_classes, cfg, progress)
    finally:
        torch.set_num_threads(before)


def _fit_lbfgs(source: FeatureSource, yt, yv, num_features: int, num_classes: int, cfg, progress) -> HeadResult:
    """Full-batch multinomial logistic regression on the raw features (bias not penalized), as scikit-learn.

    Raw, not standardized: standardizing magnifies near-constant feature dimensions, where INT8 rounding noise
    is most of the signal, and cost 0.5-1 pt of INT8/FP32 agreement on digits (measured)."""
    head = build_head(cfg.head, num_features, num_classes)
    if not isinstance(head, nn.Linear):
        raise ValueError("the L-BFGS solver fits a linear head only; use solver='adamw' for an MLP")
    everything = torch.arange(source.n_train)
    x = source.get(everything).float()  # cached: once; backbone in the loop: see closure
    w = torch.zeros(num_classes, num_features, requires_grad=True)
    b = torch.zeros(num_classes, requires_grad=True)
    weight = class_weights(yt, num_classes, cfg.balanced)
    lam = 1.0 / (LBFGS_C * max(len(yt), 1))
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=LBFGS_MAX_ITER,
        history_size=20,
        tolerance_grad=LBFGS_TOL,
        tolerance_change=1e-9,
        line_search_fn="strong_wolfe",
    )
    history: list[dict] = []

    def closure() -> torch.Tensor:
        feats = x if source.cached else source.get(everything).float()  # no cache: the backbone, every time
        loss = nn.functional.cross_entropy(feats @ w.T + b, yt, weight=weight) + 0.5 * lam * (w * w).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        history.append({"eval": len(history) + 1, "loss": float(loss.detach())})
        return loss

    with bar("train head (L-BFGS)", None, progress):
        opt.step(closure)
    with torch.no_grad():
        head.weight.copy_(w)
        head.bias.copy_(b)
    head.eval()
    iters = opt.state[w].get("n_iter", 0)
    return HeadResult(head, accuracy(head, source.val(), yv), "lbfgs", None, int(iters), history)


def _epoch_order(n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randperm(n, generator=gen)


def _fit_adamw(source: FeatureSource, yt, yv, num_features: int, num_classes: int, cfg, progress) -> HeadResult:
    """AdamW, cosine schedule over at least MIN_STEPS steps; each of `--epochs` rounds ends with a validation.

    A round is one epoch, or several when the data is small (so that epochs x rounds >= MIN_STEPS); patience
    counts rounds. The weights of the best round on validation are kept.
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    head = build_head(cfg.head, num_features, num_classes)
    steps_per_epoch = math.ceil(len(yt) / cfg.batch_size)
    per_round = max(1, math.ceil(MIN_STEPS / (cfg.epochs * steps_per_epoch)))
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * per_round * steps_per_epoch)
    weight = class_weights(yt, num_classes, cfg.balanced)
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
                    loss = loss_fn(head(source.get(idx)), yt[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    total, seen = total + float(loss.detach()) * len(idx), seen + len(idx)
            head.eval()
            acc = accuracy(head, source.val(), yv)
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
