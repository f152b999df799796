"""Bench results as files and pictures: the `bench --json` report, reading it back (validated, for --compare),
the terminal table and the plot. Imports no torch: this runs on the device."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np

from edgetl.bench.harness import FORMAT, MAX_SAVED_SAMPLES
from edgetl.errors import UserError
from edgetl.fileio import atomic_write_bytes


def report(results: list[dict], **extra) -> dict:
    return {"format": FORMAT, "results": results, **extra}


def write_json(path: Path, doc: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(doc, indent=1) + "\n").encode())
    path.chmod(0o644)  # results are for sharing (CI artifacts), not private like mkstemp's default


def load_results(path: Path) -> list[dict]:
    """The records of a `bench --json` file (a report, a list of records, or one record), each well formed and
    agreeing with its own samples."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as e:
        raise UserError(f"{path}: cannot read it ({e.strerror or e})") from None
    except ValueError as e:
        raise UserError(f"{path}: not JSON ({e}); give a file written by `edgetl bench --json`") from None
    results = doc.get("results") if isinstance(doc, dict) and "results" in doc else doc
    results = [results] if isinstance(results, dict) else results
    if not isinstance(results, list) or not results:
        raise UserError(f"{path}: not an `edgetl bench --json` file (no results with latency_ms); re-run the bench")
    for i, r in enumerate(results):
        problem = _record_problem(r)
        if problem:
            raise UserError(f"{path}: result {i} is not an `edgetl bench --json` record ({problem}); re-run the bench")
        mismatch = _inconsistency(r)
        if mismatch:
            label = f"{r.get('name', '?')} {r['mode']} b{r['batch']}"
            raise UserError(f"{path}: result {i} ({label}): {mismatch}: edited or damaged; re-run edgetl bench")
    return results


def _number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and bool(np.isfinite(v))


def _record_problem(r) -> str | None:
    """Why `r` cannot be compared (None when it can): what --compare reads must be there and make sense."""
    if not isinstance(r, dict):
        return "not an object"
    if not isinstance(r.get("mode"), str) or not r["mode"]:
        return "no mode"
    if not isinstance(r.get("batch"), int) or isinstance(r["batch"], bool) or r["batch"] < 1:
        return "batch is not a positive integer"
    lat = r.get("latency_ms")
    if not isinstance(lat, dict) or not _number(lat.get("p50")) or lat["p50"] <= 0:
        return "latency_ms.p50 is not a positive number"
    samples = r.get("samples_ms")
    if samples is not None and not (isinstance(samples, list) and all(_number(s) and s >= 0 for s in samples)):
        return "samples_ms is not a list of non-negative numbers"
    if "name" in r and not isinstance(r["name"], str):
        return "name is not a string"
    if not isinstance(r.get("versions", {}), dict) or not isinstance(r.get("cpu", {}), dict):
        return "versions or cpu is not an object"
    flags = r.get("cpu", {}).get("flags", [])
    if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
        return "cpu.flags is not a list of strings"
    if not isinstance(r.get("warmup", {}), dict):  # optional: files written before it was recorded lack it
        return "warmup is not an object"
    return None


PERCENTILES = {"p50": 50, "p90": 90, "p95": 95, "p99": 99}


def _close(recorded: float, derived: float) -> bool:
    """Equal but for rounding: samples and statistics are each saved to 0.1 µs (and a file may have been
    rescaled by a script), so a few tenths of a microsecond, or 0.01 %, is not a disagreement."""
    return math.isclose(recorded, derived, rel_tol=1e-4, abs_tol=5e-4)


