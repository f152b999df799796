"""`edgetl device probe` and `edgetl deploy` against a real OpenSSH server (tests/remote/conftest.py): the device env,
the push, labels and latency measured on the device, rollback. Every command runs as a user would run it (the CLI),
through the system ssh client with a generated ssh_config (-F)."""

from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path

import pytest

from edgetl.deploy.predictor import Predictor
from edgetl.machine import cpu_info
from edgetl.remote.deploy import DeployOptions, deploy
from edgetl.remote.ssh import SshOptions
from tests.remote import sshd
from tests.remote.conftest import cli, one_error


def store_root(device, remote_dir: str) -> Path:
    """The device's edgetl folder as a path here (the "device" is this machine; read as root or as its user)."""
    return device.home / remote_dir.removeprefix("~/")


def active(device, remote_dir: str, link: str = "current") -> str | None:
    path = store_root(device, remote_dir) / link
    return os.path.basename(os.readlink(path)) if path.is_symlink() else None


def device_doctor(device, remote_dir: str) -> str:
    """`edgetl doctor` of the active bundle, run on the device by its own edgetl: it verifies and loads it there."""
    result = device.ssh(f"{remote_dir}/venv/bin/edgetl doctor {remote_dir}/current")
    assert result.returncode == 0, result.stderr
    return result.stdout


def options(device, remote_dir: str, **kw) -> DeployOptions:
    return DeployOptions(ssh=SshOptions(config=device.config), remote_dir=remote_dir, **kw)


def test_probe_reports_this_machine(device, ssh_args):
    code, out, err = cli("device", "probe", device.alias, "--json", *ssh_args)
    assert code == 0, err
    probe = json.loads(out)
    assert probe["machine"] == platform.machine()
    assert probe["python"]["version"].startswith("3.")
    assert probe["libc"]["name"] == "glibc"
    assert probe["cpu"]["flags"] == cpu_info()["flags"]  # the same CPU, read on the device
    assert probe["disk"]["free_bytes"] > 0 and probe["memory"]["total_bytes"] > 0
    if device.user == sshd.DEVICE_USER:  # its own user (as root): a python3 without edgetl
        assert probe["runtimes"]["edgetl"] is None
    code, table, err = cli("device", "probe", device.address, *ssh_args)  # user@host:port form, as a table
    assert code == 0, err
    assert "cpu flags" in table and "device env" in table and probe["cpu"]["model"] in table


def test_first_deploy_makes_a_device_env_without_torch(device, remote_dir, installed, bundles):
    """The first deploy made the venv from wheels sent from here; torch, timm and onnx do not import there."""
    assert "installing into" in installed and "wheel(s)" in installed
    venv = f"{remote_dir}/venv/bin/python"
    for module in ("torch", "timm", "onnx"):
        result = device.ssh(f"{venv} -c 'import {module}'")
        assert result.returncode != 0 and f"No module named '{module}'" in result.stderr
    result = device.ssh(f"{venv} -c 'import edgetl, openvino, numpy, PIL; print(openvino.__version__)'")
    assert result.returncode == 0, result.stderr
    # the release the OpenVINO bundle was compiled with (read here: which bundle is current depends on the tests run
    # before, e.g. deploy --target auto activates whichever runtime the device timed fastest)
    with Predictor(bundles["ov"]) as opened:
        assert opened.manifest["runtime"]["openvino"] in result.stdout
    assert "bundle" in device_doctor(device, remote_dir)


def test_a_module_of_the_training_stack_in_the_env_is_refused(device, remote_dir, installed, bundles):
    """The import check can fail: a `torch` package planted in the device venv stops the deploy."""
    site = next((store_root(device, remote_dir) / "venv" / "lib").glob("python*/site-packages"))
    fake = site / "torch"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    try:
        code, _, err = cli("deploy", bundles["ov"], device.alias, *device_args(device, remote_dir))
    finally:
        shutil.rmtree(fake)
    assert code == 2
    assert "torch is importable in the device env" in one_error(err)


