"""On the device, an INT8 bundle checks its own probe: does this CPU compute the model as the graph defines it?

The bundle here is built on arithmetic that saturating INT8 kernels get wrong (tests/saturating.py): its label
flips where 16-bit pair sums saturate. Natively (a VNNI CPU) every runtime is faithful. Under QEMU's user-mode
emulator with a Haswell CPU (AVX2 only), OpenVINO saturates: predict says so, with what it costs and the fix;
ONNX Runtime switches to its non-saturating kernels and is faithful again."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgetl.machine import int8_dot
from tests.saturating import bright_frames, saturating_classifier

QEMU = shutil.which("qemu-x86_64")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fidelity")
    model = saturating_classifier(root / "export")
    built = {}
    for target in ("onnxruntime", "openvino"):
        out = root / target
        subprocess.run(
            [sys.executable, "-m", "edgetl", "compile", str(model), "--target", target, "--out", str(out)],
            check=True,
            capture_output=True,
        )
        built[target] = out
    Image.fromarray(bright_frames(1)[0]).save(root / "bright.png")
    built["image"] = root / "bright.png"
    return built


def _predict(bundle: Path, image: Path, prefix: list[str] = ()) -> subprocess.CompletedProcess:
    cmd = [*prefix, sys.executable, "-m", "edgetl", "predict", str(bundle), str(image)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_the_probe_travels_into_the_bundle(bundles):
    import json

    manifest = json.loads((bundles["openvino"] / "manifest.json").read_text())
    assert manifest["probe"]["file"] == "probe.npz" and "probe.npz" in manifest["files"]
    with np.load(bundles["openvino"] / "probe.npz", allow_pickle=False) as data:
        assert data["frames"].shape == (4, 8, 8, 3) and (data["label"] == 0).all()


@pytest.mark.parametrize("target", ["onnxruntime", "openvino"])
def test_on_this_cpu_predict_reports_a_faithful_int8_model(bundles, target):
    if int8_dot() != "vnni":
        pytest.skip("this CPU has no VNNI: its native INT8 kernels may saturate")
    run = _predict(bundles[target], bundles["image"])
    assert run.returncode == 0, run.stderr
    assert "INT8 on this CPU: 4/4 probe labels agree" in run.stderr and "faithful" in run.stderr
    assert "'bright'" in run.stdout


@pytest.mark.skipif(QEMU is None, reason="qemu-user is not installed (apt-get install qemu-user): no AVX2-only CPU")
def test_on_an_avx2_cpu_openvino_is_flagged_with_its_cost_and_the_fix(bundles):
    run = _predict(bundles["openvino"], bundles["image"], [QEMU, "-cpu", "Haswell"])
    assert run.returncode == 0, run.stderr
    line = next(x for x in run.stderr.splitlines() if "INT8 on this CPU" in x)
    assert line.startswith("WARNING") and "0/4 probe labels agree" in line
    assert "--precision fp32" in line and "--quant-overflow-fix" in line
    assert "'other'" in run.stdout  # what the warning is about: the saturated model answers wrongly


@pytest.mark.skipif(QEMU is None, reason="qemu-user is not installed (apt-get install qemu-user): no AVX2-only CPU")
def test_on_an_avx2_cpu_onnxruntime_switches_to_its_non_saturating_kernels(bundles):
    run = _predict(bundles["onnxruntime"], bundles["image"], [QEMU, "-cpu", "Haswell"])
    assert run.returncode == 0, run.stderr
    assert "4/4 probe labels agree" in run.stderr and "u8u8" in run.stderr
    assert "'bright'" in run.stdout


@pytest.mark.parametrize("dot", ["saturating", "vnni"])
def test_onnxruntime_opens_an_image_bundle_in_u8u8_at_once_where_the_cpu_saturates(bundles, monkeypatch, dot):
    """Where the CPU has no VNNI the default u8s8 kernels can pass the 8-image probe and still cost accuracy (the
    demo's bundle on an AVX2-only EPYC: 0.9387 vs 0.9582 on its val PNGs), so the first load is already u8u8;
    with VNNI the first load is the default kernels (the probe may still switch them)."""
    from edgetl.deploy import predictor
    from edgetl.deploy.targets.onnxruntime import ORTTarget

    monkeypatch.setattr(predictor, "int8_dot", lambda cpu=None: dot)
    loads, load = [], ORTTarget.load

    def recording(self, artifact, device=None, precise=False):
        loads.append(precise)
        return load(self, artifact, device, precise)

    monkeypatch.setattr(ORTTarget, "load", recording)
    with predictor.Predictor(bundles["onnxruntime"]) as p:
        assert loads[0] is (dot == "saturating")
        if dot == "saturating":
            assert loads == [True] and p.precise and p.runner.info["int8_kernels"].startswith("u8u8")
            assert "u8u8" in p.fidelity_line() and p.fidelity["faithful"]


DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize(
    ("name", "faithful"), [("probe_openvino_vnni_bf16", True), ("probe_openvino_avx2_emulated", False)]
)
def test_a_logit_shift_is_caught_where_labels_and_probabilities_hold(name, faithful):
    """Two recorded probe runs of `make demo`'s OpenVINO INT8 bundle (digits, 64 px): natively on an AMD EPYC with
    VNNI and BF16 (int8 + bf16), and under `qemu-x86_64 -cpu Haswell` (AVX2, saturating), where the bundle kept all
    8 probe labels at max |dp| 0.054 yet lost 2.2 pt on its 359 val images (0.9304 vs 0.9526). Labels and
    probabilities pass in both; the logit shift tells them apart, each well clear of the bound."""
    from edgetl.deploy import fidelity

    with np.load(DATA / f"{name}.npz") as data:
        got, ref = data["got"], data["ref"]
    result = fidelity.judge(got, ref, ref.argmax(1))
    assert result["labels_agree"] == 8 and result["max_abs_probs"] <= fidelity.MAX_ABS_PROBS
    assert result["faithful"] is faithful
    if faithful:  # measured 0.26
        assert result["logit_shift"] <= fidelity.MAX_LOGIT_SHIFT / 1.5
    else:  # measured 1.01
        assert result["logit_shift"] >= fidelity.MAX_LOGIT_SHIFT * 1.5
        line = fidelity.line({**result, "int8_dot": "saturating"}, "openvino")
        assert line.startswith("WARNING") and "logit shift 1.01 > 0.5" in line and "--precision fp32" in line


def test_the_logit_shift_reads_only_classes_the_reference_can_tell():
    from edgetl.deploy import fidelity

    sure = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # a fully confident probe: nothing to read
    assert fidelity.logit_shift(sure, sure) is None
    assert fidelity.judge(sure, sure, np.array([0, 1]))["faithful"]
    ref = np.array([[0.7, 0.2, 0.1]])
    assert fidelity.logit_shift(ref, ref) == pytest.approx(0.0, abs=1e-12)
    scaled = np.exp(np.log(ref) * 2)  # logits doubled, then renormalised: same label
    scaled /= scaled.sum()
    assert fidelity.logit_shift(scaled, ref) == pytest.approx(np.std(np.log(ref)), rel=1e-6)
    zeroed = np.array([[0.8, 0.2, 0.0]])  # the runtime drops a class the reference gives 0.1
    assert fidelity.logit_shift(zeroed, ref) > 10
