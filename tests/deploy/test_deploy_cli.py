"""The deploy commands as users run them, including `edgetl predict` with torch, timm and onnx unimportable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgetl.cli.main import main
from tests.conftest import run_cli
from tests.deploy.conftest import COLOURS

REPO = Path(__file__).resolve().parents[2]
BLOCKED = ("torch", "timm", "onnx")  # onnx only: onnxruntime is a different top-level package


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, colour_onnx, colour_int8_onnx) -> dict[str, Path]:
    """OpenVINO INT8 and ONNX Runtime bundles, built with the CLI commands in this process."""
    root = tmp_path_factory.mktemp("cli")
    made = {}
    for name, model, target in (("ov", colour_int8_onnx, "openvino"), ("ort", colour_onnx, "onnxruntime")):
        with pytest.raises(SystemExit) as e:
            main(["compile", str(model), "--target", target, "--out", str(root / name)])
        assert e.value.code == 0
        with pytest.raises(SystemExit) as e:
            main(["package", str(root / name), "--out", str(root / f"{name}.tar.gz")])
        assert e.value.code == 0
        made[name] = root / f"{name}.tar.gz"
    return made


@pytest.fixture(scope="module")
def device_env(tmp_path_factory) -> dict[str, str]:
    """A subprocess environment where importing torch, timm or onnx fails, as on a bare device."""
    site = tmp_path_factory.mktemp("device_site")
    (site / "sitecustomize.py").write_text(
        textwrap.dedent(f"""
        import sys
        BLOCKED = {BLOCKED!r}

        class _Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: the device has no training stack)")
                return None

        sys.meta_path.insert(0, _Blocker())
    """)
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO)])
    return env


def _device_predict(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgetl", "predict", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_blocker_really_blocks(device_env):
    probe = subprocess.run([sys.executable, "-c", "import onnx"], env=device_env, capture_output=True, text=True)
    assert probe.returncode != 0 and "blocked" in probe.stderr
    ok = subprocess.run([sys.executable, "-c", "import onnxruntime, openvino, numpy, PIL"], env=device_env)
    assert ok.returncode == 0
    doctor = subprocess.run([sys.executable, "-m", "edgetl", "doctor"], env=device_env, capture_output=True, text=True)
    assert doctor.returncode == 0 and "openvino     available" in doctor.stdout, doctor.stderr


@pytest.mark.parametrize("name", ["ov", "ort"])
def test_predict_without_torch_timm_onnx(bundles, images, device_env, name):
    files = [images[c] for c in COLOURS] + [images["broken"]]
    proc = _device_predict(device_env, bundles[name], *files, "--json", "--top-k", "2")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [Path(r["path"]).stem for r in rows] == list(COLOURS)
    for row in rows:
        assert set(row) == {"path", "label", "class", "prob", "topk", "ms"}
        assert row["class"] == Path(row["path"]).stem and isinstance(row["label"], int)
        assert len(row["topk"]) == 2 and row["topk"][0] == [row["class"], row["prob"]] and row["ms"] >= 0
    assert f"skipping {images['broken']}: " in proc.stderr and "Traceback" not in proc.stderr


AT_EXIT = """
import atexit, sys
atexit.register(lambda: print("TEARDOWN RAN", file=sys.stderr))
sys.argv = ["edgetl", *sys.argv[1:]]
from edgetl.cli.main import main
main()
"""


def test_predict_ends_without_teardown_only_after_writing_everything(bundles, images, device_env):
    """A finished predict ends the process without the interpreter's teardown (edgetl.cli.main.quick_exit): every
    line is still written to the pipe, the exit code is 0; a failed one exits as usual (atexit handlers run)."""
    files = [images[c] for c in COLOURS]
    run = [sys.executable, "-c", AT_EXIT, "predict", bundles["ort"]]
    done = subprocess.run([*run, *files, "--json"], env=device_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert [Path(json.loads(line)["path"]).stem for line in done.stdout.splitlines()] == list(COLOURS)
    assert "TEARDOWN RAN" not in done.stderr
    failed = subprocess.run([*run, images["broken"], "--strict"], env=device_env, capture_output=True, text=True)
    assert failed.returncode == 2 and "TEARDOWN RAN" in failed.stderr


def test_predict_strict_stops_with_one_line(bundles, images, device_env):
    proc = _device_predict(device_env, bundles["ort"], images["broken"], "--strict")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith(f"error: {images['broken']}")
    assert "Traceback" not in proc.stderr


def test_predict_human_output(capsys, bundles, images):
    code, out, err = run_cli(capsys, "predict", bundles["ov"], images["green"], "--top-k", "3")
    assert code == 0 and out.startswith(f"{images['green']}: 1 'green' ") and " ms" in out
    assert "openvino on CPU, precision" in err


def test_tampered_bundle_is_refused_by_predict(capsys, tmp_path, bundles, images):
    data = bytearray(bundles["ort"].read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "bad.tar.gz").write_bytes(bytes(data))
    code, _, err = run_cli(capsys, "predict", tmp_path / "bad.tar.gz", images["red"])
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_compile_tensorrt_says_so_in_one_line(capsys, tmp_path, colour_onnx):
    from edgetl.deploy.targets import get_target

    if get_target("tensorrt").available() is None:
        pytest.skip("TensorRT is installed here: compile builds a real engine")
    code, out, _ = run_cli(
        capsys, "compile", colour_onnx, "--target", "tensorrt", "--max-batch", "8", "--out", tmp_path / "trt"
    )
    assert code == 0 and out.count("\n") == 1 and "tensorrt is not installed here" in out and "build-engine" in out
    code, _, err = run_cli(capsys, "build-engine", tmp_path / "trt")
    assert code == 2 and "pip install 'edgetl[tensorrt]'" in err


def test_user_errors_exit_2(capsys, tmp_path, colour_onnx):
    code, _, err = run_cli(capsys, "compile", tmp_path / "nope.onnx", "--target", "openvino", "--out", tmp_path / "o")
    assert code == 2 and "nope.onnx" in err
    code, _, err = run_cli(
        capsys, "compile", colour_onnx, "--target", "onnxruntime", "--precision", "bf16", "--out", tmp_path / "o"
    )
    assert code == 2 and "--precision bf16" in err
    code, _, err = run_cli(capsys, "package", tmp_path, "--out", tmp_path / "b.zip")
    assert code == 2 and "*.tar.gz" in err


def test_doctor_lists_every_target(capsys):
    code, out, _ = run_cli(capsys, "doctor")
    lines = out.splitlines()
    rows = ["cpu", "int8", "onnxruntime", "openvino", "tensorrt", "choose"]  # choose: `compile --target auto`
    assert code == 0 and [line.split()[0] for line in lines] == rows
    assert "available  devices: CPU" in lines[3]
    from edgetl.machine import cpu_info

    assert cpu_info()["model"] in lines[0]  # the CPU, and whether its INT8 kernels can saturate
    assert "saturate" in lines[1]


@pytest.mark.parametrize("command", ["compile", "package", "predict", "doctor", "build-engine"])
def test_help_has_examples(capsys, command):
    code, out, _ = run_cli(capsys, command, "--help")
    assert code == 0 and f"edgetl {command}" in out
