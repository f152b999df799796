"""Claim: on every CPU kind measured, both INT8 layouts reach agreement >= 0.97 with the FP32 model, on features
faithful to an exact evaluation of the INT8 graph, and train and export give one verdict.

Datasets (each as a user keeps it): digits (built in, 64 px); digits written as a folder of 32-px PNGs
(DIR/train + DIR/val of the seed-0 split, default 224 px); the 6 distinct real-photo classes, 40 photos each, with
clutter (tests.photos.add_clutter, 224 px). Layouts: openvino (NNCF) and tensorrt (ONNX Runtime QDQ, symmetric).

CPU kinds:
- this machine, natively: `edgetl train --quantize int8` then `edgetl export`, each in a fresh process;
- an AVX2-only CPU (no VNNI), reached through QEMU's user-mode emulator (`qemu-x86_64 -cpu Haswell`: the runtimes
  see a Haswell CPU and run their AVX2 kernels, whose 16-bit saturation QEMU executes as the hardware does). The
  fidelity check (train's own code: every runtime against onnx.reference on 8 calibration images) runs under the
  emulator on the same INT8 graph; the run is then repeated natively with the evaluation mode it chose
  (EDGETL_INT8_MODE): ONNX Runtime's u8u8 kernels and the float emulation compute the same on any x86 CPU, up to
  float rounding, so this is what the AVX2 machine trains on. For digits the whole train also runs under the
  emulator once (`--qemu-full`), as a check of that shortcut.

The digits PNG folder is also compiled for OpenVINO and labelled by `edgetl predict` from its PNG files.
Writes benchmarks/results/int8_fidelity.json (int8_fidelity.avx2.json on a CPU without VNNI: there `--native-only`
checks the emulated rows against the real kernels). Takes about 30 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _common import per_cpu, write_result
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from edgetl.machine import cpu_info, cpu_line  # noqa: E402

EDGETL = [sys.executable, "-m", "edgetl"]
QEMU = shutil.which("qemu-x86_64")
LAYOUTS = ("openvino", "tensorrt")

PROBE = """
import json, sys
sys.path.insert(0, {root!r})
from pathlib import Path
from edgetl.machine import cpu_line
from edgetl.config import QuantizeCfg, TrainCfg
from edgetl.train.int8 import Int8Run
from edgetl.train.pipeline import Pipeline
cfg = TrainCfg(data={data!r}, img_size={img_size!r}, quantize=QuantizeCfg(target={layout!r}, overflow_fix={fix!r}),
               out=Path({out!r}), cache_dir=Path({cache!r}), progress=False, overwrite=True)
p = Pipeline(cfg)
r = Int8Run(p)
items, h = r.calibration()
fp32 = p.features(p.fp32_extractor())
r.extractor(r.q, items, h, fp32.features)
print("RESULT " + json.dumps({{"cpu": cpu_line(), "fidelity": r.fidelity}}))
"""


def edgetl(*args: str, env: dict | None = None, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    print("+ " + " ".join([*prefix, "edgetl", *args]), flush=True)
    return subprocess.run([*prefix, *EDGETL, *args], capture_output=True, text=True, env={**os.environ, **(env or {})})


def digits_png_folder(root: Path) -> Path:
    """The built-in digits as 32-px grey PNG files, split into DIR/train and DIR/val as `--data digits` splits."""
    from edgetl.data.folders import load_digits

    ds = load_digits(0)
    for split, items in (("train", ds.train), ("val", ds.val)):
        for it in items:
            folder = root / split / ds.classes[it.label]
            folder.mkdir(parents=True, exist_ok=True)
            im = Image.fromarray(it.pixels[..., 0]).resize((32, 32), Image.Resampling.BILINEAR)
            im.save(folder / f"{it.path[len('digits[') : -1]:0>4}.png")
    return root


def photo_folder(root: Path) -> Path:
    from tests.photos import add_clutter, make_photo_folder

    make_photo_folder(root, per_class=40)
    add_clutter(root)
    return root


def train(data: str, out: Path, cache: Path, layout: str, env: dict | None = None, prefix=(), extra=()) -> dict:
    args = ["train", "--data", data, "--quantize", "int8", "--target", layout, "--out", str(out), "--overwrite", *extra]
    run = edgetl(*args, "--cache-dir", str(cache), "--no-progress", env=env, prefix=prefix)
    if not (out / "run.json").is_file():
        raise SystemExit(f"train failed: {run.stderr[-2000:]}")
    record = json.loads((out / "run.json").read_text())
    m, q = record["metrics"], record["quantize"]
    exp = edgetl("export", str(out))
    verdict = "passed" if exp.returncode == 0 else f"refused (exit {exp.returncode}): {exp.stderr.strip()[-300:]}"
    return {
        "val_acc_fp32": m["val_acc_fp32"],
        "val_acc_int8": m["val_acc"],
        "int8_agreement": m["int8_agreement"],
        "feature_cosine": m["feature_cosine"],
        "int8_drop": m["int8_drop"],
        "train_status": q["status"],
        "train_exit": run.returncode,
        "export": verdict,
        "features_from": q["features_from"],
        "evaluators": q["fidelity"]["evaluators"],
        "audit": {k: v for k, v in record["data"]["audit"].items() if k in ("label_conflicts", "duplicates_in_class")},
    }


def emulated_fidelity(data: str, img_size: int | None, layout: str, cache: Path, tmp: Path, fix: bool = False) -> dict:
    out = str(tmp / "probe-run")
    code = PROBE.format(root=str(ROOT), data=data, img_size=img_size, layout=layout, fix=fix, out=out, cache=str(cache))
    print(f"+ qemu-x86_64 -cpu Haswell: fidelity check, {data} {layout}", flush=True)
    run = subprocess.run([QEMU, "-cpu", "Haswell", sys.executable, "-c", code], capture_output=True, text=True)
    line = next((x for x in run.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"the emulated fidelity check failed: {run.stderr[-2000:]}")
    return json.loads(line[len("RESULT ") :])


def predict_pngs(run: Path, folder: Path, tmp: Path) -> dict:
    """The digits PNG run through export -> compile -> predict, on its own val PNG files."""
    build = tmp / "png-ov"
    edgetl("compile", str(run / "model.onnx"), "--target", "openvino", "--out", str(build))
    files = sorted((folder / "val").rglob("*.png"))
    out = edgetl("predict", str(build), *map(str, files), "--json", "--top-k", "1")
    rows = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
    right = sum(Path(r["path"]).parent.name == r["class"] for r in rows)
    fidelity = next((x for x in out.stderr.splitlines() if "INT8 on this CPU" in x), "")
    return {"exit": out.returncode, "images": len(rows), "accuracy": right / max(len(rows), 1), "fidelity": fidelity}


def merge(rows: list[dict], checks: dict) -> tuple[list[dict], dict]:
    """Last results' rows and checks, with the ones rerun now in their place (same dataset, layout and CPU)."""
    from _common import RESULTS

    last = json.loads((RESULTS / f"{per_cpu('int8_fidelity')}.json").read_text())
    redone = {(r["dataset"], r["layout"], r["cpu"]) for r in rows}
    kept = [r for r in last["rows"] if (r["dataset"], r["layout"], r["cpu"]) not in redone]
    order = {
        (d, layout): i
        for i, (d, layout) in enumerate((d, x) for d in ("digits", "digits-png", "photos") for x in LAYOUTS)
    }
    merged = sorted(kept + rows, key=lambda r: order.get((r["dataset"], r["layout"]), 99))
    return merged, {**last.get("checks", {}), **checks}


