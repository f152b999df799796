"""CLI commands for the deploy stage: compile, package, predict, doctor, build-engine, choose.

This module is imported on the device, so it imports neither torch nor onnx; the library calls below
import their runtime lazily.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgetl.cli import FINISHED, started
from edgetl.contract import MAX_FRAME_SIDE, MIN_SIDE, PRECISIONS, TARGETS, TOKENIZER_PLACES
from edgetl.deploy.targets.base import CompileOptions
from edgetl.errors import UserError

COMPILE = CompileOptions()  # the options' defaults are CompileOptions' own, never typed twice


def parse_frame_size(text: str | None) -> tuple[int, int] | None:
    """--frame-size HEIGHTxWIDTH (used by compile and bench)."""
    if text is None:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--frame-size {text!r}: give HEIGHTxWIDTH, e.g. 480x640") from None
    if not (MIN_SIDE <= h <= MAX_FRAME_SIDE and MIN_SIDE <= w <= MAX_FRAME_SIDE):
        raise UserError(f"--frame-size {text!r}: sides must be within {MIN_SIDE}..{MAX_FRAME_SIDE}")
    return h, w


def _frame_size(ctx, param, value: str | None) -> tuple[int, int] | None:
    return parse_frame_size(value)


def _static_tokens(ctx, param, value: str) -> int | None:
    if value == "auto":
        return None
    if not value.isdigit():
        raise UserError(f"--static-tokens: {value!r} is not a token count; use auto, 0 (off) or e.g. 16")
    return int(value)


def _stderr(message: str) -> None:
    click.echo(message, err=True)


@click.command("compile")
@click.argument("onnx", type=click.Path(path_type=Path))
@click.option(
    "--target",
    required=True,
    type=click.Choice((*TARGETS, "auto")),
    help="Runtime to compile for; auto: build each installed one, time them here, keep the fastest faithful one.",
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output folder (replaced atomically).")
@click.option(
    "--device",
    default=COMPILE.device,
    help="OpenVINO: CPU (default), GPU, NPU; ONNX Runtime: CPU, CUDA; TensorRT: GPU.",
)
@click.option(
    "--precision",
    default=COMPILE.precision,
    show_default=True,
    type=click.Choice(PRECISIONS),
    help="auto = the model's own (OpenVINO may run FP32 in bf16 on AMX CPUs; TensorRT builds FP16).",
)
@click.option(
    "--max-batch", default=COMPILE.max_batch, show_default=True, type=int, help="TensorRT profile: batch 1..N."
)
@click.option(
    "--threads", default=COMPILE.threads, show_default=True, type=int, help="ONNX Runtime threads, 0: its own."
)
@click.option("--static", is_flag=True, help="OpenVINO: fixed input shape (always on for --device NPU).")
@click.option("--frame-size", callback=_frame_size, help="HxW camera frame size for static shapes / TensorRT.")
@click.option(
    "--fused-kernels/--no-fused-kernels",
    default=None,
    help="Native kernels for the model's ai.edgetl ops. Default: on for OpenVINO where the extension is built "
    "(measured faster), the standard-op decomposition elsewhere; --fused-kernels requires them.",
)
@click.option(
    "--workspace-mb", default=COMPILE.workspace_mb, show_default=True, type=int, help="TensorRT builder workspace."
)
@click.option(
    "--tokenizer",
    default=COMPILE.tokenizer,
    show_default=True,
    type=click.Choice(TOKENIZER_PLACES),
    help="Text models: graph = inside the compiled model, strings in (OpenVINO, ONNX Runtime); host = token ids in, "
    "tokenizer.json beside it; auto = graph where the runtime has string tensors (TensorRT: host).",
)
@click.option(
    "--static-tokens",
    default="auto",
    show_default=True,
    callback=_static_tokens,
    help="OpenVINO text models: one text of at most N tokens runs a branch with static shapes (faster on CPU); "
    "auto = the training texts' 95th percentile (8..32), 0 = off (a smaller, faster-compiling model).",
)
def compile_cmd(onnx: Path, target: str, out: Path, **options) -> None:
    """Compile an exported model.onnx for one runtime into a folder with manifest.json (--target auto: a run
    folder too).

    \b
    edgetl compile runs/parts/model.onnx --target openvino --out build/ov
    edgetl compile runs/parts/model.onnx --target auto --out build/best      # the fastest faithful one HERE
    edgetl compile runs/d --target auto --out build/best    # a run folder: each INT8 layout (train --target A,B)
    edgetl compile runs/parts/model.onnx --target openvino --device NPU --frame-size 480x640 --out build/npu
    edgetl compile runs/parts/model.onnx --target openvino --precision fp32 --out build/ov-f32
    edgetl compile runs/parts/model.onnx --target onnxruntime --threads 2 --out build/ort
    edgetl compile runs/parts/model.onnx --target tensorrt --precision int8 --max-batch 8 --out build/trt
    edgetl compile runs/text/model.onnx --target onnxruntime --tokenizer host --out build/ort-text
    """
    from rich.console import Console

    from edgetl.deploy.targets import CompileOptions, get_target

    opts = CompileOptions(**options)
    if target == "auto":
        from edgetl.bench.auto import compile_auto

        artifact = compile_auto(onnx, out, opts, echo=_stderr)
        target = artifact.manifest["target"]
    else:
        with Console(stderr=True).status(f"compiling {onnx} for {target}"):
            artifact = get_target(target).compile(onnx, out, opts)
    m = artifact.manifest
    if target == "tensorrt" and not m.get("engine"):
        click.echo(
            f"tensorrt is not installed here: wrote the ONNX and build settings to {out}; on the device run "
            f"`edgetl build-engine BUNDLE` or trtexec (see {out}/BUILD_ON_DEVICE.txt)"
        )
        return
    runtime = m["precision"].get("runtime") or "decided on the device"
    click.echo(
        f"compiled {onnx} for {target} {m['device']} (model {m['precision']['model']}, runs {runtime}) "
        f"-> {out} ({len(m['files'])} file(s)); next: edgetl package {out} --out {out.name}.tar.gz"
    )


@click.command("package")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Bundle to write (.tar.gz).")
def package_cmd(folder: Path, out: Path) -> None:
    """Verify a compiled folder and write it as one bundle (tar.gz with manifest.json and sha256 hashes).

    \b
    edgetl package build/ov --out parts-ov.tar.gz
    scp parts-ov.tar.gz nuc:   # then on the device: edgetl predict parts-ov.tar.gz photo.jpg
    """
    from edgetl.deploy.bundle import package

    if not out.name.endswith((".tar.gz", ".tgz")):
        raise UserError(f"--out {out}: name the bundle *.tar.gz")
    manifest = package(folder, out)
    click.echo(
        f"wrote {out} ({manifest['target']} {manifest['device']}, {len(manifest['files'])} file(s), "
        f"{out.stat().st_size / 1e6:.1f} MB)"
    )


@click.command("predict")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@click.option("--text", "texts", multiple=True, help="A text to classify (text bundles; repeat for more).")
@click.option("--top-k", default=5, show_default=True, type=click.IntRange(1, 1000), help="Classes listed per image.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image: path, label, class, prob, topk, ms.")
@click.option("--strict", is_flag=True, help="Stop at the first unreadable image (exit 2) instead of skipping it.")
@click.option("--device", default=None, help="Run on another device than the bundle's (e.g. GPU).")
def predict_cmd(
    bundle: Path,
    images: tuple[Path, ...],
    texts: tuple[str, ...],
    top_k: int,
    as_json: bool,
    strict: bool,
    device: str | None,
) -> None:
    """Label images (or texts, with --text) with a bundle. Needs only numpy, pillow and the bundle's runtime.

    \b
    edgetl predict parts-ov.tar.gz photo.jpg other.png --top-k 3
    edgetl predict parts-ort.tar.gz shots/*.jpg --json > labels.jsonl
    edgetl predict build/ov photo.jpg          # a compiled folder works too
    edgetl predict intents-ov.tar.gz --text "dim the kitchen lights" --json
    ms is the model time per frame (input preparation + inference), not file decoding.
    """
    from edgetl.deploy.predictor import Predictor, check_image_paths
    from edgetl.errors import UserError

    if bool(images) == bool(texts):
        raise UserError("predict: give image files or --text '...' (one of the two)")
    check_image_paths(images)  # a mistyped path fails before a runtime is loaded
    with Predictor(bundle, device) as predictor:
        started()  # the start-up is over: the garbage collector back on for the images (edgetl.cli.main)
        info = predictor.info
        _stderr(f"{bundle}: {info['target']} on {info.get('device')}, precision {info.get('precision')}")
        for line in (predictor.fidelity_line(), predictor.auto_line()):
            if line:
                _stderr(line)
        if texts:
            results = (predictor.predict_text(t, top_k) for t in texts)
        else:
            results = predictor.predict_files(images, top_k, strict, _stderr)
        for p in results:
            if as_json:
                click.echo(json.dumps(p.to_json(), allow_nan=False))  # NaN is not JSON; _prediction refuses it
            else:
                top = ", ".join(f"{name} {prob:.3f}" for name, prob in p.topk)
                click.echo(f"{p.path}: {p.label} {p.class_name!r} {p.prob:.3f}  top-{top_k}: [{top}]  {p.ms:.2f} ms")
    return FINISHED  # the Predictor is closed and every line written


@click.command("doctor")
@click.argument("bundle", required=False, type=click.Path(path_type=Path))
def doctor_cmd(bundle: Path | None) -> None:
    """List every target: available or missing (and how to fix it), and the devices each sees; the CPU and
    whether its INT8 kernels can saturate; with BUNDLE, run its INT8 probe here (is this CPU faithful to it?).

    \b
    edgetl doctor
    edgetl doctor parts-ov.tar.gz      # + the bundle's INT8 fidelity on this CPU
    """
    from edgetl.deploy.targets import registry
    from edgetl.machine import cpu_info, cpu_line, int8_dot

    cpu = cpu_info()
    hint = {
        "vnni": "32-bit INT8 dot products (VNNI/AMX): INT8 kernels do not saturate",
        "saturating": "no VNNI: INT8 kernels may saturate 16-bit sums; edgetl checks each INT8 bundle's probe at load",
        "other": "not x86: INT8 kernels are the runtime's own; edgetl checks each INT8 bundle's probe at load",
    }[int8_dot(cpu)]
    click.echo(f"{'cpu':12s} {cpu_line(cpu)}")
    click.echo(f"{'int8':12s} {hint}")

    for name in registry().names():
        target = registry().get(name)
        problem = target.available()
        if problem:
            click.echo(f"{name:12s} missing    {problem}")
            continue
        try:
            devices = target.devices()
        except Exception as e:  # a runtime that imports but cannot enumerate (driver, plugin) is a row, not a crash
            why = (str(e).strip().splitlines() or [""])[0]
            click.echo(f"{name:12s} missing    installed, but listing its devices failed ({type(e).__name__}: {why})")
            continue
        click.echo(f"{name:12s} available  devices: {', '.join(devices) or 'none'}")
    if bundle is not None:
        from edgetl.deploy.predictor import Predictor

        with Predictor(bundle) as predictor:
            click.echo(
                f"{'bundle':12s} {bundle}: " + (predictor.fidelity_line() or "no INT8 probe (an FP32 or older bundle)")
            )
            auto = predictor.manifest.get("auto")
            if auto:
                click.echo(f"{'auto':12s} " + (predictor.auto_line() or f"chosen on this CPU kind: {auto['why']}"))
    if bundle is None or "auto" not in predictor.manifest:
        from edgetl.deploy.measured import advice

        click.echo(f"{'choose':12s} {advice(cpu)}")


@click.command("build-engine")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="Write the new bundle here instead of replacing BUNDLE.")
def build_engine_cmd(bundle: Path, out: Path | None) -> None:
    """On the Jetson/GPU machine: build the TensorRT engine from the bundled ONNX and add it to the bundle.

    \b
    edgetl build-engine parts-trt.tar.gz                      # replaces the bundle atomically
    edgetl build-engine parts-trt.tar.gz --out parts-orin.tar.gz
    """
    from edgetl.deploy.targets.tensorrt import build_engine_bundle

    written = build_engine_bundle(bundle, out)
    click.echo(f"built the TensorRT engine for this device into {written}")


@click.command("choose")
@click.argument("bundles", nargs=-1, required=True, metavar="[NAME=]BUNDLE...")
@click.option("--default", "default", help="The candidate another must beat by the margin [default: the first].")
@click.option("--dropped", multiple=True, metavar="NAME=WHY", help="A candidate dropped before this (recorded).")
@click.option("--json", "as_json", is_flag=True, help="Print the record (CPU, versions, every p50, winner, why).")
def choose_cmd(bundles: tuple[str, ...], default: str | None, dropped: tuple[str, ...], as_json: bool) -> None:
    """On the machine that runs them: open compiled folders or bundles of one model (each INT8 probe on this
    CPU), time the faithful ones and name the fastest: what `compile --target auto` and `deploy --target auto`
    choose with. Another beats the default only by more than 10% end to end.

    \b
    edgetl choose build/ov build/ort                      # names: the targets
    edgetl choose ov=parts-ov.tar.gz ort=parts-ort.tar.gz --default ort --json > choice.json
    """
    from edgetl.bench.auto import choose, named_bundles

    folders = named_bundles(list(bundles))
    rows = []
    for entry in dropped:
        name, sep, why = entry.partition("=")
        if not (name and sep and why):
            raise UserError(f"--dropped {entry!r}: give NAME=WHY")
        rows.append({"target": name, "dropped": why})
    default = default or next(iter(folders))
    if default not in folders and default not in {r["target"] for r in rows}:
        raise UserError(f"--default {default}: not one of the candidates ({', '.join(folders)})")
    winner, record = choose(folders, rows, default, echo=_stderr, what=" ".join(map(str, folders.values())))
    if as_json:
        click.echo(json.dumps(record, allow_nan=False))
    else:
        click.echo(f"{winner} ({folders[winner]}): {record['why']}")


COMMANDS = [compile_cmd, package_cmd, predict_cmd, doctor_cmd, build_engine_cmd, choose_cmd]
