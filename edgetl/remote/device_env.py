"""The device venv edgetl owns, ON THE DEVICE: create it, install the pushed wheels, check what imports.

Run by `edgetl deploy` as `python3 -` over SSH (a standalone script: standard library only, Python 3.6 syntax,
nothing from edgetl). The host puts `REQUEST = '<json>'` in front of this source; the answer is one JSON line after
MARK. The venv is made by the device's own Python without pip (`venv --without-pip`: no ensurepip needed); pip
runs from the pushed pip wheel until it is installed. Offline (default) every wheel comes from the host and pip
gets `--no-index --no-deps`: nothing is fetched and nothing else is resolved. `--online` lets the device's pip
fetch the requirements from its own index. After an install the check imports each module the bundle needs and
looks for the modules that must never be there (torch, timm, onnx...).
"""

import errno
import glob
import json
import os
import shutil
import subprocess
import sys

MARK = "@@edgetl-result@@"
WHEEL_MARKER = ".edgetl-wheel"  # in the venv: the sha256 of the edgetl wheel installed there
CHECK = """
import importlib, importlib.util, json, sys
try:
    from importlib import metadata
except ImportError:
    metadata = None
need, forbidden = sys.argv[1].split(","), sys.argv[2].split(",")
dists = {"PIL": "pillow"}
out = {"python": "%d.%d.%d" % sys.version_info[:3], "versions": {}, "errors": {}, "forbidden": {}}
for name in need:
    try:
        module = importlib.import_module(name)
        version = getattr(module, "__version__", None)
        if metadata is not None:
            try:
                version = metadata.version(dists.get(name, name.replace("_", "-")))
            except Exception:
                pass
        out["versions"][name] = version
    except Exception as e:
        out["errors"][name] = "%s: %s" % (type(e).__name__, str(e).splitlines()[0] if str(e) else "")
for name in forbidden:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        out["forbidden"][name] = spec.origin or "namespace package"
print(json.dumps(out))
"""


class Refused(Exception):
    """One line for the user: what went wrong on the device and the fix."""


def run(argv, timeout=1800):
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)  # noqa: UP022
    return proc.returncode, proc.stdout.decode("utf-8", "replace")


def venv_python(venv):
    return os.path.join(venv, "bin", "python")


def ensure_venv(venv):
    """A working venv at `venv`, made by this Python; a broken one (a killed install) is made again."""
    python = venv_python(venv)
    if os.path.isfile(python) and run([python, "-c", "pass"], 60)[0] == 0:
        return False
    if os.path.exists(venv):
        if not os.path.isfile(os.path.join(venv, "pyvenv.cfg")):
            raise Refused(f"{venv} exists and is not a venv; give another --venv")
        shutil.rmtree(venv)
    parent = os.path.dirname(venv)
    os.makedirs(parent, exist_ok=True)
    code, out = run([sys.executable, "-m", "venv", "--without-pip", venv], 300)
    if code != 0:
        raise Refused(f"could not make a venv with {sys.executable} ({last_line(out)}); install its venv module (e.g. apt install "
                      "python3-venv)")  # fmt: skip
    return True


def last_line(text):
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    return lines[-1] if lines else "no message"


def pip_command(venv, wheels):
    python = venv_python(venv)
    if run([python, "-c", "import pip"], 60)[0] == 0:
        return [python, "-m", "pip"]
    bootstrap = [w for w in wheels if os.path.basename(w).startswith("pip-")]
    if not bootstrap:
        raise Refused(f"{venv} has no pip and no pip wheel was sent; run the deploy again")
    return [python, os.path.join(bootstrap[0], "pip")]  # pip runs from its own wheel


def site_packages(venv):
    found = glob.glob(os.path.join(venv, "lib", "python*", "site-packages"))
    if not found:
        raise Refused(f"{venv} has no site-packages folder; remove it and deploy again")
    return found[0]


