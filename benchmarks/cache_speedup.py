"""Claim: training with --cache-features is >= 15x faster than --no-cache-features with a cold cache and
>= 100x with a warm one, at equal or better accuracy (default options, default task: Lite0 on digits at 64x64).

Three real `edgetl train` runs in one go (cold cache, warm cache, backbone in the loop), each a fresh process
with default options (`--epochs 30` is the default, written out). What each default does: with the cache, the
linear head is fitted by L-BFGS on the features in memory; without it, the backbone is in the loop and the head
is trained by AdamW for 30 epochs (early stopping on validation), one backbone pass per epoch. The ratios use
run.json's timing.total_s (pipeline wall time, interpreter start-up excluded). Run it alone on the machine.
Writes benchmarks/results/cache_speedup.json and .png.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import RESULTS, save_plot, write_result

COMMON = ["--epochs", "30", "--no-progress"]


def train(out: Path, cache: Path, *extra: str) -> dict:
    cmd = [sys.executable, "-m", "edgetl", "train", "--out", str(out), "--cache-dir", str(cache), *COMMON, *extra]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return json.loads((out / "run.json").read_text())


def main() -> dict:
    with tempfile.TemporaryDirectory(prefix="edgetl-cache-bench-") as tmp:
        tmp = Path(tmp)
        runs = {
            "cold": train(tmp / "cold", tmp / "cache", "--cache-features"),
            "warm": train(tmp / "warm", tmp / "cache", "--cache-features"),
            "no_cache": train(tmp / "nocache", tmp / "cache-unused", "--no-cache-features"),
        }
    row = {
        k: {
            "total_s": r["timing"]["total_s"],
            "val_acc": r["metrics"]["val_acc"],
            "solver": r["head"]["solver"],
            "epochs_run": r["head"]["epochs_run"],
            "extract_s": r["timing"].get("extract_s"),
            "train_s": r["timing"].get("train_s"),
            "cache_hits": r["cache"]["hits"],
            "cache_misses": r["cache"]["misses"],
        }
        for k, r in runs.items()
    }
    base = row["no_cache"]["total_s"]
    result = {
        "claim": "--cache-features vs --no-cache-features, default options (30 epochs), default task",
        "runs": row,
        "speedup_cold": base / row["cold"]["total_s"],
        "speedup_warm": base / row["warm"]["total_s"],
        "accuracy_delta_points": {k: (row[k]["val_acc"] - row["no_cache"]["val_acc"]) * 100 for k in ("cold", "warm")},
        "versions": runs["cold"]["versions"],
    }
    write_result("cache_speedup", result)
    plot(row, result)
    print(
        f"cache speed-up over --no-cache-features: cold {result['speedup_cold']:.1f}x, warm {result['speedup_warm']:.0f}x "
        f"(accuracy {row['cold']['val_acc']:.4f} / {row['warm']['val_acc']:.4f} vs {row['no_cache']['val_acc']:.4f})"
    )
    return result


def plot(row: dict, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["no_cache", "cold", "warm"]
    labels = ["--no-cache-features", "cache, cold", "cache, warm"]
    values = [row[n]["total_s"] for n in names]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    bars = ax.bar(labels, values, color=["#999999", "#4c72b0", "#55a868"])
    ax.set_yscale("log")
    ax.set_ylabel("edgetl train total time, s (log)")
    ax.set_title(
        f"default options, Lite0 on digits 64x64: cold {result['speedup_cold']:.0f}x, warm {result['speedup_warm']:.0f}x faster"
    )
    for b, n in zip(bars, names, strict=True):
        ax.annotate(
            f"{row[n]['total_s']:.2f} s\nacc {row[n]['val_acc']:.3f}",
            (b.get_x() + b.get_width() / 2, b.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    fig.tight_layout()
    save_plot(fig, RESULTS / "cache_speedup.png")


if __name__ == "__main__":
    main()