def device_args(device, remote_dir: str) -> list[str]:
    return ["-F", str(device.config), "--remote-dir", remote_dir]


def host_predictions(bundle: Path, files: list[Path]) -> list:
    """What `edgetl predict` computes here (the same decoding: JPEG draft mode where the bundle asks for it)."""
    with Predictor(bundle) as predictor:
        return list(predictor.predict_files(files, 3, True, print))


@pytest.mark.parametrize("name", ["ov", "ort"])
def test_deployed_bundles_label_images_as_on_the_host(device, remote_dir, installed, bundles, images, name):
    """OpenVINO (INT8) and ONNX Runtime bundles give the host's labels and probabilities on the device."""
    files = list(images.values())
    result = deploy(bundles[name], device.alias, options(device, remote_dir, predict=tuple(files)), lambda m: None)
    assert active(device, remote_dir) == result.bundle_id
    device_side = {Path(p["path"]).name: p for p in result.predictions}
    assert len(device_side) == len(files)
    for expected, true_class in zip(host_predictions(bundles[name], files), images, strict=True):
        got = device_side[Path(expected.path).name]
        assert got["class"] == expected.class_name == true_class
        assert got["label"] == expected.label
        assert got["prob"] == expected.prob  # same runtime release, same CPU: the same numbers
        assert [tuple(t) for t in got["topk"]] == list(expected.topk)


def test_online_lets_the_device_pip_fetch(device, remote_dir, installed, bundles):
    """--online: the device's own pip resolves the requirements against its index (here: all installed already),
    and no wheel goes from the host."""
    result = deploy(bundles["ov"], device.alias, options(device, remote_dir, online=True), lambda m: None)
    assert "wheels" not in result.sent and result.current == result.bundle_id


def test_predict_prints_the_device_labels(device, remote_dir, installed, bundles, images):
    code, out, err = cli(
        "deploy", bundles["ort"], device.alias, "--predict", images["blue"], *device_args(device, remote_dir)
    )
    assert code == 0, err
    assert f"{images['blue']}: 2 'blue'" in out and f"on {device.alias}" in out


def test_redeploying_the_active_bundle_sends_no_file(device, remote_dir, installed, bundles):
    deploy(bundles["ort"], device.alias, options(device, remote_dir), lambda m: None)
    again = deploy(bundles["ort"], device.alias, options(device, remote_dir), lambda m: None)
    assert not again.changed and again.push.present
    assert again.sent.get("bundle", 0) == 0 and again.sent.get("wheels", 0) == 0 and again.wheels == []
    assert set(again.sent) == {"scripts"}


def test_a_new_head_sends_the_changed_chunks_not_the_backbone(device, remote_dir, installed, bundles):
    first = deploy(bundles["big-a"], device.alias, options(device, remote_dir), lambda m: None)
    second = deploy(bundles["big-b"], device.alias, options(device, remote_dir), lambda m: None)
    size = sum(f.stat().st_size for f in store_root(device, remote_dir).joinpath("current").iterdir())
    assert first.bundle_id != second.bundle_id and active(device, remote_dir) == second.bundle_id
    assert first.sent["bundle"] > 3_000_000  # the backbone went once
    assert 0 < second.sent["bundle"] < 0.05 * size, (second.sent, size)  # then only around the head
    assert second.push.chunks_sent < second.push.chunks_total / 10
    assert "bundle" in device_doctor(device, remote_dir)  # assembled from stored chunks + the new ones, and loads


def test_rollback_makes_the_previous_bundle_active_and_back(device, remote_dir, installed, bundles):
    a = deploy(bundles["ov"], device.alias, options(device, remote_dir), lambda m: None).bundle_id
    b = deploy(bundles["ort"], device.alias, options(device, remote_dir), lambda m: None).bundle_id
    code, out, err = cli("deploy", "--rollback", device.alias, *device_args(device, remote_dir))
    assert code == 0, err
    assert active(device, remote_dir) == a and active(device, remote_dir, "previous") == b
    assert f"bundle {a} is active again" in out
    assert "openvino" in device_doctor(device, remote_dir)
    code, _, err = cli("deploy", "--rollback", device.alias, *device_args(device, remote_dir))
    assert code == 0, err
    assert active(device, remote_dir) == b


