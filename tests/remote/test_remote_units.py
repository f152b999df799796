"""The parts of `edgetl deploy` that need no SSH server: target syntax, ssh's messages, platform tags, the chunker,
the wheels a bundle needs, what the venv lacks, the device scripts (Python 3.6, standard library) and the device
store run here as the device runs it."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgetl import contract, machine
from edgetl.errors import UserError
from edgetl.remote import chunks, device_env, device_probe, device_store, env, run, ssh, wheelhouse
from edgetl.remote.probe import check_python, platform_tags
from edgetl.remote.ssh import Target, ssh_failure

DEVICE_SCRIPTS = (device_probe, device_store, device_env)


@pytest.mark.parametrize(
    "text, user, host, port",
    [
        ("nuc@10.0.0.7", "nuc", "10.0.0.7", None),
        ("nuc@10.0.0.7:2222", "nuc", "10.0.0.7", 2222),
        ("orin", None, "orin", None),
        ("jetson.local:22", None, "jetson.local", 22),
        ("pi@[fe80::1]:2200", "pi", "fe80::1", 2200),
    ],
)
def test_targets(text, user, host, port):
    t = Target.parse(text)
    assert (t.user, t.host, t.port, str(t)) == (user, host, port, text)


@pytest.mark.parametrize("text", ["", "-oProxyCommand=touch_x", "a@b@c", "host:99999", "host:0", "us er@host", "h;rm"])
def test_bad_targets_are_one_line(text):
    with pytest.raises(UserError, match="not a device address; give \\[user@\\]host\\[:port\\]"):
        Target.parse(text)


@pytest.mark.parametrize(
    "stderr, expected",
    [
        ("ssh: connect to host 10.0.0.7 port 22: No route to host", "no route to the host"),
        ("Connection reset by 10.0.0.7 port 22", "the connection dropped"),
        ("client_loop: send disconnect: Broken pipe", "the connection dropped"),
        ("Timeout, server 10.0.0.7 not responding.", "no answer within 10 s"),
        ("something new\n", "ssh failed (something new)"),
    ],
)
def test_ssh_failures_are_named(stderr, expected):
    message = str(ssh_failure(Target.parse("nuc@10.0.0.7"), stderr, 10))
    assert message.startswith("nuc@10.0.0.7: ") and expected in message and "\n" not in message


def test_remote_commands_never_start_with_a_dash():
    with pytest.raises(ValueError):
        ssh.Connection.run(object.__new__(ssh.Connection), "-oProxyCommand=x")


def probe_for(machine_name: str, libc: str, version: str, python: str = "3.11.2", system: str = "Linux") -> dict:
    return {
        "machine": machine_name,
        "libc": {"name": libc, "version": version},
        "os": {"system": system},
        "python": {"version": python, "implementation": "cpython"},
    }


def test_platform_tags_follow_the_device_libc():
    x86 = platform_tags(probe_for("x86_64", "glibc", "2.36"))
    assert x86[0] == "manylinux_2_36_x86_64" and "manylinux_2_28_x86_64" in x86 and "manylinux2014_x86_64" in x86
    assert not any(t.startswith("linux_") for t in x86)
    jetson = platform_tags(probe_for("aarch64", "glibc", "2.31"))
    assert jetson[0] == "manylinux_2_31_aarch64" and "manylinux_2_32_aarch64" not in jetson
    assert platform_tags(probe_for("x86_64", "musl", "1.2")) == [f"musllinux_1_{m}_x86_64" for m in (2, 1, 0)]
    with pytest.raises(UserError, match="C library is unknown"):
        platform_tags(probe_for("x86_64", None, ""))


def test_the_device_python_must_run_edgetl():
    assert check_python(probe_for("aarch64", "glibc", "2.35", "3.12.1"), "orin", "python3") == "3.12"
    with pytest.raises(UserError, match=r"python3 on the device is Python 3\.8\.10; .*--python python3\.11"):
        check_python(probe_for("aarch64", "glibc", "2.31", "3.8.10"), "orin", "python3")
    with pytest.raises(UserError, match="supports Linux devices"):
        check_python(probe_for("arm64", "glibc", "2.31", system="Darwin"), "mac", "python3")


def test_runtime_requirements_pin_the_bundle_release():
    ov = {"target": "openvino", "runtime": {"openvino": "2026.4.1"}, "settings": {}}
    assert wheelhouse.runtime_requirements(ov, {}) == ["openvino==2026.4.1"]
    text = {**ov, "settings": {"tokenizer_ops": "openvino_tokenizers"}}
    assert wheelhouse.runtime_requirements(text, {})[1] == "openvino-tokenizers==2026.4.1.*"
    ort = {"target": "onnxruntime", "runtime": {"onnxruntime": "1.32.0", "onnxruntime_extensions": "0.15.2"},
           "settings": {"string_ops": "onnxruntime-extensions"}}  # fmt: skip
    assert wheelhouse.runtime_requirements(ort, {}) == ["onnxruntime==1.32.0", "onnxruntime-extensions==0.15.2"]
    trt = {"target": "tensorrt", "runtime": {"tensorrt": None}, "tokenizer": "tokenizer.json"}
    assert wheelhouse.runtime_requirements(trt, {"accelerators": {"cuda": "12.6"}}) == [
        "cuda-python>=12.0,<13",
        "tokenizers>=0.19",
    ]


def test_wheel_names():
    w = wheelhouse.Wheel(Path("openvino-2026.4.1-22982-cp311-cp311-manylinux_2_28_x86_64.whl"))
    assert (w.name, w.version) == ("openvino", "2026.4.1")
    assert wheelhouse.Wheel(Path("Markdown_It_Py-4.3.0-py3-none-any.whl")).name == "markdown-it-py"


def test_only_what_the_venv_lacks_is_sent(tmp_path):
    wheels = [
        tmp_path / n
        for n in ("numpy-2.4.6-cp311-cp311-x.whl", "pip-26.3-py3-none-any.whl", "rich-15.0.0-py3-none-any.whl")
    ]
    edgetl = tmp_path / "edgetl-0.1.0-py3-none-any.whl"
    for path in [*wheels, edgetl]:
        path.write_bytes(path.name.encode())
    house = wheelhouse.Wheelhouse(tmp_path, tuple(wheelhouse.Wheel(w) for w in wheels), False)
    empty = {"venv": {"exists": False}}
    assert env.to_send(empty, house, edgetl, False) == [*wheels, edgetl]
    venv = {"packages": {"numpy": "2.4.6", "pip": "26.3", "rich": "14.0.0", "edgetl": "0.1.0"}, "exists": True}
    current = {"venv": {**venv, "edgetl_wheel": hashlib.sha256(edgetl.read_bytes()).hexdigest()}}
    assert env.to_send(current, house, edgetl, False) == [wheels[2]]  # rich at another version
    venv["packages"]["rich"] = "15.0.0"
    assert env.to_send(current, house, edgetl, False) == []
    assert env.to_send({"venv": venv}, house, edgetl, False) == [edgetl]  # edgetl rebuilt: its sha256 changed


def test_the_engine_build_command_keeps_its_timing_cache_on_the_device():
    """Up to the TensorRT call: what the host runs on the device for a TensorRT bundle (the build itself needs
    TensorRT: tests/remote/test_deploy_remote.py::test_tensorrt_engine_is_built_on_the_device)."""
    command = run.edgetl_command("/home/nvidia/.edgetl", "/home/nvidia/.edgetl/venv", run.engine_build_args("/x/b1"))
    assert command == (
        "env EDGETL_CACHE_DIR=/home/nvidia/.edgetl/cache /home/nvidia/.edgetl/venv/bin/edgetl build-engine /x/b1"
    )


def test_chunk_cuts_follow_the_content(tmp_path):
    """Bytes inserted early shift everything after them; content-defined cuts move with the content, so all but the
    chunks around the insertion are the same chunks."""
    data = np.random.default_rng(0).integers(0, 256, 3_000_000, dtype=np.uint8).tobytes()
    (tmp_path / "a").write_bytes(data)
    (tmp_path / "b").write_bytes(data[:1_000_000] + b"head" * 250 + data[1_000_000:])
    a, b = chunks.recipe(tmp_path / "a"), chunks.recipe(tmp_path / "b")
    assert sum(n for _, n in a) == len(data) and all(chunks.MIN_SIZE <= n <= chunks.MAX_SIZE for _, n in a[:-1])
    assert a == chunks.recipe(tmp_path / "a")  # deterministic
    new = [n for h, n in b if h not in {h for h, _ in a}]
    assert 0 < sum(new) <= 3 * chunks.MAX_SIZE and len(new) <= 3
    assert [h for h, _ in a[-20:]] == [h for h, _ in b[-20:]]


def test_device_scripts_run_on_python_3_6_with_the_standard_library():
    """They run on the device's own python3, before edgetl is there: Python 3.6 grammar, standard library only."""
    allowed = set(sys.stdlib_module_names)
    for module in DEVICE_SCRIPTS:
        source = Path(module.__file__).read_text()
        tree = ast.parse(source, feature_version=(3, 6))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.module != "__future__" and node.module.split(".")[0] in allowed, node.module
            elif isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] in allowed for a in node.names)


