"""Claim: latency per target and precision, batch 1, model only, edgetl bundles next to the by-hand pipelines.

    python benchmarks/latency_targets.py [--duration 6] [--rounds 7]

The default task's model (Lite0 on digits, 64x64 network input, INT8) takes real photos as 480x640 camera
frames (uint8, resized inside the graph). Timed in one process, interleaved round by round (`edgetl bench
--peers` machinery): PyTorch eager FP32, ONNX Runtime FP32 and quantize_static INT8, OpenVINO from the FP32
ONNX (default precision = bf16 on AMX, and f32), OpenVINO on the INT8 ONNX, NNCF INT8, and the edgetl bundles
(OpenVINO fused kernels, OpenVINO standard ops, ONNX Runtime FP32 and INT8). Ratios are medians of per-round
ratios of p50s. Writes benchmarks/results/latency.json and latency.png (latency.avx2.* on a CPU without VNNI:
_common.per_cpu); asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from _common import RESULTS, artifacts, bar_plot, per_cpu, write_result

from edgetl.bench.harness import CAMERA_FRAME, bundle_cases, decode_image, load_jpegs, use_threads
from edgetl.compare.peers import Source, peer_cases, run_interleaved
from edgetl.deploy.predictor import Predictor

BUNDLES = {
    "ov-fused": "edgetl openvino (fused kernels)",
    "ov": "edgetl openvino (standard ops)",
    "ort-fp32": "edgetl onnxruntime fp32",
    "ort-int8": "edgetl onnxruntime int8",
    "auto": "edgetl --target auto (default export)",
}
BY_HAND_OPENVINO = (
    "openvino default (from fp32 onnx)",
    "openvino f32 hint (from fp32 onnx)",
    "openvino (given int8 onnx)",
    "nncf int8 (openvino)",
)


def round_ratio(results: dict[str, dict], num: str, den: str) -> float:
    """Median over rounds of p50(num) / p50(den) in the same round."""
    a, b = results[num]["rounds_p50_ms"], results[den]["rounds_p50_ms"]
    return float(np.median([x / y for x, y in zip(a, b, strict=True)]))


def claims(by_name: dict[str, dict]) -> dict:
    ov, ov_std = BUNDLES["ov-fused"], BUNDLES["ov"]
    fastest_ov = min((n for n in BY_HAND_OPENVINO if n in by_name), key=lambda n: by_name[n]["latency_ms"]["p50"])
    out = {
        "fastest_by_hand_openvino": fastest_ov,
        "edgetl_ov_over_fastest_by_hand_ov": round_ratio(by_name, ov, fastest_ov),
        "edgetl_ov_standard_ops_over_fastest_by_hand_ov": round_ratio(by_name, ov_std, fastest_ov),
        "edgetl_auto_over_fastest_by_hand_ov": round_ratio(by_name, BUNDLES["auto"], fastest_ov),
        "edgetl_ort_fp32_over_by_hand_ort_fp32": round_ratio(by_name, BUNDLES["ort-fp32"], "onnxruntime fp32"),
        "edgetl_ort_int8_over_by_hand_ort_fp32": round_ratio(by_name, BUNDLES["ort-int8"], "onnxruntime fp32"),
        "edgetl_ort_int8_over_by_hand_ort_int8": round_ratio(
            by_name, BUNDLES["ort-int8"], "onnxruntime quantize_static int8"
        ),
    }
    if "pytorch eager fp32" in by_name:
        out["pytorch_eager_over_edgetl_ov"] = round_ratio(by_name, "pytorch eager fp32", ov)
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=6.0, help="timed seconds per pipeline, over all rounds")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    art = artifacts()
    threads = use_threads(0)
    jpegs = load_jpegs([], CAMERA_FRAME)
    frames = [decode_image(j) for j in jpegs]
    src = Source(given=art["model"], fp32=art["fp32"], run_dir=art["run"], given_int8=True)
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgetl-latency-")))
        cases, skipped = peer_cases(src, frames, 1, threads, workdir, print)
        for key, name in BUNDLES.items():
            predictor = stack.enter_context(Predictor(art[key]))
            cases += bundle_cases(predictor, name, jpegs, 1, ["model"], threads)
        print(f"timing {len(cases)} pipelines, {args.rounds} interleaved rounds, {args.duration:g} s each", flush=True)
        results, _ = run_interleaved(cases, args.rounds, args.duration, 1.0, lambda n, total: None)
    by_name = {r["name"]: r for r in results}
    ratios = claims(by_name)
    with tarfile.open(art["auto"]) as tar:  # which runtime `--target auto` kept on this CPU, and why
        auto = json.load(tar.extractfile("manifest.json"))["auto"]
    doc = {
        "claim": "edgetl bundles vs by-hand pipelines, same model, batch 1, model only (uint8 480x640 frame in)",
        "machine": results[0]["cpu"],
        "ratios": ratios,
        "auto": {"winner": auto["winner"], "why": auto["why"]},
        "skipped": [{"name": n, "reason": r} for n, r in skipped],
        "results": [{k: v for k, v in r.items() if k != "samples_ms"} for r in results],
    }
    write_result(per_cpu("latency"), doc)
    plot(results, ratios)
    for r in results:
        print(f"  {r['name']:40s} p50 {r['latency_ms']['p50']:8.3f} ms  ({r.get('model_precision')}/{r['precision']})")
    print(
        f"edgetl OpenVINO / fastest by-hand OpenVINO ({ratios['fastest_by_hand_openvino']}): "
        f"{ratios['edgetl_ov_over_fastest_by_hand_ov']:.2f}  (<= 1.0 claimed); "
        f"PyTorch eager / edgetl OpenVINO: {ratios.get('pytorch_eager_over_edgetl_ov', float('nan')):.1f}x (>= 5 claimed); "
        f"edgetl ORT fp32 / by-hand ORT fp32: {ratios['edgetl_ort_fp32_over_by_hand_ort_fp32']:.2f} (<= 1.0 claimed)"
    )
    return doc


def plot(results: list[dict], ratios: dict) -> None:
    labels = [f"{r['name']}  [{r.get('model_precision')}/{r['precision']}]" for r in results]
    colors = ["#dd8452" if r["name"].startswith("edgetl") else "#4c72b0" for r in results]
    notes = [
        f"edgetl OpenVINO / fastest by-hand OpenVINO-NNCF: {ratios['edgetl_ov_over_fastest_by_hand_ov']:.2f}  "
        f"·  PyTorch eager / edgetl OpenVINO: {ratios.get('pytorch_eager_over_edgetl_ov', float('nan')):.1f}x  "
        f"·  edgetl ORT fp32 / by-hand ORT fp32: {ratios['edgetl_ort_fp32_over_by_hand_ort_fp32']:.2f}",
        "orange: edgetl bundles; blue: by-hand pipelines; [model precision/runtime precision]; median of rounds",
    ]
    bar_plot(
        RESULTS / f"{per_cpu('latency')}.png",
        labels,
        [r["latency_ms"]["p50"] for r in results],
        colors,
        "Model-only p50 latency, batch 1, 480x640 uint8 frame in (ms, lower is better)",
        "p50 ms",
        notes,
    )


if __name__ == "__main__":
    main()
