"""`edgetl compile --target auto`: build every runtime the model can run in here, time them here, keep the fastest.

Which runtime wins depends on the CPU (AVX2 only, AVX-VNNI, AVX-512 VNNI, AMX), the model and the runtime's
version (issue 33: on an AVX2-only EPYC the ONNX Runtime text bundle beat OpenVINO's by 2x, on AVX-512 VNNI
OpenVINO wins images), so the choice is measured on the machine that runs the bundle, not shipped as a default:

1. compile the exported graph for every candidate target whose runtime is installed (a target that cannot
   compile it, e.g. an option it does not take, is dropped with its reason); given a run folder, every INT8
   layout's graph and the run's FP32 model (model.fp32.onnx: candidates TARGET/fp32, the FP32 backbone with the
   head fitted on its features, which the INT8 accuracy rule never rules out);
2. open each as `predict` would, which runs the bundle's INT8 probe on this CPU: a candidate whose INT8 output
   is not faithful here (issue 14: INT8 kernels without VNNI can saturate) is dropped;
3. time the rest with the bench harness, model-only and end to end, in interleaved rounds within a fixed small
   budget (ROUNDS x BLOCK_S per candidate and mode), and keep the fastest end to end (what a user waits for) if
   it beats the default target (what `compile` builds without auto) by more than MARGIN, else the default: a
   choice inside the noise of a shared machine would flip from run to run;
4. the winner's folder becomes `--out`, its manifest recording the CPU (model, flags, id), the runtime versions,
   every candidate's p50 or why it was dropped, and why the winner won. A bundle moved to another CPU kind says
   so when it is opened (edgetl.deploy.predictor's `auto_line`), and `edgetl compile --target auto` can be run
   again there.

Two halves, shared: `build_candidates` (1: needs the compilers, runs on the host) and `choose` (2-3: runs where the
bundle runs). `compile --target auto` runs both here; `deploy --target auto` builds on the host and runs `choose` on
the device (`edgetl choose` there, over the pushed bundles), so a Jetson or a NUC picks its own winner.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import NamedTuple

from edgetl.contract import EXPORT_JSON, FP32_EXPORT, MODEL_FP32, MODEL_ONNX
from edgetl.errors import UserError
from edgetl.fileio import sha256_file
from edgetl.machine import cpu_id, cpu_info, cpu_line

CANDIDATES = ("openvino", "onnxruntime", "tensorrt")  # tensorrt only where it is installed (a Jetson)
ROUNDS, BLOCK_S, MIN_BLOCK_ITERS, WARMUP_S = 5, 0.3, 5, 0.5  # ~3 s per candidate and mode on this budget
MODES = ("model", "end_to_end")
# Another target replaces the default only when it is faster by more than this, as the median of its per-round
# ratios to the default: on a shared 2-core machine two bundles within ~10% swap places between runs (text.json,
# 2026-12: OpenVINO 0.91 vs ONNX Runtime 0.82 ms in auto's rounds, the reverse order in the benchmark's longer ones).
MARGIN = 0.10


class Source(NamedTuple):
    """One graph `compile --target auto` builds in every runtime: candidate names are target + `suffix`."""

    layout: str | None  # the INT8 layout (the runtime it was quantized for); None: an FP32 graph, or unknown
    graph: Path
    ruled_out: str | None  # why it is not built (training judged the layout degraded, the graph is stale, ...)
    suffix: str = ""  # "/LAYOUT-layout" where a run has several layouts, "/fp32" for an INT8 run's FP32 model


def sources(path: Path) -> list[Source]:
    """The graphs of `compile PATH --target auto`: one exported graph, or a run folder's graph, each of its other
    layouts' (`train --target A,B`, then `edgetl export RUN`) and its FP32 model where export wrote one."""
    from edgetl.records import layout_dirs, read_run

    path = Path(path)
    if not path.is_dir():
        return [Source(None, path, None)]
    found = []
    runs = [path, *layout_dirs(path)]
    for run in runs:
        model = run / MODEL_ONNX
        if not model.is_file():
            raise UserError(f"{run}: no {MODEL_ONNX}; run `edgetl export {path}` first")
        record = read_run(run).data
        q = record.get("quantize") or {}
        status = q.get("status", "ok")
        agreement = record["metrics"].get("int8_agreement")
        why = None if status == "ok" else f"training judged this INT8 layout {status} (agreement {agreement})"
        found.append(Source(q.get("target"), model, why, f"/{q.get('target')}-layout" if len(runs) > 1 else ""))
    fp32 = fp32_source(path) if found[0].layout else None
    return found + ([fp32] if fp32 else [])


