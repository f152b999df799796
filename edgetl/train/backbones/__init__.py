"""Frozen backbones: a registry of builders plus `timm:NAME` for any timm architecture.

A Backbone is a torch.nn.Module with `forward_features(x) -> [N, D]` pooled features and a `cfg`
(BackboneCfg). Builders never download: weights come from an installed package or a file the user names.
"""

# Importing the modules registers their backbones.
from edgetl.train.backbones import lite0 as _lite0  # noqa: F401,E402
from edgetl.train.backbones import text as _text  # noqa: F401,E402
from edgetl.train.backbones import tiny as _tiny  # noqa: F401,E402
from edgetl.train.backbones.base import (
    Backbone,
    BackboneCfg,
    build_backbone,
    describe_backbone,
    registry,
    text_registry,
)

__all__ = ["Backbone", "BackboneCfg", "build_backbone", "describe_backbone", "registry", "text_registry"]
