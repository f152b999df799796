"""Run every benchmark script in this folder (`make bench`), each in its own process, and summarize.

Each script prints its ratio and writes benchmarks/results/<name>.json and .png; this runner only reports
which scripts finished. Scripts whose names start with "_" (shared helpers) and this file are skipped.
Exit code 1 when any script crashed (a benchmark never asserts its claim, but it must run).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def scripts() -> list[Path]:
    return sorted(p for p in HERE.glob("*.py") if not p.name.startswith("_") and p.name != Path(__file__).name)


def main() -> int:
    outcomes = []
    for script in scripts():
        print(f"\n=== {script.name}", flush=True)
        start = time.perf_counter()
        code = subprocess.run([sys.executable, str(script)], cwd=HERE).returncode
        outcomes.append((script.name, code, time.perf_counter() - start))
    print("\nsummary:")
    for name, code, seconds in outcomes:
        print(f"  {name:24s} {'ok' if code == 0 else f'FAILED (exit {code})'}  {seconds:6.0f} s")
    return 1 if any(code for _, code, _ in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
