"""The gate's decision logic and comparability rules, on synthetic ratios and records (no timing)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from edgetl.bench import gate as bench_gate
from edgetl.bench import harness as bench
from edgetl.bench.harness import Case
from edgetl.errors import UserError


def test_parse_threshold():
    assert bench_gate.parse_threshold("10%") == pytest.approx(0.10)
    assert bench_gate.parse_threshold("2.5") == pytest.approx(0.025)
    for bad in ("fast", "0%", "-5%"):
        with pytest.raises(UserError):
            bench_gate.parse_threshold(bad)


def test_same_speed_passes():
    v = bench_gate.decide("k", [1.01, 0.99, 1.0, 1.02, 0.98, 1.0, 1.01], 0.10, 1.0, 1.0)
    assert not v.regressed and v.ratio == pytest.approx(1.0, abs=0.01)


def test_clear_slowdown_fails():
    v = bench_gate.decide("k", [1.24, 1.26, 1.25, 1.27, 1.23, 1.25, 1.26], 0.10, 1.0, 1.25)
    assert v.regressed and v.ratio == pytest.approx(1.25)


def test_slowdown_below_threshold_passes():
    assert not bench_gate.decide("k", [1.06] * 7, 0.10, 1.0, 1.06).regressed


def test_slowdown_within_noise_passes():
    """Median +15% but rounds all over the place: the evidence does not beat the noise, so no failure."""
    ratios = [0.8, 1.5, 1.15, 0.9, 1.6, 1.3, 1.0]
    v = bench_gate.decide("k", ratios, 0.10, 1.0, 1.15)
    assert v.ratio - 1 > 0.10 and v.ratio - 1 <= bench_gate.NOISE_K * v.noise and not v.regressed


def test_noise_is_a_robust_spread():
    v = bench_gate.decide("k", [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 9.0], 0.10, 1.0, 1.0)
    assert v.noise == 0.0 and not v.regressed  # one wild round moves neither the median nor the noise


def test_decide_refuses_bad_ratios():
    with pytest.raises(ValueError):
        bench_gate.decide("k", [], 0.1, 1, 1)
    with pytest.raises(ValueError):
        bench_gate.decide("k", [1.0, float("nan")], 0.1, 1, 1)


def _record(scale: float = 1.0, seed: int = 0) -> dict:
    samples = list(np.random.default_rng(seed).normal(2.0, 0.05, 700).clip(1.5) * scale)
    return {
        "name": "m.tar.gz",
        "mode": "model",
        "batch": 1,
        "target": "openvino",
        "device": "CPU",
        "precision": "bf16",
        "threads": 2,
        "streams": 1,
        "input_shape": [1, 480, 640, 3],
        "versions": {"edgetl": "0.1.0", "openvino": "2026.4.1"},
        "cpu": {"model": "Xeon", "flags": ["amx_int8", "avx512f"]},
        "latency_ms": {"p50": float(np.median(samples))},
        "samples_ms": samples,
    }


def test_compare_records_same_vs_slower():
    (same,) = bench_gate.compare_records([_record()], [_record(seed=1)], 0.10, False, print)
    assert not same.regressed and len(same.ratios) == bench_gate.FILE_BLOCKS
    (slow,) = bench_gate.compare_records([_record()], [_record(1.3, seed=1)], 0.10, False, print)
    assert slow.regressed and slow.ratio == pytest.approx(1.3, rel=0.03)


@pytest.mark.parametrize(
    "change",
    [
        ("cpu", {"model": "Core i5", "flags": ["avx2"]}),
        ("threads", 4),
        ("precision", "fp32"),
        ("batch_and_name", None),
        ("versions", {"edgetl": "0.1.0", "openvino": "2025.0"}),
    ],
)
def test_compare_refuses_incomparable_unless_forced(change):
    key, value = change
    cand = copy.deepcopy(_record())
    if key == "batch_and_name":
        cand["batch"] = 8
        with pytest.raises(UserError, match="no \\(mode, batch\\) in common"):
            bench_gate.compare_records([_record()], [cand], 0.10, True, print)
        return
    cand[key] = value
    with pytest.raises(UserError, match="not comparable"):
        bench_gate.compare_records([_record()], [cand], 0.10, False, print)
    warnings = []
    (verdict,) = bench_gate.compare_records([_record()], [cand], 0.10, True, warnings.append)
    assert warnings and not verdict.regressed


def test_edgetl_version_alone_does_not_make_files_incomparable():
    cand = _record()
    cand["versions"] = {**cand["versions"], "edgetl": "0.2.0"}
    assert not bench_gate.differences(_record(), cand)


class _FakeClock:
    """Stands in for the `time` module the harness reads: only the timed calls move this clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def strftime(self, fmt: str) -> str:
        return "2000-01-01T00:00:00+0000"

    def case(self, name: str, ms: float, calls: dict) -> Case:
        def call(_):
            calls[name] = calls.get(name, 0) + 1
            self.now += ms / 1e3

        return Case(name, call, [0, 1])


