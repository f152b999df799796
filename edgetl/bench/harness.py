"""Latency measurement users can trust: the timing harness and its statistics (files and plots: bench_report).

Timed like trtexec/benchmark_app: warm-up by time, then at least a minimum duration AND a minimum number of
iterations, and inputs rotate among several distinct real images (a single cached input flatters caches and
branch predictors). Two figures per bundle: `model` (Runner.infer on prepared inputs) and `end_to_end`
(JPEG bytes -> label: decode, input preparation, model; what an application sees). Every record carries what
is needed to judge whether two numbers are comparable: versions, CPU model and flags, target, device, the
precision the runtime actually ran, threads, streams, batch, input shape and date. Imports no torch: this runs
on the device.
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path

import numpy as np

from edgetl import __version__
from edgetl.contract import LABEL
from edgetl.errors import UserError
from edgetl.images import IMAGE_EXTENSIONS, BadImage, decode_image
from edgetl.machine import cpu_info

FORMAT = "edgetl-bench/1"
MODES = ("model", "end_to_end")
CAMERA_FRAME = (480, 640)  # (H, W): a VGA camera frame, the default size the images are brought to
SAMPLE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "retina.jpg")
MAX_SAVED_SAMPLES = 20_000  # per record; enough for --compare to re-derive any percentile


@dataclass(frozen=True)
class Settings:
    """How long and how often to time (defaults close to benchmark_app's short runs)."""

    warmup_s: float = 1.0
    duration_s: float = 5.0
    min_iters: int = 50

    def __post_init__(self) -> None:
        if self.warmup_s < 0 or self.duration_s <= 0 or self.min_iters < 1:
            raise UserError("--warmup/--duration/--min-iters: give warmup >= 0, duration > 0, min-iters >= 1")


@dataclass
class Case:
    """One thing to time: `call` runs one batch; it gets inputs[i % len(inputs)] at iteration i."""

    name: str
    call: Callable[[object], object]
    inputs: Sequence[object]
    fields: dict = field(default_factory=dict)  # the record's descriptive fields (target, precision, ...)


@dataclass
class Measured:
    samples_ms: list[float]
    wall_s: float
    interrupted: bool = False
    warmup: dict | None = None  # what the warm-up asked for and did (`warmup_record`); None: not recorded


def warmup_record(asked_s: float, ran_s: float, iterations: int, first_call_ms: float) -> dict:
    """The warm-up as saved with each result: the first call is what a one-shot run feels (lazy initialisation,
    cold caches), which the timed samples, all taken after the warm-up, never show."""
    return {
        "asked_s": asked_s,
        "ran_s": round(ran_s, 4),
        "iterations": iterations,
        "first_call_ms": round(first_call_ms, 4),
    }


# --- machine description ----------------------------------------------------------------------------


def package_versions(*names: str) -> dict:
    """edgetl, Python, NumPy and the given packages (only those installed)."""
    out = {"edgetl": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def use_threads(threads: int) -> int:
    """Pin this process to `threads` CPUs (0 = leave as is); runtimes size their thread pools from the affinity.

    Pinning works the same for every runtime, including by-hand pipelines, so all of them get the same cores.
    """
    available = sorted(os.sched_getaffinity(0))
    if threads < 0 or threads > len(available):
        raise UserError(f"--threads {threads}: this process may use {len(available)} CPU(s); give 1..{len(available)}")
    if threads:
        os.sched_setaffinity(0, available[:threads])
    return len(os.sched_getaffinity(0))


# --- inputs -----------------------------------------------------------------------------------------


def default_image_paths() -> list[Path]:
    """A few real colour photos shipped inside scikit-image (found without importing it), if installed."""
    spec = find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    return [folder / name for name in SAMPLE_PHOTOS if (folder / name).is_file()]


def image_files(paths: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"--images {path}: no such file or folder")
    return files


def load_jpegs(paths: Sequence[Path], frame_size: tuple[int, int], limit: int = 8) -> list[bytes]:
    """Real images brought to one frame size (so batches stack) and re-encoded as JPEG, as a camera sends them."""
    from PIL import Image

    files = image_files(paths) if paths else default_image_paths()
    if len(files) < 2:
        raise UserError("--images: give at least 2 real photos (files or a folder); timing one image flatters caches")
    out = []
    for path in files[:limit]:
        try:
            frame = decode_image(path.read_bytes())
        except (BadImage, OSError) as e:
            raise UserError(f"--images {path}: unusable ({e})") from None
        image = Image.fromarray(frame).resize((frame_size[1], frame_size[0]), Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def batches(items: Sequence, batch: int) -> list[list]:
    """len(items) distinct batches, each starting at another item, so consecutive iterations never repeat."""
    return [[items[(start + j) % len(items)] for j in range(batch)] for start in range(len(items))]


# --- timing -----------------------------------------------------------------------------------------


def measure(case: Case, settings: Settings, tick: Callable[[float, int], None] | None = None) -> Measured:
    """Warm up for settings.warmup_s, then time until both the duration and the iteration count are reached.

    Ctrl-C during warm-up or timing ends the loop and returns what was measured (marked interrupted; no
    samples when it came during warm-up). The warm-up always runs at least one call, the one timed as the first.
    """
    inputs, call = case.inputs, case.call
    i, start = 0, time.perf_counter()
    first_ms = 0.0
    try:
        while True:
            call(inputs[i % len(inputs)])
            i += 1
            now = time.perf_counter()
            if i == 1:
                first_ms = (now - start) * 1e3
            if now - start >= settings.warmup_s:
                break
    except KeyboardInterrupt:
        return Measured([], time.perf_counter() - start, True)
    warmup = warmup_record(settings.warmup_s, now - start, i, first_ms)
    samples: list[float] = []
    t0 = last_tick = time.perf_counter()
    interrupted = False
    try:
        while len(samples) < settings.min_iters or time.perf_counter() - t0 < settings.duration_s:
            x = inputs[i % len(inputs)]
            i += 1
            a = time.perf_counter()
            call(x)
            b = time.perf_counter()
            samples.append((b - a) * 1e3)
            if tick and b - last_tick > 0.1:
                tick(b - t0, len(samples))
                last_tick = b
    except KeyboardInterrupt:
        interrupted = True
    return Measured(samples, time.perf_counter() - t0, interrupted, warmup)


def interleave(
    cases: Sequence[Case],
    rounds: int,
    block_s: float,
    min_block_iters: int,
    warmup_s: float,
    on_warmup: Callable[[Case, dict], None] | None = None,
) -> Iterator[tuple[int, Case, list[float]]]:
    """Time cases in alternating blocks (A B, then B A, ...) so machine noise hits all of them alike.

    Yields (round, case, block samples in ms). With warmup_s > 0 each case is warmed up before the first round,
    and on_warmup(case, warmup_record) is told what its warm-up did.
    """
    for case in cases if warmup_s > 0 else ():
        warmed = measure(case, Settings(warmup_s=warmup_s, duration_s=1e-3, min_iters=1))
        if warmed.interrupted:
            raise KeyboardInterrupt  # callers stop at Ctrl-C between blocks and keep the blocks already timed
        if on_warmup and warmed.warmup:
            on_warmup(case, warmed.warmup)
    counters = [0] * len(cases)
    for r in range(rounds):
        order = list(range(len(cases)))
        order = order if r % 2 == 0 else order[::-1]
        for k in order:
            case, samples = cases[k], []
            t0 = time.perf_counter()
            while len(samples) < min_block_iters or time.perf_counter() - t0 < block_s:
                x = case.inputs[counters[k] % len(case.inputs)]
                counters[k] += 1
                a = time.perf_counter()
                case.call(x)
                samples.append((time.perf_counter() - a) * 1e3)
            yield r, case, samples


# --- bundles ----------------------------------------------------------------------------------------


def bundle_fields(predictor, threads: int) -> dict:
    """What ran, as the loaded runtime reports it (not what was requested at compile time)."""
    m, info = predictor.manifest, predictor.info
    runtimes = list(m.get("runtime", {}))
    return {
        "target": m["target"],
        "device": info.get("device") or m["device"],
        "precision": info.get("precision") or m["precision"].get("runtime"),
        "model_precision": m["precision"].get("model"),
        "threads": threads,
        "streams": 1,  # one synchronous infer request at a time: latency, not throughput, mode
        "settings": m.get("settings", {}),
        "input_format": predictor.input_format,
        "model_sha256": m["files"][m["model"]],
        "versions": {**package_versions(*runtimes), "built_with": m.get("runtime", {})},
        "cpu": cpu_info(),
        "int8_fidelity": getattr(predictor, "fidelity", None),  # the bundle's probe on this CPU (deploy.fidelity)
    }


def batch_feeds(predictor, frames: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Frames -> one batch of model inputs, prepared exactly as `edgetl predict` prepares a single frame."""
    if len(frames) == 1:
        return predictor.feeds(frames[0])
    name = predictor.input_name
    return {name: np.concatenate([predictor.feeds(f)[name] for f in frames])}


def check_batch(manifest: dict, batch: int, name: str) -> None:
    """Refuse up front a batch the bundle cannot run (static shape, TensorRT profile), not mid-benchmark."""
    shape = (manifest.get("input") or {}).get("shape") or []
    fixed = shape[0] if isinstance(shape, list) and shape and isinstance(shape[0], int) and shape[0] > 0 else None
    if fixed is not None and batch != fixed:
        raise UserError(
            f"--batch {batch}: {name} has a static input shape for batch {fixed}; "
            f"use --batch {fixed} or compile without --static"
        )
    max_batch = (manifest.get("settings") or {}).get("max_batch")
    if manifest.get("target") == "tensorrt" and isinstance(max_batch, int) and batch > max_batch:
        raise UserError(
            f"--batch {batch}: {name} was built for batches up to {max_batch}; "
            f"use --batch {max_batch} or less, or compile with --max-batch {batch}"
        )


def bundle_cases(
    predictor, name: str, jpegs: list[bytes], batch: int, modes: Sequence[str], threads: int
) -> list[Case]:
    """`model`: Runner.infer on prepared batches; `end_to_end`: JPEG bytes -> decode -> inputs -> infer -> labels.
    A text bundle is timed on `SAMPLE_TEXTS` instead (`text_cases`)."""
    check_batch(predictor.manifest, batch, name)
    fields = bundle_fields(predictor, threads)
    if predictor.is_text:
        return text_cases(predictor, name, batch, modes, fields)
    frames = [decode_image(j) for j in jpegs]
    feeds = [batch_feeds(predictor, group) for group in batches(frames, batch)]
    shape = list(next(iter(feeds[0].values())).shape)
    runner = predictor.runner

    min_size = predictor.preprocess.decode_min_size  # JPEG files decode as in training (DCT-scaled when declared)

    def end_to_end(group: list[bytes]) -> list[str]:
        out = runner.infer(batch_feeds(predictor, [decode_image(j, min_size) for j in group]))
        return [predictor.class_name(int(label)) for label in np.asarray(out[LABEL]).reshape(-1)]

    calls = {"model": (runner.infer, feeds), "end_to_end": (end_to_end, batches(jpegs, batch))}
    return [
        Case(name, calls[mode][0], calls[mode][1], {**fields, "mode": mode, "batch": batch, "input_shape": shape})
        for mode in modes
    ]


SAMPLE_TEXTS = [  # short commands to a paragraph: token counts 5..~90, so padding and truncation both play
    "turn on the kitchen lights",
    "what's the weather like in São Paulo this weekend?",
    "remind me to call the dentist at three tomorrow afternoon",
    "play something relaxing, maybe piano, not too loud ☔🎵",
    "the battery died after a day",
    "add milk, eggs, crème fraîche and two loaves of bread to my shopping list before Friday",
    "i can't see anything in here, it's pitch black; could you do something about the lights in the hallway",
    " ".join(["This is a long review of a product that kept going on and on about its features."] * 6),
]


def text_cases(predictor, name: str, batch: int, modes: Sequence[str], fields: dict) -> list[Case]:
    """`model`: Runner.infer on prepared inputs (the string tensor, or host token ids); `end_to_end`:
    str -> NFC -> inputs -> infer -> class names, as `edgetl predict --text` does."""
    runner = predictor.runner
    groups = batches(SAMPLE_TEXTS, batch)

    feeds_of = predictor.texts_feeds

    def end_to_end(group: list[str]) -> list[str]:
        out = runner.infer(feeds_of(group))
        return [predictor.class_name(int(label)) for label in np.asarray(out[LABEL]).reshape(-1)]

    calls = {"model": (runner.infer, [feeds_of(g) for g in groups]), "end_to_end": (end_to_end, groups)}
    return [
        Case(name, calls[mode][0], calls[mode][1], {**fields, "mode": mode, "batch": batch, "input_shape": ["N"]})
        for mode in modes
    ]


def run_cases(cases: Sequence[Case], settings: Settings, progress) -> tuple[list[dict], bool]:
    """Measure cases one after another (benchmark_app style); stops at Ctrl-C with the partial records."""
    results: list[dict] = []
    for case in cases:
        label = f"{case.name} {case.fields['mode']} b{case.fields['batch']}"
        with progress(label, settings.duration_s) as tick:
            measured = measure(case, settings, tick)
        if measured.samples_ms:
            results.append(record(case, measured))
        if measured.interrupted:
            return results, True
    return results, False


# --- statistics and records -------------------------------------------------------------------------


def latency_stats(samples_ms: Sequence[float]) -> dict:
    """min, mean, p50, p90, p95, p99, max in ms (linear-interpolated percentiles, like numpy's default)."""
    if not samples_ms:
        raise ValueError("no samples")
    a = np.asarray(samples_ms, np.float64)
    p50, p90, p95, p99 = np.percentile(a, [50, 90, 95, 99])
    values = {"min": a.min(), "mean": a.mean(), "p50": p50, "p90": p90, "p95": p95, "p99": p99, "max": a.max()}
    return {k: round(float(v), 4) for k, v in values.items()}


def record(case: Case, measured: Measured) -> dict:
    """One result in the `bench --json` contract shape, plus the samples --compare re-analyses and the warm-up.

    case.fields must hold mode and batch and should hold target, device, precision, threads, versions, cpu.
    """
    samples = measured.samples_ms
    if len(samples) > MAX_SAVED_SAMPLES:  # keep time order, thin evenly
        samples = [samples[i] for i in np.linspace(0, len(samples) - 1, MAX_SAVED_SAMPLES).astype(int)]
    busy_s = sum(measured.samples_ms) / 1e3
    return {
        "name": case.name,
        **case.fields,
        "latency_ms": latency_stats(measured.samples_ms),
        "throughput_ips": round(case.fields["batch"] * len(measured.samples_ms) / max(busy_s, 1e-9), 3),
        "iterations": len(measured.samples_ms),
        "duration_s": round(measured.wall_s, 3),
        "interrupted": measured.interrupted,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **({"warmup": measured.warmup} if measured.warmup else {}),
        "samples_ms": [round(s, 4) for s in samples],
    }
