"""Bad input and faults of `edgetl deploy` / `edgetl device probe` against a real OpenSSH server: each is ONE line
naming the cause and the fix (exit 2), the active bundle stays as it was and still loads, and nothing temporary
is left once the next deploy ran."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path

import pytest

from edgetl.errors import UserError
from edgetl.remote import device_store, wheelhouse
from edgetl.remote.probe import platform_tags
from tests.remote.conftest import cli, one_error, rebundle
from tests.remote.sshd import free_port
from tests.remote.test_deploy_remote import active, device_args, device_doctor, store_root


def test_unknown_host(device):
    code, _, err = cli("device", "probe", "nosuchhost.invalid", "-F", device.config)
    assert code == 2
    line = one_error(err)
    assert "nosuchhost.invalid: unknown host" in line and "~/.ssh/config" in line


def test_refused_connection(device):
    port = free_port()  # nothing listens there
    code, _, err = cli("device", "probe", f"{device.user}@127.0.0.1:{port}", "-F", device.config)
    assert code == 2
    line = one_error(err)
    assert "connection refused" in line and f"127.0.0.1:{port}" in line and "sshd runs there" in line


def test_wrong_key(device):
    code, _, err = cli("device", "probe", device.alias, "-F", device.workdir / "config_wrong_key")
    assert code == 2
    line = one_error(err)
    assert "refused the login" in line and "authorized_keys" in line and "never types passwords" in line


def test_an_untrusted_host_key_is_never_accepted(device):
    """StrictHostKeyChecking stays as the user has it: a host key not in known_hosts stops the command."""
    code, _, err = cli("device", "probe", device.alias, "-F", device.workdir / "config_untrusted")
    assert code == 2
    line = one_error(err)
    assert "host key is not trusted" in line and f"ssh {device.alias}" in line


@contextlib.contextmanager
def silent_server():
    """A TCP port on loopback that accepts connections and never says anything (a hung host)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    held, stop = [], threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


def test_a_host_that_hangs_times_out(device):
    with silent_server() as port:
        start = time.monotonic()
        code, _, err = cli("device", "probe", f"127.0.0.1:{port}", "-F", device.config, "--connect-timeout", "2")
        elapsed = time.monotonic() - start
    assert code == 2
    line = one_error(err)
    assert "no answer within 2 s" in line and "--connect-timeout" in line
    assert elapsed < 20


def test_no_python_on_the_device(device, ssh_args):
    code, _, err = cli("device", "probe", device.alias, *ssh_args, "--python", "/nonexistent/python3")
    assert code == 2
    line = one_error(err)
    assert "no usable /nonexistent/python3 on the device" in line and "--python" in line


def test_an_architecture_without_a_runtime_wheel():
    """pip finds no OpenVINO wheel for a RISC-V device: one line with the fix (a real `pip download`)."""
    probe = {"machine": "riscv64", "libc": {"name": "glibc", "version": "2.36"}}
    release = metadata.version("openvino")
    with pytest.raises(UserError, match=rf"no wheel of openvino=={release} exists for that device") as e:
        wheelhouse.download([f"openvino=={release}"], platform_tags(probe), "3.11")
    assert "manylinux_2_36_riscv64" in str(e.value) and "\n" not in str(e.value)


def test_a_bundle_for_another_runtime_release(device, remote_dir, installed, bundles, tmp_path):
    """A bundle whose manifest names an OpenVINO release no wheel exists for: refused before anything is sent."""
    old = rebundle(bundles["ov"].with_suffix(""), tmp_path / "old.tar.gz", runtime={"openvino": "2019.1.0"})
    before = active(device, remote_dir)
    code, _, err = cli("deploy", old, device.alias, *device_args(device, remote_dir))
    assert code == 2
    assert "no wheel of openvino==2019.1.0" in one_error(err)
    assert active(device, remote_dir) == before
    assert "bundle" in device_doctor(device, remote_dir)  # and it still loads


def children_named(name: str) -> list[int]:
    """Processes started by this one (its children) whose command is `name`."""
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        with contextlib.suppress(OSError):
            text = Path(stat).read_text()
            comm, rest = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
            if comm == name and int(rest[1]) == os.getpid():
                found.append(int(Path(stat).parent.name))
    return found


def kill_upload(after: float, killed: list[int]) -> threading.Thread:
    """A thread that kills this process's sftp once it has run for `after` seconds: the link cut mid-upload."""

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            pids = children_named("sftp")
            if pids:
                time.sleep(after)
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def leftovers(root: Path) -> list[str]:
    return [p.name for p in (root / "incoming").iterdir()] + [
        p.name for p in root.iterdir() if p.name.startswith((".stage-", ".link-"))
    ]


