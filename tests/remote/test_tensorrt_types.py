"""edgetl's TensorRT code checked against the TensorRT Python API, as type stubs (`tensorrt-stubs` on PyPI), by mypy.

TensorRT cannot be installed here, so its builder, runner and plugin code has never run; this checks that every
call names a real class, method, enum member and argument. The stubs go into a private folder (the pytest cache),
never into the venv: installed there they make `import tensorrt` succeed as an empty namespace package (edgetl would
then take TensorRT for installed), and their declared dependency is a placeholder for NVIDIA's own index. The
stubs are generated (pybind11-stubgen) with signatures Python cannot parse (parameters named `in`, a default before
a parameter without one); a copy is mended before mypy reads it. Only errors that involve TensorRT's API count:
the rest of what mypy says about these modules is about edgetl's own typing, which the project does not check.
"""

from __future__ import annotations

import ast
import keyword
import os
import re
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STUBS = "tensorrt-stubs==10.13.0.35.1"
CHECKED = (
    "edgetl/deploy/targets/tensorrt.py",
    "edgetl/deploy/targets/tensorrt_plan.py",
    "edgetl/remote/run.py",  # the on-device engine build: `edgetl build-engine` over SSH
    "edgetl/remote/deploy.py",
)
# (pattern, why it is not a mistake): what the stubs cannot express
KNOWN = (
    (
        r'"set_shape" of "IOptimizationProfile" has incompatible type .*; expected "Dims"',
        "the bindings convert a tuple to Dims (TensorRT's own samples pass tuples); the generated stubs do not say so",
    ),
)
_DEF = re.compile(r"^(\s*)def (\w+)\((.*)\)( -> .*)?:\s*$")


def _params(text: str) -> list[str]:
    out, depth, current = [], 0, ""
    for ch in text:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            out.append(current)
            current = ""
        else:
            current += ch
    return [*out, current] if current.strip() else out


def mend(stub: Path) -> int:
    """Rewrite the one-line `def`s Python cannot parse: keyword parameter names get a `_`, a parameter without a
    default after one with a default gets `= ...`. Returns how many lines changed."""
    lines, changed = stub.read_text().split("\n"), 0
    for i, line in enumerate(lines):
        m = _DEF.match(line)
        if m is None:
            continue
        try:
            ast.parse(line.strip() + " ...")
            continue
        except SyntaxError:
            pass
        params, defaulted = [], False
        for p in _params(m.group(3)):
            name = p.split(":")[0].split("=")[0].strip().lstrip("*")
            p = p.replace(name, name + "_", 1) if keyword.iskeyword(name) else p
            defaulted = defaulted or "=" in p
            params.append(p + " = ..." if defaulted and "=" not in p and not p.strip().startswith("*") else p)
        lines[i] = f"{m.group(1)}def {m.group(2)}({','.join(params)}){m.group(4) or ''}:"
        changed += 1
    stub.write_text("\n".join(lines))
    return changed


@pytest.fixture(scope="module")
def stubs(request, tmp_path_factory) -> Path:
    if find_spec("mypy") is None:
        pytest.skip("mypy is not installed (pip install -e '.[test]')")
    cache = getattr(request.config, "cache", None)  # None under `-p no:cacheprovider`: install for this session
    folder = Path(cache.mkdir("tensorrt-stubs") if cache else tmp_path_factory.mktemp("tensorrt-stubs"))
    if not (folder / "mended").is_file():
        got = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(folder), STUBS],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        if got.returncode != 0:
            pytest.skip(f"{STUBS} could not be installed here ({got.stderr.strip().splitlines()[-1:]})")
        for stub in folder.rglob("*.pyi"):
            mend(stub)
        (folder / "mended").write_text("")
    return folder


def mypy(paths, stubs: Path, cache: Path) -> list[str]:
    """mypy's error lines about `paths` (imports followed silently; TensorRT from the stubs)."""
    argv = [sys.executable, "-m", "mypy", "--follow-imports=silent", "--ignore-missing-imports", "--check-untyped-defs"]
    argv += ["--show-error-codes", "--no-error-summary", "--cache-dir", str(cache), *map(str, paths)]
    env = {**os.environ, "MYPYPATH": str(stubs)}
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=env, timeout=600, check=False)
    wanted = tuple(str(p) for p in paths)
    return [line for line in done.stdout.splitlines() if line.startswith(wanted) and ": error:" in line]


def api_errors(lines: list[str], stubs: Path) -> list[str]:
    """The errors that involve a TensorRT class, enum or module (names from the stubs)."""
    text = (stubs / "tensorrt_bindings" / "tensorrt.pyi").read_text()
    names = set(re.findall(r"^class (\w+)", text, re.MULTILINE))
    messages = [(line, line.split(": error: ", 1)[1]) for line in lines]
    return [line for line, m in messages if "tensorrt" in m or any(f'"{n}"' in m or f"[{n}]" in m for n in names)]


def test_the_stubs_parse_once_mended(stubs):
    for stub in stubs.rglob("*.pyi"):
        ast.parse(stub.read_text(), filename=str(stub))


def test_tensorrt_code_uses_the_real_api(stubs, tmp_path):
    errors = api_errors(mypy(CHECKED, stubs, tmp_path / "cache"), stubs)
    unexpected = [e for e in errors if not any(re.search(pattern, e) for pattern, _ in KNOWN)]
    assert unexpected == [], "calls the TensorRT API does not have:\n" + "\n".join(unexpected)


def test_the_check_catches_a_wrong_tensorrt_call(stubs, tmp_path):
    """The check can fail: a misspelt method, a missing argument and an enum member that does not exist."""
    wrong = tmp_path / "wrong.py"
    wrong.write_text(
        "def build() -> None:\n"
        "    import tensorrt as trt\n"
        "    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))\n"
        "    builder.create_netwrok(0)\n"
        "    config = builder.create_builder_config()\n"
        "    config.set_memory_pool_limit(1 << 20)\n"
        "    config.set_flag(trt.BuilderFlag.FP61)\n"
    )
    errors = "\n".join(api_errors(mypy([wrong], stubs, tmp_path / "cache"), stubs))
    assert "create_netwrok" in errors and "set_memory_pool_limit" in errors and "FP61" in errors
