"""The transport: the system OpenSSH client (`ssh`, `sftp`) in batch mode, over one shared connection.

Every call passes BatchMode=yes (no password or passphrase prompt: edgetl never types one), ConnectTimeout and
ServerAlive settings (a host that hangs ends in bounded time), and the user's own `-F FILE` and `-o OPTION`s, so
keys, ~/.ssh/config, ProxyJump and known_hosts work as in a terminal. Host-key checking is never turned off here:
the user's known_hosts decides. One master connection (ControlMaster, in a private temp folder) carries every
command and upload of a deploy and is closed when it ends. A failure is one UserError line: host, cause, fix.
Every byte handed to ssh (scripts, stdin, uploaded files) is counted by category in `Connection.sent`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgetl.errors import UserError

MARK = "@@edgetl-result@@"  # the device scripts print their JSON answer on one line after this
# What the device's Python runs: the script arrives zlib-compressed on stdin (a third of its size), runs as __main__
BOOTSTRAP = "import sys,zlib;exec(compile(zlib.decompress(sys.stdin.buffer.read()),'<edgetl>','exec'))"
_TARGET = re.compile(
    r"^(?:(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]*)@)?"
    r"(?:\[(?P<v6>[0-9A-Fa-f:.%A-Za-z]+)\]|(?P<host>[A-Za-z0-9_][A-Za-z0-9._-]*))"
    r"(?::(?P<port>\d{1,5}))?$"
)
_SAFE_WORD = re.compile(r"^[~A-Za-z0-9_./+-]+$")


@dataclass(frozen=True)
class Target:
    """`[user@]host[:port]`, `[user@][v6-address]:port` or a Host alias of ~/.ssh/config."""

    text: str
    host: str
    user: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> Target:
        m = _TARGET.match(text or "")
        port = int(m["port"]) if m and m["port"] else None
        if not m or (port is not None and not 0 < port < 65536):
            raise UserError(
                f"{text!r}: not a device address; give [user@]host[:port] (e.g. nuc@10.0.0.7:2222) or a Host alias "
                "from ~/.ssh/config"
            )
        return cls(text, m["v6"] or m["host"], m["user"], port)

    def __str__(self) -> str:
        return self.text

    def destination(self, bracket_v6: bool = False) -> str:
        host = f"[{self.host}]" if bracket_v6 and ":" in self.host else self.host
        return f"{self.user}@{host}" if self.user else host


@dataclass(frozen=True)
class SshOptions:
    """How to reach the device: the user's ssh config file and options, and the limits edgetl adds."""

    config: Path | None = None  # ssh -F
    options: tuple[str, ...] = ()  # ssh -o, passed as given (explicit: e.g. -o IdentityFile=~/.ssh/jetson)
    connect_timeout: int = 10  # seconds: TCP connect and the SSH banner
    limit_kbps: int | None = None  # upload bandwidth limit, Kbit/s (sftp -l)

    def __post_init__(self) -> None:
        if self.config is not None and not Path(self.config).expanduser().is_file():
            raise UserError(f"--ssh-config {self.config}: no such file; give an ssh_config file or drop the option")
        if self.connect_timeout < 1:
            raise UserError(f"--connect-timeout {self.connect_timeout}: give at least 1 second")
        if self.limit_kbps is not None and self.limit_kbps < 1:
            raise UserError(f"--limit-rate {self.limit_kbps}: give at least 1 Kbit/s")
        for option in self.options:
            if "=" not in option and " " not in option.strip():
                raise UserError(f"--ssh-option {option!r}: give KEY=VALUE as for ssh -o, e.g. -o Port=2222")


@dataclass
class Result:
    code: int
    stdout: bytes
    stderr: str


# (pattern in ssh's messages, cause; fix) -- first match wins
FAILURES = (
    (
        r"Could not resolve hostname",
        "unknown host (the name does not resolve); check it, or add a Host entry for it in ~/.ssh/config",
    ),
    (
        r"Connection refused",
        "connection refused: nothing listens for SSH on {where}; check the host and port "
        "(user@host:port) and that sshd runs there",
    ),
    (
        r"Permission denied \(",
        "the device refused the login of {who} (no accepted key); add your public key to "
        "its ~/.ssh/authorized_keys (ssh-copy-id {dest}) or name the key with IdentityFile in ~/.ssh/config "
        "(edgetl never types passwords)",
    ),
    (
        r"Host key verification failed|HOST IDENTIFICATION HAS CHANGED|host key for .* (is unknown|has changed)",
        "its host key is not trusted yet, or changed; run `ssh {dest}` once, check the fingerprint and accept it "
        "(edgetl never turns host-key checking off)",
    ),
    (
        r"banner exchange|timed out|Timeout, server",
        "no answer within {timeout} s (host down, a wrong address "
        "or a firewall); check that `ssh {dest}` answers, or raise --connect-timeout",
    ),
    (r"No route to host|Network is unreachable", "no route to the host; check the address and the network"),
    (
        r"Connection (reset|closed)|Broken pipe|client_loop|lost connection|closed by remote",
        "the connection dropped; check the link and run the command again",
    ),
)


