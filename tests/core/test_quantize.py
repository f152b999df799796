"""INT8: calibration on training images only, cache keys per setting, the sensitivity search, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from edgetl.config import QuantizeCfg
from edgetl.errors import UserError
from edgetl.quant.calibration import check_calibration, select_calibration
from edgetl.train.int8 import Int8Run
from edgetl.train.pipeline import Pipeline
from edgetl.train.run import run_train
from tests.core.conftest import make_folder, tiny_cfg


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("q") / "data", per_class=12)


def _int8(data: Path, out: Path, **q):
    return tiny_cfg(data, out, quantize=QuantizeCfg(**{"calib_size": 16, **q}))


def test_calibration_uses_training_images_only(folder: Path, tmp_path: Path):
    p = Pipeline(_int8(folder, tmp_path / "r", calib_size=1000))
    items, _ = Int8Run(p).calibration()
    train_keys = {it.key for it in p.ds.train}
    val_keys = {it.key for it in p.ds.val} - train_keys
    assert {it.key for it in items} <= train_keys and not ({it.key for it in items} & val_keys)
    assert len(items) == len(train_keys)  # asked for more than there are: the whole train set, nothing else


def test_run_reports_int8_metrics_and_writes_the_qdq_backbone(folder: Path, tmp_path: Path):
    r = run_train(_int8(folder, tmp_path / "r", target="onnxruntime"))
    q, m = r["quantize"], r["metrics"]
    assert q["calib_from"] == "train" and q["calib_size"] == 16 and q["target"] == "onnxruntime"
    assert 0.0 <= m["int8_agreement"] <= 1.0 and "val_acc_fp32" in m
    model = onnx.load(str(tmp_path / "r" / "backbone.int8.onnx"))
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    assert r["timing"]["extract_images_per_s"] > 0


@pytest.mark.parametrize(
    "change", [{"calib_size": 20}, {"calib_method": "percentile"}, {"target": "tensorrt"}, {"target": "openvino"}]
)
def test_changing_calibration_or_target_misses_the_cache(folder: Path, tmp_path: Path, change: dict):
    base = run_train(_int8(folder, tmp_path / "a", target="onnxruntime"))
    again = run_train(_int8(folder, tmp_path / "b", target="onnxruntime"))
    assert again["cache"]["keys"] == base["cache"]["keys"]
    other = run_train(_int8(folder, tmp_path / "c", **{"target": "onnxruntime", **change}))
    assert other["cache"]["keys"][0] == base["cache"]["keys"][0]  # FP32 features: same context, all hits
    assert other["cache"]["keys"][1] != base["cache"]["keys"][1]  # INT8 features: a new context, all misses
    n = len({it for it in base["data"]["skipped"]}) + base["data"]["train"] + base["data"]["val"]
    assert other["cache"]["misses"] == n


@pytest.mark.parametrize("target", ["openvino", "onnxruntime", "tensorrt"])
def test_fallback_search_finds_the_deliberately_sensitive_layer(folder: Path, tmp_path: Path, target: str):
    """test_sensitive scales one channel 1000x before `tail` (undone by tail's weights): per-tensor INT8 ranges
    at tail's input crush every other channel. The ranking must put that layer first on every target."""
    cfg = tiny_cfg(
        folder,
        tmp_path / "r",
        backbone="test_sensitive",
        quantize=QuantizeCfg(calib_size=16, target=target, auto_fallback=True, max_drop=-1.0),  # always search
    )
    r = run_train(cfg)
    ranking = r["quantize"]["sensitivity"]
    assert ranking[0]["layer"] == "/tail/Conv", ranking[:3]
    assert ranking[0]["injected"] > 2 * ranking[1]["injected"]
    # what ran, in edgetl's names. ORT runs the QDQ graph; OpenVINO (f32 outside the quantized ops) is read off
    # its execution graph: "int8 + fp32" only while a convolution still takes quantized input
    model = onnx.load(str(tmp_path / "r" / "backbone.int8.onnx"))
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    int8_conv = any(n.op_type == "Conv" and n.input[0] in dequantized for n in model.graph.node)
    want = {"openvino": "int8 + fp32" if int8_conv else "fp32"}.get(target, "int8 (QDQ) + fp32")
    assert r["quantize"]["precision_used"] == want


def test_quant_ignore_keeps_the_layer_in_float(folder: Path, tmp_path: Path):
    cfg = tiny_cfg(
        folder,
        tmp_path / "r",
        backbone="test_sensitive",
        quantize=QuantizeCfg(calib_size=16, target="tensorrt", ignore=("/tail/Conv",), auto_fallback=False),
    )
    r = run_train(cfg)
    assert r["quantize"]["ignored"] == ["/tail/Conv"]
    graph = onnx.load(str(tmp_path / "r" / "backbone.int8.onnx")).graph
    producers = {o: n for n in graph.node for o in n.output}
    tail = next(n for n in graph.node if n.name == "/tail/Conv")
    assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in tail.input)