def link_tensorrt(venv):
    """Make the TensorRT that came with the device (JetPack: python3-libnvinfer) importable in the venv, alone:
    its package folders are linked into the venv's site-packages (no --system-site-packages, so no system torch)."""
    import importlib.util

    spec = importlib.util.find_spec("tensorrt")
    if spec is None or not spec.submodule_search_locations:
        raise Refused(f"no TensorRT for {sys.executable} on the device (on a Jetson it comes with JetPack: sudo apt install "
                      "nvidia-jetpack, or python3-libnvinfer); deploy an OpenVINO or ONNX Runtime bundle "
                      "instead")  # fmt: skip
    package = list(spec.submodule_search_locations)[0]
    parent, linked = os.path.dirname(package), []
    site = site_packages(venv)
    for path in sorted(glob.glob(os.path.join(parent, "tensorrt*"))):
        dest = os.path.join(site, os.path.basename(path))
        if not os.path.lexists(dest):
            os.symlink(path, dest)
            linked.append(os.path.basename(path))
    return linked


def pip_failure(out, venv):
    text = out.lower()
    if "no space left" in text or "errno 28" in text:
        return Refused(f"the disk holding {venv} is full (pip could not unpack the wheels); free some space there or "
                       "choose another --venv")  # fmt: skip
    if "no matching distribution" in text or "could not find a version" in text:
        return Refused(f"the device's pip found no matching release ({last_line(out)}); drop --online to send wheels from the "
                       "host")  # fmt: skip
    return Refused(f"pip install failed on the device ({last_line(out)})")


def install(request):
    venv = os.path.abspath(os.path.expanduser(request["venv"]))
    wheels = [os.path.join(request["wheels_dir"], name) for name in request.get("wheels", [])]
    created = ensure_venv(venv)
    linked = link_tensorrt(venv) if request.get("link_tensorrt") else []
    if wheels or request.get("online"):
        base = pip_command(venv, wheels) + ["install", "--disable-pip-version-check", "--no-cache-dir",
                                             "--no-warn-script-location", "--quiet"]  # fmt: skip
        if request.get("online"):
            commands = [base + [w for w in wheels if not os.path.basename(w).startswith("edgetl-")]
                        + request.get("requirements", [])]  # fmt: skip
            commands += [base + ["--no-deps", "--force-reinstall", w] for w in wheels
                         if os.path.basename(w).startswith("edgetl-")]  # fmt: skip
        else:
            commands = [base + ["--no-index", "--no-deps", "--force-reinstall"] + wheels]
        for command in commands:
            code, out = run(command)
            if code != 0:
                raise pip_failure(out, venv)
    if request.get("edgetl_sha"):
        with open(os.path.join(venv, WHEEL_MARKER), "w") as f:
            f.write(request["edgetl_sha"] + "\n")
    answer = check(venv, request.get("modules", []), request.get("forbidden", []))
    answer.update(created=created, installed=[os.path.basename(w) for w in wheels], linked=linked)
    return answer


def check(venv, modules, forbidden):
    code, out = run([venv_python(venv), "-c", CHECK, ",".join(modules), ",".join(forbidden)], 300)
    if code != 0:
        raise Refused(f"the import check in {venv} failed ({last_line(out)})")
    return json.loads(out.strip().splitlines()[-1])


def main(text):
    request = json.loads(text)
    try:
        if request.get("action") == "check":
            venv = os.path.abspath(os.path.expanduser(request["venv"]))
            answer = check(venv, request.get("modules", []), request.get("forbidden", []))
        else:
            answer = install(request)
    except Refused as e:
        answer = {"error": str(e)}
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            answer = {"error": "the disk holding {} is full; free some space there".format(request.get("venv"))}
        else:
            answer = {"error": "setting up {} failed: {} ({})".format(request.get("venv"), e.strerror or e,
                                                                      e.filename or "")}  # fmt: skip
    except subprocess.TimeoutExpired as e:
        answer = {"error": f"{e.cmd[0]} did not finish within {e.timeout:.0f} s on the device"}
    sys.stdout.write("\n" + MARK + json.dumps(answer) + "\n")


if __name__ == "__main__":
    main(globals().get("REQUEST", "{}"))
