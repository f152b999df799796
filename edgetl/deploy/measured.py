"""Which bundle won on each CPU kind measured so far: what `edgetl doctor` says this machine should use before it
has measured anything itself (`edgetl compile RUN --target auto` measures it here, and its answer wins).

Each row names the benchmark result it was read from; tests/deploy/test_measured.py checks every row against that
JSON, so the table cannot drift from the measurements. CPU kinds are edgetl.machine.int8_dot's: INT8 kernels are
what changes the winner (issue 33: on an AVX2-only EPYC the ONNX Runtime text bundle beat OpenVINO's 2x).
"""

from __future__ import annotations

from typing import NamedTuple


class Winner(NamedTuple):
    runtime: str  # the target `--target auto` kept
    precision: str
    result: str  # benchmarks/results/<result>: the measurement this row is read from
    note: str = ""


class Measured(NamedTuple):
    cpu: str  # the CPU the rows were measured on
    image: Winner
    text: Winner


WINNERS = {
    "vnni": Measured(
        "AMD EPYC with AVX-512 VNNI, AVX-VNNI and AVX512-BF16",
        Winner("openvino", "int8", "latency.json"),
        Winner("openvino", "int8", "text.json"),
    ),
    "avx2": Measured(
        "AMD EPYC family 25 model 1 (Zen 3): AVX2 only, no VNNI",
        # timed before the probe read logits: the default layout's OpenVINO bundle now fails it on such a CPU
        # (logit shift 1.01 under the emulated AVX2 CPU; docs/results.md), and auto keeps ONNX Runtime INT8
        Winner("openvino", "int8", "latency.avx2.json", "train with --quant-overflow-fix: else its probe fails here"),
        Winner("onnxruntime", "int8", "text.avx2.json", "train with --target openvino,onnxruntime for its layout"),
    ),
}


def cpu_kind(cpu: dict) -> str | None:
    """The WINNERS key of this CPU: 'vnni', 'avx2' (x86 without a 32-bit INT8 dot product), or None (unmeasured)."""
    from edgetl.machine import cpu_class

    kind = cpu_class(cpu)
    return kind if kind in WINNERS else None


def advice(cpu: dict) -> str:
    """One line for `edgetl doctor`: the measured winners on this CPU's kind, or that none is measured yet."""
    kind = cpu_kind(cpu)
    if kind is None:
        return "no CPU of this kind measured yet: `edgetl compile RUN --target auto` times each runtime here"
    m = WINNERS[kind]

    def one(w: Winner) -> str:
        return f"{w.runtime} {w.precision.upper()}" + (f" ({w.note})" if w.note else "")

    return (
        f"measured on {m.cpu}: images {one(m.image)}, text {one(m.text)}; "
        "`edgetl compile RUN --target auto` measures this machine itself"
    )