def fp32_source(run: Path) -> Source | None:
    """An INT8 run's FP32 model (FP32 backbone + the head fitted on FP32 features), as `edgetl export` recorded it
    in export.json; None where it wrote none (a run trained or exported by an older edgetl, a text run). The
    reference the INT8 layouts are judged against: the INT8 accuracy rule never rules it out."""
    try:
        entry = json.loads((run / EXPORT_JSON).read_text()).get(FP32_EXPORT)
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        return None  # compiling model.onnx says what is wrong with export.json
    if not isinstance(entry, dict):
        return None
    graph, redo = run / MODEL_FP32, f"re-run `edgetl export {run}`"
    why = None
    if not graph.is_file():
        why = f"{graph} is missing; {redo}"
    elif sha256_file(graph) != entry.get("onnx_sha256"):
        why = f"{graph} changed since `edgetl export` wrote it; {redo}"
    elif entry.get("passed") is not True:
        why = f"its export failed the FP32 parity check (see {run / EXPORT_JSON}, {FP32_EXPORT}); {redo}"
    return Source(None, graph, why, "/fp32")  # compiled in place: its parity entry is export.json's fp32_model


def compile_auto(onnx: Path, out: Path, options, echo=print):
    """Compile `onnx` (a graph, or a run folder with its layouts) for the fastest faithful target on this machine
    into `out`; returns its Artifact. `build_candidates`, then `choose`, here."""
    from edgetl.deploy.artifact import Artifact, read_manifest, write_manifest

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".edgetl-auto-", dir=out.parent) as tmp:
        found = build_candidates(onnx, Path(tmp), options, echo)
        winner, record = choose(found.folders, found.rows, found.default, echo, what=str(onnx))
        folder = found.folders[winner]
        manifest = read_manifest(folder, folder)
        manifest = write_manifest(folder, {k: v for k, v in manifest.items() if k != "files"} | {"auto": record})
        if out.exists():
            shutil.rmtree(out)
        folder.replace(out)
    echo(f"--target auto: {record['why']}")
    return Artifact(out, manifest)


class Candidates(NamedTuple):
    """What `build_candidates` made: the compiled folders, the candidates dropped on the way and the default."""

    folders: dict[str, Path]  # candidate name (target + suffix) -> its compiled folder
    rows: list[dict]  # {"target": name, "dropped": why} of each candidate not built
    default: str  # what `edgetl compile` builds without auto: another must beat it by MARGIN


def build_candidates(onnx: Path, tmp: Path, options, echo=print) -> Candidates:
    """The host half of auto (it needs the compilers): every candidate of `onnx` (a graph, or a run folder with its
    layouts and FP32 model) compiled into a folder under `tmp`, in the order they are timed."""
    graphs = sources(onnx)
    built, rows = {}, []
    for src in graphs:
        b, r = _build(src.graph, Path(tmp), options, echo, src.suffix, src.ruled_out)
        built, rows = {**built, **b}, rows + r
    return Candidates(built, rows, default_candidate(graphs))


