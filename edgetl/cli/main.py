"""The `edgetl` command. Each command parses options, builds a config and calls ONE library function.

Commands live in small modules (train, export, deploy, bench in this package); this file only wires them up
and turns user errors into one line and exit code 2. Anything else is a bug in edgetl and keeps its traceback;
`--debug` (or EDGETL_DEBUG=1) also prints the traceback behind a user error (e.g. what a runtime raised).
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
import traceback

import click

from edgetl import __version__
from edgetl.cli import FINISHED
from edgetl.errors import UserError

# Command -> the module that defines it. A command's module is imported only when that command runs (or for
# --help), so `edgetl predict` never pays for importing the training commands' modules (tests/cli check the table
# against every module's COMMANDS).
COMMAND_MODULES = {
    "train": "edgetl.cli.train",
    "cache": "edgetl.cli.train",
    "demo": "edgetl.cli.train",
    "extract": "edgetl.cli.extract",
    "export": "edgetl.cli.export",
    "compile": "edgetl.cli.deploy",
    "package": "edgetl.cli.deploy",
    "predict": "edgetl.cli.deploy",
    "doctor": "edgetl.cli.deploy",
    "build-engine": "edgetl.cli.deploy",
    "choose": "edgetl.cli.deploy",
    "bench": "edgetl.cli.bench",
    "deploy": "edgetl.cli.remote",
    "device": "edgetl.cli.remote",
    "probe": "edgetl.cli.probe",
}


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use (click's documented lazy-loading pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*COMMAND_MODULES, *(name for name in self.commands if name not in COMMAND_MODULES)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        module = COMMAND_MODULES.get(name)
        if module is None:  # a command added with add_command
            return super().get_command(ctx, name)
        return {c.name: c for c in importlib.import_module(module).COMMANDS}[name]


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="edgetl")
@click.option("--debug", is_flag=True, help="On an error, also print the traceback behind it (or EDGETL_DEBUG=1).")
def cli(debug: bool) -> None:
    """Transfer learning for the edge: frozen INT8 backbone, cached features, one fused ONNX graph,
    compiled for OpenVINO, TensorRT or ONNX Runtime.

    \b
    edgetl train --cache-features                 # ImageNet EfficientNet-Lite0 on scikit-learn's digits
    edgetl export runs/demo                       # one fused ONNX graph + parity ladder
    edgetl compile runs/demo/model.onnx --target openvino --out build/ov
    edgetl package build/ov --out demo-ov.tar.gz
    edgetl predict demo-ov.tar.gz photo.jpg       # on the device: no torch needed
    """


# One-shot commands, whose whole run is mostly start-up: `main` tunes their process before anything is imported
# (process_start) and `edgetl.cli.started` ends the start-up.
ONE_SHOT = ("predict",)


def process_start(args: list[str]) -> None:
    """Process settings for a one-shot command, made only where `main` is the process's entry point, before the
    command imports numpy or a runtime (a one-image `edgetl predict` is ~0.25 s, benchmarks/startup.py):
    - the cyclic garbage collector is off until the model is loaded (`edgetl.cli.started`): importing numpy, Pillow,
      the runtime and edgetl makes dozens of collections that free nothing (~7 ms);
    - numpy's OpenBLAS gets one thread: numpy only prepares inputs here, and OpenBLAS's workers spin for a while after
      numpy loads, on the cores the runtime compiles and runs on (~0.1 s of CPU on 2 cores). A value the user set in
      OPENBLAS_NUM_THREADS is kept."""
    command = next((a for a in args if not a.startswith("-")), None)  # the group's own options are all flags
    if command in ONE_SHOT:
        gc.disable()
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def debugging(argv: list[str] | None) -> bool:
    args = sys.argv[1:] if argv is None else argv
    return os.environ.get("EDGETL_DEBUG", "") not in ("", "0") or "--debug" in args[:1]


def quick_exit() -> None:
    """Exit 0 without the interpreter's teardown (freeing every module's objects, joining the runtime's and
    NumPy's thread pools): ~40-60 ms of a one-image `edgetl predict` of ~0.35 s (benchmarks/startup.py), as
    compilers skip freeing at exit. Output is flushed first; a flush that fails (a closed pipe) takes the normal
    exit, which reports it."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        sys.exit(0)
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    """The console script and `python -m edgetl` (argv None: the process's own arguments). Called with argv (tests,
    scripts), it returns or raises SystemExit as usual, and never ends the process early."""
    if argv is None:
        process_start(sys.argv[1:])
    try:
        rv = cli.main(args=argv, prog_name="edgetl", standalone_mode=False)
    except UserError as e:
        if debugging(argv):
            cause = e.__cause__ or e.__context__
            traceback.print_exception(cause if cause is not None else e, file=sys.stderr)
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    if rv is FINISHED and argv is None:
        quick_exit()
    # A command may return its exit code; None (most commands) means success. Without standalone mode click
    # returns it instead of exiting (and returns its exit code for --help/--version).
    sys.exit(rv if isinstance(rv, int) and not isinstance(rv, bool) else 0)
