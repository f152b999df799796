"""The device environment edgetl owns: a venv (default ~/.edgetl/venv) with the device side of edgetl and the
bundle's runtime, nothing else.

The probe lists what the venv holds; only the wheels it lacks (by name and version, and the edgetl wheel by its
sha256) are pushed over the SSH connection and installed with `pip --no-index --no-deps` (the wheelhouse is already
the full, resolved set), so a device that has the environment receives nothing. After an install the device
imports every module the bundle needs and reports the versions; torch, timm or onnx importable there is an error.
A TensorRT bundle uses the device's own TensorRT (JetPack), linked into the venv by itself.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgetl.errors import UserError
from edgetl.fileio import sha256_file
from edgetl.remote import device_env, wheelhouse
from edgetl.remote.probe import check_python, platform_tags, venv_packages
from edgetl.remote.ssh import Connection

FORBIDDEN = ("torch", "timm", "onnx", "torchvision", "transformers")  # never in the device env
BASE_MODULES = ("edgetl", "numpy", "PIL", "click", "rich")
RUNTIME_MODULES = {"openvino": "openvino", "onnxruntime": "onnxruntime", "tensorrt": "tensorrt"}
UNPACK_FACTOR = 4  # disk a wheel needs while it is uploaded and installed, as a multiple of its size


@dataclass(frozen=True)
class EnvOptions:
    python: str = "python3"  # the device's interpreter the venv is made from
    venv: str = "~/.edgetl/venv"
    online: bool = False  # the device's pip fetches the requirements itself
    edgetl_wheel: Path | None = None  # default: built from this checkout


@dataclass
class EnvReport:
    sent: list[str]  # wheel file names pushed
    versions: dict  # module -> version in the device venv (after an install; else from the probe)
    installed: bool


def modules_for(manifest: dict) -> list[str]:
    modules = [*BASE_MODULES, RUNTIME_MODULES[manifest["target"]]]
    if manifest["target"] == "tensorrt":
        modules.append("cuda.bindings.runtime")
    return modules


def to_send(probe: dict, house: wheelhouse.Wheelhouse | None, edgetl: Path, online: bool) -> list[Path]:
    """The wheels the venv lacks: those not installed at their version, and edgetl when its sha256 differs. pip is
    sent whenever anything is installed and the venv has no pip (it runs from its wheel)."""
    installed = venv_packages(probe)
    venv = probe.get("venv") or {}
    sends = [] if house is None else [w.path for w in house.wheels if installed.get(w.name) != w.version]
    if venv.get("edgetl_wheel") != sha256_file(edgetl) or "edgetl" not in installed:
        sends.append(edgetl)
    if (sends or online) and "pip" not in installed:
        pip = [w.path for w in house.wheels if w.name == "pip"] if house else [wheelhouse.pip_wheel()]
        sends += [p for p in pip if p not in sends]
    return sends


def check_tensorrt(probe: dict, target, python: str) -> None:
    """A TensorRT bundle needs TensorRT and CUDA on the device (JetPack on a Jetson); edgetl installs neither."""
    runtimes = probe.get("runtimes") or {}
    if not runtimes.get("tensorrt"):
        raise UserError(
            f"{target}: no TensorRT for {python} on the device (on a Jetson it comes with JetPack: sudo apt install "
            "nvidia-jetpack); the active bundle is unchanged. Deploy an OpenVINO or ONNX Runtime bundle instead"
        )
    if not (probe.get("accelerators") or {}).get("cuda"):
        raise UserError(
            f"{target}: TensorRT bundle, but the device has no CUDA (/usr/local/cuda); install JetPack/CUDA"
        )


def check_answer(target, answer: dict, manifest: dict, venv: str) -> dict:
    """The import check's verdict: a forbidden module, a module that does not import, a runtime at another
    version than the bundle's are each one line."""
    if answer.get("forbidden"):
        name, origin = next(iter(answer["forbidden"].items()))
        raise UserError(
            f"{target}: {name} is importable in the device env {venv} (from {origin}); edgetl's device env must hold "
            f"no training stack: uninstall it there ({venv}/bin/python -m pip uninstall {name}) or unset PYTHONPATH"
        )
    if answer.get("errors"):
        name, why = next(iter(answer["errors"].items()))
        raise UserError(f"{target}: {name} does not import in the device env {venv} ({why}); see `edgetl device probe`")
    runtime = manifest["target"]
    wanted, got = (manifest.get("runtime") or {}).get(runtime), answer["versions"].get(RUNTIME_MODULES[runtime])
    if wanted and got and runtime != "tensorrt" and got != wanted:
        raise UserError(
            f"{target}: the bundle was compiled with {runtime} {wanted}, the device env has {got}; deploy without "
            "--online (the host sends the bundle's release) or recompile the bundle with the device's release"
        )
    return answer["versions"]