def test_device_scripts_agree_with_edgetl():
    assert device_probe.X86_FLAGS == machine.CPU_FLAGS
    assert device_store.MANIFEST == contract.MANIFEST
    assert {m.MARK for m in DEVICE_SCRIPTS} == {ssh.MARK}
    assert set(env.FORBIDDEN) == set(device_probe.FORBIDDEN)
    assert (
        ".edgetl-wheel" == device_env.WHEEL_MARKER
        and device_env.WHEEL_MARKER in Path(device_probe.__file__).read_text()
    )


def test_the_probe_runs_on_an_old_python(tmp_path):
    """The probe under Python 3.6 (where pyenv has one), as a JetPack 4 device would run it."""
    old = Path.home() / ".pyenv" / "versions" / "3.6.15" / "bin" / "python3.6"
    if not os.access(old, os.X_OK):
        pytest.skip("no Python 3.6 here (pyenv 3.6.15)")
    program = (
        f"REQUEST = {json.dumps(json.dumps({'root': str(tmp_path / 'r')}))}\n" + Path(device_probe.__file__).read_text()
    )
    out = subprocess.run([str(old), "-"], input=program, capture_output=True, text=True, timeout=60, check=True).stdout
    answer = json.loads(next(x for x in out.splitlines() if x.startswith(ssh.MARK))[len(ssh.MARK) :])
    assert answer["python"]["version"].startswith("3.6") and answer["machine"] and "error" not in answer


