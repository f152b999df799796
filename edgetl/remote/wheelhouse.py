"""The wheels a device needs, prepared on the host: the device may have no internet.

What the device side of edgetl needs is edgetl itself (a wheel built from this checkout with `pip wheel --no-deps`,
cached by the hash of its sources), its dependencies (read from that wheel's metadata: numpy, pillow, click,
rich) and the runtime the bundle was compiled with, pinned to the version in its manifest (an OpenVINO IR or an
ONNX Runtime graph is run by the release that built it). `pip download --only-binary=:all:` fetches them for the
device's platform tags and Python (edgetl.remote.probe.platform_tags), never for the host's; the result is cached
on the host, keyed by tags + requirements, so the next deploy to a device of that kind downloads nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edgetl.errors import UserError
from edgetl.fileio import cache_root

# Host-side library files of edgetl (what `pip wheel .` packs): their hash names the cached wheel.
SOURCE_FILES = ("pyproject.toml", "README.md")
_WHEEL_NAME = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")


def normalize(name: str) -> str:
    """PEP 503: `Pillow`, `pillow` and `PIL_low` name one distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Wheel:
    path: Path

    @property
    def name(self) -> str:
        return normalize(self._parts()["name"])

    @property
    def version(self) -> str:
        return self._parts()["version"]

    def _parts(self) -> re.Match:
        m = _WHEEL_NAME.match(self.path.name)
        if m is None:
            raise UserError(f"{self.path}: not a wheel file name; clear the cache folder {self.path.parent}")
        return m


def deploy_cache() -> Path:
    return cache_root() / "deploy"


def checkout() -> Path | None:
    """The source tree this edgetl runs from, when it is a checkout (pyproject.toml beside the package)."""
    import edgetl

    root = Path(edgetl.__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "edgetl" / "__init__.py").is_file() else None


def _source_files(root: Path) -> list[Path]:
    files = [root / name for name in SOURCE_FILES if (root / name).is_file()]
    return files + sorted(p for p in (root / "edgetl").rglob("*.py") if "__pycache__" not in p.parts)


def edgetl_wheel(given: Path | None = None) -> Path:
    """edgetl as a wheel for the device: `given`, else built from this checkout (cached by its sources' hash)."""
    if given is not None:
        if not Path(given).is_file() or not Path(given).name.startswith("edgetl-"):
            raise UserError(f"--edgetl-wheel {given}: not an edgetl wheel file; build one with `pip wheel --no-deps .`")
        return Path(given)
    root = checkout()
    if root is None:
        raise UserError(
            "this edgetl is not a source checkout, so it cannot build its own wheel; give --edgetl-wheel FILE"
        )
    digest = hashlib.sha256()
    for path in _source_files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    folder = deploy_cache() / "edgetl-wheel" / digest.hexdigest()[:24]
    built = sorted(folder.glob("edgetl-*.whl"))
    return built[0] if built else _build_wheel(root, folder)


def _build_wheel(root: Path, folder: Path) -> Path:
    """`pip wheel --no-deps` of a copy of the sources (the checkout gets no build/ or egg-info from it)."""
    with tempfile.TemporaryDirectory(prefix="edgetl-wheel-") as tmp:
        src = Path(tmp) / "src"
        for path in _source_files(root):
            dest = src / path.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
        out = Path(tmp) / "out"
        _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(src), what="building the edgetl wheel")
        wheel = next(out.glob("edgetl-*.whl"))
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / wheel.name
        shutil.move(str(wheel), final)
        return final


def wheel_requirements(wheel: Path) -> list[str]:
    """The Requires-Dist of a wheel without extras: what `pip install WHEEL` pulls in."""
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(name).decode()
    reqs = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]
    return [r for r in reqs if "extra ==" not in r]