def choose(folders: dict[str, Path], rows: list[dict], default: str, echo=print, what: str = "these bundles"):
    """The half of auto that runs where the bundles run (`compile --target auto` here, `edgetl choose` on a device
    for `deploy --target auto`): open each compiled folder or bundle (its INT8 probe on this CPU), drop the
    unfaithful ones, time the rest, pick. `rows`: candidates dropped before (recorded as such). Returns
    (the winner's name, the record: CPU, versions, every candidate's p50 or why it was dropped, why it won)."""
    rows = [*rows, *_time(dict(folders), echo)]
    timed = [r for r in rows if "p50_ms" in r]
    if not timed:
        why = "; ".join(f"{r['target']}: {r['dropped']}" for r in rows)
        raise UserError(f"--target auto: no target can run {what} faithfully here ({why})")
    winner, why = pick(timed, default)
    return winner["target"], _record(rows, winner, why)


def named_bundles(args: list[str]) -> dict[str, Path]:
    """`edgetl choose`'s arguments, BUNDLE or NAME=BUNDLE (a compiled folder or a .tar.gz), as {name: path}; a
    bundle's default name is its manifest's target, or its file name where two share a target."""
    from edgetl.deploy.bundle import open_bundle

    named, targets = [], []
    for arg in args:
        name, path = "", arg
        if "=" in arg and not Path(arg).exists():
            name, path = arg.split("=", 1)
            if not (name and path):
                raise UserError(f"{arg}: give BUNDLE or NAME=BUNDLE, e.g. ov=build/ov")
        with open_bundle(Path(path)) as artifact:
            targets.append(artifact.manifest["target"])
        named.append((name, Path(path)))
    found: dict[str, Path] = {}
    for (name, path), target in zip(named, targets, strict=True):
        stem = path.name.removesuffix(".tar.gz").removesuffix(".tgz")
        name = name or (target if targets.count(target) == 1 else stem)
        if name in found:
            raise UserError(f"{path}: a second candidate named {name!r}; name each one: NAME=BUNDLE")
        found[name] = path
    return found


def _build(onnx: Path, tmp: Path, options, echo, suffix: str = "", ruled_out: str | None = None):
    """({candidate: its compiled folder}, rows of the dropped ones); a candidate is a target (+ the layout)."""
    from edgetl.deploy.targets import get_target

    built, rows = {}, []
    for target_name in CANDIDATES:
        name = target_name + suffix
        if ruled_out:
            rows.append({"target": name, "dropped": ruled_out})
            continue
        target = get_target(target_name)
        problem = target.available()
        if problem:
            rows.append({"target": name, "dropped": f"not usable here ({problem.splitlines()[0]})"})
            continue
        try:
            artifact = target.compile(onnx, tmp / name.replace("/", "_"), options)
        except UserError as e:
            rows.append({"target": name, "dropped": f"does not compile this model ({e})"})
            continue
        if target_name == "tensorrt" and not artifact.manifest.get("engine"):
            rows.append({"target": name, "dropped": "no engine built here (the TensorRT builder is missing)"})
            continue
        echo(f"--target auto: built {name}")
        built[name] = tmp / name.replace("/", "_")
    return built, rows