def ssh_failure(target: Target, stderr: str, timeout: int) -> UserError:
    """The one line for an ssh exit 255: which of FAILURES it is, with the fix."""
    lines = [x.strip() for x in stderr.splitlines() if x.strip() and not x.startswith("Warning: Permanently")]
    text = " ".join(lines)
    where = f"{target.host}:{target.port or 22}" if target.port else f"{target.host} (port 22 or its ssh_config)"
    fields = {"where": where, "who": target.user or "your user", "dest": target.destination(), "timeout": timeout}
    for pattern, message in FAILURES:
        if re.search(pattern, text, re.IGNORECASE):
            return UserError(f"{target}: {message.format(**fields)}")
    last = lines[-1] if lines else "no message"
    return UserError(f"{target}: ssh failed ({last}); check that `ssh {target.destination()}` works in this terminal")


def quote_word(word: str) -> str:
    """Quote for the device's shell, leaving a plain path (with a leading ~) unquoted so the shell expands it."""
    return word if _SAFE_WORD.match(word) else shlex.quote(word)


class Connection:
    """One SSH connection to a device, as a context manager: `run` a command, `put` files, `call` a device script."""

    def __init__(self, target: Target, options: SshOptions) -> None:
        for tool in ("ssh", "sftp"):
            if shutil.which(tool) is None:
                raise UserError(
                    f"{tool}: the OpenSSH client is not installed here; install it (apt install openssh-client)"
                )
        self.target, self.options = target, options
        self.sent: dict[str, int] = {}  # bytes handed to ssh per category (scripts, wheels, bundle, images)
        self._dir: str | None = None

    def __enter__(self) -> Connection:
        self._dir = tempfile.mkdtemp(prefix="edgetl-ssh-")
        try:
            self._start_master()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._dir is None:
            return
        if os.path.exists(self._socket()):
            subprocess.run(
                ["ssh", *self._options(), "-O", "exit", self.target.destination()],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=15, check=False,
            )  # fmt: skip
        shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None

    def _socket(self) -> str:
        return os.path.join(self._dir or "", "cm")

    def _options(self, master: bool = False, sftp: bool = False) -> list[str]:
        """Connection sharing first (it must win), then the user's -o, then edgetl's defaults (the first value of
        an option wins in ssh), then -F, port and bandwidth."""
        mux = ["ControlMaster=yes", "ControlPersist=30"] if master else ["ControlMaster=no"]
        ours = [f"ConnectTimeout={self.options.connect_timeout}", "BatchMode=yes", "ServerAliveInterval=10",
                "ServerAliveCountMax=3", "LogLevel=ERROR"]  # fmt: skip
        argv = [x for o in [f"ControlPath={self._socket()}", *mux, *self.options.options, *ours] for x in ("-o", o)]
        if self.options.config is not None:
            argv += ["-F", str(Path(self.options.config).expanduser())]
        if self.target.port:
            argv += ["-P" if sftp else "-p", str(self.target.port)]
        if sftp and self.options.limit_kbps:
            argv += ["-l", str(self.options.limit_kbps)]
        return argv

    def _start_master(self) -> None:
        """Log in once (`ssh -N -f` with ControlMaster=yes; -M on top would make it ask before closing); every later call rides on this connection. Its errors are the login's."""
        with tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.run(
                    ["ssh", *self._options(master=True), "-N", "-f", self.target.destination()],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                    timeout=2 * self.options.connect_timeout + 30, check=False,
                )  # fmt: skip
            except subprocess.TimeoutExpired:
                raise ssh_failure(self.target, "timed out", self.options.connect_timeout) from None
            err.seek(0)
            message = err.read().decode(errors="replace")
        if proc.returncode != 0:
            raise ssh_failure(self.target, message, self.options.connect_timeout)

    def count(self, category: str, nbytes: int) -> None:
        self.sent[category] = self.sent.get(category, 0) + nbytes

    def run(
        self,
        command: str,
        stdin: bytes = b"",
        timeout: float = 120,
        what: str = "the command",
        on_stderr: Callable[[str], None] | None = None,
        category: str = "scripts",
    ) -> Result:
        """Run `command` in the device user's shell; stdin is sent whole. Exit 255 (ssh's own failure) raises."""
        if command.startswith("-"):
            raise ValueError(f"a remote command must not start with '-': {command!r}")
        argv = ["ssh", *self._options(), self.target.destination(), command]
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        self.count(category, len(stdin))
        out, err_lines = [], []
        threads = [
            threading.Thread(target=_feed, args=(proc.stdin, stdin), daemon=True),
            threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True),
            threading.Thread(target=_lines, args=(proc.stderr, err_lines, on_stderr), daemon=True),
        ]
        for t in threads:
            t.start()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise UserError(
                f"{self.target}: {what} did not finish within {timeout:.0f} s; check the device, then run it again"
            ) from None
        finally:
            for t in threads:
                t.join(timeout=5)
        stderr = "".join(err_lines)
        if proc.returncode == 255:
            raise ssh_failure(self.target, stderr, self.options.connect_timeout)
        return Result(proc.returncode, b"".join(out), stderr)

    def put(self, files: list[tuple[Path, str]], category: str, what: str = "the upload") -> None:
        """Upload local files to absolute device paths with one `sftp -b` batch (folders must exist there)."""
        if not files:
            return
        batch = Path(self._dir or ".") / "batch"
        batch.write_text("".join(f"put {_sftp_quote(str(local))} {_sftp_quote(remote)}\n" for local, remote in files))
        total = sum(Path(local).stat().st_size for local, _ in files)
        rate = (self.options.limit_kbps or 800) * 125  # bytes/s: the limit, else assume at least 100 KB/s
        argv = ["sftp", *self._options(sftp=True), "-b", str(batch), self.target.destination(bracket_v6=True)]
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        try:
            _, err = proc.communicate(timeout=120 + total / rate)
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise UploadError(self.target, what, "it did not finish in time", "") from None
        stderr = err.decode(errors="replace")
        if proc.returncode < 0:
            raise UploadError(self.target, what, f"sftp ended by signal {-proc.returncode}", stderr)
        if proc.returncode == 255 and not re.search(r"No space|Failure|write", stderr):
            raise ssh_failure(self.target, stderr, self.options.connect_timeout)
        if proc.returncode != 0:
            raise UploadError(self.target, what, "sftp failed", stderr)
        self.count(category, total)

    def call(self, source: str, request: dict, python: str, timeout: float = 120, what: str = "", **run) -> dict:
        """Run a standard-library device script (`source`, with REQUEST = the JSON of `request` in front) with the
        device's Python, sent zlib-compressed on stdin; returns the JSON it printed after MARK. Its
        {"error": ...} becomes a UserError."""
        program = zlib.compress(f"REQUEST = {json.dumps(request)!r}\n{source}".encode(), 9)
        command = f"{quote_word(python)} -c {shlex.quote(BOOTSTRAP)}"
        result = self.run(command, program, timeout, what or "a device script", **run)
        return parse_answer(self.target, python, result)


