"""edgetl.deploy.measured, the per-CPU-kind winners `edgetl doctor` names, agrees with the benchmark results it cites:
each row's JSON was measured on a CPU of that kind, and its `--target auto` (or fastest edgetl bundle) is that row."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgetl.deploy.measured import WINNERS, advice, cpu_kind
from edgetl.machine import cpu_info

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def _image_winner(doc: dict) -> tuple[str, str]:
    """(runtime, model precision) of `--target auto` where the result records it, else of the fastest edgetl bundle."""
    rows = [r for r in doc["results"] if r["name"].startswith("edgetl")]
    if "auto" in doc:
        row = next(r for r in rows if "--target auto" in r["name"])
        return doc["auto"]["winner"].split("/")[0], row["model_precision"]
    fastest = min((r for r in rows if "auto" not in r["name"]), key=lambda r: r["latency_ms"]["p50"])
    return fastest["target"], fastest["model_precision"]


def _text_winner(doc: dict) -> tuple[str, str]:
    auto = doc["auto"]
    row = next(c for c in auto["candidates"] if c["target"] == auto["winner"])
    # results older than the model_precision field: a "/fp32" candidate is the run's FP32 model, a layout is INT8
    precision = row.get("model_precision") or ("fp32" if auto["winner"].endswith("/fp32") else "int8")
    return auto["winner"].split("/")[0], precision


def _machine(doc: dict) -> dict:
    """The CPU a result was measured on: its own record, else its timed rows', else (text.json of 2026-12-05, before
    text.py recorded it) the cpu_line that `--target auto` wrote into its why: "MODEL (MACHINE; FLAGS) ..."."""
    found = doc.get("machine") or doc.get("auto", {}).get("cpu") or (doc.get("results") or [{}])[0].get("cpu")
    if found:
        return found
    m = re.search(r" on (.+?) \((\w+); ([\w ]+)\)", doc["auto"]["why"])
    return {"model": m[1], "machine": m[2], "flags": m[3].split()}


@pytest.mark.parametrize("kind", sorted(WINNERS))
def test_each_row_is_what_its_benchmark_measured_on_that_cpu_kind(kind):
    measured = WINNERS[kind]
    for winner, read in ((measured.image, _image_winner), (measured.text, _text_winner)):
        doc = json.loads((RESULTS / winner.result).read_text())
        machine = _machine(doc)
        assert cpu_kind(machine) == kind, (winner.result, machine)
        assert read(doc) == (winner.runtime, winner.precision), winner.result


def test_advice_names_this_kinds_winners_or_says_none_is_measured():
    avx2 = {"model": "Intel(R) Core(TM) i5-8259U", "flags": ["avx2"], "machine": "x86_64"}
    assert "images openvino INT8 (train with --quant-overflow-fix" in advice(avx2)
    assert ", text onnxruntime INT8" in advice(avx2)
    vnni = {"model": "Intel(R) Xeon(R)", "flags": ["avx2", "avx512f", "avx512_vnni", "amx_int8"], "machine": "x86_64"}
    assert "images openvino INT8, text openvino INT8" in advice(vnni)
    for other in ({"model": "Cortex-A78AE", "flags": [], "machine": "aarch64"}, {**avx2, "flags": []}):
        assert cpu_kind(other) is None and advice(other).startswith("no CPU of this kind measured yet")


def test_doctor_prints_the_advice_for_this_machine():
    from edgetl.cli.main import cli

    got = CliRunner().invoke(cli, ["doctor"])
    assert got.exit_code == 0, got.output
    assert f"choose       {advice(cpu_info())}" in got.output


def test_cpu_class_names_the_group_a_timing_belongs_to():
    """benchmarks/_common.per_cpu suffixes result files with it and WINNERS is keyed by it: one rule for both."""
    from edgetl.machine import cpu_class

    x86 = {"model": "x", "machine": "x86_64"}
    assert cpu_class({**x86, "flags": ["avx2", "avx512f", "avx512_vnni"]}) == "vnni"
    assert cpu_class({**x86, "flags": ["avx2", "avx_vnni"]}) == "vnni"
    assert cpu_class({**x86, "flags": ["avx2", "avx512f"]}) == "avx2"  # AVX-512 without VNNI saturates too
    assert cpu_class({**x86, "flags": []}) == "x86"
    assert cpu_class({"model": "Cortex-A78AE", "flags": [], "machine": "aarch64"}) == "aarch64"
