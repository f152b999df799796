"""Claim (issue 29): fine-tuning the last blocks beats the frozen backbone where the task is far from ImageNet, its
INT8 bundle keeps it, the cut-point cache makes an epoch cheap, and the forgetting report moves as it should.

For each dataset (the built-in digits at 64 px; real-photo folders from tests/photos.py: 12 similar "textures"
classes at 64 px and 6 "distinct" classes at 96 px, 40 images per class): `edgetl train` frozen, `--unfreeze 1`,
`2`, `3` and `all` (default recipe: LP, then AdamW 1e-3 for 12 epochs, BatchNorm frozen, early stopping with
the LP model as epoch 0), each in FP32 (val accuracy, forgetting on the ImageNet probe photos, seconds per epoch,
cut-cache bytes per image), and the frozen and the best fine-tuned run again with `--quantize int8` (OpenVINO
layout: val accuracy of the INT8 model, agreement with its FP32 model; with `--unfreeze N` the fine-tuned network
quantized after, and again with `--ft-prefix int8`, the blocks trained on the INT8 prefix's activations). The `scratch` row is `edgetl probe`'s from-scratch CNN on the same data, split and
image size (its fixed step budget; no backbone, so no forgetting or INT8 row).
The best digits run is exported, compiled for OpenVINO, packaged, and its bundle labels the val images as PNG
files. Epoch time at `--unfreeze 2`, 64 px and 224 px (512 digits): an epoch on cached activations vs an epoch
that runs the frozen prefix forward (no grad) on every batch, as fine-tuning without the cache does.
Run it alone on the machine (~40 min on 2 cores; `--int8-only`: the INT8 rows and the bundle again, ~20 min).
Writes benchmarks/results/finetune.json and .png.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import RESULTS, save_plot, write_result

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
CONFIGS = ("0", "1", "2", "3", "all")


def train(data: str, out: Path, cache: Path, *extra: str) -> dict:
    cmd = [sys.executable, "-m", "edgetl", "train", "--data", data, "--out", str(out), "--overwrite", "--no-progress"]
    env = {**os.environ, "EDGETL_CACHE_DIR": str(cache)}
    t = time.perf_counter()
    subprocess.run([*cmd, *extra], check=True, env=env, stdout=subprocess.DEVNULL)
    record = json.loads((out / "run.json").read_text())
    record["wall_s"] = time.perf_counter() - t
    return record


def row(fp32: dict, int8: dict | None) -> dict:
    ft = fp32.get("finetune") or {}
    return {
        "val_acc_fp32": fp32["metrics"]["val_acc"],
        "val_acc_int8": int8["metrics"]["val_acc"] if int8 else None,
        "int8_agreement": int8["metrics"].get("int8_agreement") if int8 else None,
        "forgetting": ft.get("forgetting", {"agreement": 1.0, "mean_kl": 0.0}),
        "seconds_per_epoch": ft.get("seconds_per_epoch"),
        "cache": ft.get("cache"),
        "best_epoch": ft.get("best_epoch"),
        "wall_s_fp32": round(fp32["wall_s"], 1),
    }


def dataset_rows(name: str, data: str, size: int, work: Path) -> dict:
    """FP32 runs for every config; INT8 (OpenVINO layout) for the frozen run and the best fine-tuned one."""
    result = config_rows(name, data, work, ["--img-size", str(size)])
    result["rows"]["scratch"] = scratch_row(data, size, work / f"probe-{name}")
    return result


def config_rows(name: str, data: str, work: Path, base: list[str]) -> dict:
    """{rows: frozen and each --unfreeze config in FP32, INT8 for the frozen and the best one; best}."""
    rows, runs = {}, {}
    for n in CONFIGS:
        key = "frozen" if n == "0" else n
        extra = base + (["--unfreeze", n] if n != "0" else [])
        runs[key] = (extra, train(data, work / f"{name}-{n}", work / "cache", *extra))
    best = max((k for k in runs if k != "frozen"), key=lambda k: runs[k][1]["metrics"]["val_acc"])
    for key, (extra, fp32) in runs.items():
        int8 = None
        if key in ("frozen", best):
            int8 = train(data, work / f"{name}-{key}-int8", work / "cache", *extra, "--quantize", "int8")
        rows[key] = row(fp32, int8)
        print(name, key, {k: rows[key][k] for k in ("val_acc_fp32", "val_acc_int8", "forgetting")}, flush=True)
    return {"rows": rows, "best": best}


def int8_rows(name: str, data: str, size: int, work: Path, d: dict) -> None:
    """The INT8 rows again (frozen and the best --unfreeze), FP32 rows kept: the best one with the default
    `--ft-prefix fp32` (the fine-tuned network quantized after) and with `--ft-prefix int8` (trained on the INT8
    prefix)."""
    for key in ("frozen", d["best"]):
        extra = ["--img-size", str(size), "--quantize", "int8"] + ([] if key == "frozen" else ["--unfreeze", key])
        int8 = train(data, work / f"{name}-{key}-int8", work / "cache", *extra)
        d["rows"][key].update(val_acc_int8=int8["metrics"]["val_acc"], int8_agreement=int8["metrics"]["int8_agreement"])
        if key != "frozen":
            alt = train(data, work / f"{name}-{key}-int8p", work / "cache", *extra, "--ft-prefix", "int8")
            d["rows"][key]["int8_prefix"] = {
                "val_acc_int8": alt["metrics"]["val_acc"],
                "int8_agreement": alt["metrics"]["int8_agreement"],
                "best_epoch": alt["finetune"]["best_epoch"],
            }
        print(name, key, d["rows"][key].get("val_acc_int8"), d["rows"][key].get("int8_prefix"), flush=True)


def scratch_row(data: str, size: int, work: Path) -> dict:
    """`edgetl probe`'s from-scratch CNN on the same data, split and image size."""
    work.mkdir(parents=True, exist_ok=True)
    out = work / "probe.json"
    cmd = [sys.executable, "-m", "edgetl", "probe", "--data", data, "--img-size", str(size), "--cache-dir"]
    cmd += [str(work / "cache"), "--json", str(out), "--overwrite", "--no-progress"]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    sc = json.loads(out.read_text())["scratch"]
    return {"val_acc_fp32": sc.get("val_acc"), "val_acc_int8": None, "int8_agreement": None, "steps": sc.get("steps"),
            "size": sc.get("size"), "wall_s_fp32": round(time.perf_counter() - t, 1)}  # fmt: skip


