"""The device side imports no training stack: every module a bundle, `edgetl predict` or `edgetl bench` loads must
import with torch, timm, onnx (and what builds on them) unimportable, and without loading edgetl's own training
side (edgetl.train, edgetl.quant, edgetl.export). The sides are packages, so a new module is placed by where
its file lives; only the shared top-level modules and the CLI are listed by name.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import edgetl

REPO = Path(__file__).resolve().parents[2]
BLOCKED = ("torch", "torchvision", "timm", "onnx", "onnxscript", "onnxslim", "nncf", "transformers", "sklearn")

DEVICE_PACKAGES = ("edgetl.deploy", "edgetl.bench")  # every module under them is device-side
TRAINING_PACKAGES = ("edgetl.train", "edgetl.quant", "edgetl.export")  # edgetl[train]: torch, timm, onnx, nncf
SHARED = {  # top-level modules both sides use: device-safe
    "edgetl", "edgetl.contract", "edgetl.errors", "edgetl.fileio", "edgetl.registry", "edgetl.progress",
    "edgetl.preprocess", "edgetl.images", "edgetl.texts", "edgetl.machine", "edgetl.records", "edgetl.ops", "edgetl.ops.build", "edgetl.ops.native", "edgetl.ops.reference",
}  # fmt: skip
CLI_PACKAGE = "edgetl.cli"  # device-safe to import: each command imports the training stack inside the command
TRAINING_ONLY = {"edgetl.__main__", "edgetl.ops.onnx_functions", "edgetl.ops.ov_reader"}


def _under(name: str, packages) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def _all_modules() -> set[str]:
    found = {"edgetl"}
    for info in pkgutil.walk_packages(edgetl.__path__, "edgetl."):
        found.add(info.name)
    return found


MODULES = _all_modules()
DEVICE_SIDE = {m for m in MODULES if _under(m, DEVICE_PACKAGES)} | SHARED
DEVICE_SAFE = DEVICE_SIDE | {m for m in MODULES if _under(m, (CLI_PACKAGE,))}

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
print(json.dumps({"failed": failed, "loaded": sorted(sys.modules)}))
"""


def _probe(modules) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(BLOCKED), *sorted(modules)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_module_is_placed_on_one_side():
    training = {m for m in MODULES if _under(m, TRAINING_PACKAGES)} | TRAINING_ONLY
    assert not DEVICE_SAFE & training
    assert MODULES - DEVICE_SAFE - training == set(), "put the new module in a device or training package"
    assert (SHARED | TRAINING_ONLY) - MODULES == set(), "a listed module no longer exists"
    assert len(DEVICE_SIDE - SHARED) >= 10 and len(training) >= 15  # the packages were found at all


def test_device_side_imports_without_the_training_stack():
    assert _probe(DEVICE_SAFE)["failed"] == {}


def test_device_side_loads_no_training_module_of_edgetl():
    loaded = _probe(DEVICE_SIDE)["loaded"]
    assert [m for m in loaded if _under(m, TRAINING_PACKAGES)] == []


def test_the_probe_catches_a_training_module():
    """The blocker is real: a module that needs torch fails under it, and a loaded training module is seen."""
    got = _probe({"edgetl.train.heads", "edgetl.train.config"})
    assert "edgetl.train.heads" in got["failed"]
    assert "edgetl.train.config" in got["loaded"]
