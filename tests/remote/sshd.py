"""A real OpenSSH server on a loopback port, playing the device: for tests/remote and benchmarks/deploy_bytes.py.

`sshd -D -f CONFIG -p PORT` with a throwaway host key, a throwaway client key in an AuthorizedKeysFile of its own
(`StrictModes no`), logging in as a separate user (`edgetl-device`, made with useradd when running as root; else
the current user). The client side is a generated ssh_config passed with `-F`: the host key is pre-trusted in
its own known_hosts and StrictHostKeyChecking stays on, so no host-key checking is disabled anywhere.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

DEVICE_USER = "edgetl-device"
ALIAS = "edgetl-test-device"


@dataclass
class Device:
    alias: str  # the Host alias in `config`
    config: Path  # the client's ssh_config (-F)
    port: int
    user: str
    home: Path
    workdir: Path  # keys, configs, the server's log
    proc: subprocess.Popen

    @property
    def address(self) -> str:
        return f"{self.user}@127.0.0.1:{self.port}"

    def ssh(self, command: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a shell command on the device as its user (for checks made from a test)."""
        return subprocess.run(
            ["ssh", "-F", str(self.config), "-o", "BatchMode=yes", self.alias, command],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def log(self) -> str:
        path = self.workdir / "sshd.log"
        return path.read_text(errors="replace") if path.is_file() else ""


def why_not() -> str | None:
    """Why a test sshd cannot run here (None when it can)."""
    for tool in ("ssh", "sftp", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install openssh-client)"
    if sshd_path() is None:
        return "sshd is not installed (apt-get install openssh-server, or `make test` as root)"
    return None


def sshd_path() -> str | None:
    return shutil.which("sshd") or next(
        (p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if Path(p).is_file()), None
    )


def device_user() -> tuple[str, Path]:
    """The separate device user when running as root (created once), else the current user."""
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return entry.pw_name, Path(entry.pw_dir)
    try:
        pwd.getpwnam(DEVICE_USER)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", DEVICE_USER], check=True, capture_output=True)
    # '*' is "no password" but not locked ('!'), which sshd without PAM refuses
    subprocess.run(["usermod", "-p", "*", DEVICE_USER], check=True, capture_output=True)
    return DEVICE_USER, Path(pwd.getpwnam(DEVICE_USER).pw_dir)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


def client_config(work: Path, port: int, user: str, key: Path, known_hosts: Path) -> str:
    return (
        f"Host {ALIAS}\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n"
        f"Host *\n  IdentityFile {key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {known_hosts}\n"
        "  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  PasswordAuthentication no\n"
        "  KbdInteractiveAuthentication no\n"
    )


def _wait_for_banner(port: int, proc: subprocess.Popen, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("sshd did not answer in time")


def start() -> Device:
    """Start the server; the caller stops it with `stop`."""
    user, home = device_user()
    work = Path(tempfile.mkdtemp(prefix="edgetl-sshd-"))
    work.chmod(0o755)  # the device user reads the authorized keys through it
    host_pub = keygen(work / "host_key")
    (work / "authorized_keys").write_text(keygen(work / "client_key") + "\n")
    (work / "authorized_keys").chmod(0o644)
    keygen(work / "wrong_key")  # a key the server does not know (the wrong-key test)
    port = free_port()
    (work / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nHostKey {work / 'host_key'}\nPidFile {work / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {work / 'authorized_keys'}\nStrictModes no\nPubkeyAuthentication yes\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        f"AllowUsers {user}\nSubsystem sftp internal-sftp\nMaxSessions 64\nMaxStartups 64\nLogLevel ERROR\n"
    )
    (work / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub}\n")
    (work / "empty_known_hosts").write_text("")
    (work / "config").write_text(client_config(work, port, user, work / "client_key", work / "known_hosts"))
    (work / "config_wrong_key").write_text(client_config(work, port, user, work / "wrong_key", work / "known_hosts"))
    (work / "config_untrusted").write_text(
        client_config(work, port, user, work / "client_key", work / "empty_known_hosts")
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # Debian's sshd wants its privilege-separation folder
    log = open(work / "sshd.log", "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(
        [sshd_path(), "-D", "-e", "-f", str(work / "sshd_config"), "-p", str(port)], stdout=log, stderr=log
    )
    try:
        _wait_for_banner(port, proc)
    except RuntimeError as e:
        stop_process(proc)
        raise RuntimeError(f"{e}: {(work / 'sshd.log').read_text(errors='replace')[-500:]}") from None
    return Device(ALIAS, work / "config", port, user, home, work, proc)


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stop(device: Device) -> None:
    stop_process(device.proc)
    shutil.rmtree(device.workdir, ignore_errors=True)
