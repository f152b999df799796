"""Claim: the default INT8 pipeline gives the same model and the same numbers from any fresh cache, and every
gate that can stop a run sits well outside the run-to-run spread.

Runs what a user runs, each in a fresh process with a fresh cache: `edgetl train --quantize int8 --compare-fp32`
then `edgetl export`:
- 5 times with seed 0 (thread count alternating between the default and 1): sha256 of backbone.int8.onnx,
  val_acc, int8_agreement and the export's parity figures must be identical;
- seeds 1-4 (another split and calibration subset each): the natural spread the gates are set against;
- the TensorRT and ONNX Runtime layouts at seed 0 (agreement means one thing on every target).
Writes benchmarks/results/int8_spread.json.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import write_result

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from edgetl.export import parity  # noqa: E402
from edgetl.verdict import COLLAPSE_DROP  # noqa: E402

EDGETL = [sys.executable, "-m", "edgetl"]


def edgetl(*args: str) -> None:
    subprocess.run([*EDGETL, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def one(tmp: Path, name: str, seed: int = 0, target: str = "openvino", threads: int | None = None) -> dict:
    run, cache = tmp / name, tmp / f"cache-{name}"
    args = ["train", "--quantize", "int8", "--target", target, "--compare-fp32", "--seed", str(seed)]
    args += ["--out", str(run), "--cache-dir", str(cache), "--no-progress"] + (
        ["--threads", str(threads)] if threads else []
    )
    print(f"+ edgetl {' '.join(args)}", flush=True)
    edgetl(*args)
    record = json.loads((run / "run.json").read_text())
    row = {
        "name": name,
        "seed": seed,
        "target": target,
        "threads": threads or "default",
        "int8_sha256": hashlib.sha256((run / "backbone.int8.onnx").read_bytes()).hexdigest(),
        "val_acc": record["metrics"]["val_acc"],
        "val_acc_fp32": record["metrics"]["val_acc_fp32"],
        "int8_agreement": record["metrics"]["int8_agreement"],
        "feature_cosine": record["metrics"].get("feature_cosine"),
        "features_from": record["quantize"].get("features_from"),
        "int8_drop": record["metrics"]["int8_drop"],
        "status": record["quantize"]["status"],
        "kept_fp": record["quantize"]["ignored"],
    }
    if target == "openvino":
        edgetl("export", str(run))
        int8 = json.loads((run / "export.json").read_text())["stages"][-1]
        row["export_agreement_vs_fp32"] = int8["top1_agreement"]
        row["export_agreement_vs_own_int8"] = int8["vs_int8_backbone"]["top1_agreement"]
    return row


def spread(rows: list[dict], key: str) -> dict:
    values = [r[key] for r in rows if key in r]
    return {"min": min(values), "max": max(values), "range": max(values) - min(values), "values": values}


def main() -> dict:
    with tempfile.TemporaryDirectory(prefix="edgetl-int8-spread-") as tmp:
        tmp = Path(tmp)
        fresh = [one(tmp, f"fresh{i}", threads=None if i % 2 == 0 else 1) for i in range(5)]
        seeds = [fresh[0]] + [one(tmp, f"seed{s}", seed=s) for s in range(1, 5)]
        targets = [one(tmp, f"{t}", target=t) for t in ("tensorrt", "onnxruntime")]
    keys = ("val_acc", "int8_agreement", "int8_drop", "export_agreement_vs_fp32", "export_agreement_vs_own_int8")
    seed_spread = {k: spread(seeds, k) for k in keys}
    gates = {
        "export: INT8 graph vs FP32 graph agreement >=": parity.INT8_MIN_AGREEMENT,
        "export: INT8 graph vs its own INT8 backbone agreement >=": parity.INT8_EXPORT_MIN_AGREEMENT,
        "train: INT8 drop counted as collapsed >": COLLAPSE_DROP,
    }
    result = {
        "claim": "default INT8 pipeline: identical from 5 fresh caches; gates well outside the spread over seeds",
        "fresh_caches_seed0": fresh,
        "identical_from_fresh_caches": {
            "int8_sha256": len({r["int8_sha256"] for r in fresh}) == 1,
            **{k: spread(fresh, k)["range"] == 0 for k in keys},
        },
        "seeds_0_to_4": seeds,
        "spread_over_seeds": seed_spread,
        "targets_seed0": [fresh[0]] + targets,
        "gates": gates,
        "margins": {
            "agreement vs FP32: lowest over seeds - gate": seed_spread["export_agreement_vs_fp32"]["min"]
            - parity.INT8_MIN_AGREEMENT,
            "agreement vs own INT8: lowest over seeds - gate": seed_spread["export_agreement_vs_own_int8"]["min"]
            - parity.INT8_EXPORT_MIN_AGREEMENT,
            "collapse: gate - largest drop over seeds": COLLAPSE_DROP - seed_spread["int8_drop"]["max"],
        },
    }
    path = write_result("int8_spread", result)
    print(json.dumps({k: result[k] for k in ("identical_from_fresh_caches", "margins")}, indent=1))
    for r in seeds + targets:
        print(
            f"{r['name']:<12} {r['target']:<12} seed {r['seed']}  val_acc {r['val_acc']:.4f} (fp32 {r['val_acc_fp32']:.4f})"
            f"  agreement {r['int8_agreement']:.4f}  sha {r['int8_sha256'][:12]}"
        )
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