def store(root: Path, action: str, **request) -> dict:
    return device_store.ACTIONS[action]({"root": str(root), "session": "s", "action": action, **request})


def plan_of(folder: Path, bundle_id: str) -> dict:
    files = {}
    for path in sorted(folder.iterdir()):
        files[path.name] = {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "size": path.stat().st_size,
                            "chunks": chunks.recipe(path)}  # fmt: skip
    return {"id": bundle_id, "manifest": "{}", "files": files}


def push_locally(root: Path, folder: Path, bundle_id: str) -> list:
    """What the host does, with the device store called in this process: plan, pack the missing chunks, assemble."""
    plan = plan_of(folder, bundle_id)
    missing = store(root, "plan", plan=plan)["missing"]
    where = {h: (folder / name, sum(n for _, n in e["chunks"][:i])) for name, e in plan["files"].items()
             for i, (h, _) in enumerate(e["chunks"])}  # fmt: skip
    index, position = [], 0
    with open(root / "incoming" / "s" / "pack", "wb") as out:
        for digest, length in missing:
            path, offset = where[digest]
            out.write(path.read_bytes()[offset : offset + length])
            index.append([digest, position, length])
            position += length
    store(root, "assemble", pack=index)
    return missing


def test_the_store_reuses_chunks_and_refuses_a_modified_copy(tmp_path):
    root, a, b = tmp_path / "store", tmp_path / "a", tmp_path / "b"
    rng = np.random.default_rng(1)
    for folder in (a, b):
        folder.mkdir()
        (folder / "model.bin").write_bytes(rng.integers(0, 256, 400_000, dtype=np.uint8).tobytes())
    (b / "model.bin").write_bytes((a / "model.bin").read_bytes()[:300_000] + b"new head" + b"\0" * 99_992)
    assert len(push_locally(root, a, "a" * 20)) > 3
    store(root, "activate", id="a" * 20)
    assert sum(n for _, n in push_locally(root, b, "b" * 20)) < 150_000  # only around the change
    assert (root / "bundles" / ("b" * 20) / "model.bin").read_bytes() == (b / "model.bin").read_bytes()
    stored = root / "bundles" / ("b" * 20) / "model.bin"
    stored.write_bytes(b"\1" + stored.read_bytes()[1:])  # someone edited a stored bundle in place
    with pytest.raises(device_store.Refused, match="--full-upload"):
        push_locally(root, b, "c" * 20)
    assert not (root / "bundles" / ("c" * 20)).exists()
    assert [p for p in root.iterdir() if p.name.startswith(".stage-")] == []