def runtime_requirements(manifest: dict, probe: dict) -> list[str]:
    """The runtime of the bundle, at the version it was compiled with, and what its tokenizer needs."""
    target, runtime = manifest["target"], manifest.get("runtime") or {}
    settings = manifest.get("settings") or {}
    pinned = lambda dist, key: f"{dist}=={runtime[key]}" if runtime.get(key) else dist  # noqa: E731
    if target == "openvino":
        reqs = [pinned("openvino", "openvino")]
        if settings.get("tokenizer_ops") == "openvino_tokenizers":
            reqs.append(
                f"openvino-tokenizers=={runtime['openvino']}.*" if runtime.get("openvino") else "openvino-tokenizers"
            )
    elif target == "onnxruntime":
        reqs = [pinned("onnxruntime", "onnxruntime")]
        if settings.get("string_ops") == "onnxruntime-extensions":
            reqs.append(pinned("onnxruntime-extensions", "onnxruntime_extensions"))
    elif target == "tensorrt":  # TensorRT itself is the device's own (JetPack); cuda-python for its CUDA major
        cuda = (probe.get("accelerators") or {}).get("cuda")
        major = int(cuda.split(".")[0]) if cuda and cuda.split(".")[0].isdigit() else 12
        reqs = [f"cuda-python>={max(major, 12)}.0,<{major + 1}"]
    else:
        raise UserError(f"bundle target {target!r} is not one edgetl deploys; rebuild it with `edgetl compile`")
    if manifest.get("tokenizer"):  # host tokenization: tokenizer.json run by `tokenizers`
        reqs.append("tokenizers>=0.19")
    return reqs


@dataclass(frozen=True)
class Wheelhouse:
    folder: Path
    wheels: tuple[Wheel, ...]
    downloaded: bool  # False: reused from the cache

    @property
    def nbytes(self) -> int:
        return sum(w.path.stat().st_size for w in self.wheels)


def download(requirements: list[str], tags: list[str], python: str, say=None) -> Wheelhouse:
    """`pip download` of `requirements` (+ pip, to bootstrap the venv) for the device's platform tags and Python
    (e.g. "3.11"); cached under the hash of all three."""
    reqs = sorted({*requirements, "pip"})
    key = hashlib.sha256(json.dumps([reqs, tags, python]).encode()).hexdigest()[:24]
    folder = deploy_cache() / "wheelhouse" / key
    if (folder / "complete.json").is_file():
        return Wheelhouse(folder, tuple(Wheel(p) for p in sorted(folder.glob("*.whl"))), False)
    if say:
        say(f"downloading wheels for {tags[0]}, Python {python}: {', '.join(requirements)}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=folder.parent))
    try:
        platform = [x for tag in tags for x in ("--platform", tag)]
        abi = f"cp{python.replace('.', '')}"
        args = ["--only-binary=:all:", *platform, "--python-version", python, "--implementation", "cp"]
        args += ["--abi", abi, "--abi", "abi3", "--abi", "none", "-d", str(stage), *reqs]
        _pip("download", *args, what=f"downloading wheels for {tags[0]} / Python {python}")
        (stage / "complete.json").write_text(json.dumps({"requirements": reqs, "tags": tags, "python": python}))
        if folder.exists():
            shutil.rmtree(folder)
        stage.rename(folder)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return Wheelhouse(folder, tuple(Wheel(p) for p in sorted(folder.glob("*.whl"))), True)


def pip_wheel() -> Path:
    """The pip wheel alone (pure Python): what `--online` sends to bootstrap the device venv's pip."""
    folder = deploy_cache() / "pip"
    found = sorted(folder.glob("pip-*.whl"))
    if found:
        return found[-1]
    folder.mkdir(parents=True, exist_ok=True)
    _pip("download", "--no-deps", "--only-binary=:all:", "-d", str(folder), "pip", what="downloading pip")
    return sorted(folder.glob("pip-*.whl"))[-1]


def _pip(*args: str, what: str) -> str:
    """The host's pip (the interpreter running edgetl); its failure as one line with the fix."""
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pip", *args], capture_output=True, text=True, env=env, timeout=1800, check=False
    )
    if proc.returncode == 0:
        return proc.stdout
    text = proc.stderr + proc.stdout
    missing = re.search(r"No matching distribution found for (\S+)", text)
    if missing:
        raise UserError(
            f"{what}: no wheel of {missing.group(1)} exists for that device on the package index; compile the "
            "bundle for a runtime release that has one for the device (see `edgetl device probe`), or use --online "
            "if the device's own index has it"
        )
    lines = [x.strip() for x in text.splitlines() if x.strip() and "is ignored" not in x]
    raise UserError(f"{what} failed ({lines[-1] if lines else 'pip said nothing'}); check the host's pip and index")