class UploadError(UserError):
    """An upload that did not complete: cut, timed out, or refused by the device (its disk, its permissions)."""

    def __init__(self, target: Target, what: str, why: str, stderr: str) -> None:
        self.why, self.stderr = why, stderr
        last = next((x.strip() for x in reversed(stderr.splitlines()) if x.strip()), "")
        detail = f" ({last})" if last else ""
        super().__init__(
            f"{target}: {what} was cut: {why}{detail}; the device keeps its active bundle, run the deploy again"
        )


def parse_answer(target: Target, python: str, result: Result) -> dict:
    """The JSON a device script printed after MARK; its missing interpreter, crash or error as one line."""
    lines = [x for x in result.stdout.decode(errors="replace").splitlines() if x.startswith(MARK)]
    last_err = next((x.strip() for x in reversed(result.stderr.splitlines()) if x.strip()), "no message")
    if not lines:
        if result.code in (126, 127):
            raise UserError(
                f"{target}: no usable {python} on the device ({last_err}); install Python 3.11+ there or name the "
                "interpreter with --python PATH"
            )
        raise UserError(f"{target}: the device's {python} failed ({last_err}); check it runs Python 3.6 or newer")
    answer = json.loads(lines[-1][len(MARK) :])
    if "error" in answer:
        raise UserError(f"{target}: {answer['error']}")
    return answer


def _sftp_quote(path: str) -> str:
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _feed(pipe, data: bytes) -> None:
    try:
        pipe.write(data)
        pipe.close()
    except (BrokenPipeError, OSError):
        pass


def _lines(pipe, sink: list[str], on_line: Callable[[str], None] | None) -> None:
    for raw in iter(pipe.readline, b""):
        line = raw.decode(errors="replace")
        sink.append(line)
        if on_line is not None:
            on_line(line.rstrip("\n"))


def _kill(proc: subprocess.Popen) -> None:
    """End the ssh/sftp process and what it started (its own session), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