def _time(built: dict[str, Path], echo) -> list[dict]:
    """Open every candidate (INT8 probe included), drop the unfaithful ones, time the rest interleaved."""
    from edgetl.bench.harness import bundle_cases, interleave
    from edgetl.deploy.predictor import Predictor

    rows, cases = [], []
    with contextlib.ExitStack() as stack:
        for name, folder in list(built.items()):
            predictor = stack.enter_context(Predictor(folder))
            fid = predictor.fidelity
            if fid is not None and not fid.get("faithful", True):
                rows.append(
                    {"target": name, "dropped": f"INT8 probe not faithful on this CPU ({predictor.fidelity_line()})"}
                )
                built.pop(name)
                continue
            jpegs = [] if predictor.is_text else _jpegs(predictor.frame_size)
            cases += bundle_cases(predictor, name, jpegs, 1, MODES, 0)
            ran = predictor.info.get("precision")  # as run here: OpenVINO runs FP32 in bf16 where the CPU has it
            model = predictor.manifest["precision"].get("model")
            rows.append({"target": name, "precision": ran, "model_precision": model, "fidelity": fid})
        samples: dict[tuple[str, str], list[list[float]]] = {}
        for _, case, block in interleave(cases, ROUNDS, BLOCK_S, MIN_BLOCK_ITERS, WARMUP_S):
            samples.setdefault((case.name, case.fields["mode"]), []).append(block)
    for row in rows:
        if "dropped" not in row:
            blocks = {m: samples[(row["target"], m)] for m in MODES}
            row["p50_ms"] = {m: round(statistics.median(x for b in blocks[m] for x in b), 4) for m in MODES}
            row["rounds_p50_ms"] = [round(statistics.median(b), 4) for b in blocks["end_to_end"]]
            echo(f"--target auto: {row['target']} p50 {row['p50_ms']['end_to_end']:.3f} ms end to end")
    return rows


def default_candidate(graphs: list[Source]) -> str:
    """What `edgetl compile` builds without auto: the first graph (the run's INT8 one, never its FP32 model) in its
    layout's own runtime (OpenVINO for a graph of unknown layout)."""
    return (graphs[0].layout or "openvino") + graphs[0].suffix


def pick(timed: list[dict], default: str) -> tuple[dict, str]:
    """(the winner, why): the fastest end to end by the median of per-round ratios to the default, if that beats the
    default by more than MARGIN; else the default. With no default timed (dropped), the fastest."""
    base = next((r for r in timed if r["target"] == default), None)
    if base is None:
        best = min(timed, key=lambda r: r["p50_ms"]["end_to_end"])
        return best, f"{best['target']} is the fastest faithful target ({default}, the default, was dropped)"

    def ratio(r: dict) -> float:
        return statistics.median(a / b for a, b in zip(r["rounds_p50_ms"], base["rounds_p50_ms"], strict=True))

    best = min(timed, key=ratio)
    if best is base or ratio(best) > 1 - MARGIN:
        near = "" if best is base else f"; {best['target']} took {ratio(best):.2f}x its time, within the margin"
        return base, f"nothing beat the default {default} by more than {MARGIN:.0%} end to end{near}"
    return best, f"{best['target']} takes {ratio(best):.2f}x the default {default}'s time end to end (median of rounds)"


def _jpegs(frame: tuple[int, int] | None) -> list[bytes]:
    """The bench's sample photos at a camera's frame size; where they are missing (a device without
    scikit-image), two noise frames: every candidate decodes the same bytes, so the comparison holds."""
    import io

    import numpy as np
    from PIL import Image

    from edgetl.bench.harness import CAMERA_FRAME, load_jpegs

    frame = frame or CAMERA_FRAME
    try:
        return load_jpegs([], frame)
    except UserError:
        rng, out = np.random.default_rng(0), []
        for _ in range(2):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (*frame, 3), dtype=np.uint8)).save(buffer, format="JPEG")
            out.append(buffer.getvalue())
        return out


def _record(rows: list[dict], winner: dict, why: str) -> dict:
    from edgetl.bench.harness import package_versions

    why = f"{winner['target']} on {cpu_line()} ({winner['p50_ms']['end_to_end']:.3f} ms end to end): {why}"
    dropped = [f"{r['target']}: {r['dropped']}" for r in rows if "dropped" in r]
    return {
        "cpu": cpu_info(),
        "cpu_id": cpu_id(),
        "versions": package_versions("openvino", "onnxruntime", "tensorrt"),
        "budget": {"rounds": ROUNDS, "block_s": BLOCK_S, "warmup_s": WARMUP_S, "batch": 1},
        "candidates": rows,
        "winner": winner["target"],
        "why": why + (f"; dropped {'; '.join(dropped)}" if dropped else ""),
    }
