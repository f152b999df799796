"""Claim: with the default command and default epochs, edgetl's head is as good as a scikit-learn linear probe
on the same frozen features, whatever the folder size (goal: >= the probe - 1 point at every size, and >= 0.95
at 40 images per class on visually distinct classes).

Real-photo ImageFolders of two kinds (tests/photos.py, crops of scikit-image's sample photographs, JPEG and
PNG): "distinct", 6 visually distinct classes at 96x96 (every method is at the ceiling there), and "textures",
12 classes of similar-looking grey material in small 64x64 crops (a probe is below the ceiling, so a weaker head
shows), each at 10, 40 and 400 images per class, plus the built-in digits. For each: one real
`edgetl train --data DIR` in a fresh process (default everything), then scikit-learn's
`LogisticRegression(max_iter=1000)` (and the same run to the optimum, tol=1e-6) fitted on the very same cached features of the very same train/val split
(features read from the run's own cache entry, run.json's cache.keys; the split rebuilt by edgetl.data and
checked against run.json's data.val_sha256). Writes benchmarks/results/small_data.json and .png.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from _common import RESULTS, save_plot, write_result

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root: tests.photos

from tests.photos import KINDS, make_photo_folder  # noqa: E402

PHOTO_KINDS = ("distinct", "textures")
SIZES = (10, 40, 400)  # images per class
GOAL = "edgetl val_acc >= scikit-learn probe - 1 point at every size; >= 0.95 at 40 per class on distinct classes"


def train(data: str, out: Path, cache: Path) -> dict:
    """`edgetl train` exactly as a user types it (default epochs, head, optimizer...)."""
    cmd = [sys.executable, "-m", "edgetl", "train", "--data", data, "--out", str(out), "--cache-dir", str(cache)]
    print("+ edgetl " + " ".join(cmd[3:]), flush=True)
    subprocess.run([*cmd, "--no-progress"], check=True, stdout=subprocess.DEVNULL, env={**os.environ})
    return json.loads((out / "run.json").read_text())


def cached_split(run: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_val, y_val): the features and split the run's head was trained and scored on."""
    from edgetl.data import load_dataset
    from edgetl.data.items import split_fingerprint
    from edgetl.train.cache import FeatureCache, list_contexts
    from edgetl.train.pipeline import rows

    keys = run["cache"]["keys"]
    if len(keys) != 1:
        raise SystemExit(f"expected one feature-cache entry for a default FP32 run, run.json lists {keys}")
    root = Path(run["cache"]["dir"])
    entry = next((c for c in list_contexts(root) if c["key"] == keys[0]), None)
    if entry is None:
        raise SystemExit(f"cache entry {keys[0]} not found under {root}")
    context = {k: v for k, v in entry["context"].items() if k != "format"}
    cache = FeatureCache(root, context)
    if cache.key != keys[0]:
        raise SystemExit(f"cache entry {keys[0]}: its context.json hashes to {cache.key}")
    cfg = run["config"]
    ds = load_dataset(cfg["data"], cfg["seed"], cfg["strict"], lambda msg: None)
    if split_fingerprint(ds.val) != run["data"]["val_sha256"]:
        raise SystemExit(f"--data {cfg['data']}: the rebuilt validation split differs from the run's")
    features = cache.lookup({it.key for it in ds.train + ds.val})
    xt, yt, _ = rows(ds.train, features)
    xv, yv, _ = rows(ds.val, features)
    return xt, yt, xv, yv


