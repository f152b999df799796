"""Claim: the device's INT8 probe tells a faithful CPU from a saturating one by the logit shift, where labels and
max |dp| alone do not (edgetl/deploy/fidelity.py: MAX_LOGIT_SHIFT).

Bundles (built once into $EDGETL_BENCH_WORK, benchmarks/_common.py):
  demo OpenVINO / ONNX Runtime   the default task (digits, 64 px, INT8 laid out for OpenVINO), its default export
                                 compiled for each runtime, as `make demo` builds them
  224-px OpenVINO / ONNX Runtime startup.py's 224-px digits bundles
  intents OpenVINO / ONNX Runtime MiniLM on tests/data/text/intents.csv, INT8 (default layout)

Each bundle is opened by edgetl's Predictor in a fresh process with an empty probe cache, natively and under
`qemu-x86_64 -cpu Haswell` (an AVX2 CPU whose INT8 kernels saturate; numerics, not timings), and its probe result
recorded: labels, max |dp|, logit shift, the verdict, the precision that ran. For the two demo bundles the 359 val
frames of the seed-0 split are labelled too, so each verdict stands next to what the bundle really costs.
Writes benchmarks/results/probe_shift.json (probe_shift.avx2.json on a CPU without VNNI). About 5 minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import EDGETL, WORK, _bundle, _export, _run, per_cpu, write_result
from startup import bundles_224

ROOT = Path(__file__).resolve().parents[1]
QEMU = shutil.which("qemu-x86_64")
INTENTS = ROOT / "tests" / "data" / "text" / "intents.csv"

CHILD = """
import json, sys
import numpy as np
sys.path.insert(0, {root!r})
from edgetl.deploy.predictor import Predictor
with Predictor(sys.argv[1]) as p:
    out = {{"fidelity": p.fidelity, "precision": p.info.get("precision"), "u8u8": p.precise}}
    if sys.argv[2] == "val":
        from edgetl.data import load_dataset
        val = load_dataset("digits", 0, False, print).val
        labels = [int(p.runner.infer(p.feeds(it.load()))["label"].reshape(-1)[0]) for it in val]
        out["val_accuracy"] = float(np.mean([y == it.label for y, it in zip(labels, val)]))
print("RESULT " + json.dumps(out))
"""


def bundles() -> dict[str, tuple[Path, bool]]:
    """name -> (bundle, label the val frames too)."""
    run = _run("run", "openvino")
    demo = _export(run, WORK / "fused" / "model.onnx")
    b224 = bundles_224({**os.environ, "EDGETL_CACHE_DIR": str(WORK / "cache")})
    intents = WORK / "intents-int8"
    if not (intents / "model.onnx").is_file():
        for args in (("train", "--data", str(INTENTS), "--backbone", "minilm", "--quantize", "int8", "--out",
                      str(intents), "--overwrite", "--no-progress"), ("export", str(intents))):  # fmt: skip
            subprocess.run([*EDGETL, *args], check=True, stdout=subprocess.DEVNULL)
    return {
        "demo OpenVINO INT8, 64 px": (_bundle(demo, "demo-ov", "openvino"), True),
        "demo ONNX Runtime INT8, 64 px": (_bundle(demo, "demo-ort", "onnxruntime"), True),
        "224-px OpenVINO INT8": (b224["ov"], False),
        "224-px ONNX Runtime INT8": (b224["ort"], False),
        "MiniLM intents OpenVINO INT8": (_bundle(intents / "model.onnx", "intents-ov", "openvino"), False),
        "MiniLM intents ONNX Runtime INT8": (_bundle(intents / "model.onnx", "intents-ort", "onnxruntime"), False),
    }


def probe(bundle: Path, val: bool, prefix: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="edgetl-probe-") as cache:  # an empty probe cache: the probe runs
        env = {**os.environ, "EDGETL_CACHE_DIR": cache}
        cmd = [*prefix, sys.executable, "-c", CHILD.format(root=str(ROOT)), str(bundle), "val" if val else "-"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def main() -> dict:
    from edgetl.deploy.fidelity import MAX_ABS_PROBS, MAX_LOGIT_SHIFT
    from edgetl.machine import cpu_info

    cpus = {"native": []} | ({"emulated AVX2 (qemu-x86_64 -cpu Haswell)": [QEMU, "-cpu", "Haswell"]} if QEMU else {})
    rows = []
    for name, (bundle, val) in bundles().items():
        for cpu, prefix in cpus.items():
            got = probe(bundle, val, prefix)
            rows.append({"bundle": name, "cpu": cpu, **got})
            f = got["fidelity"]
            print(f"{name:32s} {cpu[:13]:13s} {f['labels_agree']}/{f['images']} max|dp| {f['max_abs_probs']:.3f} "
                  f"logit shift {f['logit_shift']} faithful={f['faithful']} val={got.get('val_accuracy')}")  # fmt: skip
    result = {
        "claim": "the probe's logit shift separates faithful from saturating INT8 runtimes",
        "machine": cpu_info(),
        "bounds": {"max_abs_probs": MAX_ABS_PROBS, "logit_shift": MAX_LOGIT_SHIFT},
        "rows": rows,
    }
    write_result(per_cpu("probe_shift"), result)
    return result


if __name__ == "__main__":
    main()
