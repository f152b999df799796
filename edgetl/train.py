"""Head training: AdamW, cosine schedule, label smoothing, early stopping on val accuracy; seeded.

The same recipe runs on cached features (an index into a tensor: milliseconds per epoch) or with the frozen
backbone in the loop (`--no-cache-features`: the baseline the cache has to beat). Only the source of the
features differs, through `FeatureSource`.
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


@dataclass
class FeatureSource:
    """`get(idx)` returns features [len(idx), D] for those training rows; `val()` all validation features."""

    get: Callable[[torch.Tensor], torch.Tensor]
    val: Callable[[], torch.Tensor]
    threads: int | None = None  # torch threads while training; None: leave the process setting alone


def cached_source(train_x: torch.Tensor, val_x: torch.Tensor) -> FeatureSource:
    # One thread: a head's matmuls are too small to split, and two threads on a busy 2-core machine made 30
    # epochs 2-6x slower (measured); the result is the same.
    return FeatureSource(get=lambda idx: train_x[idx], val=lambda: val_x, threads=1)


def backbone_source(extractor, train_x: np.ndarray, val_x: np.ndarray, batch: int = 64) -> FeatureSource:
    """Runs the frozen backbone (any Extractor) on preprocessed images every time features are asked for."""

    def run(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.concatenate([extractor(x[i : i + batch]) for i in range(0, len(x), batch)]))

    return FeatureSource(get=lambda idx: run(train_x[idx.numpy()]), val=lambda: run(val_x))


@dataclass
class HeadResult:
    head: nn.Module
    val_acc: float
    best_epoch: int
    epochs_run: int
    history: list[dict] = field(default_factory=list)


def _epoch_order(y: torch.Tensor, balanced: bool, gen: torch.Generator) -> torch.Tensor:
    if not balanced:
        return torch.randperm(len(y), generator=gen)
    counts = torch.bincount(y).float()
    weights = (1.0 / counts.clamp(min=1))[y]
    return torch.multinomial(weights, len(y), replacement=True, generator=gen)


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
    """cfg: any object with head, epochs, batch_size, lr, weight_decay, label_smoothing, patience, balanced, seed."""
    before = torch.get_num_threads()
    if source.threads:
        torch.set_num_threads(source.threads)
    try:
        return _fit(source, y_train, y_val, num_features, num_classes, cfg, progress)
    finally:
        torch.set_num_threads(before)


def _fit(source: FeatureSource, y_train, y_val, num_features: int, num_classes: int, cfg, progress: bool) -> HeadResult:
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    head = build_head(cfg.head, num_features, num_classes)
    yt, yv = torch.as_tensor(y_train, dtype=torch.long), torch.as_tensor(y_val, dtype=torch.long)
    steps_per_epoch = math.ceil(len(yt) / cfg.batch_size)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    best = (-1.0, 0, copy.deepcopy(head.state_dict()))
    history, since_best = [], 0
    with bar("train head", cfg.epochs, progress) as b:
        for epoch in range(1, cfg.epochs + 1):
            head.train()
            order, total = _epoch_order(yt, cfg.balanced, gen), 0.0
            for i in range(0, len(order), cfg.batch_size):
                idx = order[i : i + cfg.batch_size]
                loss = loss_fn(head(source.get(idx)), yt[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(idx)
            head.eval()
            acc = accuracy(head, source.val(), yv)
            history.append({"epoch": epoch, "loss": total / len(yt), "val_acc": acc})
            b.update(status=f"val acc {acc:.3f}")
            b.advance()
            if acc > best[0]:
                best, since_best = (acc, epoch, copy.deepcopy(head.state_dict())), 0
            else:
                since_best += 1
                if cfg.patience and since_best >= cfg.patience:
                    break
    head.load_state_dict(best[2])
    head.eval()
    return HeadResult(head, best[0], best[1], len(history), history)
