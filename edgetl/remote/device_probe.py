"""What a device has, as one JSON: run ON THE DEVICE by `edgetl device probe` and `edgetl deploy` (`ssh HOST python3 -`).

A standalone script: standard library only, Python 3.6 syntax, nothing from edgetl (the device may not have it
yet). The host puts `REQUEST = '<json>'` in front of this source ({"root": "~/.edgetl", "venv": "~/.edgetl/venv"});
the answer is printed on one line after MARK. Reads files and asks tools that answer quickly (each with a
timeout); changes nothing on the device.
"""

import glob
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time

MARK = "@@edgetl-result@@"
FORMAT = "edgetl-device-probe/1"
# x86 flags that change which kernels run (edgetl.machine.CPU_FLAGS; tests check the two agree) and Arm's SIMD
X86_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")
ARM_FLAGS = ("neon", "asimd", "asimddp", "asimdhp", "i8mm", "bf16", "sve", "sve2")
RUNTIMES = ("openvino", "onnxruntime", "tensorrt", "numpy", "PIL", "edgetl")
FORBIDDEN = ("torch", "timm", "onnx", "torchvision", "transformers")  # never in edgetl's device env
JETPACK_BY_L4T = {"32": "4.x", "34": "5.0 (developer preview)", "35": "5.x", "36": "6.x", "38": "7.x"}
VENV_CHECK = """
import importlib.util, json, sys
try:
    from importlib import metadata
    packages = {d.metadata["Name"]: d.version for d in metadata.distributions() if d.metadata["Name"]}
except Exception:
    packages = {}
found = {}
for m in sys.argv[1].split(","):
    try:
        spec = importlib.util.find_spec(m)
    except (ImportError, ValueError):
        spec = None
    found[m] = (spec.origin or "namespace") if spec else None
print(json.dumps({"python": "%d.%d.%d" % sys.version_info[:3], "packages": packages, "found": found}))
"""


def _read(path, limit=65536):
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return None


def _tool(argv, timeout=5):
    """A tool's stdout, or None when it is missing, fails or takes too long."""
    if shutil.which(argv[0]) is None and not os.path.isfile(argv[0]):
        return None
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=timeout)  # noqa: UP022
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.decode("utf-8", "replace").strip() if proc.returncode == 0 else None


def cpu():
    """Model, the flags that matter for inference kernels (x86 and Arm), logical CPUs."""
    model, flags = platform.processor() or platform.machine(), set()
    for line in (_read("/proc/cpuinfo", 1 << 20) or "").splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and value.strip():
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    if platform.machine() in ("aarch64", "arm64") and "asimd" in flags:
        flags.add("neon")  # Armv8's Advanced SIMD is NEON
    wanted = X86_FLAGS + ARM_FLAGS
    return {"model": model, "flags": [f for f in wanted if f in flags], "logical_cpus": os.cpu_count(),
            "machine": platform.machine()}  # fmt: skip


def memory():
    info = {}
    for line in (_read("/proc/meminfo") or "").splitlines():
        key, _, value = line.partition(":")
        if key in ("MemTotal", "MemAvailable") and value.split():
            info[key] = int(value.split()[0]) * 1024
    return {"total_bytes": info.get("MemTotal"), "available_bytes": info.get("MemAvailable")}


