"""Claim: end to end (JPEG bytes -> label), preprocessing inside the graph beats decode + PIL/NumPy
preprocessing + the model-only (float NCHW) graph.

    python benchmarks/end_to_end.py [--duration 6] [--rounds 7]

Same model (default task, INT8, OpenVINO CPU), same real photos as JPEGs (480x640 for the claim, then
1080x1920 to show how the gap moves with frame size), batch 1, one process, interleaved rounds. Pipelines:
  in-graph, fused kernels   the default edgetl bundle (fused ops + native kernels): edgetl's JPEG decode (DCT-
                            scaled to no less than the input size, as declared by the run's preprocess spec
                            and used in training too) -> infer
  ... full JPEG decode      the same bundle fed fully decoded frames: what the graph's preprocessing alone buys
  in-graph, standard ops    `export --no-fused-ops` bundle: edgetl's decode -> infer (Resize/Mul/Add by OpenVINO)
  PIL + NumPy               what users write: full decode -> PIL resize (bilinear) -> NumPy normalize/transpose
                            -> float-nchw bundle
  NumPy (edgetl.preprocess) full decode -> edgetl.preprocess (NumPy, exact graph semantics) -> float bundle
  decode only               the JPEG decode alone (full, and DCT-scaled), the floor each pipeline pays
Ratios are medians of per-round ratios of p50s. Writes benchmarks/results/end_to_end.json and .png.
"""

from __future__ import annotations

import argparse
import contextlib
import io

import numpy as np
from _common import RESULTS, artifacts, bar_plot, write_result
from PIL import Image

from edgetl.bench.harness import Case, bundle_cases, decode_image, load_jpegs, use_threads
from edgetl.compare.peers import run_interleaved
from edgetl.deploy.predictor import Predictor

IN_GRAPH = "in-graph, fused kernels"
IN_GRAPH_FULL = "in-graph, fused kernels, full JPEG decode"
IN_GRAPH_STD = "in-graph, standard ops"
PIL_NUMPY = "PIL + NumPy preprocessing + float graph"
NUMPY_REF = "NumPy (edgetl.preprocess) + float graph"
DECODE = "JPEG decode only, full size"
DECODE_SCALED = "JPEG decode only, DCT-scaled (edgetl)"


def pil_numpy_case(predictor: Predictor, jpegs: list[bytes], fields: dict) -> Case:
    """What a user writes by hand around a model that takes preprocessed float NCHW input."""
    h, w = predictor.preprocess.size
    scale, bias = predictor.preprocess.scale_bias()
    runner, name = predictor.runner, predictor.input_name

    def call(jpeg: list[bytes]) -> str:
        image = Image.open(io.BytesIO(jpeg[0])).convert("RGB").resize((w, h), Image.Resampling.BILINEAR)
        x = np.asarray(image, np.float32) * scale + bias
        out = runner.infer({name: np.ascontiguousarray(x.transpose(2, 0, 1)[None])})
        return predictor.class_name(int(np.asarray(out["label"]).reshape(-1)[0]))

    return Case(PIL_NUMPY, call, [[j] for j in jpegs], fields)


def full_decode_case(predictor: Predictor, jpegs: list[bytes], fields: dict, name: str) -> Case:
    """Full JPEG decode (what PIL gives a user) -> the bundle's own input preparation -> infer. On the uint8
    bundle this isolates what the in-graph preprocessing alone buys; on the float bundle it is the by-hand
    pipeline with NumPy preprocessing (edgetl.preprocess: the graph's exact semantics)."""
    runner = predictor.runner

    def call(jpeg: list[bytes]) -> str:
        out = runner.infer(predictor.feeds(decode_image(jpeg[0])))
        return predictor.class_name(int(np.asarray(out["label"]).reshape(-1)[0]))

    return Case(name, call, [[j] for j in jpegs], fields)


def ratio(by_name: dict[str, dict], num: str, den: str) -> float:
    a, b = by_name[num]["rounds_p50_ms"], by_name[den]["rounds_p50_ms"]
    return round(float(np.median([x / y for x, y in zip(a, b, strict=True)])), 3)