def test_a_connection_cut_during_the_upload(device, remote_dir, installed, bundles):
    """The upload (throttled with --limit-rate) is killed after a second: one line, the active bundle untouched and
    working; what a dead link leaves on the device is swept by the next deploy, which succeeds."""
    before = active(device, remote_dir)
    ssh_dirs = set(glob.glob("/tmp/edgetl-ssh-*"))
    killed: list[int] = []
    watcher = kill_upload(1.0, killed)
    code, _, err = cli("deploy", bundles["big-c"], device.alias, *device_args(device, remote_dir), "--limit-rate", "64")
    watcher.join()
    assert killed, "the upload was never seen running"
    assert code == 2
    line = one_error(err)
    assert "the bundle upload was cut" in line and "run the deploy again" in line
    assert active(device, remote_dir) == before
    assert "bundle" in device_doctor(device, remote_dir)
    root = store_root(device, remote_dir)
    plant_leftovers(root)  # what a link that died for good leaves: the cleanup above could not run
    code, _, err = cli("deploy", bundles["big-c"], device.alias, *device_args(device, remote_dir))
    assert code == 0, err
    assert leftovers(root) == []
    assert set(glob.glob("/tmp/edgetl-ssh-*")) <= ssh_dirs  # nor on this side


def plant_leftovers(root: Path) -> None:
    owner = root.stat()
    for path in (root / "incoming" / "0123456789ab", root / ".stage-dead"):
        path.mkdir(parents=True)
        (path / "pack").write_bytes(b"x" * 1000)
        for p in (path, path / "pack"):
            os.chown(p, owner.st_uid, owner.st_gid)


@pytest.fixture
def small_disk(device):
    """A 16 MB tmpfs owned by the device user (needs root and mount)."""
    if os.geteuid() != 0:
        pytest.skip("a full device disk is simulated with a small tmpfs, which needs root to mount")
    mount = Path(tempfile.mkdtemp(prefix="edgetl-small-disk-"))
    mount.chmod(0o755)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        mount.rmdir()
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
    user = pwd.getpwnam(device.user)
    os.chown(mount, user.pw_uid, user.pw_gid)
    mount.chmod(0o755)
    yield mount
    subprocess.run(["umount", str(mount)], check=False)
    shutil.rmtree(mount, ignore_errors=True)


def fill(disk: Path, leave: int) -> Path:
    filler = disk / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(shutil.disk_usage(disk).free - leave, 0))
    return filler


def test_a_full_disk_on_the_device(device, remote_dir, installed, bundles, small_disk):
    args = ["-F", device.config, "--remote-dir", small_disk / "store", "--venv", f"{remote_dir}/venv"]
    code, _, err = cli("deploy", bundles["ov"], device.alias, *args)  # the env has its runtime: only the bundle goes
    assert code == 0, err
    before = os.readlink(small_disk / "store" / "current")
    filler = fill(small_disk, 300_000)
    code, _, err = cli("deploy", bundles["big-a"], device.alias, *args)
    assert code == 2
    line = one_error(err)
    assert f"the disk holding {small_disk / 'store'} is full" in line and "MB needed" in line
    assert os.readlink(small_disk / "store" / "current") == before
    checked = device.ssh(f"{remote_dir}/venv/bin/edgetl doctor {small_disk / 'store' / 'current'}")
    assert checked.returncode == 0, checked.stderr
    filler.unlink()
    code, _, err = cli("deploy", bundles["big-a"], device.alias, *args)
    assert code == 0, err
    assert leftovers(small_disk / "store") == []


def test_assembly_that_fills_the_disk_leaves_nothing(small_disk, tmp_path):
    """The device store's own handling of ENOSPC while it writes a bundle (run here, as the device runs it): one
    line, the staging folder and the upload removed, no bundle."""
    root = small_disk / "store"
    session = root / "incoming" / "s1"
    session.mkdir(parents=True)
    data = os.urandom(6 << 20)
    digest = hashlib.sha256(data).hexdigest()
    (session / "pack").write_bytes(data)
    plan = {
        "id": "b" * 20,
        "manifest": "{}",
        "files": {"model.bin": {"sha256": digest, "size": len(data), "chunks": [[digest, len(data)]]}},
    }
    (session / "plan.json").write_text(json.dumps(plan))
    filler = fill(small_disk, 2 << 20)  # the pack is there; its copy does not fit
    with pytest.raises(device_store.Refused, match="is full"):
        device_store.action_assemble({"root": str(root), "session": "s1", "pack": [[digest, 0, len(data)]]})
    filler.unlink()
    assert not (root / "bundles" / plan["id"]).exists() and not (session / "pack").exists()
    assert [p for p in root.iterdir() if p.name.startswith(".stage-")] == []