def _inconsistency(r: dict) -> str | None:
    """Where a record's summary (latency_ms, iterations) disagrees with its own samples_ms; None if nowhere.

    --compare pairs the samples but the recorded p50 is what people read, so the two must be the same data. A
    record timed longer than MAX_SAVED_SAMPLES keeps its samples thinned evenly (the statistics are of all
    of them): then each percentile must lie within the samples' own percentiles a little either side.
    """
    samples = r.get("samples_ms")
    if not samples:
        return None
    a = np.asarray(samples, np.float64)
    n, lat, iterations = a.size, r["latency_ms"], r.get("iterations")
    counted = isinstance(iterations, int) and not isinstance(iterations, bool)
    if "iterations" in r and (not counted or iterations < n):
        return f"iterations is {iterations!r} but samples_ms holds {n} samples"
    thinned = iterations > n if counted else n >= MAX_SAVED_SAMPLES
    spread = 1.0 + 300.0 / math.sqrt(n)  # percentile points: 1 + 3 standard errors of a quantile's rank
    for key, value in lat.items():
        if not _number(value):
            return f"latency_ms.{key} is not a number"
        if key in PERCENTILES:
            q = PERCENTILES[key]
            lo, hi = np.percentile(a, [max(q - spread, 0), min(q + spread, 100)] if thinned else [q, q])
        elif key == "min":
            lo, hi = (0.0 if thinned else a.min()), a.min()
        elif key == "max":
            lo, hi = a.max(), (math.inf if thinned else a.max())
        elif key == "mean" and not thinned:
            lo = hi = a.mean()
        else:
            continue
        if not (value >= lo or _close(value, lo)) or not (value <= hi or _close(value, hi)):
            derived = f"{lo:.4f}" if lo == hi else f"{lo:.4f}..{hi:.4f}"
            return f"latency_ms.{key} is {value} but its own samples_ms give {derived}"
    return None


def table_rows(results: list[dict]) -> list[list[str]]:
    """Header + one row per record, with each p50 relative to the fastest of the same mode and batch."""
    fastest: dict[tuple, float] = {}
    for r in results:
        key = (r["mode"], r["batch"])
        fastest[key] = min(fastest.get(key, float("inf")), r["latency_ms"]["p50"])
    rows = [["name", "mode", "batch", "precision", "p50 ms", "p90", "p99", "mean", "img/s", "iters", "vs fastest"]]
    for r in results:
        lat = r["latency_ms"]
        rows.append(
            [
                r["name"] + (" (interrupted)" if r.get("interrupted") else ""),
                r["mode"],
                str(r["batch"]),
                _precision(r),
                f"{lat['p50']:.3f}",
                f"{lat['p90']:.3f}",
                f"{lat['p99']:.3f}",
                f"{lat['mean']:.3f}",
                f"{r['throughput_ips']:.1f}",
                str(r["iterations"]),
                f"{lat['p50'] / fastest[(r['mode'], r['batch'])]:.2f}x",
            ]
        )
    return rows


def first_call_line(results: list[dict]) -> str | None:
    """The first call of each record (made before the warm-up: what a one-shot run feels), on one line."""
    one_name = len({r.get("name") for r in results}) == 1
    parts = [
        f"{'' if one_name else r.get('name', '?') + ' '}{r['mode']} b{r['batch']} {w['first_call_ms']:.3f} ms"
        for r in results
        if isinstance(w := r.get("warmup"), dict) and _number(w.get("first_call_ms"))
    ]
    return f"first call (cold, before warm-up): {', '.join(parts)}" if parts else None


def _precision(r: dict) -> str:
    """'int8/bf16' when an INT8 model runs its non-quantized parts at another precision than it was written in."""
    model, ran = r.get("model_precision"), r.get("precision")
    return str(ran) if model in (None, ran) else f"{model}/{ran}"


def plot(results: list[dict], path: Path, title: str) -> None:
    """Horizontal bars of p50 with whiskers from p50 to p99, one bar per record; readable without the JSON."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install 'edgetl[bench]'") from None
    labels = [f"{r['name']} · {r['mode']} · b{r['batch']}" for r in results]
    p50 = np.array([r["latency_ms"]["p50"] for r in results])
    high = (np.array([r["latency_ms"]["p99"] for r in results]) - p50).clip(min=0)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(results) + 1.6))
    y = np.arange(len(results))[::-1]
    ax.barh(y, p50, color="#4c72b0")
    ax.errorbar(p50, y, xerr=[np.zeros_like(high), high], fmt="none", ecolor="black", capsize=3)
    for yi, v in zip(y, p50, strict=True):
        ax.text(v, yi, f" {v:.2f} ms", va="center", fontsize=8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("latency per batch, ms (bar: p50, whisker: to p99; lower is better)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    try:
        save_figure(fig, path)
    finally:
        plt.close(fig)


def save_figure(fig, path: Path, dpi: int = 120) -> None:
    """Render a matplotlib figure in memory, then write it atomically (the format follows the file's suffix)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    if fmt not in fig.canvas.get_supported_filetypes():
        raise UserError(f"--plot {path}: unknown image type .{fmt}; name the file *.png (or .svg, .pdf)")
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=dpi)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    path.chmod(0o644)  # plots are for sharing, like the JSON
