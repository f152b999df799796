"""What a device has: the probe script's JSON (edgetl.remote.device_probe), read on the host.

One JSON that the other commands reuse: `deploy` takes the device's Python and platform tags for the wheels, its
free disk for the checks before an upload, the venv's packages to send only what is missing, and `--bench` stamps
its results with it. `edgetl device probe` prints it as a table or, with --json, as it is.
"""

from __future__ import annotations

import inspect

from edgetl.errors import UserError
from edgetl.remote import device_probe
from edgetl.remote.ssh import Connection

MIN_PYTHON = (3, 11)  # edgetl's requires-python: the device venv runs the device side of edgetl
LEGACY_MANYLINUX = {"manylinux2014": (2, 17), "manylinux2010": (2, 12), "manylinux1": (2, 5)}
PIP_ARCH = {"arm64": "aarch64", "amd64": "x86_64", "armv8l": "armv7l"}


def run_probe(conn: Connection, python: str, root: str, venv: str | None) -> dict:
    """Run the probe on the device (a few seconds at most: every tool it asks has a timeout)."""
    source = inspect.getsource(device_probe)
    return conn.call(source, {"root": root, "venv": venv}, python, timeout=120, what="the device probe")


def python_version(probe: dict) -> tuple[int, ...]:
    return tuple(int(x) for x in probe["python"]["version"].split(".")[:2])


def check_python(probe: dict, target, python: str) -> str:
    """'3.11' when the device's Python can run edgetl's device side, else one line saying how to get one."""
    version = python_version(probe)
    if probe["os"]["system"] != "Linux":
        raise UserError(f"{target}: the device runs {probe['os']['system']}; edgetl deploy supports Linux devices")
    if version < MIN_PYTHON:
        raise UserError(
            f"{target}: {python} on the device is Python {probe['python']['version']}; edgetl's device side needs "
            f"{'.'.join(map(str, MIN_PYTHON))}+: install one there (e.g. python3.11) and pass --python python3.11"
        )
    if probe["python"]["implementation"] != "cpython":
        raise UserError(f"{target}: {python} is {probe['python']['implementation']}; give a CPython with --python")
    return f"{version[0]}.{version[1]}"


def platform_tags(probe: dict) -> list[str]:
    """pip --platform tags the device accepts, most specific first: manylinux_2_X for X up to its glibc (with the
    legacy aliases) or musllinux_1_X for musl. Never linux_<arch>: such wheels are built for one machine."""
    arch = PIP_ARCH.get(probe["machine"], probe["machine"])
    libc = probe.get("libc") or {}
    version = libc.get("version") or ""
    parts = version.split(".")
    if libc.get("name") not in ("glibc", "musl") or len(parts) < 2 or not all(p.isdigit() for p in parts[:2]):
        raise UserError(
            f"the device's C library is unknown ({libc.get('name')} {version}); edgetl needs glibc or musl to pick "
            "wheels for it"
        )
    major, minor = int(parts[0]), int(parts[1])
    if libc["name"] == "musl":
        return [f"musllinux_{major}_{m}_{arch}" for m in range(minor, -1, -1)]
    tags = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 4, -1)]
    tags += [f"{alias}_{arch}" for alias, floor in LEGACY_MANYLINUX.items() if (major, minor) >= floor]
    return tags


def venv_packages(probe: dict) -> dict[str, str]:
    """{normalized distribution name: version} installed in the device venv (empty when there is none)."""
    from edgetl.remote.wheelhouse import normalize

    venv = probe.get("venv") or {}
    return {normalize(name): version for name, version in (venv.get("packages") or {}).items()}


def _size(nbytes) -> str:
    return "?" if nbytes is None else f"{nbytes / 2**30:.1f} GiB"


def _runtimes(found: dict | None) -> str:
    if not found:
        return "none"
    parts = [f"{name} {info.get('version') or '?'}" for name, info in found.items() if info]
    return ", ".join(parts) or "none"


def table(probe: dict) -> list[tuple[str, str]]:
    """(field, value) rows for `edgetl device probe`."""
    acc, venv, state = probe["accelerators"], probe.get("venv") or {}, probe.get("edgetl") or {}
    jetson = acc.get("jetson") or {}
    cpu = probe["cpu"]
    rows = [
        ("host", probe["hostname"]),
        ("os", f"{probe['os'].get('pretty') or probe['os']['system']} (kernel {probe['os']['release']})"),
        ("machine", f"{probe['machine']}, {probe['libc'].get('name')} {probe['libc'].get('version')}"),
        ("python", f"{probe['python']['executable']} {probe['python']['version']}"),
        ("cpu", f"{cpu['model']}, {cpu['logical_cpus']} logical CPUs"),
        ("cpu flags", " ".join(cpu["flags"]) or "none of AVX2/AVX-512/VNNI/AMX/NEON"),
        (
            "memory",
            f"{_size(probe['memory'].get('total_bytes'))} ({_size(probe['memory'].get('available_bytes'))} free)",
        ),
        ("disk", f"{_size(probe['disk']['free_bytes'])} free at {probe['disk']['measured_at']}"),
        ("gpu", "; ".join(acc["nvidia_gpus"]) or ("iGPU render node" if acc["render_nodes"] else "none")),
        ("npu", ", ".join(acc["npu"] + acc["other"]) or "none"),
    ]
    if jetson:
        rows.append(("jetson", f"{jetson.get('model')}, L4T {jetson.get('l4t')}, JetPack {jetson.get('jetpack')}"))
    rows.append(("cuda / tensorrt", f"{acc.get('cuda') or 'none'} / {acc.get('tensorrt_package') or 'none'}"))
    rows.append(("runtimes (python)", _runtimes(probe.get("runtimes"))))
    if venv.get("exists"):
        found = {k: {"version": venv_packages(probe).get(k.lower())} for k, v in (venv.get("found") or {}).items()}
        wanted = {k: v for k, v in found.items() if k in ("openvino", "onnxruntime", "tensorrt", "numpy", "edgetl")}
        rows.append(("device env", f"{venv['path']} (Python {venv.get('python')}): {_runtimes(wanted)}"))
    else:
        rows.append(("device env", f"{venv.get('path')}: not made yet (edgetl deploy makes it)"))
    for link in ("current", "previous"):
        info = state.get(link)
        value = f"{info['id']} ({info.get('target')} {info.get('device')}, {info.get('created')})" if info else "none"
        rows.append((f"{link} bundle", value))
    return rows