def probe(xt: np.ndarray, yt: np.ndarray, xv: np.ndarray, yv: np.ndarray, tol: float = 1e-4) -> dict:
    """tol=1e-4 is scikit-learn's default stop (what a practitioner writes); tol=1e-6 runs to the optimum, which
    is the objective edgetl's L-BFGS head minimizes to |gradient| <= 1e-5."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    t = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf = LogisticRegression(max_iter=5000 if tol < 1e-4 else 1000, tol=tol).fit(xt, yt)
    fit_s = time.perf_counter() - t
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return {"val_acc": float((clf.predict(xv) == yv).mean()), "fit_s": fit_s, "converged": converged}


def measure(kind: str, data: str, tmp: Path, per_class: int | None) -> dict:
    name = kind if per_class is None else f"{kind}-{per_class}"
    run = train(data, tmp / f"run-{name}", tmp / "cache")
    xt, yt, xv, yv = cached_split(run)
    sk = probe(xt, yt, xv, yv)
    optimum = probe(xt, yt, xv, yv, tol=1e-6)
    edgetl_acc = run["metrics"]["val_acc"]
    return {
        "name": name,
        "kind": kind,
        "data": "digits" if data == "digits" else f"photos ({kind}), {per_class} per class",
        "per_class": per_class,
        "n_train": len(yt),
        "n_val": len(yv),
        "edgetl_val_acc": edgetl_acc,
        "sklearn_val_acc": sk["val_acc"],
        "diff_points": (edgetl_acc - sk["val_acc"]) * 100,
        "sklearn_tol1e-6_val_acc": optimum["val_acc"],
        "diff_points_vs_tol1e-6": (edgetl_acc - optimum["val_acc"]) * 100,
        "edgetl_train_s": run["timing"].get("train_s"),
        "edgetl_total_s": run["timing"].get("total_s"),
        "edgetl_head": run["head"],
        "sklearn_fit_s": sk["fit_s"],
        "sklearn_converged": sk["converged"],
    }


def main() -> dict:
    import sklearn

    table = []
    with tempfile.TemporaryDirectory(prefix="edgetl-small-data-") as tmp:
        tmp = Path(tmp)
        for kind in PHOTO_KINDS:
            for n in SIZES:
                folder = make_photo_folder(tmp / f"{kind}-{n}", per_class=n, kind=kind)
                table.append(measure(kind, str(folder), tmp, n))
        table.append(measure("digits", "digits", tmp, None))
        versions = json.loads((tmp / "run-digits" / "run.json").read_text())["versions"]
    result = {
        "claim": "edgetl train (default command) vs scikit-learn LogisticRegression on the same cached features",
        "goal": GOAL,
        "photos": {
            kind: {
                "classes": list(KINDS[kind].photos),
                "size": KINDS[kind].size,
                "crop_scale": list(KINDS[kind].scale),
                "grey": KINDS[kind].grey,
                "source": "tests/photos.py (skimage.data)",
            }
            for kind in PHOTO_KINDS
        },
        "sklearn": {
            "estimator": "LogisticRegression(max_iter=1000) (default tol=1e-4); also tol=1e-6 (the optimum)",
            "version": sklearn.__version__,
        },
        "rows": table,
        "versions": versions,
    }
    write_result("small_data", result)
    plot(table)
    print_table(table)
    return result


def print_table(rows: list[dict]) -> None:
    head = f"{'kind':9s} {'per_class':>9s} {'train':>6s} {'val':>5s} {'edgetl':>7s} {'sklearn':>8s} {'diff':>7s}"
    print(f"\n{head} {'sk 1e-6':>8s} {'train_s':>8s}")
    for r in rows:
        print(
            f"{r['kind']:9s} {r['per_class'] or '-':>9} {r['n_train']:6d} {r['n_val']:5d} {r['edgetl_val_acc']:7.4f} "
            f"{r['sklearn_val_acc']:8.4f} {r['diff_points']:+6.1f}p {r['sklearn_tol1e-6_val_acc']:8.4f} "
            f"{r['edgetl_train_s'] or 0:8.2f}"
        )


def plot(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(11, 4))
    width = 0.38
    for offset, key, label, color in (
        (-width / 2, "edgetl_val_acc", "edgetl train (defaults)", "#4c72b0"),
        (width / 2, "sklearn_val_acc", "LogisticRegression, same features", "#999999"),
    ):
        bars = ax.bar(x + offset, [r[key] for r in rows], width, label=label, color=color)
        for b, r in zip(bars, rows, strict=True):
            ax.annotate(
                f"{r[key]:.3f}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=7
            )
    ax.set_xticks(x, [f"{r['name']}\n{r['n_train']} train / {r['n_val']} val" for r in rows], fontsize=8)
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(0, 1.22)
    ax.axhline(0.95, color="#c44e52", lw=0.8, ls="--", label="0.95 (goal at 40 per class, distinct)")
    ax.legend(loc="upper center", ncol=3, fontsize=7)
    kinds = ", ".join(f"{k}: {len(KINDS[k].photos)} classes, {KINDS[k].size} px" for k in PHOTO_KINDS)
    ax.set_title(f"Small real-photo folders ({kinds}) and digits\ngoal: {GOAL}", fontsize=9)
    fig.tight_layout()
    save_plot(fig, RESULTS / "small_data.png")


if __name__ == "__main__":
    main()
