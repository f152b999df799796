"""Claim: the A/B regression gate (`edgetl bench --ab`) passes a bundle compared with itself every time and
fails a candidate slowed by 25%, on this shared, noisy machine.

    python benchmarks/gate.py [--runs 20] [--slow-runs 5] [--rounds 7]

Baseline and candidate are the same OpenVINO bundle, model-only, batch 1, threshold 10%. The slowed
candidate wraps the runner so every call also waits 25% of the baseline's p50 (measured just before, by a
busy wait, which unlike sleep() is exact at sub-millisecond scale). Each gate run is exactly what
`edgetl bench --ab A B --rounds 7 --max-regression 10%` does (edgetl.bench.gate.ab_test). Writes
benchmarks/results/gate.json and gate.png; asserts nothing.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import RESULTS, artifacts, save_plot, write_result

from edgetl.bench.gate import NOISE_K, ab_test
from edgetl.bench.harness import CAMERA_FRAME, Case, Settings, bundle_cases, load_jpegs, measure, use_threads
from edgetl.deploy.predictor import Predictor

THRESHOLD = 0.10
SLOWDOWN = 0.25


def slowed(case: Case, delay_s: float) -> Case:
    """The same runner plus a fixed extra delay per call: an injected, known regression."""

    def call(x):
        out = case.call(x)
        end = time.perf_counter() + delay_s
        while time.perf_counter() < end:
            pass
        return out

    return Case(case.name + " +25%", call, case.inputs, case.fields)


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="self-comparisons (A/A)")
    parser.add_argument("--slow-runs", type=int, default=5, help="comparisons against the +25%% candidate")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    bundle = artifacts()["ov"]
    threads = use_threads(0)
    jpegs = load_jpegs([], CAMERA_FRAME)
    with Predictor(bundle) as a, Predictor(bundle) as b:
        (base,) = bundle_cases(a, "baseline", jpegs, 1, ["model"], threads)
        (same,) = bundle_cases(b, "candidate", jpegs, 1, ["model"], threads)
        p50 = float(np.median(measure(base, Settings(warmup_s=1.0, duration_s=2.0)).samples_ms))
        slow = slowed(same, SLOWDOWN * p50 / 1e3)
        runs = []
        for i in range(args.runs + args.slow_runs):
            candidate, kind = (same, "self") if i < args.runs else (slow, "slowed 25%")
            result = ab_test(base, candidate, args.rounds, THRESHOLD, key=kind)
            print(f"{i + 1:2d}/{args.runs + args.slow_runs} {result.verdict.line()}", flush=True)
            runs.append({"kind": kind, **result.to_json()})
    self_runs = [r for r in runs if r["kind"] == "self"]
    slow_runs = [r for r in runs if r["kind"] != "self"]
    summary = {
        "self_passed": sum(not r["verdict"]["regressed"] for r in self_runs),
        "self_runs": len(self_runs),
        "slowed_failed": sum(r["verdict"]["regressed"] for r in slow_runs),
        "slowed_runs": len(slow_runs),
        "self_ratio_max": max(r["verdict"]["ratio"] for r in self_runs),
        "slowed_ratio_min": min(r["verdict"]["ratio"] for r in slow_runs) if slow_runs else None,
    }
    doc = {
        "claim": "A/B gate: self-compare passes, +25% injected fails (threshold 10%, noise guard "
        f"{NOISE_K:g} x robust SD of per-round ratios)",
        "bundle": bundle.name,
        "baseline_p50_ms": round(p50, 4),
        "injected_delay_ms": round(SLOWDOWN * p50, 4),
        "threshold": THRESHOLD,
        "rounds": args.rounds,
        "summary": summary,
        "runs": runs,
    }
    write_result("gate", doc)
    plot(runs)
    print(
        f"gate: self-compare passed {summary['self_passed']}/{summary['self_runs']}, "
        f"+25% candidate failed {summary['slowed_failed']}/{summary['slowed_runs']} "
        f"(self ratios up to {summary['self_ratio_max']:.3f}, slowed ratios from {summary['slowed_ratio_min']})"
    )
    return doc


def plot(runs: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    for i, r in enumerate(runs):
        v = r["verdict"]
        color = "#c44e52" if v["regressed"] else "#55a868"
        marker = "o" if r["kind"] == "self" else "s"
        ax.errorbar(i + 1, v["ratio"], yerr=NOISE_K * v["noise"], fmt=marker, color=color, capsize=3)
        ax.scatter([i + 1] * len(v["ratios"]), v["ratios"], s=6, color="grey", alpha=0.5)
    ax.axhline(1 + THRESHOLD, color="black", linestyle="--", linewidth=1, label=f"threshold +{THRESHOLD:.0%}")
    ax.axhline(1.0, color="grey", linewidth=0.5)
    ax.set_xlabel("gate run (circles: bundle vs itself; squares: candidate slowed by 25%)")
    ax.set_ylabel("candidate / baseline p50")
    ax.set_title(
        "edgetl bench --ab: median of per-round ratios (green pass, red fail), whisker = noise guard, grey = rounds",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_plot(fig, RESULTS / "gate.png")


if __name__ == "__main__":
    main()