def test_unknown_ignored_layer_is_named_with_a_suggestion(folder: Path, tmp_path: Path):
    with pytest.raises(UserError, match=r"--quant-ignore '/tail/Cnv'.*did you mean '/tail/Conv'"):
        run_train(
            tiny_cfg(
                folder,
                tmp_path / "r",
                backbone="test_sensitive",
                quantize=QuantizeCfg(calib_size=16, ignore=("/tail/Cnv",)),
            )
        )


def test_bad_calibration_input_is_one_clear_line(tmp_path: Path):
    with pytest.raises(UserError, match="--calib-size 4: too small"):
        QuantizeCfg(calib_size=4)
    with pytest.raises(UserError, match="only 10 usable training images"):
        check_calibration(np.random.default_rng(0).normal(size=(10, 3, 8, 8)).astype(np.float32), 300)
    with pytest.raises(UserError, match="constant"):
        check_calibration(np.zeros((32, 3, 8, 8), np.float32), 300)
    with pytest.raises(UserError, match="--calib-method entropy: not offered for --target openvino"):
        QuantizeCfg(target="openvino", calib_method="entropy")


def test_too_few_training_images_to_calibrate(tmp_path: Path):
    data = make_folder(tmp_path / "small", per_class=4)  # ~8 training images
    with pytest.raises(UserError, match="usable training images to calibrate"):
        run_train(_int8(data, tmp_path / "r"))


def test_select_calibration_is_seeded(folder: Path):
    from edgetl.data.folders import load_image_folder

    ds = load_image_folder(folder, 0, False, print)
    a = [it.key for it in select_calibration(ds.train, 10, seed=1)]
    assert a == [it.key for it in select_calibration(ds.train, 10, seed=1)]
    assert a != [it.key for it in select_calibration(ds.train, 10, seed=2)]


def test_a_collapsed_int8_run_is_never_exported(folder: Path, tmp_path: Path):
    import json

    from edgetl.export.run import export_run

    out = tmp_path / "r"
    run_train(_int8(folder, out, target="onnxruntime"))
    record = json.loads((out / "run.json").read_text())
    record["metrics"]["int8_drop"] = 0.3  # INT8 lost 30 points: export judges the recorded numbers by train's rule
    (out / "run.json").write_text(json.dumps(record))
    with pytest.raises(UserError, match="COLLAPSED: val accuracy fell 30.0 points.* must not ship"):
        export_run(out)
    record["metrics"].update(int8_drop=0.0, int8_agreement=0.85)  # or kept 85% of the FP32 model's labels
    (out / "run.json").write_text(json.dumps(record))
    with pytest.raises(UserError, match="COLLAPSED: it keeps only 0.8500 of the FP32 model's labels"):
        export_run(out)
    assert not (out / "model.onnx").exists()


