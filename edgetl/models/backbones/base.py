"""Backbone protocol, its frozen config, the registry and the `timm:NAME` adapter."""

from __future__ import annotations

import hashlib
import pickletools
import re
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from edgetl.errors import UserError
from edgetl.fileio import sha256_file
from edgetl.models.backbones.describe import BackboneCfg
from edgetl.preprocess import Preprocess
from edgetl.registry import Registry


class Backbone(nn.Module):
    """Wraps a timm-style model: frozen, eval mode, pooled features out."""

    def __init__(self, model: nn.Module, cfg: BackboneCfg) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.requires_grad_(False)
        self.eval()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] normalized -> [N, D] globally pooled features."""
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def forward_feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] -> [N, D, h, w] before global pooling (for export with a fused PoolHead)."""
        return self.model.forward_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)

    def train(self, mode: bool = True) -> Backbone:
        # A frozen backbone never leaves eval mode: BatchNorm statistics must not move.
        return super().train(False)


registry: Registry = Registry("backbone")
# Sentence encoders live beside the image backbones, under the same --backbone option (names never clash).
text_registry: Registry = Registry("text backbone", "--backbone")


def sha256_state_dict(sd: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(sd):
        h.update(k.encode())
        h.update(sd[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def load_weights_file(path: Path, option: str = "--weights") -> dict[str, torch.Tensor]:
    """safetensors, or a torch state dict loaded with weights_only=True (a pickle needing more is refused).

    Every floating tensor must be finite: a NaN or Inf weight would only surface later, as a crash deep in
    the head fit, with nothing pointing back at the file.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{option}: {path} does not exist; give a .safetensors or .pth state dict")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path))
        except Exception as e:  # noqa: BLE001 - any parse failure is a bad user file
            raise UserError(f"{option}: {path} is not a valid safetensors file ({e})") from None
    else:
        sd = _load_torch_file(path, option)
    _check_finite(sd, path, option)
    return sd


def _load_torch_file(path: Path, option: str) -> dict[str, torch.Tensor]:
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols beside its error: one line is ours
            warnings.simplefilter("ignore")
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickle.UnpicklingError and friends
        raise UserError(_refusal(path, option, str(e))) from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"{option}: {path} holds no state dict of tensors; save model.state_dict()")
    return sd


RESAVE = "re-save it with torch.save(model.state_dict()) or as .safetensors"


def _refusal(path: Path, option: str, message: str) -> str:
    """One line for a file torch.load(weights_only=True) would not read, from torch's multi-paragraph message.

    torch's text is long and mostly about weights_only=False, the very thing not to do, so only what names
    the problem is kept: the global the pickle wanted, or torch's own reason when it is short.
    """
    if "Weights only load failed" not in message or not _is_pickle(path):  # damaged, or not a torch file
        first = message.strip().splitlines()[0] if message.strip() else ""
        reason = "" if "Weights only load failed" in first else _short(first)
        return (
            f"{option}: {path} is not a readable torch file (damaged, or another format"
            f"{f': {reason}' if reason else ''}); {RESAVE}"
        )
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message)
    if found:
        detail = f": it needs {found.group(1)}"
    else:
        found = re.search(r"WeightsUnpickler error:\s*(.+)", message)
        reason = _short(found.group(1).strip()) if found else ""
        detail = f": torch reports {reason!r}" if reason else ""
    return (
        f"{option}: {path} holds Python objects beyond tensors (a full pickle{detail}), which edgetl will not "
        f"unpickle because that could run code; {RESAVE}"
    )


def _is_pickle(path: Path) -> bool:
    """Whether the file is a zip (torch's format) or a well-formed pickle stream; read, never executed."""
    if zipfile.is_zipfile(path):
        return True
    try:
        with path.open("rb") as f:
            for _ in pickletools.genops(f):
                pass
    except Exception:  # noqa: BLE001 - an unknown opcode, a truncated stream: not a pickle
        return False
    return True


def _short(text: str, limit: int = 80) -> str:
    """The first sentence of `text` when it is short, else nothing (never a sentence cut mid-word)."""
    sentence = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0].strip()
    return sentence if 0 < len(sentence) <= limit else ""


def _check_finite(sd: dict[str, torch.Tensor], path: Path, option: str) -> None:
    for key, value in sd.items():
        if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise UserError(
                f"{option}: {path}: tensor {key!r} holds {bad} NaN/Inf value(s); the weights are damaged "
                "(or come from a diverged training run): give a file with finite weights"
            )


def build_timm(name: str, weights: str | None) -> Backbone:
    """`timm:NAME` with `--weights FILE`; the classifier in the file (if any) is ignored, everything else strict."""
    import timm

    if not weights:
        raise UserError(f"--backbone timm:{name} needs --weights FILE (.safetensors or .pth); nothing is downloaded")
    if name not in timm.list_models():
        import difflib

        close = difflib.get_close_matches(name, timm.list_models(), n=1)
        hint = f" (did you mean timm:{close[0]}?)" if close else ""
        raise UserError(f"--backbone: timm has no model {name!r}{hint}")
    model = timm.create_model(name, pretrained=False, num_classes=0)
    sd = load_weights_file(Path(weights))
    own = model.state_dict()
    sd = {k: v for k, v in sd.items() if k in own or not _is_classifier_key(model, k)}
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    bad_shape = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad_shape:
        first = (missing or unexpected or bad_shape)[0]
        raise UserError(
            f"--weights {weights}: does not fit timm:{name} ({len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(bad_shape)} wrong-shape keys, e.g. {first!r}); check the architecture name"
        )
    model.load_state_dict(sd, strict=True)
    pcfg = model.pretrained_cfg
    pre = Preprocess(size=tuple(pcfg["input_size"][1:]), mean=tuple(pcfg["mean"]), std=tuple(pcfg["std"]))
    cfg = BackboneCfg(f"timm:{name}", model.num_features, pre, sha256_file(Path(weights).expanduser()), str(weights))
    return Backbone(model, cfg)


def _is_classifier_key(model: nn.Module, key: str) -> bool:
    head = model.pretrained_cfg.get("classifier", "classifier")
    heads = head if isinstance(head, (list, tuple)) else [head]
    return any(key.startswith(h + ".") for h in heads)
