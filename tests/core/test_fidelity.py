"""INT8 fidelity: the runtime that extracts INT8 features must compute what the graph says, on any CPU.

The CPU here has a 32-bit INT8 dot product (VNNI), where the runtimes are faithful. A CPU without one (AVX2 only)
is reached for real through QEMU's user-mode emulator (`qemu-x86_64 -cpu Haswell`: the runtimes see a Haswell CPU
and dispatch their AVX2 kernels, whose 16-bit saturation QEMU executes as the hardware does); those tests skip,
with the reason, where qemu-user is not installed (`make setup` installs it where it can).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgetl.quant.fidelity import MIN_COSINE, choose, cosines, exact
from edgetl.quant.runtime import RuntimeExtractor
from tests.saturating import probe_inputs, saturating_model

ROOT = Path(__file__).resolve().parents[2]
QEMU = shutil.which("qemu-x86_64")


def _make(path: Path):
    return lambda engine, mode: RuntimeExtractor(path, engine, {"precision": "int8"}, None, mode)


def test_emulation_with_optimizations_off_equals_the_exact_evaluation(tmp_path: Path):
    path = saturating_model(tmp_path / "sat.onnx")
    x = probe_inputs()
    ref = exact(path, {"input": x})
    emulated = _make(path)("onnxruntime", "emulated")(x)
    assert cosines(emulated, ref).min() > 0.99999
    np.testing.assert_allclose(emulated, ref, rtol=1e-5)


@pytest.mark.parametrize("engine", ["openvino", "onnxruntime"])
def test_on_this_cpu_the_target_runtime_is_faithful_and_recorded(tmp_path: Path, engine: str):
    path = saturating_model(tmp_path / "sat.onnx")
    mode, record = choose(path, engine, _make(path), probe_inputs(), None, tmp_path)
    if record["int8_dot"] != "vnni":
        pytest.skip(f"this CPU has no VNNI ({record['cpu']['model']}): the native runtimes may saturate here")
    assert mode == "runtime" and record["features_from"].startswith(engine)
    rows = {r["evaluator"].split()[0]: r for r in record["evaluators"]}
    assert rows[engine]["worst"] >= MIN_COSINE and rows[engine]["faithful"]
    again, cached = choose(path, engine, _make(path), probe_inputs(), None, tmp_path)
    assert (again, cached) == (mode, record)  # cached beside the model, keyed by CPU and runtime versions


SCRIPT = """
import json, sys
sys.path.insert(0, {root!r})
from pathlib import Path
from edgetl.quant.fidelity import choose
from edgetl.quant.runtime import RuntimeExtractor
from tests.saturating import probe_inputs
path = Path({path!r})
make = lambda e, m: RuntimeExtractor(path, e, {{"precision": "int8"}}, None, m)
mode, record = choose(path, {engine!r}, make, probe_inputs(), None, Path({cache!r}))
print("RESULT " + json.dumps({{"mode": mode, "record": record}}))
"""


@pytest.mark.skipif(QEMU is None, reason="qemu-user is not installed (apt-get install qemu-user): no AVX2-only CPU")
@pytest.mark.parametrize(("engine", "expected"), [("onnxruntime", "precise"), ("openvino", "emulated")])
def test_on_an_avx2_cpu_saturating_kernels_are_caught_and_replaced(tmp_path: Path, engine: str, expected: str):
    """ONNX Runtime's u8s8 kernels lose the feature's direction on AVX2; its u8u8 mode is faithful there. OpenVINO
    has no such mode: the features come from the emulation, and the record says why."""
    path = saturating_model(tmp_path / "sat.onnx")
    code = SCRIPT.format(root=str(ROOT), path=str(path), engine=engine, cache=str(tmp_path / "fresh"))
    (tmp_path / "fresh").mkdir()
    run = subprocess.run(
        [QEMU, "-cpu", "Haswell", sys.executable, "-c", code], capture_output=True, text=True, timeout=600
    )
    out = next((line for line in run.stdout.splitlines() if line.startswith("RESULT ")), None)
    assert out, run.stderr[-2000:]
    got = json.loads(out[len("RESULT ") :])
    assert got["mode"] == expected
    rows = {r["evaluator"]: r for r in got["record"]["evaluators"]}
    default = next(r for name, r in rows.items() if name.startswith(engine) and "x64quantprecision" not in name)
    assert not default["faithful"] and default["worst"] < 0.98  # measured 0.9717
    assert got["record"]["features_from"].startswith("onnxruntime with")  # not the saturating default
