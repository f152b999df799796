"""The from-scratch baseline of `edgetl probe`: a small CNN trained on the raw images, no pretrained weights.

What it answers: would a network that never saw ImageNet do as well on this data, for a fixed, small budget?
If it does, transfer gains little here (edgetl.train.probe's verdict).

The network: 4 blocks of 3x3 conv + BatchNorm + ReLU + 2x2 max-pool (widths 16, 32, 64, 64), global average
pooling, a linear layer: about 70 k parameters. Input: the run's own preprocessing (mean/std of the backbone)
at min(the run's size, 64) px. Training: AdamW (lr 3e-3, weight decay 5e-4), cosine schedule to zero over a
fixed number of optimizer steps (`STEPS`, batch 64), inputs shifted at random by up to 1/8 of the side (the
only augmentation that keeps every label: no flips, digits are not mirror-symmetric). The reported accuracy
is the final network's on the run's own val split: no early stopping, so it is not chosen on val.

Deterministic for a seed: the weights, the batch order and the shifts come from it. It trains on one torch thread
(`threads`, `--threads` to change): the thread count changes torch's float sums, so one thread gives the same
numbers on any machine with the same torch, and on a busy 2-core machine two threads were 4x slower per step
than one (77 vs 340 ms, measured). torch is imported inside the functions only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from edgetl.preprocess import Preprocess

STEPS = 1000  # optimizer steps (batch 64): 500, 1000 and 1500 give the same verdicts (docs/results.md)
BATCH = 64
MAX_SIDE = 64  # px: at most this input side, whatever the backbone's size
WIDTHS = (16, 32, 64, 64)
LR, WEIGHT_DECAY = 3e-3, 5e-4
EVAL_BATCH = 256


@dataclass
class ScratchResult:
    val_acc: float
    steps: int
    size: int
    params: int
    seconds: float
    final_loss: float

    threads: int = 1

    def to_dict(self) -> dict:
        return {
            "val_acc": self.val_acc,
            "steps": self.steps,
            "batch": BATCH,
            "size": self.size,
            "params": self.params,
            "widths": list(WIDTHS),
            "optimizer": f"AdamW lr {LR}, weight decay {WEIGHT_DECAY}, cosine to 0",
            "final_loss": self.final_loss,
            "seconds": self.seconds,
            "threads": self.threads,
        }


def scratch_preprocess(pre: Preprocess) -> Preprocess:
    """The run's preprocessing at min(its side, MAX_SIDE) px (square)."""
    side = min(min(pre.size), MAX_SIDE)
    return Preprocess.from_dict({**pre.to_dict(), "size": [side, side]})


def build_cnn(num_classes: int):
    import torch
    from torch import nn

    layers, cin = [], 3
    for w in WIDTHS:
        layers += [nn.Conv2d(cin, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        layers.append(nn.MaxPool2d(2))
        cin = w
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers).to(memory_format=torch.channels_last)


def _shifted(x_pad, idx, gen, side: int, pad: int):
    """Rows `idx` of the padded images, each cropped back to `side` at a random offset (a shift of <= pad px)."""
    import torch

    n = len(idx)
    off = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen)
    ar = torch.arange(side)
    rows = (off[:, 0:1] + ar)[:, None, :, None]  # [n, 1, side, 1]
    cols = (off[:, 1:2] + ar)[:, None, None, :]  # [n, 1, 1, side]
    ch = torch.arange(x_pad.shape[1])[None, :, None, None]
    return x_pad[idx[:, None, None, None], ch, rows, cols].contiguous(memory_format=torch.channels_last)


def _evaluate(net, x: np.ndarray, y: np.ndarray) -> float:
    import torch

    if len(y) == 0:
        return float("nan")
    net.eval()
    with torch.inference_mode():
        pred = [
            net(torch.from_numpy(x[i : i + EVAL_BATCH]).contiguous(memory_format=torch.channels_last)).argmax(1)
            for i in range(0, len(x), EVAL_BATCH)
        ]
    return float(np.count_nonzero(torch.cat(pred).numpy() == y) / len(y))


def train_scratch(
    xt: np.ndarray,
    yt: np.ndarray,
    xv: np.ndarray,
    yv: np.ndarray,
    num_classes: int,
    seed: int,
    steps: int = STEPS,
    threads: int = 1,
) -> ScratchResult:
    """Train the CNN on preprocessed images xt [n, 3, s, s] for `steps` AdamW steps on `threads` torch threads;
    accuracy on xv."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return replace(_train(xt, yt, xv, yv, num_classes, seed, steps), threads=threads)
    finally:
        torch.set_num_threads(before)


def _train(xt, yt, xv, yv, num_classes: int, seed: int, steps: int) -> ScratchResult:
    import torch
    import torch.nn.functional as F

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = build_cnn(num_classes)
    side = xt.shape[-1]
    pad = max(1, side // 8)
    x_pad = F.pad(torch.from_numpy(np.ascontiguousarray(xt)), (pad, pad, pad, pad))  # zero = the mean colour
    y = torch.from_numpy(np.asarray(yt, np.int64))
    opt = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    net.train()
    order, pos, loss = torch.randperm(len(y), generator=gen), 0, torch.zeros(())
    for _ in range(steps):
        if pos + BATCH > len(order):  # a fresh epoch order when the current one cannot fill a batch
            order, pos = torch.randperm(len(y), generator=gen), 0
        idx = order[pos : pos + BATCH]
        pos += BATCH
        loss = F.cross_entropy(net(_shifted(x_pad, idx, gen, side, pad)), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    acc = _evaluate(net, xv, np.asarray(yv))
    params = sum(p.numel() for p in net.parameters())
    return ScratchResult(acc, steps, side, params, time.perf_counter() - t0, float(loss.detach()))