def test_rollback_without_a_previous_bundle_is_one_line(device, installed):
    code, _, err = cli("deploy", "--rollback", device.alias, "-F", device.config, "--remote-dir", "~/edgetl-empty")
    shutil.rmtree(device.home / "edgetl-empty", ignore_errors=True)
    assert code == 2
    assert "no previous bundle" in one_error(err)


def test_old_bundles_are_collected(device, remote_dir, installed, bundles):
    for name in ("ov", "ort", "big-a", "big-b"):
        deploy(bundles[name], device.alias, options(device, remote_dir, keep=2), lambda m: None)
    kept = sorted(p.name for p in (store_root(device, remote_dir) / "bundles").iterdir())
    assert len(kept) == 2 and {active(device, remote_dir), active(device, remote_dir, "previous")} == set(kept)
    assert sorted(p.stem for p in (store_root(device, remote_dir) / "index").iterdir()) == kept


def test_bench_on_the_device_feeds_the_compare_gate(device, remote_dir, installed, bundles, tmp_path):
    """--bench runs `edgetl bench --json` there; the copied JSON is stamped with the probe, and two of them go
    through `edgetl bench --compare` (the CI gate on device numbers)."""
    fast = ("--bench", "--duration", "0.3", "--warmup", "0.2", *device_args(device, remote_dir))
    for name in ("main", "pr"):
        code, out, err = cli("deploy", bundles["ort"], device.alias, *fast, "--bench-json", tmp_path / f"{name}.json")
        assert code == 0, err
        assert f"{device.alias}: " in err and "current: onnxruntime on CPU" in err  # the device's lines, shown here
        assert "p50 ms" in out  # the device's table
    doc = json.loads((tmp_path / "main.json").read_text())
    assert doc["format"] == "edgetl-bench/1" and doc["device"]["host"] == device.alias
    assert doc["device"]["probe"]["machine"] == platform.machine()
    assert {r["mode"] for r in doc["results"]} == {"model", "end_to_end"}
    assert all(r["target"] == "onnxruntime" and r["cpu"]["flags"] == cpu_info()["flags"] for r in doc["results"])
    code, out, err = cli("bench", "--compare", tmp_path / "main.json", tmp_path / "pr.json", "--max-regression", "900%")
    assert code == 0, err + out
    assert out.count(": ok") == 2


def test_tensorrt_bundle_needs_tensorrt_on_the_device(device, remote_dir, installed, bundles):
    """TensorRT cannot be installed here: the deploy stops at the device's missing TensorRT, before anything is
    sent, with the fix; the active bundle stays."""
    before = active(device, remote_dir)
    code, _, err = cli("deploy", bundles["trt"], device.alias, *device_args(device, remote_dir))
    assert code == 2
    line = one_error(err)
    assert "no TensorRT for python3 on the device" in line and "JetPack" in line
    assert active(device, remote_dir) == before


def test_tensorrt_engine_is_built_on_the_device(device, remote_dir, installed, bundles, tmp_path):
    probe = json.loads(cli("device", "probe", device.alias, "--json", *device_args(device, remote_dir))[1])
    if not probe["runtimes"]["tensorrt"]:
        pytest.skip("TensorRT is not installable here: the on-device engine build (edgetl build-engine over ssh, timing "
                    "cache in REMOTE_DIR/cache) was not run")  # fmt: skip
    code, _, err = cli("deploy", bundles["trt"], device.alias, *device_args(device, remote_dir))
    assert code == 0, err
    assert "building the TensorRT engine on the device" in err
    assert (store_root(device, remote_dir) / "current" / "model.engine").is_file()
    assert any((store_root(device, remote_dir) / "cache" / "tensorrt").rglob("timing.cache"))
