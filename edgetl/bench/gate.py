"""The latency regression gate for CI: compare two saved benchmarks, or run baseline and candidate A/B.

Shared CI machines are noisy, so one number against one number decides nothing. The gate works on ratios of
paired measurements: per round, candidate p50 / baseline p50 measured close together in time. It reports the
median of those ratios, and a noise figure (1.4826 x the median absolute deviation of the ratios: a robust
standard deviation), and fails only when the slowdown is larger than BOTH the threshold and NOISE_K times the
noise. The A/B mode interleaves the two models block by block in one process (A B B A ...), so a noisy
neighbour slows both alike and cancels out of the ratio; comparing two files can only pair blocks in time
order within each run, and cannot see noise between the two runs, which is why A/B is the CI recommendation.
Exit codes: 0 within bounds, 1 regression, 2 bad usage or incomparable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from edgetl.bench.harness import Case, interleave
from edgetl.errors import UserError

NOISE_K = 2.0  # a slowdown must exceed this many robust standard deviations of the per-round ratios
FILE_BLOCKS = 7  # saved samples are split into this many time-ordered blocks to pair them


@dataclass
class Verdict:
    key: str
    ratio: float  # median of per-round ratios candidate/baseline (> 1: candidate slower)
    noise: float  # robust standard deviation of the per-round ratios
    threshold: float  # allowed slowdown, e.g. 0.10
    ratios: list[float]
    baseline_p50: float
    candidate_p50: float
    regressed: bool

    def line(self) -> str:
        state = "REGRESSION" if self.regressed else "ok"
        return (
            f"{self.key}: {state}  candidate/baseline p50 {self.ratio:.3f} ({(self.ratio - 1) * 100:+.1f}%), "
            f"noise ±{self.noise * 100:.1f}% (x{NOISE_K:g} = {NOISE_K * self.noise * 100:.1f}%), "
            f"threshold {self.threshold * 100:.0f}%  [{self.baseline_p50:.3f} -> {self.candidate_p50:.3f} ms, "
            f"{len(self.ratios)} rounds]"
        )

    def to_json(self) -> dict:
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def parse_threshold(text: str) -> float:
    """'10%' or '10' -> 0.10 (a percentage either way, so '0.1' cannot silently mean 0.1%)."""
    try:
        value = float(text.strip().rstrip("%"))
    except ValueError:
        raise UserError(f"--max-regression {text!r}: give a percentage, e.g. 10%") from None
    if not 0 < value < 1000:
        raise UserError(f"--max-regression {text!r}: give a percentage above 0, e.g. 10%")
    return value / 100.0


def decide(key: str, ratios: Sequence[float], threshold: float, base_p50: float, cand_p50: float) -> Verdict:
    """Regression only when the median slowdown exceeds both the threshold and NOISE_K x the measured noise."""
    r = np.asarray(ratios, np.float64)
    if r.size == 0 or not np.all(np.isfinite(r)) or np.any(r <= 0):
        raise ValueError(f"{key}: need positive finite ratios, got {list(ratios)}")
    median = float(np.median(r))
    noise = float(1.4826 * np.median(np.abs(r - median))) if r.size > 1 else 0.0
    slowdown = median - 1.0
    regressed = slowdown > threshold and slowdown > NOISE_K * noise
    return Verdict(key, median, noise, threshold, [round(float(x), 5) for x in r], base_p50, cand_p50, regressed)


# --- comparing saved files --------------------------------------------------------------------------

COMPARABLE = ("target", "device", "precision", "threads", "streams", "batch", "mode", "input_shape")


def comparability(record: dict) -> dict:
    """The fields that must match for two latencies to be comparable: hardware, runtime version, settings."""
    versions = {k: v for k, v in record.get("versions", {}).items() if k not in ("edgetl", "python", "built_with")}
    cpu = record.get("cpu", {})
    return {
        **{k: record.get(k) for k in COMPARABLE},
        "cpu": cpu.get("model"),
        "cpu_flags": sorted(cpu.get("flags", [])),
        "runtime_versions": versions,
    }


def differences(base: dict, cand: dict) -> list[str]:
    a, b = comparability(base), comparability(cand)
    return [f"{k}: {a[k]!r} vs {b[k]!r}" for k in a if a[k] != b[k]]


def _key(record: dict) -> tuple:
    return record.get("name"), record["mode"], record["batch"]


def _block_p50s(record: dict) -> tuple[list[float], float] | None:
    """The medians of FILE_BLOCKS time-ordered blocks of the samples, and the p50 of those same samples;
    None when the samples cannot be paired (too few, or a zero block, which cannot be a ratio)."""
    samples = np.asarray(record.get("samples_ms") or [], np.float64)
    if samples.size < FILE_BLOCKS * 5:
        return None
    medians = [float(np.median(block)) for block in np.array_split(samples, FILE_BLOCKS)]
    return (medians, float(np.median(samples))) if min(medians) > 0 else None


def _compared(base: dict, cand: dict) -> tuple[list[float], float, float]:
    """Per-block ratios candidate/baseline and the two p50s shown beside them, all from the same data: the
    samples when both sides have enough, else the recorded p50s of both (never one of each)."""
    b, c = _block_p50s(base), _block_p50s(cand)
    if b is None or c is None:
        bp, cp = float(base["latency_ms"]["p50"]), float(cand["latency_ms"]["p50"])
        return [cp / bp], bp, cp
    return [y / x for x, y in zip(b[0], c[0], strict=True)], b[1], c[1]


def compare_records(base: list[dict], cand: list[dict], threshold: float, force: bool, warn) -> list[Verdict]:
    """Pair records by (name, mode, batch) -- or by (mode, batch) when names differ -- and judge each pair."""
    pairs = [(b, c) for b in base for c in cand if _key(b) == _key(c)]
    if not pairs:
        pairs = [(b, c) for b in base for c in cand if _key(b)[1:] == _key(c)[1:]]
    if not pairs:
        raise UserError(
            f"--compare: no (mode, batch) in common: baseline has {sorted({_key(b)[1:] for b in base})}, "
            f"candidate has {sorted({_key(c)[1:] for c in cand})}"
        )
    verdicts = []
    for b, c in pairs:
        diff = differences(b, c)
        label = f"{c.get('name', '?')} {c['mode']} b{c['batch']}"
        if diff and not force:
            raise UserError(f"--compare {label}: not comparable ({'; '.join(diff)}); add --force to compare anyway")
        if diff:
            warn(f"{label}: comparing anyway (--force) although {'; '.join(diff)}")
        ratios, base_p50, cand_p50 = _compared(b, c)
        verdicts.append(decide(label, ratios, threshold, base_p50, cand_p50))
    return verdicts


# --- A/B in one process -----------------------------------------------------------------------------


@dataclass
class ABResult:
    verdict: Verdict
    baseline_rounds_ms: list[float]
    candidate_rounds_ms: list[float]
    interrupted: bool = False
    warmup: dict = field(default_factory=dict)  # {"baseline": warmup_record, "candidate": ...}

    def to_json(self) -> dict:
        return {**asdict(self), "verdict": self.verdict.to_json()}


def ab_test(
    baseline: Case,
    candidate: Case,
    rounds: int,
    threshold: float,
    block_s: float = 0.1,
    blocks: int = 4,
    warmup_s: float = 0.5,
    key: str = "candidate vs baseline",
) -> ABResult:
    """`rounds` rounds of `blocks` alternating blocks per side (A B B A ...); ratio per round = p50 B / p50 A.

    Ctrl-C stops between blocks; the rounds completed so far are judged.
    """
    if rounds < 3:
        raise UserError(f"--rounds {rounds}: use at least 3 (5-9 is typical) so the noise can be measured")
    per_round: dict[str, list[list[float]]] = {"a": [[] for _ in range(rounds)], "b": [[] for _ in range(rounds)]}
    cases = [Case("a", baseline.call, baseline.inputs), Case("b", candidate.call, candidate.inputs)]
    warmup: dict[str, dict] = {}
    on_warmup = lambda case, w: warmup.__setitem__("baseline" if case.name == "a" else "candidate", w)  # noqa: E731
    interrupted = False
    try:
        for block in range(rounds * blocks):
            r = block // blocks
            order = cases if block % 2 == 0 else cases[::-1]
            for _, case, samples in interleave(order, 1, block_s, 3, warmup_s if block == 0 else 0.0, on_warmup):
                per_round[case.name][r] += samples
    except KeyboardInterrupt:
        interrupted = True
    done = [r for r in range(rounds) if per_round["a"][r] and per_round["b"][r]]
    if not done:
        raise KeyboardInterrupt
    a = [float(np.median(per_round["a"][r])) for r in done]
    b = [float(np.median(per_round["b"][r])) for r in done]
    verdict = decide(
        key, [y / x for x, y in zip(a, b, strict=True)], threshold, float(np.median(a)), float(np.median(b))
    )
    return ABResult(verdict, [round(x, 4) for x in a], [round(x, 4) for x in b], interrupted, warmup)
