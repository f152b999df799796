"""`edgetl deploy RUN HOST --target auto`: the device picks its own winner, by the logic `compile --target auto` uses.

On the host, edgetl.bench.auto's `build_candidates` compiles every candidate (each INT8 layout and the FP32 model
of a run, in each runtime installed here); the device venv gets every candidate's runtime (one install); each
candidate is pushed (only the chunks the device lacks) and opened by the device's edgetl (a candidate that does
not load there is dropped with its reason); the device's `edgetl choose` (edgetl.bench.auto's `choose`: the INT8
probe on its CPU, the timing, the pick) names the winner, which is activated; the losers pushed for this are
removed. The record (the device's CPU, runtime versions, every candidate's p50 there or why it was dropped, why
the winner won) comes back as JSON.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from pathlib import Path

from edgetl.contract import MANIFEST
from edgetl.errors import UserError
from edgetl.remote import env, push, run
from edgetl.remote.deploy import DeployOptions, DeployResult, check_predict, on_device
from edgetl.remote.probe import run_probe
from edgetl.remote.ssh import Connection, Target

CHOOSE_S = 120  # the device's `edgetl choose`: seconds allowed per candidate (load, INT8 probe, ~7 s of timing)


def check_source(source: Path) -> None:
    """--target auto builds its candidates here: it needs the run folder or the exported graph, not a bundle."""
    source = Path(source)
    if source.name.endswith((".tar.gz", ".tgz")) or (source.is_dir() and (source / MANIFEST).is_file()):
        raise UserError(
            f"deploy --target auto: {source} is a bundle, already compiled for one target; pass the run folder "
            f"(or its model.onnx) instead, e.g. edgetl deploy runs/i HOST --target auto"
        )
    if not source.exists():
        raise UserError(f"deploy --target auto: {source}: no such run folder or model.onnx")


def deploy_auto(source: Path, target_text: str, opts: DeployOptions, say, echo=print) -> DeployResult:
    """Build the candidates here, push them, let the device's `edgetl choose` pick, activate the winner; then
    --predict and --bench as `deploy` does. The result's `auto` is the device's record."""
    from edgetl.bench.auto import build_candidates
    from edgetl.deploy.targets import CompileOptions

    start = time.perf_counter()
    source, target = Path(source), Target.parse(target_text)
    check_source(source)
    check_predict(opts)
    with tempfile.TemporaryDirectory(prefix="edgetl-auto-") as tmp, contextlib.ExitStack() as stack:
        found = build_candidates(source, Path(tmp), CompileOptions(), lambda m: say(m.replace("--target auto: ", "")))
        if not found.folders:
            raise UserError(f"deploy --target auto: no target compiles {source} here ({_why(found.rows)})")
        local = {name: stack.enter_context(push.open_local(f)) for name, f in found.folders.items()}
        conn = stack.enter_context(Connection(target, opts.ssh))
        probe = run_probe(conn, opts.python, opts.remote_dir, opts.venv)
        say(f"{target}: {probe['machine']}, Python {probe['python']['version']}, {probe['cpu']['model']}")
        rows = [{"target": r["target"], "dropped": f"not built on the host: {r['dropped']}"} for r in found.rows]
        rows += _unsupported(local, probe, conn.target, opts.python)
        session = push.Session(conn, opts.python, probe["edgetl"]["root"])
        try:
            session.store("status")  # sweeps what an earlier deploy left before anything is sent
            env_opts = env.EnvOptions(opts.python, probe["venv"]["path"], opts.online, opts.edgetl_wheel)
            report = env.ensure(conn, probe, [x.manifest for x in local.values()], env_opts, session, say)
            pushed = _push_all(session, local, probe["venv"]["path"], opts, rows, say)
            winner, record = _choose(session, probe["venv"]["path"], local, pushed, rows, found.default, say)
            result = _activate(session, local, pushed, winner, opts)
            result.wheels, result.auto = report.sent, {**record, "bundle_ids": {n: local[n].id for n in pushed}}
            on_device(session, probe, report.installed, opts, result, (winner, local[winner].manifest), say, echo)
        finally:
            session.end()
        result.sent, result.seconds = dict(conn.sent), time.perf_counter() - start
    return result


def _why(rows: list[dict]) -> str:
    return "; ".join(f"{r['target']}: {r['dropped']}" for r in rows)


def _unsupported(local: dict[str, push.Local], probe: dict, target, python: str) -> list[dict]:
    """Drop (from `local`) the candidates the device cannot run at all: TensorRT without TensorRT/CUDA there."""
    rows = []
    for name in [n for n, x in local.items() if x.manifest["target"] == "tensorrt"]:
        try:
            env.check_tensorrt(probe, target, python)
        except UserError as e:
            rows.append({"target": name, "dropped": f"not usable on the device ({e})"})
            local.pop(name)
    if not local:
        raise UserError(f"deploy --target auto: no candidate can run on {target} ({_why(rows)})")
    return rows


def _push_all(session, local: dict[str, push.Local], venv: str, opts, rows: list[dict], say) -> dict:
    """Push every candidate and open it with the device's edgetl; one that does not load there is dropped (a row
    in `rows`) and removed. Returns {name: its PushReport} of those that load."""
    pushed = {}
    for name, candidate in local.items():
        say(f"candidate {name}:")
        report = push.push(session, candidate, say, opts.full_upload)
        bundle_dir = f"{session.root}/bundles/{candidate.id}"
        try:
            run.load_check(session, venv, bundle_dir, candidate.manifest["target"] == "tensorrt", say)
        except run.LoadFailed as e:
            if not report.present:
                session.store("discard", id=candidate.id)  # never current: removed, the active bundle stays
            rows.append({"target": name, "dropped": f"does not load on the device ({e.why})"})
            continue
        pushed[name] = report
    if not pushed:
        raise UserError(f"{session.conn.target}: no candidate loads on the device ({_why(rows)}); "
                        "the active bundle is unchanged")  # fmt: skip
    return pushed


def _choose(session, venv: str, local: dict, pushed: dict, rows: list[dict], default: str, say) -> tuple[str, dict]:
    """The device's `edgetl choose --json` over the pushed bundle folders: (the winner's name, its record)."""
    target = session.conn.target
    args = ["choose", *(f"{name}={session.root}/bundles/{local[name].id}" for name in pushed)]
    args += ["--default", default, "--json", *(x for r in rows for x in ("--dropped", f"{r['target']}={r['dropped']}"))]

    def forward(line: str) -> None:  # the device's progress: each candidate built... timed, as it goes
        if line.strip():
            say(f"{target}: {line.replace('--target auto: ', 'choose: ')}")

    say(f"{target}: timing {len(pushed)} candidate(s) there ({', '.join(pushed)})")
    result = run.device_edgetl(session, venv, args, CHOOSE_S * len(pushed) + 300, "edgetl choose", forward)
    if result.code != 0:
        raise UserError(f"{target}: edgetl choose failed on the device ({run.error_line(result)}); "
                        "the active bundle is unchanged")  # fmt: skip
    lines = [x for x in result.stdout.decode(errors="replace").splitlines() if x.startswith("{")]
    try:
        record = json.loads(lines[-1])
        return record["winner"], record
    except (IndexError, ValueError, KeyError):
        raise UserError(f"{target}: edgetl choose gave no record ({run.error_line(result)})") from None


def _activate(session, local: dict, pushed: dict, winner: str, opts: DeployOptions) -> DeployResult:
    """Make the winner current; remove the losers this deploy brought (bundles the device had stay)."""
    if winner not in pushed:
        raise UserError(f"{session.conn.target}: edgetl choose named {winner!r}, not a candidate sent; "
                        "the active bundle is unchanged")  # fmt: skip
    for name, report in pushed.items():  # first: `activate` keeps --keep bundles, the losers must not count
        if name != winner and not report.present and local[name].id != local[winner].id:
            session.store("discard", id=local[name].id)  # current and previous are never removed
    active = session.store("activate", id=local[winner].id, keep=opts.keep)
    return DeployResult(str(session.conn.target), local[winner].id, active["current"], active["previous"],
                        active["changed"], {}, [], pushed[winner], 0.0)  # fmt: skip
