"""Claim: `--quant-overflow-fix` (7-bit weights in every layer) makes the OpenVINO layout faithful on a CPU
without VNNI, at little cost in accuracy.

Digits (built in, 64 px), OpenVINO layout, seed 0, trained natively with and without the option; then train's own
fidelity check runs on each INT8 graph under `qemu-x86_64 -cpu Haswell` (an AVX2-only CPU emulated on this one,
see int8_fidelity.py), which reports OpenVINO's and ONNX Runtime's cosine to the exact evaluation there.
Writes benchmarks/results/overflow_fix.json. Takes about 5 minutes.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from _common import write_result
from int8_fidelity import QEMU, emulated_fidelity, train

from edgetl.machine import cpu_info


def main() -> dict:
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgetl-overflow-fix-") as tmp:
        tmp, cache = Path(tmp), Path(tmp) / "cache"
        for fix in (False, True):
            row = train("digits", tmp / f"run-{fix}", cache, "openvino", extra=["--quant-overflow-fix"] if fix else [])
            row["overflow_fix"] = fix
            if QEMU:
                emu = emulated_fidelity("digits", 64, "openvino", cache, tmp, fix)
                row["avx2_emulated"] = {"cpu": emu["cpu"], "evaluators": emu["fidelity"]["evaluators"]}
            rows.append(row)
    result = {"claim": "--quant-overflow-fix: OpenVINO faithful on AVX2, accuracy kept", "machine": cpu_info()}
    result["rows"] = rows
    path = write_result("overflow_fix", result)
    for r in rows:
        avx2 = {e["evaluator"]: e["cosine_to_exact"] for e in r.get("avx2_emulated", {}).get("evaluators", [])}
        print(
            f"overflow_fix={r['overflow_fix']}: val {r['val_acc_int8']:.4f} (FP32 {r['val_acc_fp32']:.4f}), agreement "
            f"{r['int8_agreement']:.4f}, feature cosine {r['feature_cosine']:.4f}; under AVX2: {json.dumps(avx2)}"
        )
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