def check_space(target, probe: dict, nbytes: int) -> None:
    """The wheels are uploaded into the store (ROOT/incoming) and unpacked into the venv: room for both first."""
    store, venv = probe["disk"], probe.get("venv_disk") or probe["disk"]
    same = store.get("device") == venv.get("device")
    needs = [(store, UNPACK_FACTOR * nbytes)] if same else [(store, nbytes), (venv, (UNPACK_FACTOR - 1) * nbytes)]
    for disk, need in needs:
        if disk["free_bytes"] < need:
            raise UserError(
                f"{target}: the disk holding {disk['measured_at']} is full for the runtime ({disk['free_bytes'] / 1e6:.0f}"
                f" MB free, about {need / 1e6:.0f} MB needed); free some space there or choose another --venv"
            )


def prepare(
    conn: Connection, probe: dict, manifests: list[dict], opts: EnvOptions, say: Callable[[str], None]
) -> tuple:
    """(wheels to send, requirements, edgetl wheel): decided on the host from the probe; downloads if needed. Several
    manifests (`deploy --target auto`'s candidates): their runtimes resolved together, into one venv."""
    python = check_python(probe, conn.target, opts.python)
    if any(m["target"] == "tensorrt" for m in manifests):
        check_tensorrt(probe, conn.target, opts.python)
    edgetl = wheelhouse.edgetl_wheel(opts.edgetl_wheel)
    runtime = [r for m in manifests for r in wheelhouse.runtime_requirements(m, probe)]
    reqs = [*wheelhouse.wheel_requirements(edgetl), *dict.fromkeys(runtime)]
    house = None if opts.online else wheelhouse.download(reqs, platform_tags(probe), python, say)
    return to_send(probe, house, edgetl, opts.online), reqs, edgetl


def ensure(conn: Connection, probe: dict, manifest: dict | list[dict], opts: EnvOptions, session, say) -> EnvReport:
    """Bring the device venv to what `manifest` (or each of a list of manifests) needs; nothing is sent when it
    already is."""
    manifests = manifest if isinstance(manifest, list) else [manifest]
    sends, reqs, edgetl = prepare(conn, probe, manifests, opts, say)
    venv = (probe.get("venv") or {}).get("path") or opts.venv
    what = "this bundle needs" if len(manifests) == 1 else f"these {len(manifests)} bundles need"
    if not sends and not opts.online:
        forbidden = {k: v for k, v in ((probe.get("venv") or {}).get("found") or {}).items() if k in FORBIDDEN and v}
        for m in manifests:
            check_answer(conn.target, {"forbidden": forbidden, "versions": {}}, m, venv)
        say(f"device env {venv}: has everything {what}")
        return EnvReport([], {}, False)
    nbytes = sum(p.stat().st_size for p in sends)
    check_space(conn.target, probe, nbytes)
    say(f"installing into {venv}: {len(sends)} wheel(s), {nbytes / 1e6:.1f} MB")
    folder = session.folder("wheels")
    conn.put([(p, f"{folder}/{p.name}") for p in sends], "wheels", "the wheel upload")
    request = {
        "action": "install", "venv": venv, "wheels_dir": folder, "wheels": [p.name for p in sends],
        "online": opts.online, "requirements": reqs, "edgetl_sha": sha256_file(edgetl),
        "link_tensorrt": any(m["target"] == "tensorrt" for m in manifests),
        "modules": list(dict.fromkeys(x for m in manifests for x in modules_for(m))), "forbidden": FORBIDDEN,
    }  # fmt: skip
    answer = conn.call(inspect.getsource(device_env), request, opts.python, timeout=3600, what="the install")
    versions = {k: v for m in manifests for k, v in check_answer(conn.target, answer, m, venv).items()}
    return EnvReport([p.name for p in sends], versions, True)
