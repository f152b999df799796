"""Classification heads trained on cached features, saved as safetensors with their shape in metadata.

A linear head fitted by L-BFGS is a NumPy `LinearHead` (training it never imports torch); an MLP head, or a
head trained by AdamW, is a torch module. Both save to the same file: tensors `weight`/`bias` (float32, and
`0.weight`... for the MLP), the kind and shape in metadata; `load_head` reads either back as a torch module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgetl.errors import UserError

if TYPE_CHECKING:
    from torch import nn


@dataclass
class LinearHead:
    """`x @ weight.T + bias` in NumPy: the linear head as the L-BFGS solver fits it."""

    weight: np.ndarray  # [num_classes, num_features] float32
    bias: np.ndarray  # [num_classes] float32

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Logits [N, num_classes] of features [N, num_features]."""
        return np.asarray(x, np.float32) @ self.weight.T + self.bias

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self(x).argmax(1)

    def state_dict(self) -> dict[str, np.ndarray]:
        """The tensors as nn.Linear names them."""
        return {"weight": self.weight, "bias": self.bias}


def head_logits(head: LinearHead | nn.Module, x: np.ndarray) -> np.ndarray:
    """Logits of either kind of head on NumPy features (a torch module runs in inference mode)."""
    if isinstance(head, LinearHead):
        return head(x)
    import torch

    with torch.inference_mode():
        return head(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()


def build_head(kind: str, num_features: int, num_classes: int, hidden: int = 256) -> nn.Module:
    from torch import nn

    if kind == "linear":
        return nn.Linear(num_features, num_classes)
    if kind == "mlp":
        return nn.Sequential(
            nn.Linear(num_features, hidden), nn.GELU(), nn.Dropout(0.2), nn.Linear(hidden, num_classes)
        )
    raise UserError(f"--head: {kind!r} unknown; choose linear or mlp")


def head_meta(kind: str, num_features: int, num_classes: int) -> dict[str, str]:
    return {"kind": kind, "num_features": str(num_features), "num_classes": str(num_classes)}


def head_bytes(head: LinearHead | nn.Module, meta: dict[str, str]) -> bytes:
    """The head as a safetensors file; a head with NaN or Inf weights is refused (it would label everything 0).
    A NumPy LinearHead is written without torch, the same bytes as the nn.Linear it stands for."""
    check_finite(head, "the trained head")
    if isinstance(head, LinearHead):
        from safetensors.numpy import save as save_numpy

        tensors = {k: np.ascontiguousarray(v, np.float32) for k, v in head.state_dict().items()}
        return save_numpy(tensors, metadata=meta)
    from safetensors.torch import save

    return save({k: v.detach().contiguous() for k, v in head.state_dict().items()}, metadata=meta)


def save_head(head: LinearHead | nn.Module, meta: dict[str, str], path: Path) -> None:
    from edgetl.fileio import atomic_write_bytes

    atomic_write_bytes(Path(path), head_bytes(head, meta))


def check_finite(head: LinearHead | nn.Module, what: str) -> None:
    for name, tensor in head.state_dict().items():
        if _floating(tensor) and not bool(np.isfinite(_as_numpy(tensor)).all()):
            raise UserError(
                f"{what}: weight {name!r} holds NaN or Inf values; the features it was trained on or the file are "
                "broken: check --weights and the data, then re-run `edgetl train`"
            )


def _floating(tensor) -> bool:
    return tensor.dtype.kind == "f" if isinstance(tensor, np.ndarray) else tensor.is_floating_point()


def _as_numpy(tensor) -> np.ndarray:
    return tensor if isinstance(tensor, np.ndarray) else tensor.detach().float().cpu().numpy()


def load_head(path: Path) -> tuple[nn.Module, dict[str, str]]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        head = build_head(meta["kind"], int(meta["num_features"]), int(meta["num_classes"]))
        head.load_state_dict(load_file(str(path)), strict=True)
    except (OSError, KeyError, RuntimeError, ValueError) as e:
        raise UserError(f"{path}: not an edgetl head ({e}); re-run edgetl train") from None
    check_finite(head, str(path))
    return head.eval(), meta