def epoch_times(size: int, n_images: int = 512) -> dict:
    """Seconds for one epoch of `--unfreeze 2` on cached activations vs with the frozen prefix run on every batch."""
    import torch

    from edgetl.data.folders import load_digits
    from edgetl.models.backbones import build_backbone
    from edgetl.models.backbones.split import split
    from edgetl.preprocess import Preprocess

    torch.manual_seed(0)
    backbone = build_backbone("efficientnet_lite0")
    prefix, suffix, _ = split(backbone, 2)
    items = load_digits(0).train[:n_images]
    pre = Preprocess(size=(size, size))
    x = torch.from_numpy(pre(np.stack([it.load() for it in items])))
    y = torch.tensor([it.label for it in items])
    head = torch.nn.Linear(1280, 10)
    params = list(suffix.parameters()) + list(head.parameters())
    for q in params:
        q.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=1e-3)
    with torch.inference_mode():
        cut = torch.cat([prefix(x[i : i + 64]) for i in range(0, len(x), 64)])

    def epoch(cached: bool) -> float:
        t = time.perf_counter()
        for i in range(0, len(x), 64):
            if cached:
                a = cut[i : i + 64].clone()
            else:
                with torch.inference_mode():
                    a = prefix(x[i : i + 64])
                a = a.clone()
            loss = torch.nn.functional.cross_entropy(head(suffix(a)), y[i : i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
        return time.perf_counter() - t

    rounds = [(epoch(True), epoch(False)) for _ in range(3)]
    ratio = float(np.median([b / a for a, b in rounds]))
    return {"size": size, "images": len(x), "cached_s": [a for a, _ in rounds], "prefix_s": [b for _, b in rounds],
            "speedup": ratio, "cut_shape": list(cut.shape[1:])}  # fmt: skip


def compile_openvino(run_dir: Path, work: Path) -> Path:
    """`edgetl export RUN` and `edgetl compile --target openvino`: the bundle folder."""
    env = {**os.environ, "EDGETL_CACHE_DIR": str(work / "cache")}
    build = work / "bundle-ov"
    for args in (["export", str(run_dir)], ["compile", str(run_dir / "model.onnx"), "--target", "openvino", "--out",
                                           str(build)]):  # fmt: skip
        subprocess.run([sys.executable, "-m", "edgetl", *args], check=True, env=env, stdout=subprocess.DEVNULL)
    return build


def bundle_check(run_dir: Path, work: Path) -> dict:
    from edgetl.cli.demo import bundle_accuracy, write_val_images

    build = compile_openvino(run_dir, work)
    package = [sys.executable, "-m", "edgetl", "package", str(build), "--out", str(work / "ft-ov.tar.gz")]
    subprocess.run(package, check=True)
    record = json.loads((run_dir / "run.json").read_text())
    return bundle_accuracy(work / "ft-ov.tar.gz", write_val_images(record, work / "val-png"))


def main(int8_only: bool = False) -> dict:
    """`--int8-only`: the INT8 rows and the digits bundle again, over the FP32 rows of the last results JSON."""
    from edgetl.machine import cpu_info
    from tests.photos import make_photo_folder

    with tempfile.TemporaryDirectory(prefix="edgetl-finetune-") as tmp:
        work = Path(tmp)
        sets = {"digits": ("digits", 64)}
        for kind, size in (("textures", 64), ("distinct", 96)):
            sets[kind] = (str(make_photo_folder(work / kind, per_class=40, kind=kind)), size)
        if int8_only:
            result = json.loads((RESULTS / "finetune.json").read_text())
            result["int8_machine"] = cpu_info()
        else:
            result = {"machine": cpu_info(), "datasets": {}, "epoch_time": [epoch_times(64), epoch_times(224)]}
        for name, (data, size) in sets.items():
            if int8_only:
                int8_rows(name, data, size, work, result["datasets"][name])
            else:
                result["datasets"][name] = {"size": size, **dataset_rows(name, data, size, work)}
            write_result("finetune", result)  # partial results survive an interrupted run
        best = result["datasets"]["digits"]["best"]
        result["digits_best"] = {"unfreeze": best, **bundle_check(work / f"digits-{best}-int8", work)}
    write_result("finetune", result)
    plot(result)
    print(json.dumps({k: result[k] for k in ("digits_best", "epoch_time")}, indent=1, default=str))
    return result


def plot(result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.8))
    for name, d in result["datasets"].items():
        keys = list(d["rows"])
        ax.plot(keys, [d["rows"][k]["val_acc_fp32"] for k in keys], marker="o", label=f"{name} FP32")
        int8 = [(k, d["rows"][k]["val_acc_int8"]) for k in keys if d["rows"][k]["val_acc_int8"] is not None]
        ax.plot([k for k, _ in int8], [v for _, v in int8], marker="x", ls="", label=f"{name} INT8")
    ax.set_xlabel("--unfreeze")
    ax.set_ylabel("val accuracy")
    ax.set_title("Lite0: frozen vs fine-tuned last blocks (LP-FT, cut-point cache)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_plot(fig, RESULTS / "finetune.png")


if __name__ == "__main__":
    main(int8_only="--int8-only" in sys.argv[1:])
