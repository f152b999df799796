"""`python -m edgetl.ops.build` (`make kernels`): build the native kernels with CMake, copy them to `edgetl/ops/lib/`.

Incremental: the first run configures `build/kernels/` for the current interpreter (CMake finds OpenVINO through
it); later runs only rebuild what changed. Runtimes whose toolkit is missing (CUDA, TensorRT) are skipped with
one line each and never fail the build.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from edgetl.ops.native import LIB_DIR

ROOT = Path(__file__).resolve().parents[2]
BUILD_DIR = ROOT / "build" / "kernels"
LIB_SUFFIXES = (".so", ".dll", ".dylib")


def main() -> int:
    cmake = _tool("cmake")
    if cmake is None:
        print(
            "error: cmake not found; install CMake >= 3.20 (apt install cmake, or pip install cmake)", file=sys.stderr
        )
        return 2
    if not (ROOT / "CMakeLists.txt").is_file():
        print(f"error: {ROOT} has no CMakeLists.txt; build the kernels from a source checkout", file=sys.stderr)
        return 2
    print(f"edgetl kernels: building in {BUILD_DIR.relative_to(ROOT)}/ ...", flush=True)
    if _needs_configure() and not _run([cmake, "-S", str(ROOT), "-B", str(BUILD_DIR), *_configure_args()]):
        return 1
    if not _run([cmake, "--build", str(BUILD_DIR), "--parallel", str(os.cpu_count() or 2)]):
        return 1
    for line in (BUILD_DIR / "edgetl_summary.txt").read_text().splitlines():
        print(f"edgetl kernels: {line}")
    for path in _install_libraries():
        print(f"edgetl kernels: updated {path.relative_to(ROOT)}")
    return 0


def _tool(name: str) -> str | None:
    """On PATH, or next to the interpreter (a venv's pip-installed cmake / ninja)."""
    return shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))


def _needs_configure() -> bool:
    """Configure once per build folder and interpreter; after that `cmake --build` re-runs CMake when it must."""
    cache = BUILD_DIR / "CMakeCache.txt"
    if not cache.is_file():
        return True
    return f"Python_EXECUTABLE:FILEPATH={sys.executable}" not in cache.read_text().splitlines()


def _configure_args() -> list[str]:
    args = [f"-DPython_EXECUTABLE={sys.executable}", "-DCMAKE_BUILD_TYPE=Release"]
    ninja = _tool("ninja")
    if ninja and not (BUILD_DIR / "CMakeCache.txt").is_file():  # the generator of an existing folder is fixed
        args += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"]
    return args


def _run(cmd: list[str]) -> bool:
    """Quiet on success; on failure the tool's own output, which names the file and line."""
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-8000:] + result.stderr[-8000:])
        print(f"error: {' '.join(cmd[:2])} ... failed (exit {result.returncode})", file=sys.stderr)
    return result.returncode == 0


def _install_libraries() -> list[Path]:
    """Copy built libraries whose bytes changed, atomically, so a running process never maps a half-written file."""
    LIB_DIR.mkdir(exist_ok=True)
    updated = []
    for built in sorted((BUILD_DIR / "lib").iterdir()):
        if built.suffix not in LIB_SUFFIXES:
            continue
        target = LIB_DIR / built.name
        if target.is_file() and target.read_bytes() == built.read_bytes():
            continue
        tmp = target.with_name(f".{built.name}.tmp")
        shutil.copy2(built, tmp)
        os.replace(tmp, target)
        updated.append(target)
    return updated


if __name__ == "__main__":
    sys.exit(main())
