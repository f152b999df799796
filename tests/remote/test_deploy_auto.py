"""`edgetl deploy RUN_OR_MODEL HOST --target auto` against the real OpenSSH device of tests/remote/conftest.py:
every runtime compiled here, each candidate pushed and loaded there, timed by the device's own `edgetl choose`
(the logic of `compile --target auto`), the winner activated, the record written here. Plus the bad inputs, which
stop before anything connects."""

from __future__ import annotations

import json

import onnx
import pytest

from tests.deploy.conftest import make_model, quantize_model
from tests.remote.conftest import cli, one_error
from tests.remote.test_deploy_remote import active, device_doctor, store_root


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("auto-model")
    onnx.save(make_model("uint8-nhwc"), root / "fp32.onnx")
    quantize_model(root / "fp32.onnx", root / "model.onnx")
    return root / "model.onnx"


def test_deploy_target_auto_activates_the_device_s_own_winner(
    device, remote_dir, ssh_args, installed, int8_model, tmp_path
):
    before = active(device, remote_dir)
    out_json = tmp_path / "auto.json"
    code, out, err = cli("deploy", int8_model, device.alias, "--target", "auto", "--auto-json", out_json, *ssh_args)
    assert code == 0, err
    record = json.loads(out_json.read_text())
    rows = {c["target"]: c for c in record["candidates"]}
    assert set(rows) == {"openvino", "onnxruntime", "tensorrt"}
    assert "not built on the host" in rows["tensorrt"]["dropped"]  # TensorRT cannot be installed here
    timed = {name for name, row in rows.items() if "p50_ms" in row}
    assert timed == {"openvino", "onnxruntime"}  # this CPU has VNNI: both INT8 bundles are faithful there
    assert all(set(rows[n]["p50_ms"]) == {"model", "end_to_end"} and len(rows[n]["rounds_p50_ms"]) == 5 for n in timed)
    winner = record["winner"]
    assert winner in timed and set(record["bundle_ids"]) == timed
    # the active bundle on the device is the winner, and it is a bundle of the winner's runtime
    assert active(device, remote_dir) == record["bundle_id"] == record["bundle_ids"][winner] != before
    manifest = json.loads((store_root(device, remote_dir) / "current" / "manifest.json").read_text())
    assert manifest["target"] == winner and winner in device_doctor(device, remote_dir)
    # measured on the device: its CPU (read by the device's probe) and the device venv's runtime versions
    probe = json.loads(cli("device", "probe", device.alias, "--json", *ssh_args)[1])
    assert record["cpu"]["model"] == probe["cpu"]["model"] and record["cpu"]["flags"] == probe["cpu"]["flags"]
    assert record["versions"]["onnxruntime"] and record["versions"]["openvino"]
    assert record["host"] == device.alias and record["winner"] in record["why"]
    line = next(x for x in out.splitlines() if x.startswith(f"{device.alias}: chose "))
    assert f"chose {winner} on {record['cpu']['model']}" in line and "ms end to end" in line
    assert f"{device.alias}: choose: {winner} p50" in err  # the device's own timing lines, shown here
    for name, bundle_id in record["bundle_ids"].items():  # the losers brought for this deploy are removed
        assert (store_root(device, remote_dir) / "bundles" / bundle_id).is_dir() == (name == winner)


@pytest.mark.parametrize(
    "argv, expected",
    [
        (("runs/i.tar.gz", "--target", "auto"), "runs/i.tar.gz is a bundle, already compiled for one target; pass "
                                                 "the run folder (or its model.onnx) instead"),
        (("parts-ov.tar.gz", "--target", "openvino"), "deploy --target openvino: a bundle already names its target"),
        (("runs/missing", "--target", "auto"), "runs/missing: no such run folder or model.onnx"),
    ],
)  # fmt: skip
def test_bad_target_auto_inputs_are_one_line_before_connecting(argv, expected, capsys):
    code, _, err = cli("deploy", argv[0], "nuc@192.0.2.1", *argv[1:], "--connect-timeout", "1")
    assert code == 2
    assert expected in one_error(err)


def test_a_compiled_folder_is_a_bundle_too(bundles, tmp_path):
    code, _, err = cli("deploy", bundles["ov"].with_suffix(""), "nuc@192.0.2.1", "--target", "auto")
    assert code == 2 and "is a bundle, already compiled for one target" in one_error(err)
