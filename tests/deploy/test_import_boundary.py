"""The device side imports no training stack: every module a bundle, `edgetl predict` or `edgetl bench` loads must
import with torch, timm, onnx (and what builds on them) unimportable, and without loading edgetl's own training
side. The sides are the layers of tests/test_layers.py: everything up to `bench` is device side, everything from
`models` up is the training side (the CLI imports the training stack inside its commands only).

`edgetl compile` runs on the device side too (a NUC compiles its own bundle): what it loads is checked by running
real compiles with the training stack blocked (here for images; tests/text for the tokenizer wiring). Compile may
load onnx (the compile side reads graphs), never torch, timm or edgetl's training side.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import edgetl
from tests.test_layers import LAYERS

REPO = Path(__file__).resolve().parents[2]

BLOCKED = ("torch", "torchvision", "timm", "onnx", "onnxscript", "onnxslim", "nncf", "transformers", "sklearn")
COMPILE_BLOCKED = tuple(b for b in BLOCKED if b != "onnx")  # compile reads ONNX graphs; nothing else of these

_RANKS = [name for name, _ in LAYERS]
DEVICE_LAYERS = [prefixes for name, prefixes in LAYERS[: _RANKS.index("models")]]
TRAINING_LAYERS = [prefixes for name, prefixes in LAYERS[_RANKS.index("models") : _RANKS.index("cli")]]
DEVICE_PACKAGES = tuple(p for prefixes in DEVICE_LAYERS for p in prefixes if p != "edgetl")
TRAINING_PACKAGES = tuple(p for prefixes in TRAINING_LAYERS for p in prefixes)
CLI_PACKAGE = "edgetl.cli"  # device-safe to import: each command imports the training stack inside the command
# Device-layer modules that only the compile side imports (they need onnx): placed with the device layers, checked
# by the compile probe below rather than by the import probe.
COMPILE_ONLY = {"edgetl.ops.onnx_functions", "edgetl.ops.ov_reader"}
TRAINING_ONLY = {"edgetl.__main__"}


def _under(name: str, packages) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def _all_modules() -> set[str]:
    found = {"edgetl"}
    for info in pkgutil.walk_packages(edgetl.__path__, "edgetl."):
        found.add(info.name)
    return found


MODULES = _all_modules()
DEVICE_SIDE = ({m for m in MODULES if _under(m, DEVICE_PACKAGES)} | {"edgetl"}) - COMPILE_ONLY
DEVICE_SAFE = DEVICE_SIDE | {m for m in MODULES if _under(m, (CLI_PACKAGE,))}

BLOCKER = """
import importlib, json, sys
blocked = set(sys.argv[1].split(","))
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"{name} is blocked on the device side")
sys.meta_path.insert(0, Block())
"""

PROBE = (
    BLOCKER
    + """
failed = {}
for m in sys.argv[2:]:
    try:
        importlib.import_module(m)
    except ImportError as e:
        failed[m] = str(e)
print(json.dumps({"failed": failed, "loaded": sorted(sys.modules)}))
"""
)


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
    assert MODULES - DEVICE_SAFE - training - COMPILE_ONLY == set(), "put the new module in a device or training layer"
    assert (COMPILE_ONLY | TRAINING_ONLY) - MODULES == set(), "a listed module no longer exists"
    assert len(DEVICE_SIDE) >= 30 and len(training) >= 30  # the layers were found at all


def test_device_side_imports_without_the_training_stack():
    assert _probe(DEVICE_SAFE)["failed"] == {}


def test_device_side_loads_no_training_module_of_edgetl():
    loaded = _probe(DEVICE_SIDE)["loaded"]
    assert [m for m in loaded if _under(m, TRAINING_PACKAGES)] == []


def test_the_probe_catches_a_training_module():
    """The blocker is real: a module that needs torch fails under it, and a loaded training module is seen."""
    got = _probe({"edgetl.models.backbones.tiny", "edgetl.config"})
    assert "edgetl.models.backbones.tiny" in got["failed"]
    assert "edgetl.config" in got["loaded"]


COMPILE = (
    BLOCKER
    + """
import contextlib, io
from edgetl.cli.main import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        main(sys.argv[2:])
    except SystemExit as e:
        code = e.code
print(json.dumps({"code": code, "output": out.getvalue(), "loaded": sorted(sys.modules)}))
"""
)


def compile_under_blocker(*argv) -> dict:
    """`edgetl ARGV` (a compile) in a fresh process with torch, timm and the rest of the training stack blocked;
    returns its exit code, output and every module it loaded."""
    proc = subprocess.run(
        [sys.executable, "-c", COMPILE, ",".join(COMPILE_BLOCKED), *map(str, argv)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def training_side(loaded: list[str]) -> list[str]:
    """What of edgetl's training side, or of the blocked packages, a device-side command loaded."""
    stack = [m for m in loaded if m.split(".")[0] in COMPILE_BLOCKED]
    return stack + [m for m in loaded if _under(m, TRAINING_PACKAGES)]


@pytest.mark.parametrize("target", ["openvino", "onnxruntime"])
def test_compile_loads_no_training_side(tmp_path, colour_onnx, colour_int8_onnx, target):
    for name, onnx_path in (("fp32", colour_onnx), ("int8", colour_int8_onnx)):
        got = compile_under_blocker("compile", onnx_path, "--target", target, "--out", tmp_path / f"{target}-{name}")
        assert got["code"] in (0, None), got["output"]
        assert training_side(got["loaded"]) == [], f"compile --target {target} ({name}) loaded the training side"
        assert (tmp_path / f"{target}-{name}" / "manifest.json").is_file()


def test_the_compile_probe_sees_a_training_import(tmp_path):
    """The compile probe is real: loading a training module under it is reported."""
    assert training_side(["edgetl.export.model", "torch", "numpy", "edgetl.deploy.bundle"]) == [
        "torch",
        "edgetl.export.model",
    ]
