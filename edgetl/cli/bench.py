"""`edgetl bench`: latency of a bundle, its by-hand peers, and the CI regression gate (compare / A/B).

Imported on the device: no torch at import time (only `--peers` needs the training stack, lazily).
Exit codes: 0 ok / within bounds, 1 regression, 2 bad usage or incomparable, 130 interrupted (partial
results are still printed and written).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import click

from edgetl.cli.deploy import parse_frame_size
from edgetl.contract import MAX_BATCH
from edgetl.errors import UserError

EXAMPLES = """
\b
edgetl bench parts-ov.tar.gz                       # model-only and end-to-end latency, one table
edgetl bench parts-ov.tar.gz --batch 1,8 --threads 2 --duration 10 --json bench.json --plot bench.png
edgetl bench --peers runs/parts/model.onnx --bundle parts-ov.tar.gz   # vs the pipelines written by hand
edgetl bench --compare baseline.json bench.json --max-regression 10%  # CI gate: exit 1 on a regression
edgetl bench --ab old.tar.gz new.tar.gz --rounds 7 --max-regression 10%   # A/B in one job (recommended)
"""


def _ints(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{option} {text!r}: give comma-separated integers, e.g. 1,8") from None
    if not values or any(not 1 <= v <= MAX_BATCH for v in values):
        raise UserError(f"{option} {text!r}: each value must be within 1..{MAX_BATCH}")
    return values


def _modes(text: str) -> list[str]:
    from edgetl.bench.harness import MODES

    modes = [m.strip() for m in text.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        raise UserError(f"--mode {text!r}: choose from {', '.join(MODES)} (comma-separated)")
    return modes


@dataclass(frozen=True)
class BenchArgs:
    """`edgetl bench`'s options, parsed and checked once; each job below reads them and returns its exit code."""

    batch: list[int]
    modes: list[str]
    threads: int
    duration: float
    warmup: float
    min_iters: int
    images: tuple[Path, ...]
    frame_size: tuple[int, int] | None
    json_path: Path | None
    plot: Path | None
    bundles: tuple[Path, ...]
    rounds: int
    max_regression: str
    force: bool

    @classmethod
    def from_cli(cls, opts: dict, mode_given: bool, ab: bool) -> BenchArgs:
        if opts["rounds"] < 1:
            raise UserError(f"--rounds {opts['rounds']}: give at least 1")
        return cls(
            batch=_ints(opts["batch"], "--batch"),
            modes=_modes(opts["mode"] if mode_given or not ab else "model"),  # --ab: model only unless asked
            frame_size=parse_frame_size(opts["frame_size"]),
            **{k: opts[k] for k in ("threads", "duration", "warmup", "min_iters", "images", "json_path", "plot")},
            **{k: opts[k] for k in ("bundles", "rounds", "max_regression", "force")},
        )


@contextlib.contextmanager
def _progress(label: str, total: float, unit: str = "it") -> Iterator[Callable[[float, int], None]]:
    """A rich progress line (stderr, terminals only); tick(done, count) with `done` in the units of `total`."""
    from edgetl.progress import bar

    with bar(label, total=max(int(total * 10), 1)) as b:
        yield lambda done, n: b.update(completed=min(int(done * 10), int(total * 10)), status=f"{n} {unit}")


def _print_table(results: list[dict], title: str, footer: list[str] = ()) -> None:
    from rich.console import Console
    from rich.table import Table

    from edgetl.bench.report import table_rows

    header, *rows = table_rows(results)
    table = Table(title=title, title_justify="left")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i < 4 else "right")
    for row in rows:
        table.add_row(*row)
    console = Console(width=max(Console().width, 120))
    console.print(table)
    for line in footer:
        console.print(line, soft_wrap=True)


def _finish(
    results: list[dict],
    interrupted: bool,
    json_path: Path | None,
    plot_path: Path | None,
    title: str,
    footer: list[str] = (),
    **extra,
) -> int:
    from edgetl.bench.report import first_call_line, plot, report, write_json

    if not results:
        if interrupted:
            raise KeyboardInterrupt  # Ctrl-C before the first result: exit 130 like any interruption
        raise UserError("nothing was measured")
    first_call = first_call_line(results)
    footer = [*footer, *([first_call] if first_call else [])]
    _print_table(results, title + (" (interrupted: partial results)" if interrupted else ""), footer)
    if json_path:
        write_json(json_path, report(results, interrupted=interrupted, **extra))
        click.echo(f"wrote {json_path}", err=True)
    if plot_path:
        plot(results, plot_path, title)
        click.echo(f"wrote {plot_path}", err=True)
    return 130 if interrupted else 0