def test_one_rule_for_train_and_export_names_the_fix():
    from edgetl.verdict import int8_verdict, verdict_of

    assert int8_verdict(0.004, 0.98, 0.01) == ("ok", [])
    status, lines = int8_verdict(0.02, 0.98, 0.01)
    assert status == "degraded" and "--quant-auto-fallback" in lines[0]
    status, lines = int8_verdict(0.004, 0.95, 0.01)  # accuracy kept, but 5% of labels changed
    assert status == "degraded" and "0.9500" in lines[0]
    for drop, agree in ((0.3, 0.98), (0.0, 0.85), (0.0, float("nan"))):
        status, lines = int8_verdict(drop, agree, 0.01)
        assert status == "collapsed" and "must not ship" in lines[0]
    record = {"metrics": {"int8_drop": 0.0, "int8_agreement": 0.85}, "quantize": {"max_drop": 0.01}}
    assert verdict_of(record)[0] == "collapsed"  # export reads the same numbers and reaches the same verdict


def test_fallback_loop_requantizes_with_the_worst_layers_kept_in_float(folder: Path, tmp_path: Path):
    """max_drop below any possible drop forces the loop through 1, 2, 4 ... layers: each round re-quantizes
    with the next worst layers ignored, and what is reported is what the shipped model holds."""
    q = QuantizeCfg(calib_size=16, target="onnxruntime", auto_fallback=True, max_drop=-1.0)
    r = run_train(tiny_cfg(folder, tmp_path / "r", backbone="test_sensitive", quantize=q))
    ignored = r["quantize"]["ignored"]
    assert ignored[0] == "/tail/Conv" and len(ignored) == len(r["quantize"]["sensitivity"])
    graph = onnx.load(str(tmp_path / "r" / "backbone.int8.onnx")).graph
    producers = {o: n for n in graph.node for o in n.output}
    for node in (n for n in graph.node if n.name in ignored):
        assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in node.input[1:])


def test_histogram_calibration_reads_the_samples_in_strides():
    """ONNX Runtime's strided calibration (CalibStridedMinMax) asks the reader for its length and for one range
    at a time; histogram calibrators then hold one stride of activations, not all of them (at 224 px, 512 images
    had run out of 24 GiB; in strides of 32 entropy peaked at 3.3 GB)."""
    from edgetl.quant.calibration import feeds_reader, stride_for

    assert [stride_for(n) for n in (512, 300, 97, 16, 1)] == [32, 30, 1, 16, 1]
    feeds = [{"input": np.full((1, 1), i, np.float32)} for i in range(10)]
    reader = feeds_reader(feeds)
    assert len(reader) == 10
    reader.set_range(start_index=4, end_index=7)
    got = []
    while (item := reader.get_next()) is not None:
        got.append(int(item["input"][0, 0]))
    assert got == [4, 5, 6]


def test_percentile_calibration_runs_strided_end_to_end(folder: Path, tmp_path: Path, monkeypatch):
    from edgetl.quant import ort_recipe

    ranges: list[tuple[int, int]] = []
    real = ort_recipe.feeds_reader

    def spy(feeds):
        reader = real(feeds)
        inner = reader.set_range
        reader.set_range = lambda start_index, end_index: (
            ranges.append((start_index, end_index)) or inner(start_index, end_index)
        )
        return reader

    monkeypatch.setattr(ort_recipe, "feeds_reader", spy)
    r = run_train(_int8(folder, tmp_path / "r", target="onnxruntime", calib_method="percentile", calib_size=24))
    n = r["quantize"]["calib_size"]
    assert r["quantize"]["method"] == "percentile" and r["quantize"]["status"] != "collapsed"
    assert ranges, "the calibrator was not given strides"
    assert ranges[0][0] == 0 and ranges[-1][1] == n and all(b - a <= 32 for a, b in ranges)
    assert all(prev[1] == cur[0] for prev, cur in zip(ranges, ranges[1:], strict=False))  # consecutive, no gap
