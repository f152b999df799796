"""The timing harness and its statistics, on synthetic samples and plain Python calls (no timing asserted)."""

from __future__ import annotations

import numpy as np
import pytest

from edgetl.bench import harness as bench
from edgetl.bench import report as bench_report
from edgetl.errors import UserError
from tests.bench.conftest import CONTRACT


def test_latency_stats_match_numpy_percentiles():
    samples = list(np.random.default_rng(0).gamma(4.0, 0.5, 1001))
    stats = bench.latency_stats(samples)
    assert list(stats) == ["min", "mean", "p50", "p90", "p95", "p99", "max"]
    for key, q in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99)):
        assert stats[key] == pytest.approx(np.percentile(samples, q), abs=1e-4)
    assert stats["min"] <= stats["p50"] <= stats["p90"] <= stats["p95"] <= stats["p99"] <= stats["max"]
    assert stats["mean"] == pytest.approx(np.mean(samples), abs=1e-4)


def test_latency_stats_refuse_empty():
    with pytest.raises(ValueError):
        bench.latency_stats([])


def _case(calls: list) -> bench.Case:
    fields = {
        "mode": "model",
        "batch": 2,
        "target": "t",
        "device": "CPU",
        "precision": "fp32",
        "threads": 1,
        "versions": bench.package_versions(),
        "cpu": bench.cpu_info(),
    }
    return bench.Case("fake", calls.append, ["a", "b", "c"], fields)


def test_measure_reaches_min_iterations_and_rotates_inputs():
    calls: list = []
    measured = bench.measure(_case(calls), bench.Settings(warmup_s=0.0, duration_s=1e-6, min_iters=30))
    assert len(measured.samples_ms) >= 30 and not measured.interrupted
    timed = calls[-len(measured.samples_ms) :]
    assert set(timed) == {"a", "b", "c"}
    assert all(x != y for x, y in zip(timed, timed[1:], strict=False))  # never the same input twice in a row


def test_measure_keeps_partial_samples_on_ctrl_c():
    count = []

    def call(x):
        count.append(x)
        if len(count) == 8:
            raise KeyboardInterrupt

    case = bench.Case("fake", call, [0, 1], {})
    measured = bench.measure(case, bench.Settings(warmup_s=0.0, duration_s=60.0, min_iters=1000))
    assert measured.interrupted and len(measured.samples_ms) == 6  # 1 warm-up call, 6 timed, the 8th interrupted


def test_record_has_the_contract_shape():
    measured = bench.Measured([1.0, 2.0, 3.0, 4.0], wall_s=0.01)
    r = bench.record(_case([]), measured)
    assert CONTRACT <= set(r)
    assert r["iterations"] == 4 and r["latency_ms"]["p50"] == 2.5
    assert r["throughput_ips"] == pytest.approx(2 * 4 / 0.010)  # batch 2, 4 calls, 10 ms busy
    assert r["cpu"]["model"] and isinstance(r["cpu"]["flags"], list)
    assert r["versions"]["edgetl"] and r["samples_ms"] == [1.0, 2.0, 3.0, 4.0]


def test_record_thins_long_sample_lists_in_time_order(monkeypatch):
    monkeypatch.setattr(bench, "MAX_SAVED_SAMPLES", 10)
    r = bench.record(_case([]), bench.Measured([float(i) for i in range(100)], 1.0))
    assert len(r["samples_ms"]) == 10 and r["samples_ms"] == sorted(r["samples_ms"])
    assert r["iterations"] == 100 and r["latency_ms"]["max"] == 99.0


def test_batches_are_distinct_rotations():
    assert bench.batches(["a", "b", "c"], 2) == [["a", "b"], ["b", "c"], ["c", "a"]]


def test_settings_and_threads_refuse_nonsense():
    with pytest.raises(UserError):
        bench.Settings(duration_s=0)
    with pytest.raises(UserError):
        bench.use_threads(10_000)


def test_load_jpegs_brings_photos_to_one_frame_size(photos):
    from edgetl.images import decode_image

    jpegs = bench.load_jpegs([photos], (24, 32))
    assert len(jpegs) == 3 and len(set(jpegs)) == 3
    assert {decode_image(j).shape for j in jpegs} == {(24, 32, 3)}


def test_load_jpegs_needs_several_images(photos, tmp_path):
    with pytest.raises(UserError, match="at least 2"):
        bench.load_jpegs([next(photos.iterdir())], (24, 32))
    with pytest.raises(UserError, match="no such"):
        bench.load_jpegs([tmp_path / "missing"], (24, 32))


