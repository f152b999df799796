"""Classification heads trained on cached features, saved as safetensors with their shape in metadata."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from edgetl.errors import UserError


def build_head(kind: str, num_features: int, num_classes: int, hidden: int = 256) -> nn.Module:
    if kind == "linear":
        return nn.Linear(num_features, num_classes)
    if kind == "mlp":
        return nn.Sequential(
            nn.Linear(num_features, hidden), nn.GELU(), nn.Dropout(0.2), nn.Linear(hidden, num_classes)
        )
    raise UserError(f"--head: {kind!r} unknown; choose linear or mlp")


def head_meta(kind: str, num_features: int, num_classes: int) -> dict[str, str]:
    return {"kind": kind, "num_features": str(num_features), "num_classes": str(num_classes)}


def head_bytes(head: nn.Module, meta: dict[str, str]) -> bytes:
    """The head as a safetensors file; a head with NaN or Inf weights is refused (it would label everything 0)."""
    from safetensors.torch import save

    check_finite(head, "the trained head")
    return save({k: v.detach().contiguous() for k, v in head.state_dict().items()}, metadata=meta)


def save_head(head: nn.Module, meta: dict[str, str], path: Path) -> None:
    from edgetl.fileio import atomic_write_bytes

    atomic_write_bytes(Path(path), head_bytes(head, meta))


def check_finite(head: nn.Module, what: str) -> None:
    import torch

    for name, tensor in head.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UserError(
                f"{what}: weight {name!r} holds NaN or Inf values; the features it was trained on or the file are "
                "broken: check --weights and the data, then re-run `edgetl train`"
            )


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
