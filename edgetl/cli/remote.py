"""`edgetl deploy` and `edgetl device`: a bundle onto a device over SSH (the library is edgetl.remote).

Thin: parse the options, call one library function, print. Imports no torch (the library neither).
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import click

from edgetl.errors import UserError

DEPLOY_EXAMPLES = """
\b
edgetl device probe nuc@10.0.0.7                        # what the device has, as a table (--json: as JSON)
edgetl deploy parts-ov.tar.gz nuc@10.0.0.7              # install the runtime if needed, push, verify, activate
edgetl deploy parts-ov.tar.gz nuc@10.0.0.7 --bench      # + model-only and end-to-end latency on the device
edgetl deploy parts-ov.tar.gz nuc@10.0.0.7 --predict photo.jpg
edgetl deploy --rollback nuc@10.0.0.7                   # the previous bundle is active again
edgetl deploy parts-trt.tar.gz orin                     # a Host alias; the TensorRT engine is built there
edgetl deploy parts-ov.tar.gz nuc -o ProxyJump=gateway -o IdentityFile=~/.ssh/nuc
edgetl deploy runs/i nuc@10.0.0.7 --target auto         # build every runtime here, time them THERE, keep the fastest
The device runs the bundle from ~/.edgetl/current (edgetl predict ~/.edgetl/current photo.jpg, with
~/.edgetl/venv/bin/edgetl). Nothing is activated unless it was verified and loaded there first.
"""


def _say(message: str) -> None:
    click.echo(message, err=True)


def ssh_options(command):
    """The options every remote command shares: how to reach the device and where edgetl lives there."""
    options = [
        click.option("-F", "--ssh-config", type=click.Path(path_type=Path), help="An ssh_config file (ssh -F)."),
        click.option(
            "-o",
            "--ssh-option",
            "ssh_option",
            multiple=True,
            help="An ssh option, e.g. -o Port=2222 (repeatable; passed to ssh and sftp as given).",
        ),  # fmt: skip
        click.option("--connect-timeout", default=10, show_default=True, type=int, help="Seconds to connect."),
        click.option("--python", default="python3", show_default=True, help="The device's Python (3.11+ for the env)."),
        click.option("--remote-dir", default="~/.edgetl", show_default=True, help="edgetl's folder on the device."),
        click.option("--venv", default=None, help="The device venv edgetl owns [default: REMOTE_DIR/venv]."),
    ]
    return functools.reduce(lambda f, option: option(f), reversed(options), command)


def _options(kw: dict, **extra):
    from edgetl.remote.deploy import DeployOptions
    from edgetl.remote.ssh import SshOptions

    ssh = SshOptions(
        kw.pop("ssh_config"), tuple(kw.pop("ssh_option")), kw.pop("connect_timeout"), kw.pop("limit_rate", None)
    )
    return DeployOptions(
        ssh=ssh, python=kw.pop("python"), remote_dir=kw.pop("remote_dir"), venv=kw.pop("venv"), **extra
    )


@click.command("deploy", epilog=DEPLOY_EXAMPLES)
@click.argument("args", nargs=-1, metavar="BUNDLE|RUN HOST")
@click.option("--rollback", is_flag=True, help="Make the previous bundle on HOST active again (give HOST only).")
@click.option(
    "--predict", multiple=True, type=click.Path(path_type=Path), help="Label an image on the device (repeat)."
)
@click.option("--bench", is_flag=True, help="Run `edgetl bench --json` on the device and copy the result back.")
@click.option("--bench-json", type=click.Path(path_type=Path), help="--bench's result [default: bench-HOST.json].")
@click.option("--duration", default=5.0, show_default=True, type=float, help="--bench: seconds timed per measurement.")
@click.option("--warmup", default=1.0, show_default=True, type=float, help="--bench: seconds of untimed warm-up.")
@click.option("--batch", default="1", show_default=True, help="--bench: batch sizes, comma-separated.")
@click.option("--images", multiple=True, type=click.Path(path_type=Path), help="--bench: photos to time (sent).")
@click.option("--online", is_flag=True, help="The device's pip fetches the runtime itself (default: sent from here).")
@click.option("--limit-rate", type=int, help="Upload bandwidth limit in Kbit/s (sftp -l).")
@click.option("--keep", default=3, show_default=True, type=int, help="Bundles kept on the device (>= 2).")
@click.option("--full-upload", is_flag=True, help="Send every chunk, ignoring what the device stores.")
@click.option("--edgetl-wheel", type=click.Path(path_type=Path), help="edgetl wheel to install [default: built here].")
@click.option(
    "--target",
    help="auto: given a run folder or model.onnx instead of a bundle, compile each runtime here, time them on the "
    "device (`edgetl choose` there) and activate the fastest faithful one.",
)
@click.option("--auto-json", type=click.Path(path_type=Path), help="--target auto's record [default: auto-HOST.json].")
@ssh_options
def deploy_cmd(args: tuple[str, ...], rollback: bool, target: str | None, auto_json: Path | None, **kw) -> None:
    """Put a bundle on a device over SSH: install its runtime there if needed (from wheels sent from here), send
    only the files and chunks the device lacks, verify and load it there, then make it the active bundle.
    With --target auto, RUN_OR_MODEL instead of BUNDLE: the device chooses the runtime."""
    from edgetl.remote import deploy, run

    if target not in (None, "auto"):
        raise UserError(f"deploy --target {target}: a bundle already names its target; give the bundle alone, or "
                        "--target auto with a run folder or model.onnx to let the device choose")  # fmt: skip
    if rollback and target:
        raise UserError("deploy --rollback: give HOST only (--target auto deploys a new bundle)")
    if rollback:
        if len(args) != 1:
            raise UserError(f"deploy --rollback: give HOST only (got {' '.join(args) or 'nothing'})")
        opts = _options({k: kw[k] for k in _SSH_KEYS | {"limit_rate"}})
        done = deploy.rollback(args[0], opts, _say)
        click.echo(f"{args[0]}: bundle {done['current']} is active again (the one before: {done['previous']})")
        return
    if len(args) != 2:
        raise UserError(f"deploy: give BUNDLE HOST, e.g. edgetl deploy parts-ov.tar.gz nuc@10.0.0.7 (got {len(args)})")
    bundle, host = Path(args[0]), args[1]
    bench = None
    if kw["bench"] or kw["bench_json"]:
        out = kw["bench_json"] or Path(f"bench-{re.sub(r'[^A-Za-z0-9._-]+', '_', host)}.json")
        bench = run.BenchOptions(out, kw["duration"], kw["warmup"], batch=kw["batch"], images=tuple(kw["images"]))
    extra = {k: kw[k] for k in ("online", "keep", "full_upload", "edgetl_wheel")}
    opts = _options({k: kw[k] for k in _SSH_KEYS | {"limit_rate"}}, predict=tuple(kw["predict"]), bench=bench, **extra)
    if target == "auto":
        auto_json = auto_json or Path(f"auto-{re.sub(r'[^A-Za-z0-9._-]+', '_', host)}.json")
        result = _deploy_auto(bundle, host, opts, auto_json)
    else:
        if auto_json:
            raise UserError("deploy --auto-json: only with --target auto")
        result = deploy.deploy(bundle, host, opts, _say, echo=click.echo)
    for p in result.predictions:
        top = ", ".join(f"{name} {prob:.3f}" for name, prob in p["topk"])
        click.echo(
            f"{p['path']}: {p['label']} {p['class']!r} {p['prob']:.3f}  top: [{top}]  {p['ms']:.2f} ms on {host}"
        )
    if bench:
        _say(f"wrote {bench.out} (the device's results, stamped with its probe)")
    state = "activated" if result.changed else "already active"
    if result.auto:
        _say(f"wrote {auto_json} (the device's choice: its CPU, every candidate's p50 there, why)")
        click.echo(f"{host}: chose {result.auto['why']}")
    click.echo(
        f"{host}: bundle {result.bundle_id} {state} ({opts.remote_dir}/current; previous: {result.previous or 'none'}); sent "
        f"{result.bytes_sent / 1e6:.2f} MB in {result.seconds:.1f} s; undo with: edgetl deploy --rollback {host}"
    )


def _deploy_auto(source: Path, host: str, opts, out: Path):
    """deploy --target auto; the device's record, with where it was made, written to `out`."""
    from edgetl.remote.auto import deploy_auto

    result = deploy_auto(source, host, opts, _say, echo=click.echo)
    doc = {"host": host, "source": str(source), "bundle_id": result.bundle_id, **result.auto}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    return result


_SSH_KEYS = {"ssh_config", "ssh_option", "connect_timeout", "python", "remote_dir", "venv"}


@click.group("device")
def device_group() -> None:
    """What a device has, over SSH (nothing is installed or changed)."""


@device_group.command("probe")
@click.argument("host")
@click.option("--json", "as_json", is_flag=True, help="The probe as JSON (what deploy and --bench record).")
@ssh_options
def probe_cmd(host: str, as_json: bool, **kw) -> None:
    """Architecture, OS, Python, CPU model and flags, memory and free disk, GPU/NPU (Jetson: L4T, JetPack, CUDA,
    TensorRT), the runtimes importable there, the device env and the active bundle.

    \b
    edgetl device probe nuc@10.0.0.7
    edgetl device probe orin --json > orin.json
    """
    from edgetl.remote.deploy import probe_device
    from edgetl.remote.probe import table

    probe = probe_device(host, _options(kw))
    if as_json:
        click.echo(json.dumps(probe, indent=1))
        return
    for name, value in table(probe):
        click.echo(f"{name:18s} {value}")


COMMANDS = [deploy_cmd, device_group]