def test_interleave_alternates_block_order():
    seen = []
    cases = [bench.Case(n, lambda x, n=n: seen.append(n), [0], {}) for n in "ab"]
    order = [case.name for _, case, _ in bench.interleave(cases, 4, 0.0, 2, warmup_s=0.0)]
    assert order == ["a", "b", "b", "a", "a", "b", "b", "a"]


def test_table_rows_relative_to_fastest():
    fast = {
        "name": "x",
        "mode": "model",
        "batch": 1,
        "precision": "int8",
        "model_precision": "int8",
        "latency_ms": dict.fromkeys(("min", "mean", "p50", "p90", "p95", "p99", "max"), 1.0),
        "throughput_ips": 1000.0,
        "iterations": 5,
    }
    slow = {**fast, "name": "y", "precision": "bf16", "latency_ms": {**fast["latency_ms"], "p50": 3.0}}
    header, *rows = bench_report.table_rows([fast, slow])
    assert rows[0][-1] == "1.00x" and rows[1][-1] == "3.00x"
    assert rows[1][3] == "int8/bf16"  # an INT8 model whose float parts ran in bf16


class _StepClock:
    """Stands in for the `time` module the harness reads: each call advances it by the next of `steps_ms`
    (the last one repeating), counted in whole milliseconds so the warm-up's end is exact."""

    def __init__(self, steps_ms: list[int]) -> None:
        self.now_ms, self.steps = 0, list(steps_ms)

    def perf_counter(self) -> float:
        return self.now_ms / 1000

    def strftime(self, fmt: str) -> str:
        return "2000-01-01T00:00:00+0000"

    def call(self, _) -> None:
        self.now_ms += self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]


def test_measure_records_the_warm_up_and_its_first_call(monkeypatch):
    """The cold first call (5 ms here) is what a one-shot run feels; the timed samples never include it."""
    clock = _StepClock([5, 1])
    monkeypatch.setattr(bench, "time", clock)
    case = bench.Case("fake", clock.call, [0, 1], {"mode": "model", "batch": 1})
    measured = bench.measure(case, bench.Settings(warmup_s=0.01, duration_s=0.004, min_iters=3))
    assert measured.warmup == {"asked_s": 0.01, "ran_s": 0.01, "iterations": 6, "first_call_ms": 5.0}
    assert measured.samples_ms == pytest.approx([1.0] * 4)
    r = bench.record(case, measured)
    assert r["warmup"] == measured.warmup and r["latency_ms"]["max"] == pytest.approx(1.0)


def test_measure_without_warm_up_still_makes_and_records_one_first_call(monkeypatch):
    clock = _StepClock([7, 2])
    monkeypatch.setattr(bench, "time", clock)
    case = bench.Case("fake", clock.call, [0], {"mode": "model", "batch": 1})
    measured = bench.measure(case, bench.Settings(warmup_s=0.0, duration_s=0.001, min_iters=2))
    assert measured.warmup == {"asked_s": 0.0, "ran_s": 0.007, "iterations": 1, "first_call_ms": 7.0}


def test_interleave_reports_each_warm_up(monkeypatch):
    clock = _StepClock([3, 1])
    monkeypatch.setattr(bench, "time", clock)
    cases = [bench.Case(n, clock.call, [0], {}) for n in "ab"]
    seen = {}
    list(bench.interleave(cases, 1, 0.0, 1, warmup_s=0.002, on_warmup=lambda c, w: seen.__setitem__(c.name, w)))
    assert seen["a"]["first_call_ms"] == 3.0 and seen["b"]["first_call_ms"] == 1.0
    assert all(w["asked_s"] == 0.002 and w["iterations"] >= 1 for w in seen.values())


def test_first_call_line():
    records = [
        {"name": "x", "mode": "model", "batch": 1, "warmup": {"first_call_ms": 12.5}},
        {"name": "x", "mode": "end_to_end", "batch": 1, "warmup": {"first_call_ms": 20.0}},
    ]
    line = bench_report.first_call_line(records)
    assert line == "first call (cold, before warm-up): model b1 12.500 ms, end_to_end b1 20.000 ms"
    assert "y model b1" in bench_report.first_call_line([*records, {**records[0], "name": "y"}])
    assert bench_report.first_call_line([{"name": "x", "mode": "model", "batch": 1}]) is None  # an older file
