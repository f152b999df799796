"""Frozen backbones: a registry of builders plus `timm:NAME` for any timm architecture.

A Backbone is a torch.nn.Module with `forward_features(x) -> [N, D]` pooled features and a `cfg`
(BackboneCfg). Builders never download: weights come from an installed package or a file the user names.
Importing this package imports no torch: `describe_backbone` reads the shipped backbones' configs from their
files (`describe`), and the builders (`base`, `lite0`, `text`, `tiny`: torch, timm) load on first build.
"""

from __future__ import annotations

from edgetl.models.backbones.describe import BackboneCfg, describers

__all__ = ["Backbone", "BackboneCfg", "build_backbone", "describe_backbone", "registry", "text_registry"]


def build_backbone(name: str, weights: str | None = None):
    """The frozen network: a registered name (images, or text under the same option) or `timm:NAME`."""
    from edgetl.models.backbones import lite0, text, tiny  # noqa: F401 - importing them registers their builders
    from edgetl.models.backbones.base import build_timm, registry, text_registry

    if name.startswith("timm:"):
        return build_timm(name[5:], weights)
    if name in text_registry:
        return text_registry.get(name)(weights)
    return registry.get(name)(weights)


def describe_backbone(name: str, weights: str | None = None) -> BackboneCfg:
    if name in describers:
        return describers[name](weights)
    return build_backbone(name, weights).cfg


def __getattr__(name: str):
    """`Backbone`, `registry`, `text_registry`: from `base` (torch) when asked for."""
    if name in ("Backbone", "registry", "text_registry"):
        from edgetl.models.backbones import base, lite0, text, tiny  # noqa: F401 - registers every builder

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
