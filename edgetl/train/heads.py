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


def save_head(head: nn.Module, meta: dict[str, str], path: Path) -> None:
    from safetensors.torch import save

    from edgetl.fileio import atomic_write_bytes

    tensors = {k: v.detach().contiguous() for k, v in head.state_dict().items()}
    atomic_write_bytes(Path(path), save(tensors, metadata=meta))


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
    return head.eval(), meta
