"""Compile targets, registered by name. Target modules are imported on first use, and none of them imports
its runtime at module level, so listing targets works on a device with any subset of runtimes installed."""

from __future__ import annotations

import importlib

from edgetl.deploy.targets.base import TARGETS, Artifact, CompileOptions, Runner, Target
from edgetl.registry import Registry

_MODULES = ("onnxruntime", "openvino", "tensorrt")

__all__ = ["Artifact", "CompileOptions", "Runner", "Target", "get_target", "registry"]


def registry() -> Registry[Target]:
    for module in _MODULES:
        importlib.import_module(f"edgetl.deploy.targets.{module}")
    return TARGETS


def get_target(name: str) -> Target:
    if name in _MODULES:  # only its own module: `edgetl predict` of an OpenVINO bundle loads no TensorRT code
        importlib.import_module(f"edgetl.deploy.targets.{name}")
        if name in TARGETS:
            return TARGETS.get(name)
    return registry().get(name)  # unknown: the registry's error lists every target
