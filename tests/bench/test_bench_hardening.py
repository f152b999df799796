"""`edgetl bench` on hostile or damaged inputs and at Ctrl-C: one line and the right exit code, results kept."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from edgetl.bench import gate as bench_gate
from edgetl.bench import harness as bench
from edgetl.bench import report as bench_report
from edgetl.deploy.targets import CompileOptions, get_target
from edgetl.errors import UserError
from tests.conftest import FAST_BENCH, run_cli
from tests.deploy import conftest as deploy_fixtures


def _record(**changes) -> dict:
    r = {
        "name": "m",
        "mode": "model",
        "batch": 1,
        "latency_ms": {"p50": 1.0},
        "samples_ms": [1.0] * 10,
        "versions": {},
        "cpu": {"flags": []},
    }
    return {**r, **changes}


# --- 3. --peers checks the user's ONNX before any runtime reads it ------------------------------------


def test_peers_refuses_escaping_external_data(capsys, tmp_path, photos):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 8)
    (tmp_path / "m").mkdir()
    deploy_fixtures.external_data_model(tmp_path / "m", "../secret.bin")
    code, _, err = run_cli(capsys, "bench", "--peers", tmp_path / "m" / "model.onnx", "--images", photos, *FAST_BENCH)
    assert code == 2 and "climbs out of the folder with '..'" in err and "Traceback" not in err


# --- 4. --compare on malformed records ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"latency_ms": {"p50": 1.0}}, "no mode"),
        (_record(mode=None), "no mode"),
        (_record(batch="1"), "batch"),
        (_record(batch=0), "batch"),
        (_record(latency_ms={"p50": 0}), "p50"),
        (_record(latency_ms={"p50": "fast"}), "p50"),
        (_record(latency_ms={"p50": True}), "p50"),
        (_record(samples_ms=["x"]), "samples_ms"),
        (_record(samples_ms=5), "samples_ms"),
        (_record(cpu="x86"), "cpu"),
        (_record(warmup=5), "warmup is not an object"),
        ("not a record", "not an object"),
    ],
)
def test_compare_refuses_malformed_records(capsys, tmp_path, record, message):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps({"results": [_record()]}))
    bad.write_text(json.dumps({"results": [_record(), record]}))
    code, _, err = run_cli(capsys, "bench", "--compare", good, bad)
    assert code == 2 and "bad.json: result 1" in err and message in err and "Traceback" not in err


def _saved_record(samples: list[float], **fields) -> dict:
    """A record as `bench --json` writes it (statistics of all samples, samples rounded and maybe thinned)."""
    fields = {"mode": "model", "batch": 1, "versions": {}, "cpu": {"flags": []}, **fields}
    return bench.record(bench.Case("m", lambda _: None, [0], fields), bench.Measured(samples, 1.0))


def _load(tmp_path: Path, record: dict) -> list[dict]:
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"results": [record]}))
    return bench_report.load_results(path)


@pytest.mark.parametrize(("key", "factor"), [("p50", 1.25), ("p50", 0.999), ("p99", 1.1), ("mean", 0.9), ("min", 0.5)])
def test_summary_edited_by_hand_is_refused(tmp_path, key, factor):
    samples = list(np.random.default_rng(0).gamma(9.0, 0.2, 400))
    record = _saved_record(samples)
    assert _load(tmp_path, record)  # as written: consistent, rounding and all
    record["latency_ms"][key] = round(record["latency_ms"][key] * factor, 4)
    with pytest.raises(UserError) as e:
        _load(tmp_path, record)
    expected = (
        f"{re.escape(str(tmp_path / 'bench.json'))}: result 0 \\(m model b1\\): latency_ms.{key} is [\\d.]+ "
        "but its own samples_ms give [\\d.]+: edited or damaged; re-run edgetl bench"
    )
    assert re.fullmatch(expected, str(e.value))


def test_rescaled_and_rounded_records_are_consistent(tmp_path):
    """Float noise is not an edit: statistics of unrounded samples, samples rounded, both scaled by a script."""
    record = _saved_record([1.00004, 1.00005, 1.00006, 2.49995, 7.00001] * 20)
    record["samples_ms"] = [s * 1.5 for s in record["samples_ms"]]
    record["latency_ms"] = {k: v * 1.5 for k, v in record["latency_ms"].items()}
    assert _load(tmp_path, record)


def test_thinned_samples_are_checked_within_their_sampling_error(tmp_path, monkeypatch):
    """Over MAX_SAVED_SAMPLES the samples are thinned but the statistics are of all of them: a p50 within the
    thinned samples' own sampling error passes, an edited one does not."""
    monkeypatch.setattr(bench, "MAX_SAVED_SAMPLES", 500)
    samples = list(np.random.default_rng(1).gamma(9.0, 0.2, 20_000))
    record = _saved_record(samples)
    assert len(record["samples_ms"]) == 500 and record["iterations"] == 20_000
    assert record["latency_ms"]["p50"] != pytest.approx(np.median(record["samples_ms"]), abs=1e-4)
    assert _load(tmp_path, record)
    record["latency_ms"]["p50"] *= 1.25
    with pytest.raises(UserError, match=r"latency_ms.p50 is [\d.]+ but its own samples_ms give [\d.]+\.\.[\d.]+"):
        _load(tmp_path, record)


