"""The device side imports no training stack: every module a bundle, `edgetl predict` or `edgetl bench` loads must
import with torch, timm, onnx (and what builds on them) unimportable. Every module of the package is listed on
one side or the other, so a new module has to be placed before this test passes."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import edgetl

REPO = Path(__file__).resolve().parents[2]
BLOCKED = ("torch", "torchvision", "timm", "onnx", "onnxscript", "onnxslim", "nncf", "transformers", "sklearn")

DEVICE_SAFE = {  # what a device loads; the CLI command modules import the training stack lazily, inside commands
    "edgetl", "edgetl.contract", "edgetl.errors", "edgetl.fileio", "edgetl.registry", "edgetl.progress", "edgetl.preprocess",
    "edgetl.data", "edgetl.bundle", "edgetl.runtime", "edgetl.onnx_safety", "edgetl.summary", "edgetl.config",
    "edgetl.cache", "edgetl.targets", "edgetl.targets.base", "edgetl.targets.source", "edgetl.targets.openvino",
    "edgetl.targets.onnxruntime", "edgetl.targets.tensorrt", "edgetl.targets.tensorrt_plan",
    "edgetl.bench", "edgetl.bench_gate", "edgetl.bench_report", "edgetl.bench_peers",
    "edgetl.ops", "edgetl.ops.build", "edgetl.ops.native", "edgetl.ops.reference",
    "edgetl.cli", "edgetl.cli_deploy", "edgetl.cli_bench", "edgetl.cli_export", "edgetl.cli_train", "edgetl.demo",
}  # fmt: skip
TRAINING_ONLY = {
    "edgetl.__main__", "edgetl.backbones", "edgetl.backbones.base", "edgetl.backbones.lite0",
    "edgetl.backbones.tiny", "edgetl.features", "edgetl.heads", "edgetl.train", "edgetl.run", "edgetl.run_int8",
    "edgetl.quantize", "edgetl.sensitivity", "edgetl.export", "edgetl.onnx_graph", "edgetl.parity",
    "edgetl.ops.onnx_functions", "edgetl.ops.ov_reader",
}  # fmt: skip

PROBE = """
import importlib, json, sys
blocked = set(sys.argv[1].split(","))
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"{name} is blocked on the device side")
sys.meta_path.insert(0, Block())
failed = {}
for m in sys.argv[2:]:
    try:
        importlib.import_module(m)
    except ImportError as e:
        failed[m] = str(e)
print(json.dumps(failed))
"""


def _all_modules() -> set[str]:
    found = {"edgetl"}
    for info in pkgutil.walk_packages(edgetl.__path__, "edgetl."):
        found.add(info.name)
    return found


def test_every_module_is_placed_on_one_side():
    modules = _all_modules()
    assert not DEVICE_SAFE & TRAINING_ONLY
    assert modules - DEVICE_SAFE - TRAINING_ONLY == set(), "place the new module in DEVICE_SAFE or TRAINING_ONLY"
    assert (DEVICE_SAFE | TRAINING_ONLY) - modules == set(), "a listed module no longer exists"


def test_device_side_imports_without_the_training_stack():
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(BLOCKED), *sorted(DEVICE_SAFE)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {}


def test_the_probe_catches_a_training_module():
    """The blocker is real: a module that needs torch fails under it."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(BLOCKED), "edgetl.heads"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert "edgetl.heads" in json.loads(proc.stdout.strip().splitlines()[-1])
