"""Claim: `edgetl probe` says whether transfer is worth it, from numbers measured in one command, on the built-in
digits and on the two real-photo folders of tests/photos.py (40 images per class): kNN (5-fold, k=10, cosine),
the linear probe (= `edgetl train`'s val_acc), LogME, a from-scratch CNN on the same split, and the verdict.

Each dataset is probed as a user types it (`edgetl probe --data D`, defaults: Lite0, 64 px for digits, 224 px
for the photo folders, 1000 scratch steps), in a fresh process with a cold feature cache; the wall time is the
whole command. Then the scratch budget is moved (500 and 1500 steps, the cache now warm) to show whether the
verdict depends on it. Writes benchmarks/results/probe.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import write_result

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root: tests.photos

from tests.photos import KINDS, make_photo_folder  # noqa: E402

PER_CLASS = 40
SWEEP = (500, 1500)  # scratch steps besides the default


def probe(data: str, tmp: Path, name: str, *flags: str) -> tuple[dict, float]:
    out = tmp / f"{name}.json"
    cmd = [sys.executable, "-m", "edgetl", "probe", "--data", data, "--cache-dir", str(tmp / "cache"), *flags]
    print("+ edgetl " + " ".join(cmd[3:]), flush=True)
    t = time.perf_counter()
    subprocess.run([*cmd, "--json", str(out), "--overwrite", "--no-progress"], check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text()), time.perf_counter() - t


def row(name: str, doc: dict, wall_s: float) -> dict:
    d, sc = doc["data"], doc["scratch"]
    return {
        "dataset": name,
        "classes": len(doc["classes"]),
        "images": d["images"],
        "train": d["train"],
        "val": d["val"],
        "img_size": doc["preprocess"]["size"][0],
        "knn_acc": doc["knn"]["acc"],
        "k": doc["knn"]["k"],
        "linear_val_acc": doc["linear"]["val_acc"],
        "logme": doc["logme"]["score"],
        "scratch_val_acc": sc.get("val_acc"),
        "scratch_steps": sc.get("steps"),
        "scratch_size": sc.get("size"),
        "verdict": doc["verdict"]["line"],
        "timing": doc["timing"],
        "wall_s": wall_s,
    }


def main() -> dict:
    rows, sweep, cpu = [], [], None
    with tempfile.TemporaryDirectory(prefix="edgetl-probe-") as tmp:
        tmp = Path(tmp)
        datasets = {"digits": "digits"}
        for kind in KINDS:
            datasets[kind] = str(make_photo_folder(tmp / kind, per_class=PER_CLASS, kind=kind))
        for name, data in datasets.items():
            doc, wall = probe(data, tmp, name)
            rows.append(row(name, doc, wall))
            cpu = doc["cpu"]
        for name, data in datasets.items():
            for steps in SWEEP:
                doc, wall = probe(data, tmp, f"{name}-{steps}", "--scratch-steps", str(steps))
                sweep.append(row(name, doc, wall))
    result = {
        "claim": "edgetl probe: kNN, linear probe, LogME, from-scratch CNN and a verdict, one command per dataset",
        "rule": doc["verdict"]["rule"],
        "photos": {"per_class": PER_CLASS, "source": "tests/photos.py (skimage.data)"},
        "rows": rows,
        "scratch_steps_sweep": sweep,
        "cpu": cpu,
    }
    write_result("probe", result)
    print_table(rows + sweep)
    return result


def print_table(rows: list[dict]) -> None:
    print(
        f"\n{'dataset':9s} {'kNN':>7s} {'linear':>7s} {'LogME':>7s} {'scratch':>8s} {'steps':>6s} {'wall':>7s}  verdict"
    )
    for r in rows:
        print(
            f"{r['dataset']:9s} {r['knn_acc']:7.4f} {r['linear_val_acc']:7.4f} {r['logme']:7.3f} "
            f"{r['scratch_val_acc']:8.4f} {r['scratch_steps']:6d} {r['wall_s']:6.1f}s  {r['verdict']}"
        )


if __name__ == "__main__":
    main()