def bench_bundle(bundle: Path, a: BenchArgs) -> int:
    from edgetl.bench import harness as bench
    from edgetl.deploy.predictor import Predictor

    threads = bench.use_threads(a.threads)
    settings = bench.Settings(a.warmup, a.duration, a.min_iters)
    with Predictor(bundle) as predictor:
        frame = predictor.frame_size or a.frame_size or bench.CAMERA_FRAME
        jpegs = bench.load_jpegs(a.images, frame)
        cases = [
            case
            for batch in a.batch
            for case in bench.bundle_cases(predictor, Path(bundle).name, jpegs, batch, a.modes, threads)
        ]
        info = predictor.info
        inputs = (
            f"{len(bench.SAMPLE_TEXTS)} sample texts"
            if predictor.is_text
            else f"{len(jpegs)} images at {frame[0]}x{frame[1]}"
        )
        click.echo(
            f"{bundle}: {info['target']} on {info.get('device')}, precision {info.get('precision')}, "
            f"{threads} thread(s), {inputs}",
            err=True,
        )
        for line in (predictor.fidelity_line(), predictor.auto_line()):
            if line:
                click.echo(line, err=True)
        _check_output(predictor, jpegs)  # a model that answers NaN has no latency worth reporting
        results, interrupted = bench.run_cases(cases, settings, _progress)
    return _finish(results, interrupted, a.json_path, a.plot, f"edgetl bench {Path(bundle).name}")


def _check_output(predictor, jpegs: list[bytes]) -> None:
    """One prediction before timing: Predictor refuses a non-finite output (exit 2)."""
    from edgetl.bench import harness as bench

    if predictor.is_text:
        predictor.predict_text(bench.SAMPLE_TEXTS[0])
    else:
        predictor.predict_frame(bench.decode_image(jpegs[0]), path="the first benchmark image")


def bench_peers(model: Path, a: BenchArgs) -> int:
    from edgetl.bench import harness as bench
    from edgetl.compare import peers
    from edgetl.deploy.predictor import Predictor

    threads = bench.use_threads(a.threads)
    if len(a.batch) != 1:
        raise UserError("--peers: give one --batch (the peers are compared at one batch size)")
    jpegs = bench.load_jpegs(a.images, a.frame_size or bench.CAMERA_FRAME)
    frames = [bench.decode_image(j) for j in jpegs]
    say = lambda m: click.echo(m, err=True)  # noqa: E731
    with contextlib.ExitStack() as stack:
        src = stack.enter_context(peers.open_source(model))
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgetl-peers-")))
        cases, skipped = peers.peer_cases(src, frames, a.batch[0], threads, workdir, say)
        for path in a.bundles:
            predictor = stack.enter_context(Predictor(path))
            for case in bench.bundle_cases(
                predictor, f"edgetl {Path(path).name}", jpegs, a.batch[0], ["model"], threads
            ):
                case.fields["pipeline"] = "edgetl"
                cases.append(case)
        with _progress(f"{len(cases)} pipelines, {a.rounds} interleaved rounds", a.rounds * len(cases), "blocks") as t:
            results, interrupted = peers.run_interleaved(
                cases, a.rounds, a.duration, a.warmup, lambda n, total: t(n, n)
            )
    footer = [f"skipped {name}: {why}" for name, why in skipped]
    return _finish(
        results,
        interrupted,
        a.json_path,
        a.plot,
        f"edgetl bench --peers {model}",
        footer,
        skipped=[{"name": n, "reason": r} for n, r in skipped],
    )


def gate_compare(files: tuple[Path, Path], a: BenchArgs) -> int:
    from edgetl.bench.gate import compare_records, parse_threshold
    from edgetl.bench.report import load_results, write_json

    threshold = parse_threshold(a.max_regression)
    base, cand = (load_results(f) for f in files)
    verdicts = compare_records(base, cand, threshold, a.force, lambda m: click.echo(f"warning: {m}", err=True))
    for v in verdicts:
        click.echo(v.line())
    if a.json_path:
        write_json(a.json_path, {"format": "edgetl-gate/1", "verdicts": [v.to_json() for v in verdicts]})
    return 1 if any(v.regressed for v in verdicts) else 0


