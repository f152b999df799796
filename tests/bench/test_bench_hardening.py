"""`edgetl bench` on hostile or damaged inputs and at Ctrl-C: one line and the right exit code, results kept."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

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
        ("not a record", "not an object"),
    ],
)
def test_compare_refuses_malformed_records(capsys, tmp_path, record, message):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps({"results": [_record()]}))
    bad.write_text(json.dumps({"results": [_record(), record]}))
    code, _, err = run_cli(capsys, "bench", "--compare", good, bad)
    assert code == 2 and "bad.json: result 1" in err and message in err and "Traceback" not in err


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
