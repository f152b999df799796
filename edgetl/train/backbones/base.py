"""Backbone protocol, its frozen config, the registry and the `timm:NAME` adapter."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edgetl.errors import UserError
from edgetl.fileio import sha256_file
from edgetl.preprocess import Preprocess
from edgetl.registry import Registry


@dataclass(frozen=True)
class BackboneCfg:
    name: str
    num_features: int
    preprocess: Preprocess  # the backbone's native preprocessing (size may be overridden per run)
    weights_sha256: str
    weights_source: str  # where the weights came from (package file, user file, "random (seed 0)")
    modality: str = "image"  # "text": a sentence encoder (edgetl.train.backbones.text), preprocess a TextPreprocess


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
    """safetensors, or a torch state dict loaded with weights_only=True (a pickle needing more is refused)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{option}: {path} does not exist; give a .safetensors or .pth state dict")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001 - any parse failure is a bad user file
            raise UserError(f"{option}: {path} is not a valid safetensors file ({e})") from None
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickle.UnpicklingError and friends
        raise UserError(
            f"{option}: {path} cannot be loaded safely (weights_only=True refused it: {str(e).splitlines()[0][:160]}); "
            "re-save it as a plain state dict or as .safetensors"
        ) from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"{option}: {path} holds no state dict of tensors; save model.state_dict()")
    return sd


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


def build_backbone(name: str, weights: str | None = None) -> Backbone:
    if name.startswith("timm:"):
        return build_timm(name[5:], weights)
    if name in text_registry:
        return text_registry.get(name)(weights)
    return registry.get(name)(weights)


# Backbones whose config can be known without building the network (a warm feature cache then never
# constructs the model at all). Everything else is described by building it.
describers: dict = {}


def describe_backbone(name: str, weights: str | None = None) -> BackboneCfg:
    if name in describers:
        return describers[name](weights)
    return build_backbone(name, weights).cfg