def gate_ab(bundles: tuple[Path, Path], args: BenchArgs) -> int:
    from edgetl.bench import harness as bench
    from edgetl.bench import report as bench_report
    from edgetl.bench.gate import ab_test, parse_threshold
    from edgetl.deploy.predictor import Predictor

    threshold = parse_threshold(args.max_regression)
    threads = bench.use_threads(args.threads)
    outcome, interrupted = [], False
    with Predictor(bundles[0]) as a, Predictor(bundles[1]) as b:
        jpegs = bench.load_jpegs(args.images, a.frame_size or args.frame_size or bench.CAMERA_FRAME)
        cases = [
            pair
            for size in args.batch
            for pair in zip(
                bench.bundle_cases(a, "baseline", jpegs, size, args.modes, threads),
                bench.bundle_cases(b, "candidate", jpegs, size, args.modes, threads),
                strict=True,
            )
        ]
        for base, cand in cases:  # Ctrl-C stops every remaining (mode, batch), not just the current one
            key = f"{cand.fields['mode']} b{cand.fields['batch']}"
            try:
                result = ab_test(base, cand, args.rounds, threshold, key=key)
            except KeyboardInterrupt:  # before a single round finished: nothing to judge
                interrupted = True
                break
            click.echo(result.verdict.line())
            outcome.append(result)
            if result.interrupted:
                interrupted = True
                break
    if args.json_path:
        bench_report.write_json(
            args.json_path,
            {
                "format": "edgetl-gate/1",
                "baseline": str(bundles[0]),
                "candidate": str(bundles[1]),
                "threads": threads,
                "cpu": bench.cpu_info(),
                "ab": [r.to_json() for r in outcome],
            },
        )
    if interrupted:
        click.echo("interrupted: the remaining comparisons were not run", err=True)
        return 130
    return 1 if any(r.verdict.regressed for r in outcome) else 0


PATH = click.Path(path_type=Path)


@click.command("bench", epilog=EXAMPLES)
@click.argument("bundle", required=False, type=click.Path(path_type=Path))
@click.option("--batch", default="1", show_default=True, help="Batch sizes, comma-separated (e.g. 1,8).")
@click.option(
    "--mode",
    default="model,end_to_end",
    show_default=True,
    help="model (Runner.infer) and/or end_to_end (JPEG -> label).",
)
@click.option("--threads", default=0, show_default=True, type=int, help="Pin to N CPUs (0 = all this process may use).")
@click.option("--duration", default=5.0, show_default=True, type=float, help="Minimum seconds timed per measurement.")
@click.option("--warmup", default=1.0, show_default=True, type=float, help="Seconds of untimed warm-up first.")
@click.option("--min-iters", default=50, show_default=True, type=int, help="Minimum timed iterations per measurement.")
@click.option(
    "--images",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Real photos (files/folders) to rotate; default: scikit-image's sample photos.",
)
@click.option(
    "--frame-size", default=None, help="HxW the images are brought to [default: 480x640, or the bundle's static size]."
)
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write all results as JSON.")
@click.option("--plot", type=click.Path(path_type=Path), help="Write a PNG plot of the results.")
@click.option(
    "--peers",
    type=click.Path(path_type=Path),
    metavar="MODEL.onnx",
    help="Time the model through every installed by-hand pipeline.",
)
@click.option(
    "--bundle",
    "bundles",
    multiple=True,
    type=click.Path(path_type=Path),
    help="With --peers: edgetl bundles to time alongside (repeatable).",
)
@click.option("--compare", nargs=2, type=PATH, metavar="BASE.json NEW.json", help="CI gate on two saved --json files.")
@click.option("--ab", nargs=2, type=PATH, metavar="BASE NEW", help="CI gate: time two bundles interleaved in this job.")
@click.option("--rounds", default=7, show_default=True, type=int, help="--ab/--peers: interleaved rounds.")
@click.option("--max-regression", default="10%", show_default=True, help="--compare/--ab: allowed slowdown of p50.")
@click.option("--force", is_flag=True, help="--compare: compare even when hardware or settings differ.")
@click.pass_context
def bench_cmd(ctx: click.Context, bundle: Path | None, **opts) -> int:
    """Latency you can trust: warm-up, then at least --duration seconds and --min-iters iterations over
    several real images; p50/p90/p95/p99, throughput, and what actually ran (precision, threads, CPU)."""
    chosen = [
        name
        for name, value in (
            ("BUNDLE", bundle),
            ("--peers", opts["peers"]),
            ("--compare", opts["compare"]),
            ("--ab", opts["ab"]),
        )
        if value
    ]
    if len(chosen) != 1:
        raise UserError(
            f"bench: give exactly one of BUNDLE, --peers, --compare, --ab (got {', '.join(chosen) or 'none'})"
        )
    if opts["bundles"] and not opts["peers"]:
        raise UserError("--bundle: only used with --peers; to time one bundle give it as the argument")
    mode_given = ctx.get_parameter_source("mode") != click.core.ParameterSource.DEFAULT
    args = BenchArgs.from_cli(opts, mode_given, ab=bool(opts["ab"]))
    if bundle:
        return bench_bundle(bundle, args)
    if opts["peers"]:
        return bench_peers(opts["peers"], args)
    if opts["compare"]:
        return gate_compare(opts["compare"], args)
    return gate_ab(opts["ab"], args)


COMMANDS = [bench_cmd]
