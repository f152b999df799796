"""`edgetl train --unfreeze N`: fine-tune the last N blocks on a cut-point cache, LP-FT, WiSE-FT, forgetting.

1. LP: the head is fitted to the optimum on the frozen pooled features (today's L-BFGS fit, from the cache).
2. Cut-point cache: the frozen prefix runs once per image; its activations at the cut go into the feature cache
   (context: the cut, the backbone's weights, the prefix's precision, float16 storage), so an epoch runs only the
   suffix and the head. With `--quantize int8` the fine-tuned backbone is then quantized whole, as a frozen one is;
   `--ft-prefix int8` trains the suffix on the INT8 prefix that ships instead (`cut_source`: what the device
   computes), which measured worse (edgetl.config TrainCfg.ft_prefix). Pixel augmentation cannot act on cached
   activations: there is none (each epoch is a new order of the same activations). `--unfreeze all` has no cut:
   the inputs are decoded once, kept in memory, and the whole network runs every epoch.
3. FT: suffix and head (started from the LP head: Kumar et al. 2022) train together with AdamW at a small
   learning rate (`--ft-lr`), cosine schedule, BatchNorm frozen (the suffix stays in eval mode), early stopping
   on val accuracy (`--patience`), one seed for init order and shuffling: the same data and seed give the same
   weights in another process.
4. WiSE-FT (Wortsman et al. 2022): the suffix and head interpolated between pretrained + LP head (alpha 0) and
   fine-tuned (alpha 1); val accuracy and forgetting at each alpha of ALPHAS; `--wise auto` keeps the alpha with
   the least forgetting among those within 0.5 point of the best val accuracy.
5. The chosen weights become the run's backbone; the shipped head is then fitted by L-BFGS on that backbone's
   pooled features (for `--quantize int8`: on its INT8 features, by the INT8 flow), as for a frozen run.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import time

import numpy as np

from edgetl.models.backbones.split import ALL, block_names, is_text, resolve, split, trained_names
from edgetl.progress import bar, info
from edgetl.train.features import MIN_BATCH, padded, torch_version
from edgetl.train.fit import class_weights
from edgetl.train.forgetting import retained

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
WISE_MARGIN = 0.005  # `--wise auto`: within half a point of the best val accuracy, the least forgetting wins
BATCH = 64


class CutExtractor:
    """The frozen prefix in PyTorch FP32 (images: NCHW, unfolded; texts: hidden states + mask, packed as
    edgetl.models.backbones.text_split says): activations at the cut, cached as float16."""

    name = "torch-fp32-cut"

    def __init__(self, prefix, cut_name: str, text: bool = False) -> None:
        self.prefix, self.cut_name, self.text = prefix, cut_name, text

    def context(self) -> dict:
        packed = {"packed": "hidden states + attention mask"} if self.text else {"min_batch": MIN_BATCH}
        return {"engine": "torch", "precision": "fp32", "cut": self.cut_name, "stored": "float16", **packed,
                "runtime": torch_version()}  # fmt: skip

    def __call__(self, x) -> np.ndarray:
        import torch

        with torch.inference_mode():
            if self.text:
                return self.prefix(x).numpy()
            return self.prefix(torch.from_numpy(padded(x))).numpy()[: len(x)]


def cut_name(backbone, n: int) -> str:
    names = block_names(backbone)
    return names[len(names) - n]


def cut_extractor(name: str, weights: str | None, n: int) -> CutExtractor:
    """The cut-point extractor of `--unfreeze n` built from scratch: what a Ray worker of `edgetl extract` runs."""
    from edgetl.models.backbones import build_backbone

    backbone = build_backbone(name, weights)
    n = resolve(n, backbone)
    return CutExtractor(split(backbone, n)[0], cut_name(backbone, n), is_text(backbone))


def _stack(items, values: dict, text: bool) -> tuple[np.ndarray, np.ndarray]:
    kept = [it for it in items if it.key in values]
    # float16 whether just computed or read back: the same numbers cold and warm
    rows = [np.asarray(values[it.key], np.float16) for it in kept]  # float16 in memory too: batches widen
    if text:  # texts of different lengths: padded to the longest (mask 0)
        from edgetl.models.backbones.text_split import stack_rows

        return stack_rows(rows), np.array([it.label for it in kept])
    return np.stack(rows), np.array([it.label for it in kept])


def cut_source(p, prefix, cut: str, fp32: dict):
    """(the extractor that fills the cut-point cache, what it runs): the frozen prefix in PyTorch FP32; with
    --quantize int8 --ft-prefix int8 the prefix of the pretrained backbone's INT8 graph, in the runtime and mode its
    INT8 features use (edgetl.quant.cut): the numbers the device computes. `fp32`: FP32 pooled features by key, for
    the INT8 fidelity check (any subset)."""
    if p.text:
        why = "; the INT8 text encoder is quantized after fine-tuning" if p.cfg.quantize is not None else ""
        return CutExtractor(prefix, cut, text=True), f"the FP32 prefix (PyTorch){why}"
    if p.cfg.quantize is None:
        return CutExtractor(prefix, cut), "the FP32 prefix (PyTorch)"
    if p.cfg.ft_prefix == "fp32":
        return CutExtractor(prefix, cut), "the FP32 prefix (PyTorch); the fine-tuned network is quantized after"
    from edgetl.fileio import sha256_file
    from edgetl.quant.cut import cut_model
    from edgetl.quant.runtime import RuntimeExtractor
    from edgetl.train.int8 import Int8Run

    r = Int8Run(p)
    items, chash = r.calibration()
    whole = r.extractor(r.q, items, chash, fp32)
    path = cut_model(whole.path, r.fp32_onnx(), cut, r.models)
    context = {**whole._context, "model_sha256": sha256_file(path), "cut": cut, "stored": "float16"}
    how = f"the INT8 prefix ({r.q.target} layout; {r.fidelity.get('features_from')})"
    return RuntimeExtractor(path, whole.engine, context, p.cfg.threads, whole.mode), how


def inputs(p, prefix, n: int, whole: bool, fp32: dict) -> tuple[tuple, tuple, dict]:
    """((x_train, y_train), (x_val, y_val), cache report) at the cut: from the cut-point cache, or decoded images."""
    from edgetl.train.features import decode

    if whole:
        t = time.perf_counter()
        kt, xt = decode(p.ds.train, p.pre, p.skip)
        kv, xv = decode(p.ds.val, p.pre, p.skip)
        if p.text:  # token ids and mask, packed (edgetl.models.backbones.text_split)
            from edgetl.models.backbones.text_split import pack_tokens

            xt, xv = pack_tokens(xt), pack_tokens(xv)
        yt, yv = np.array([it.label for it in kt]), np.array([it.label for it in kv])
        return (
            (xt, yt),
            (xv, yv),
            {"cached": False, "why": "--unfreeze all: no cut", "decode_s": time.perf_counter() - t},
        )
    cut = cut_name(p.backbone(), n)
    extractor, computed_by = cut_source(p, prefix, cut, fp32)
    got = p.features(extractor, dtype=np.float16)
    xt, yt = _stack(p.ds.train, got.features, p.text)
    xv, yv = _stack(p.ds.val, got.features, p.text)
    if p.text:  # stored at each batch's padded length: the mean over what is on disk
        per_image = int(np.mean([np.asarray(v).size for v in got.features.values()])) * 2
    else:
        per_image = int(np.prod(xt.shape[1:])) * 2
    report = {"cut": cut, "computed_by": computed_by, "shape": list(xt.shape[1:]), "bytes_per_image": per_image}
    return (xt, yt), (xv, yv), {"cached": True, **report}


def _owned_state(backbone, owned: list[str]) -> dict:
    return {k: v.detach().clone() for k, v in backbone.state_dict().items() if k.startswith(tuple(owned))}


def _accuracy(suffix, head, x, y) -> float:
    import torch

    with torch.inference_mode():
        logits = torch.cat([head(suffix(torch.from_numpy(x[i : i + 256]).float())) for i in range(0, len(x), 256)])
    return float((logits.argmax(1).numpy() == y).mean()) if len(y) else float("nan")


def train_suffix(suffix, head, train: tuple, val: tuple, cfg, lr: float) -> dict:
    """AdamW on suffix + head; returns the best epoch's weights (by val accuracy) and the history."""
    import torch
    from torch import nn

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    xt, yt = torch.from_numpy(train[0]), torch.from_numpy(train[1]).long()
    params = [q for q in suffix.parameters()] + list(head.parameters())
    for q in params:
        q.requires_grad_(True)
    steps = cfg.ft_epochs * math.ceil(len(yt) / BATCH)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    weight = class_weights(train[1], head.out_features, cfg.balanced)
    loss_fn = nn.CrossEntropyLoss(weight=None if weight is None else torch.from_numpy(weight))
    suffix.eval()  # BatchNorm frozen, no dropout: the pretrained statistics stay
    # epoch 0 (the pretrained blocks with the LP head) is a candidate: a fine-tune that never beats it keeps it
    start = (copy.deepcopy(suffix.state_dict()), copy.deepcopy(head.state_dict()))
    best, history, since = (_accuracy(suffix, head, *val), 0, start), [], 0
    with bar("fine-tune", cfg.ft_epochs, cfg.progress) as b:
        for epoch in range(1, cfg.ft_epochs + 1):
            t, order, total = time.perf_counter(), torch.randperm(len(yt), generator=gen), 0.0
            for i in range(0, len(order), BATCH):
                idx = order[i : i + BATCH]
                loss = loss_fn(head(suffix(xt[idx].float())), yt[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(idx)
            seconds = time.perf_counter() - t
            acc = _accuracy(suffix, head, *val)
            history.append({"epoch": epoch, "loss": total / len(yt), "val_acc": acc, "seconds": round(seconds, 3)})
            b.update(status=f"val acc {acc:.3f}")
            b.advance()
            if acc > best[0]:
                best, since = (acc, epoch, (copy.deepcopy(suffix.state_dict()), copy.deepcopy(head.state_dict()))), 0
            else:
                since += 1
                if cfg.patience and since >= cfg.patience:
                    break
    for q in params:
        q.requires_grad_(False)
    suffix.load_state_dict(best[2][0])
    head.load_state_dict(best[2][1])
    return {"val_acc": best[0], "best_epoch": best[1], "history": history}


def _lerp(a: dict, b: dict, alpha: float) -> dict:
    return {k: a[k] + alpha * (b[k] - a[k]) if a[k].is_floating_point() else b[k] for k in a}


def wise(suffix, head, ends: tuple, val: tuple, forgetting, choice: str) -> tuple[float, list[dict]]:
    """Val accuracy and forgetting along the interpolation; leaves suffix and head at the chosen alpha."""
    (s0, h0), (s1, h1) = ends
    rows = []
    for alpha in ALPHAS:
        suffix.load_state_dict(_lerp(s0, s1, alpha))
        head.load_state_dict(_lerp(h0, h1, alpha))
        row = {"alpha": alpha, "val_acc": _accuracy(suffix, head, *val)}
        if forgetting is not None:
            row["forgetting"] = forgetting.measure(suffix)
        rows.append(row)
    alpha = pick_alpha(rows, choice)
    suffix.load_state_dict(_lerp(s0, s1, alpha))
    head.load_state_dict(_lerp(h0, h1, alpha))
    return alpha, rows


def pick_alpha(rows: list[dict], choice: str) -> float:
    if choice == "none":
        return 1.0
    if choice != "auto":
        return float(choice)
    best = max(r["val_acc"] for r in rows)
    close = [r for r in rows if r["val_acc"] >= best - WISE_MARGIN]
    return max(close, key=lambda r: (retained(r.get("forgetting", {})), -r["alpha"]))["alpha"]


def finetune(p, lp_head, fp32: dict) -> dict:
    """Fine-tunes p's backbone in place (its last blocks, at the chosen alpha); returns run.json's `finetune`.
    `fp32`: the frozen FP32 pooled features by key (the INT8 prefix's fidelity check compares against them)."""
    import torch

    from edgetl.train.forgetting import probe_for

    cfg, backbone = p.cfg, p.backbone()
    n = resolve(cfg.unfreeze, backbone)
    whole = n == len(block_names(backbone))
    prefix, suffix, owned = split(backbone, n)
    train, val, cache = inputs(p, prefix, n, whole, fp32)
    head = torch.nn.Linear(lp_head.weight.shape[1], lp_head.weight.shape[0])
    head.load_state_dict(
        {"weight": torch.from_numpy(np.array(lp_head.weight)), "bias": torch.from_numpy(np.array(lp_head.bias))}
    )
    start = (copy.deepcopy(suffix.state_dict()), copy.deepcopy(head.state_dict()))
    forgetting = probe_for(backbone, prefix, p.pre, cfg.backbone, cfg.weights)
    if forgetting is not None:
        forgetting.measure(suffix)  # the pretrained reference
    fit = train_suffix(suffix, head, train, val, cfg, cfg.finetune_lr(p.text))
    end = (copy.deepcopy(suffix.state_dict()), copy.deepcopy(head.state_dict()))  # load_state_dict writes in place
    alpha, rows = wise(suffix, head, (start, end), val, forgetting, cfg.wise)
    chosen = next(r for r in rows if r["alpha"] == alpha)
    if fit["best_epoch"] == 0:
        info(f"fine-tuning {n} block(s) never beat the linear probe on val: the pretrained blocks are kept")
    else:
        info(f"fine-tuned {n} block(s): val acc {chosen['val_acc']:.4f} at alpha {alpha} (epoch {fit['best_epoch']})")
    state = _owned_state(backbone, owned)
    blocks = block_names(backbone)
    return {
        "unfreeze": "all" if cfg.unfreeze == ALL else n,
        "blocks": blocks,
        "trained": trained_names(backbone, n),
        "cache": cache,
        "recipe": {
            "lp": "L-BFGS head on frozen features",
            "optimizer": "AdamW",
            "lr": cfg.finetune_lr(p.text),
            "weight_decay": cfg.weight_decay,
            "epochs": cfg.ft_epochs,
            "batch": BATCH,
            "batchnorm": "frozen (eval mode)",
            "schedule": "cosine",
            "augmentation": "none",
        },  # fmt: skip
        "best_epoch": fit["best_epoch"],
        "epochs": fit["history"],
        "seconds_per_epoch": float(np.median([h["seconds"] for h in fit["history"]])),
        "val_acc_ft_head": chosen["val_acc"],
        "wise": {"choice": cfg.wise, "alpha": alpha, "sweep": rows},
        "forgetting": chosen.get("forgetting", {"measured": False, "why": "the backbone has no original classifier"}),
        "state": state,
    }


def finetuned_sha(base_sha: str, state: dict) -> str:
    """The weights identity of a fine-tuned backbone: the pretrained file's hash and the fine-tuned tensors."""
    h = hashlib.sha256(base_sha.encode())
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].contiguous().numpy().tobytes())
    return h.hexdigest()


def apply(p, report: dict) -> None:
    """From here on the pipeline's backbone is the fine-tuned one (features, INT8, the saved run)."""
    p.finetuned = report.pop("state")
    p.bcfg = dataclasses.replace(p.bcfg, weights_sha256=finetuned_sha(p.base_sha, p.finetuned))