def test_more_samples_than_iterations_is_refused(tmp_path):
    record = _saved_record([1.0, 1.1, 1.2])
    record["iterations"] = 2
    with pytest.raises(UserError, match="iterations is 2 but samples_ms holds 3 samples: edited or damaged"):
        _load(tmp_path, record)


def test_compare_survives_zero_samples():
    (v,) = bench_gate.compare_records([_record()], [_record(samples_ms=[0.0] * 70)], 0.1, False, print)
    assert v.ratio == 1.0 and not v.regressed  # falls back on the recorded p50s


# --- 5. Ctrl-C during warm-up, and --ab stops every remaining comparison ------------------------------


def test_ctrl_c_during_warm_up_keeps_earlier_results():
    def fine(_):
        pass

    def interrupted(_):
        raise KeyboardInterrupt

    fields = {"mode": "model", "batch": 1}
    cases = [bench.Case("a", fine, [0], fields), bench.Case("b", interrupted, [0], fields)]
    settings = bench.Settings(warmup_s=0.01, duration_s=0.001, min_iters=3)

    progress = lambda label, total: contextlib.nullcontext(lambda done, n: None)  # noqa: E731
    results, stopped = bench.run_cases(cases, settings, progress)
    assert stopped and [r["name"] for r in results] == ["a"]
    measured = bench.measure(cases[1], settings)
    assert measured.interrupted and measured.samples_ms == []


def test_interleave_stops_at_ctrl_c_during_warm_up():
    def interrupted(_):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        list(bench.interleave([bench.Case("a", interrupted, [0])], 1, 0.001, 1, warmup_s=0.01))


def test_ab_stops_all_batches_at_ctrl_c(capsys, monkeypatch, tmp_path, bundles, photos):
    seen = []

    def interrupted_ab(base, cand, rounds, threshold, key):
        seen.append(key)
        verdict = bench_gate.decide(key, [1.0, 1.0, 1.0], threshold, 1.0, 1.0)
        return bench_gate.ABResult(verdict, [1.0], [1.0], interrupted=True)

    monkeypatch.setattr(bench_gate, "ab_test", interrupted_ab)
    out = tmp_path / "ab.json"
    a = b = bundles["onnxruntime"]
    code, _, _ = run_cli(capsys, "bench", "--ab", a, b, "--batch", "1,2", "--images", photos, "--json", out)
    assert code == 130 and seen == ["model b1"]
    assert [r["verdict"]["key"] for r in json.loads(out.read_text())["ab"]] == ["model b1"]


# --- 7. a batch the bundle cannot run is refused up front ---------------------------------------------


def test_batch_beyond_a_static_shape_is_one_line(capsys, tmp_path, colour_onnx, photos):
    static = get_target("openvino").compile(
        colour_onnx, tmp_path / "static", CompileOptions(static=True, frame_size=(16, 16))
    )
    code, _, err = run_cli(capsys, "bench", static.root, "--batch", "8", "--images", photos, *FAST_BENCH)
    assert code == 2 and "--batch 8" in err and "static input shape for batch 1" in err


def test_batch_beyond_the_tensorrt_profile_is_refused():
    manifest = {"target": "tensorrt", "input": {"shape": ["N", "H", "W", 3]}, "settings": {"max_batch": 4}}
    bench.check_batch(manifest, 4, "trt")
    with pytest.raises(UserError, match="up to 4"):
        bench.check_batch(manifest, 8, "trt")


# --- 8. plots are written atomically -------------------------------------------------------------------


def _plot_records() -> list[dict]:
    return [{"name": "a", "mode": "model", "batch": 1, "latency_ms": {"p50": 1.0, "p99": 2.0}}]


def test_plot_is_written_atomically(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    path = tmp_path / "plot.png"
    bench_report.plot(_plot_records(), path, "t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and [p.name for p in tmp_path.iterdir()] == ["plot.png"]
    path.write_bytes(b"old")

    def broken(self, *args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(RuntimeError):
        bench_report.plot(_plot_records(), path, "t")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def test_plot_with_an_unknown_suffix_is_one_line(tmp_path):
    pytest.importorskip("matplotlib")
    with pytest.raises(UserError, match="unknown image type .xyz"):
        bench_report.plot(_plot_records(), Path(tmp_path / "plot.xyz"), "t")
