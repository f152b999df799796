"""`edgetl deploy`, `edgetl deploy --rollback` and `edgetl device probe`: one function each, called by the CLI.

A deploy: open and verify the bundle on the host, log in once, probe the device, bring its venv to what the bundle
needs (edgetl.remote.env), push what the device lacks (edgetl.remote.push), open the bundle there with the
device's edgetl, and only then switch `current`; then, if asked, label images and benchmark on the device. Any
failure before the switch leaves the active bundle as it was; the session's uploads are removed at the end, and
whatever a cut connection left is swept by the next deploy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgetl.errors import UserError
from edgetl.remote import env, push, run
from edgetl.remote.probe import run_probe
from edgetl.remote.ssh import Connection, SshOptions, Target


@dataclass(frozen=True)
class DeployOptions:
    ssh: SshOptions = field(default_factory=SshOptions)
    python: str = "python3"  # the device's interpreter: the probe and the store run with it, the venv is made from it
    remote_dir: str = "~/.edgetl"  # the device's bundle store (see edgetl.remote.device_store)
    venv: str | None = None  # default: REMOTE_DIR/venv
    online: bool = False
    edgetl_wheel: Path | None = None
    keep: int = 3  # bundles kept on the device (current and previous always)
    full_upload: bool = False  # ignore what the device stores: send every chunk
    predict: tuple[Path, ...] = ()
    bench: run.BenchOptions | None = None

    def __post_init__(self) -> None:
        if self.python.startswith("-") or not self.python.strip():
            raise UserError(f"--python {self.python!r}: give the device's interpreter, e.g. python3.11")
        if self.keep < 2:
            raise UserError(f"--keep {self.keep}: keep at least 2 bundles (the active one and the one to roll back to)")


@dataclass
class DeployResult:
    target: str
    bundle_id: str
    current: str
    previous: str | None
    changed: bool  # False: the bundle was already active
    sent: dict[str, int]  # bytes handed to ssh, by category (scripts, wheels, bundle, images)
    wheels: list[str]
    push: push.PushReport
    seconds: float
    fidelity: str | None = None
    predictions: list[dict] = field(default_factory=list)
    bench: dict | None = None
    auto: dict | None = None  # deploy --target auto: the device's choice (edgetl.remote.auto)

    @property
    def bytes_sent(self) -> int:
        return sum(self.sent.values())


def probe_device(target_text: str, opts: DeployOptions) -> dict:
    """The device's probe JSON (edgetl.remote.device_probe)."""
    with Connection(Target.parse(target_text), opts.ssh) as conn:
        return run_probe(conn, opts.python, opts.remote_dir, opts.venv)


def deploy(bundle: Path, target_text: str, opts: DeployOptions, say: Callable[[str], None], echo=print) -> DeployResult:
    """Install the runtime if needed, push, verify, activate; then --predict and --bench on the device."""
    start = time.perf_counter()
    target = Target.parse(target_text)
    check_predict(opts)
    with push.open_local(bundle) as local, Connection(target, opts.ssh) as conn:
        probe = run_probe(conn, opts.python, opts.remote_dir, opts.venv)
        venv = probe["venv"]["path"]
        say(f"{target}: {probe['machine']}, Python {probe['python']['version']}, {probe['cpu']['model']}")
        session = push.Session(conn, opts.python, probe["edgetl"]["root"])
        try:
            session.store("status")  # sweeps what an earlier deploy left (a cut upload) before anything is sent
            env_opts = env.EnvOptions(opts.python, venv, opts.online, opts.edgetl_wheel)
            report = env.ensure(conn, probe, local.manifest, env_opts, session, say)
            result = _push_and_activate(session, local, venv, opts, say)
            result.wheels = report.sent
            on_device(session, probe, report.installed, opts, result, (Path(bundle).name, local.manifest), say, echo)
        finally:
            session.end()
        result.sent, result.seconds = dict(conn.sent), time.perf_counter() - start
    return result


def check_predict(opts: DeployOptions) -> None:
    for f in opts.predict:
        if not Path(f).is_file():
            raise UserError(f"--predict {f}: no such file")


def on_device(session, probe: dict, installed: bool, opts: DeployOptions, result: DeployResult, bundle, say, echo):
    """--predict and --bench with the bundle just activated; `bundle`: (its name, its manifest)."""
    venv = probe["venv"]["path"]
    if opts.predict:
        result.predictions = run.remote_predict(session, venv, opts.predict)
    if opts.bench is not None:
        conn = session.conn
        probe = run_probe(conn, opts.python, opts.remote_dir, opts.venv) if installed else probe
        stamp = {"host": str(conn.target), "bundle": bundle[0], "bundle_id": result.bundle_id, "probe": probe}
        result.bench = run.remote_bench(session, venv, opts.bench, {**stamp, "manifest": bundle[1]}, say, echo)


def _push_and_activate(session: push.Session, local: push.Local, venv: str, opts: DeployOptions, say) -> DeployResult:
    pushed = push.push(session, local, say, opts.full_upload)
    bundle_dir = f"{session.root}/bundles/{local.id}"
    fidelity = None
    if pushed.status.get("current") != local.id or not pushed.present:
        try:
            build = local.manifest["target"] == "tensorrt"
            fidelity = run.load_check(session, venv, bundle_dir, build, say)
        except UserError:
            if not pushed.present:
                session.store("discard", id=local.id)  # never current: removed, the active bundle stays
            raise
    active = session.store("activate", id=local.id, keep=opts.keep)
    target = str(session.conn.target)
    return DeployResult(target, local.id, active["current"], active["previous"], active["changed"], {}, [], pushed, 0.0,
                        fidelity)  # fmt: skip


def rollback(target_text: str, opts: DeployOptions, say: Callable[[str], None]) -> dict:
    """Make the previous bundle active again (the two swap: a second rollback undoes the first). The bundle is
    opened with the device's edgetl first; if it no longer loads there, nothing is switched."""
    target = Target.parse(target_text)
    with Connection(target, opts.ssh) as conn:
        probe = run_probe(conn, opts.python, opts.remote_dir, opts.venv)
        state = probe["edgetl"]
        if not state.get("previous"):
            raise UserError(f"{target}: no previous bundle in {state['root']} to roll back to (deploy twice first)")
        session = push.Session(conn, opts.python, state["root"])
        bundle_dir = f"{state['root']}/bundles/{state['previous']['id']}"
        run.load_check(session, probe["venv"]["path"], bundle_dir, False, say)  # an engine was built at its deploy
        return session.store("rollback")