def main() -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--qemu-full", action="store_true", help="also run the whole digits train under the emulator")
    ap.add_argument("--only", help="one dataset: digits, digits-png or photos")
    ap.add_argument("--layout", choices=LAYOUTS, help="one layout; the other rows are kept from the last results")
    ap.add_argument("--native-only", action="store_true", help="this CPU only, no emulated AVX2 rows")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgetl-int8-fidelity-") as tmp:
        tmp = Path(tmp)
        datasets = {
            "digits": ("digits", 64),
            "digits-png": (str(digits_png_folder(tmp / "digits-png")), None),
            "photos": (str(photo_folder(tmp / "photos")), None),
        }
        rows, checks = [], {}
        for name, (data, size) in datasets.items():
            if args.only and name != args.only:
                continue
            cache = tmp / f"cache-{name}"
            for layout in [x for x in LAYOUTS if args.layout in (None, x)]:
                out = tmp / f"{name}-{layout}"
                row = {"dataset": name, "layout": layout, "cpu": cpu_line(), **train(data, out, cache, layout)}
                rows.append(row)
                if name == "digits-png" and layout == "openvino":
                    checks["digits_png_pipeline"] = predict_pngs(out, Path(data), tmp)
                if QEMU is None or args.native_only:
                    continue
                emu = emulated_fidelity(data, size, layout, cache, tmp)
                mode = emu["fidelity"]["mode"]
                forced = train(data, tmp / f"{name}-{layout}-avx2", cache, layout, {"EDGETL_INT8_MODE": mode})
                rows.append(
                    {
                        "dataset": name,
                        "layout": layout,
                        "cpu": emu["cpu"] + " [qemu-x86_64 -cpu Haswell]",
                        **forced,
                        "evaluators": emu["fidelity"]["evaluators"],
                        "features_from": emu["fidelity"]["features_from"],
                    }
                )
            if name == "digits" and QEMU and args.qemu_full and args.layout in (None, "tensorrt"):
                full = train(data, tmp / "digits-qemu", cache, "tensorrt", prefix=(QEMU, "-cpu", "Haswell"))
                checks["digits_tensorrt_whole_train_under_qemu"] = full
    if args.only or args.layout:  # a partial rerun: the rows and checks it did not redo stay as last written
        rows, checks = merge(rows, checks)
    result = {
        "claim": "both INT8 layouts: agreement >= 0.97 on faithful features, on every CPU kind; one verdict",
        "machine": cpu_info(),
        "rows": rows,
        "checks": checks,
        "min_agreement": min(r["int8_agreement"] for r in rows),
    }
    path = write_result(per_cpu("int8_fidelity"), result)
    for r in rows:
        runtimes = ", ".join(
            f"{e['evaluator'].split(' (')[0]} {e['cosine_to_exact']:.4f}/{e.get('feature_cosine', float('nan')):.4f}"
            for e in r["evaluators"]
        )
        print(
            f"{r['dataset']:<10} {r['layout']:<9} acc {r['val_acc_fp32']:.4f}/{r['val_acc_int8']:.4f} "
            f"agree {r['int8_agreement']:.4f} cos {r['feature_cosine']:.4f} export {r['export'][:8]} | {runtimes} | "
            f"{r['cpu'][:60]}"
        )
    print(json.dumps(checks, indent=1))
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