def disk(folder):
    """Free space where `folder` is or will be made (its nearest existing parent), and which file system."""
    path = folder
    while not os.path.isdir(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    usage = shutil.disk_usage(path)
    return {"path": folder, "measured_at": path, "free_bytes": usage.free, "total_bytes": usage.total,
            "device": os.stat(path).st_dev}  # fmt: skip


def libc():
    try:
        value = os.confstr("CS_GNU_LIBC_VERSION")  # "glibc 2.36"
    except (ValueError, OSError, AttributeError):
        value = None
    if value and value.startswith("glibc "):
        return {"name": "glibc", "version": value.split()[1]}
    if glob.glob("/lib/ld-musl-*"):
        out = _tool(["ldd", "--version"]) or ""
        m = re.search(r"Version (\d+\.\d+)", out)
        return {"name": "musl", "version": m.group(1) if m else None}
    return {"name": None, "version": None}


def jetson():
    """L4T and JetPack on an NVIDIA Jetson (/etc/nv_tegra_release), else None."""
    text = _read("/etc/nv_tegra_release")
    if not text:
        return None
    m = re.search(r"R(\d+) \(release\), REVISION: ([\d.]+)", text)
    l4t = f"{m.group(1)}.{m.group(2)}" if m else None
    jetpack = _tool(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"])
    if not jetpack and m:
        jetpack = JETPACK_BY_L4T.get(m.group(1))
        jetpack = f"{jetpack} (from L4T R{l4t})" if jetpack else None
    model = (_read("/proc/device-tree/model") or "").strip("\x00 \n") or None
    return {"l4t": l4t, "jetpack": jetpack, "model": model}


def cuda_version():
    text = _read("/usr/local/cuda/version.json")
    if text:
        try:
            return json.loads(text)["cuda"]["version"]
        except (ValueError, KeyError, TypeError):
            pass
    m = re.search(r"(\d+\.\d+(\.\d+)?)", _read("/usr/local/cuda/version.txt") or "")
    if m:
        return m.group(1)
    m = re.search(r"release (\d+\.\d+)", _tool(["/usr/local/cuda/bin/nvcc", "--version"]) or "")
    return m.group(1) if m else None


def accelerators():
    gpus = _tool(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    trt = None
    for package in ("libnvinfer10", "libnvinfer8", "tensorrt"):
        trt = trt or _tool(["dpkg-query", "-W", "-f=${Version}", package])
    return {
        "nvidia_gpus": [g.strip() for g in gpus.splitlines() if g.strip()] if gpus else [],
        "jetson": jetson(),
        "cuda": cuda_version(),
        "tensorrt_package": trt,
        "npu": sorted(glob.glob("/dev/accel/accel*")),  # Intel NPU (and other DRM accel devices)
        "render_nodes": sorted(glob.glob("/dev/dri/renderD*")),  # iGPUs (OpenVINO GPU)
        "other": sorted(glob.glob("/dev/hailo*") + glob.glob("/dev/apex_*")),  # Hailo, Coral Edge TPU
    }


def modules_here():
    """Runtimes this interpreter can import (found, not imported) and their versions."""
    import importlib.util

    try:
        from importlib import metadata
    except ImportError:
        metadata = None
    dists = {"PIL": "pillow", "tensorrt": "tensorrt"}
    out = {}
    for name in RUNTIMES:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        version = None
        if spec is not None and metadata is not None:
            for dist in (dists.get(name, name), name.replace("_", "-")):
                try:
                    version = metadata.version(dist)
                    break
                except Exception:
                    continue
        path = list(spec.submodule_search_locations or [])[:1] if spec else []
        out[name] = None if spec is None else {"version": version, "path": path[0] if path else spec.origin}
    return out


def venv_state(venv):
    """The venv edgetl owns: its Python, every installed distribution, whether a forbidden module is importable."""
    python = os.path.join(venv, "bin", "python")
    state = {"path": venv, "exists": os.path.isfile(python)}
    if not state["exists"]:
        return state
    out = _tool([python, "-c", VENV_CHECK, ",".join(FORBIDDEN + RUNTIMES)], timeout=60)
    if out is None:
        state["broken"] = True
        return state
    state.update(json.loads(out.splitlines()[-1]))
    state["edgetl_wheel"] = (_read(os.path.join(venv, ".edgetl-wheel")) or "").strip() or None
    return state


def bundle(root, link):
    path = os.path.join(root, link)
    if not os.path.islink(path):
        return None
    try:
        manifest = json.loads(_read(os.path.join(path, "manifest.json")) or "{}")
    except ValueError:
        manifest = {}
    info = {"id": os.path.basename(os.readlink(path)), "target": manifest.get("target")}
    info.update(device=manifest.get("device"), created=manifest.get("created"), runtime=manifest.get("runtime"))
    return info


def os_info():
    pretty = None
    for line in (_read("/etc/os-release") or "").splitlines():
        if line.startswith("PRETTY_NAME="):
            pretty = line.split("=", 1)[1].strip().strip('"')
    return {"system": platform.system(), "release": platform.release(), "pretty": pretty}


def probe(request):
    root = os.path.abspath(os.path.expanduser(request.get("root", "~/.edgetl")))
    venv = os.path.abspath(os.path.expanduser(request.get("venv") or os.path.join(root, "venv")))
    return {
        "format": FORMAT,
        "hostname": socket.gethostname(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": platform.machine(),
        "os": os_info(),
        "libc": libc(),
        "python": {"executable": sys.executable, "version": ".".join(map(str, sys.version_info[:3])),
                   "implementation": platform.python_implementation().lower(), "venv_module": _has_venv()},
        "cpu": cpu(),
        "memory": memory(),
        "disk": disk(root),  # the bundle store and its uploads
        "venv_disk": disk(venv),
        "accelerators": accelerators(),
        "runtimes": modules_here(),
        "venv": venv_state(venv),
        "edgetl": {"root": root, "current": bundle(root, "current"), "previous": bundle(root, "previous")},
    }  # fmt: skip


def _has_venv():
    import importlib.util

    return importlib.util.find_spec("venv") is not None


def main(text):
    try:
        answer = probe(json.loads(text))
    except Exception as e:  # a probe that fails is reported, never a traceback on the device
        answer = {"error": f"the device probe failed ({type(e).__name__}: {e}); report this with `edgetl --debug`"}  # fmt: skip
    sys.stdout.write("\n" + MARK + json.dumps(answer) + "\n")


if __name__ == "__main__":
    main(globals().get("REQUEST", "{}"))