@pytest.mark.parametrize(("slowdown", "regressed"), [(1.3, True), (1.0, False), (1.05, False)])
def test_ab_test_runs_rounds_and_judges_their_ratios(monkeypatch, slowdown, regressed):
    clock, calls = _FakeClock(), {}
    monkeypatch.setattr(bench, "time", clock)
    a, b = clock.case("x", 2.0, calls), clock.case("y", 2.0 * slowdown, calls)
    result = bench_gate.ab_test(a, b, rounds=3, threshold=0.10, block_s=0.01, blocks=2, warmup_s=0.01)
    assert result.verdict.regressed is regressed and not result.interrupted
    assert result.verdict.ratio == pytest.approx(slowdown) and result.verdict.noise == pytest.approx(0.0, abs=1e-9)
    assert result.verdict.ratios == pytest.approx([slowdown] * 3)
    assert result.baseline_rounds_ms == pytest.approx([2.0] * 3)
    assert result.candidate_rounds_ms == pytest.approx([2.0 * slowdown] * 3)
    assert calls["x"] >= 3 * 2 * 3 and calls["y"] >= 3 * 2 * 3  # at least 3 calls per block, 2 blocks per round
    assert set(result.to_json()["verdict"]) >= {"ratio", "noise", "threshold", "regressed", "ratios"}
    # the warm-up of each side is kept: on this clock every call takes its fixed time, the first one included
    assert result.to_json()["warmup"]["baseline"]["first_call_ms"] == pytest.approx(2.0)
    assert result.warmup["candidate"]["first_call_ms"] == pytest.approx(2.0 * slowdown)
    assert result.warmup["candidate"]["asked_s"] == 0.01 and result.warmup["candidate"]["iterations"] >= 1


def test_ab_test_needs_three_rounds():
    case = Case("x", lambda _: None, [0])
    with pytest.raises(UserError, match="at least 3"):
        bench_gate.ab_test(case, case, rounds=2, threshold=0.1)


# --- the numbers on one line come from one set of data ------------------------------------------------


def test_compare_line_shows_the_p50_of_the_samples_it_compared():
    """Before: the ratio came from the samples and the bracket from the recorded p50 fields, so a p50 edited
    by hand printed `1.000 (+0.0%) [1.685 -> 2.107 ms]`. (load_results refuses such a file; the gate itself
    must still never mix the two.)"""
    base, cand = _record(), _record(seed=1)
    cand["latency_ms"] = {"p50": cand["latency_ms"]["p50"] * 1.25}
    (v,) = bench_gate.compare_records([base], [cand], 0.10, False, print)
    assert v.baseline_p50 == pytest.approx(np.median(base["samples_ms"]))
    assert v.candidate_p50 == pytest.approx(np.median(cand["samples_ms"]))
    assert v.ratio == pytest.approx(v.candidate_p50 / v.baseline_p50, rel=0.02) and not v.regressed
    assert f"[{v.baseline_p50:.3f} -> {v.candidate_p50:.3f} ms, {bench_gate.FILE_BLOCKS} rounds]" in v.line()


def test_compare_falls_back_on_both_recorded_p50s_together():
    """One side with too few samples to pair: both sides use their recorded p50 (never a block of one side
    against the whole of the other)."""
    base = _record()
    few = [3.0, 3.2, 2.8, 3.0, 3.1]
    cand = {**_record(seed=1), "samples_ms": few, "latency_ms": {"p50": float(np.median(few))}}
    (v,) = bench_gate.compare_records([base], [cand], 0.10, False, print)
    assert v.ratios == pytest.approx([3.0 / base["latency_ms"]["p50"]], abs=1e-5)
    assert (v.baseline_p50, v.candidate_p50) == (base["latency_ms"]["p50"], 3.0)