def measure_at(art: dict, frame: tuple[int, int], threads: int, rounds: int, duration: float) -> dict:
    """All pipelines on the photos as JPEGs of one frame size; ratios of the by-hand pipelines to in-graph."""
    jpegs = load_jpegs([], frame)
    with contextlib.ExitStack() as stack:
        fused, std, flt = (stack.enter_context(Predictor(art[k])) for k in ("ov-fused", "ov", "ov-float"))
        cases = bundle_cases(fused, IN_GRAPH, jpegs, 1, ["end_to_end"], threads)
        cases.append(full_decode_case(fused, jpegs, cases[0].fields, IN_GRAPH_FULL))
        cases += bundle_cases(std, IN_GRAPH_STD, jpegs, 1, ["end_to_end"], threads)
        (float_case,) = bundle_cases(flt, NUMPY_REF, jpegs, 1, ["end_to_end"], threads)
        reference = full_decode_case(flt, jpegs, float_case.fields, NUMPY_REF)
        cases += [pil_numpy_case(flt, jpegs, reference.fields), reference]
        cases.append(Case(DECODE, lambda j: decode_image(j[0]), [[j] for j in jpegs], {**reference.fields}))
        min_size = fused.preprocess.decode_min_size
        cases.append(
            Case(DECODE_SCALED, lambda j: decode_image(j[0], min_size), [[j] for j in jpegs], {**reference.fields})
        )
        print(
            f"{frame[0]}x{frame[1]}: timing {len(cases)} pipelines, {rounds} interleaved rounds, {duration:g} s each",
            flush=True,
        )
        results, _ = run_interleaved(cases, rounds, duration, 1.0, lambda n, total: None)
    by_name = {r["name"]: r for r in results}
    ratios = {
        "pil_numpy_over_in_graph_fused": ratio(by_name, PIL_NUMPY, IN_GRAPH),
        "numpy_reference_over_in_graph_fused": ratio(by_name, NUMPY_REF, IN_GRAPH),
        "pil_numpy_over_in_graph_standard_ops": ratio(by_name, PIL_NUMPY, IN_GRAPH_STD),
        "numpy_reference_over_in_graph_standard_ops": ratio(by_name, NUMPY_REF, IN_GRAPH_STD),
        "pil_numpy_over_in_graph_fused_full_decode": ratio(by_name, PIL_NUMPY, IN_GRAPH_FULL),
        "decode_share_of_in_graph_fused": ratio(by_name, DECODE_SCALED, IN_GRAPH),
        "full_decode_share_of_in_graph_fused_full_decode": ratio(by_name, DECODE, IN_GRAPH_FULL),
    }
    ratios["claim_speedup"] = min(
        ratios["pil_numpy_over_in_graph_fused"], ratios["numpy_reference_over_in_graph_fused"]
    )
    for r in results:
        print(f"  {r['name']:45s} p50 {r['latency_ms']['p50']:8.3f} ms")
    print(
        f"  in-graph (fused) vs the faster by-hand pipeline: {ratios['claim_speedup']:.2f}x; "
        f"decode alone is {ratios['decode_share_of_in_graph_fused']:.0%} of it; with a full JPEG decode (the "
        f"graph's preprocessing alone) {ratios['pil_numpy_over_in_graph_fused_full_decode']:.2f}x",
        flush=True,
    )
    return {
        "frame": list(frame),
        "ratios": ratios,
        "results": [{k: v for k, v in r.items() if k != "samples_ms"} for r in results],
    }


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=6.0, help="timed seconds per pipeline, over all rounds")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--frame-sizes", default="480x640,1080x1920", help="HxW,... (the first is the claim's)")
    args = parser.parse_args()

    art = artifacts()
    threads = use_threads(0)
    frames = [tuple(int(v) for v in size.split("x")) for size in args.frame_sizes.split(",")]
    sweep = [measure_at(art, frame, threads, args.rounds, args.duration) for frame in frames]
    doc = {
        "claim": "end to end JPEG -> label, batch 1: in-graph preprocessing vs by-hand preprocessing + float graph",
        "ratios": sweep[0]["ratios"],
        "frame": sweep[0]["frame"],
        "by_frame_size": sweep,
    }
    write_result("end_to_end", doc)
    plot(sweep)
    print(
        " ; ".join(f"{s['frame'][0]}x{s['frame'][1]}: {s['ratios']['claim_speedup']:.2f}x" for s in sweep)
        + "  (in-graph fused vs the faster by-hand pipeline; >= 1.3 claimed)"
    )
    return doc


def plot(sweep: list[dict]) -> None:
    labels, values, colors = [], [], []
    palette = ["#dd8452", "#dd8452", "#dd8452", "#4c72b0", "#4c72b0", "#999999", "#999999"]
    for s in sweep:
        for r, color in zip(s["results"], palette, strict=False):
            labels.append(f"{s['frame'][0]}x{s['frame'][1]}  {r['name']}")
            values.append(r["latency_ms"]["p50"])
            colors.append(color)
    notes = [
        " · ".join(
            f"{s['frame'][0]}x{s['frame'][1]}: in-graph (fused) {s['ratios']['claim_speedup']:.2f}x faster than "
            f"the faster by-hand pipeline, decode = {s['ratios']['decode_share_of_in_graph_fused']:.0%}"
            for s in sweep
        ),
        "orange: preprocessing in the graph; blue: by hand + float graph; grey: decode alone; median of rounds",
    ]
    bar_plot(
        RESULTS / "end_to_end.png",
        labels,
        values,
        colors,
        "End to end, JPEG bytes -> label, batch 1, OpenVINO CPU (p50 ms, lower is better)",
        "p50 ms",
        notes,
    )


if __name__ == "__main__":
    main()
