"""CLI: `edgetl train` and `edgetl cache ls|verify|prune`."""

from __future__ import annotations

from pathlib import Path

import click

from edgetl.config import HEADS, SOLVERS, QuantizeCfg, TrainCfg
from edgetl.contract import TARGETS

TRAIN, QUANT = TrainCfg(), QuantizeCfg()  # the options' defaults are the configs' own, never typed twice


def parse_unfreeze(value: str) -> int:
    """`--unfreeze N|all` -> a block count (-1: all)."""
    from edgetl.errors import UserError

    if str(value).strip().lower() == "all":
        return -1
    try:
        return int(value)
    except ValueError:
        raise UserError(f"--unfreeze {value}: give a block count, all, or 0 (frozen)") from None


def switch(flags: str, default: bool, help: str):
    """An on/off option (`--x/--no-x`) showing its default."""
    return click.option(flags, default=default, show_default=True, help=help)


EXAMPLES_TRAIN = """
\b
Examples:
  edgetl train --cache-features                        # ImageNet EfficientNet-Lite0 on scikit-learn's digits
  edgetl train --data ~/photos/parts --cache-features --out runs/parts
  edgetl train --data ~/photos/parts --head mlp --epochs 30     # AdamW, at least 300 steps
  edgetl train --cache-features --img-size 224 --seed 3 --cache-dir /data/edgetl-cache
  edgetl train --backbone timm:resnet18 --weights resnet18.safetensors --data ~/photos/parts
  edgetl train --cache-features --quantize int8 --target openvino --calib-size 300
  edgetl train --quantize int8 --target openvino,onnxruntime --out runs/d   # two INT8 layouts, one head each
  edgetl train --config parts.yaml --seed 3       # options from a YAML file, flags win
"""


def load_config_file(ctx: click.Context, param, path: Path | None) -> Path | None:
    """`--config FILE.yaml`: its keys become the defaults, so flags given on the command line still win."""
    if path is None:
        return None
    import yaml

    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise click.BadParameter(f"{path}: not a readable YAML file ({str(e).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise click.BadParameter(f"{path}: expected a mapping of option: value")
    names = {p.name for p in ctx.command.params}
    options = {str(k).replace("-", "_"): v for k, v in values.items()}
    unknown = sorted(set(options) - names - {"config"})
    if unknown:
        raise click.BadParameter(f"{path}: unknown option(s) {', '.join(unknown)}; see edgetl train --help")
    ctx.default_map = {**(ctx.default_map or {}), **options}
    return Path(path)


@click.command("train", epilog=EXAMPLES_TRAIN)
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=load_config_file,
    is_eager=True,
    expose_value=False,
    help="YAML file of options (e.g. `data: ~/photos/parts`); flags override it.",
)
@click.option(
    "--data", default=TRAIN.data, show_default=True, help="'digits', an ImageFolder tree, or its URL (s3://...)."
)
@click.option("--backbone", default=TRAIN.backbone, show_default=True, help="Registered name or timm:NAME.")
@click.option("--weights", type=click.Path(dir_okay=False), help="Weights file (.safetensors or .pth state dict).")
@click.option("--img-size", type=int, help="Square input size [default: 64 for digits, else the backbone's].")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Run folder [default: runs/<time>].")
@switch(
    "--cache-features/--no-cache-features",
    TRAIN.cache_features,
    "Run the backbone once per image and keep features on disk (off: backbone in the loop).",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="EDGETL_CACHE_DIR",
    help="Feature cache folder [default: ~/.cache/edgetl/features, or $EDGETL_CACHE_DIR].",
)
@click.option("--head", type=click.Choice(HEADS), default=TRAIN.head, show_default=True)
@click.option(
    "--solver",
    type=click.Choice(SOLVERS),
    default=TRAIN.solver,
    show_default=True,
    help="lbfgs: logistic regression fitted to convergence (linear head); adamw: mini-batch epochs, any head; "
    "auto: lbfgs for a linear head on cached features, else adamw.",
)
@click.option(
    "--epochs", type=int, default=TRAIN.epochs, show_default=True, help="AdamW epochs (at least 300 steps in all)."
)
@click.option("--batch-size", type=int, default=TRAIN.batch_size, show_default=True)
@click.option("--lr", type=float, default=TRAIN.lr, show_default=True)
@click.option(
    "--patience",
    type=int,
    default=TRAIN.patience,
    show_default=True,
    help="AdamW: early stopping on val accuracy; 0 = off.",
)
@switch(
    "--balanced/--no-balanced",
    TRAIN.balanced,
    "Weight the loss by inverse class frequency (no effect when classes have equal counts).",
)
@click.option("--seed", type=int, default=TRAIN.seed, show_default=True)
@click.option("--threads", type=int, help="CPU threads for the backbone and training.")
@click.option("--strict", is_flag=True, help="Stop (exit 2) at the first unusable image instead of skipping it.")
@click.option("--overwrite", is_flag=True, help="Allow --out to name a folder that already holds a run.")
@click.option(
    "--quantize",
    type=click.Choice(["none", "int8"]),
    default="none",
    show_default=True,
    help="INT8 backbone: the head is trained on the features of the backbone that ships.",
)
@click.option(
    "--target",
    default=QUANT.target,
    show_default=True,
    metavar="|".join(TARGETS) + "[,...]",
    help="Runtime the INT8 backbone is laid out for (QDQ layout per target); several, comma-separated, train one "
    "head per layout from the same FP32 features (the others in OUT/layouts/TARGET, for `compile --target auto`).",
)
@click.option(
    "--calib-size", type=int, default=QUANT.calib_size, show_default=True, help="Training images used to calibrate."
)
@click.option(
    "--calib-method",
    default=QuantizeCfg.calib_method,
    show_default=True,
    help="openvino/tensorrt (NNCF): mean_minmax|minmax|percentile|histogram; onnxruntime: "
    "minmax|percentile|entropy|distribution; auto = the first of those.",
)
@click.option("--quant-ignore", multiple=True, metavar="NAME", help="Keep this layer in floating point (repeatable).")
@switch(
    "--quant-auto-fallback/--no-quant-auto-fallback",
    QUANT.auto_fallback,
    "When INT8 costs more than 1 point: find the layers that cause the drop and keep them FP.",
)
@click.option(
    "--quant-overflow-fix",
    is_flag=True,
    help="7-bit weights in every layer, so CPUs without VNNI (AVX2 only) compute the INT8 model faithfully "
    "(their 16-bit sums would saturate); costs a little precision everywhere.",
)
@click.option(
    "--unfreeze",
    default="0",
    show_default=True,
    callback=lambda ctx, param, value: parse_unfreeze(value),
    help="Fine-tune the last N blocks (Lite0: blocks.0..6, 7 in all; MiniLM: transformer layers "
    "encoder.layer.0..5) + the head on a cut-point cache, after the linear probe; 'all' trains the whole network "
    "(no cache possible); 0 = frozen.",
)
@click.option("--wise", default=TRAIN.wise, show_default=True, help="WiSE-FT: auto, none, or an alpha in [0, 1].")
@click.option(
    "--ft-lr",
    type=float,
    help="Fine-tuning learning rate (AdamW) [default: 1e-3; 1e-4 with --unfreeze all or a text encoder].",
)
@click.option("--ft-epochs", type=int, default=TRAIN.ft_epochs, show_default=True, help="Fine-tuning epochs.")
@click.option(
    "--ft-prefix",
    type=click.Choice(["fp32", "int8"]),
    default=TRAIN.ft_prefix,
    show_default=True,
    help="With --quantize int8: train the blocks on the FP32 prefix's activations and quantize the fine-tuned "
    "network after (measured better), or on the INT8 prefix that ships.",
)
@click.option("--compare-fp32", is_flag=True, help="Also time PyTorch eager FP32 extraction on the same images.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def train_cmd(**o) -> None:
    """Train a classification head on a frozen (optionally INT8) pretrained backbone."""
    from edgetl.config import TrainCfg
    from edgetl.train.run import run_train
    from edgetl.train.summary import print_train_summary

    record = run_train(TrainCfg.from_cli(o))
    print_train_summary(record)
    if (record.get("quantize") or {}).get("status") == "collapsed":
        raise SystemExit(1)  # the run is written for diagnosis, but a broken INT8 model must not pass silently


@click.group("cache")
def cache_group() -> None:
    """Inspect and maintain the on-disk feature cache.

    \b
    edgetl cache ls
    edgetl cache verify --cache-dir /data/edgetl-cache
    edgetl cache prune --older-than 30
    """


cache_dir_option = click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="EDGETL_CACHE_DIR",
    help="Feature cache folder [default: ~/.cache/edgetl/features, or $EDGETL_CACHE_DIR].",
)


def _root(cache_dir: Path | None) -> Path:
    from edgetl.train.cache import default_cache_dir

    return Path(cache_dir).expanduser() if cache_dir else default_cache_dir()


@cache_group.command("ls")
@cache_dir_option
def cache_ls(cache_dir: Path | None) -> None:
    """List cached extraction contexts (backbone, precision, segments, entries, size).

    \b
    edgetl cache ls
    edgetl cache ls --cache-dir /data/edgetl-cache
    """
    from edgetl.train.cache import list_contexts
    from edgetl.train.summary import print_cache_table

    print_cache_table(_root(cache_dir), list_contexts(_root(cache_dir)))


@cache_group.command("verify")
@cache_dir_option
def cache_verify(cache_dir: Path | None) -> None:
    """Check every block's and bad-file marker's checksum; exit 1 when any is corrupt (read-only).

    \b
    edgetl cache verify
    edgetl cache verify --cache-dir /data/edgetl-cache && echo cache ok
    """
    from edgetl.train.cache import verify

    r = verify(_root(cache_dir))
    for where in r.corrupt_blocks:
        click.echo(f"corrupt block: {where} ({r.why[where]})")
    for path in r.torn_tails:
        click.echo(f"torn index tail: {path} (a writer killed, or busy, mid-append; the blocks before it are fine)")
    for path in r.corrupt_markers:
        click.echo(f"corrupt: {path}")
    click.echo(
        f"{r.segments} segments, {r.blocks} blocks, {r.entries} entries, {r.markers} bad-file markers checked in "
        f"{_root(cache_dir)}: {len(r.corrupt)} corrupt"
    )
    if r.corrupt:
        click.echo(
            "fix: edgetl cache prune (compacts damaged segments not written for an hour and removes corrupt markers; "
            "runs meanwhile skip what is damaged and recompute it)"
        )
        raise SystemExit(1)


@cache_group.command("prune")
@cache_dir_option
@click.option("--older-than", type=float, metavar="DAYS", help="Also remove contexts unused for DAYS days.")
@click.option("--all", "everything", is_flag=True, help="Remove every cached feature.")
def cache_prune(cache_dir: Path | None, older_than: float | None, everything: bool) -> None:
    """Compact damaged segments, remove corrupt markers and leftovers of killed runs (and old contexts).

    \b
    edgetl cache prune                     # damaged segments, corrupt markers, temp files of killed runs
    edgetl cache prune --older-than 30     # and everything unused for 30 days
    edgetl cache prune --all               # empty the cache
    """
    from edgetl.train.cache import prune

    r = prune(_root(cache_dir), older_than, everything)
    click.echo(
        f"removed {r['contexts']} contexts, {r['corrupt_markers']} corrupt markers, {r['temp_files']} temp files; "
        f"compacted {r['compacted_segments']} segments ({r['corrupt_blocks']} corrupt blocks, {r['torn_tails']} torn "
        f"index tails dropped); {r['bytes'] / 1e6:.1f} MB freed"
    )
    if r["busy_segments"]:
        click.echo(
            f"left {r['busy_segments']} damaged segments written in the last hour alone (a writer may still be on "
            "them): prune again later"
        )


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/demo"), show_default=True)
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), envvar="EDGETL_CACHE_DIR")
def demo_cmd(out: Path, cache_dir: Path | None) -> None:
    """The whole pipeline on the built-in digits: INT8 train, export, compile, package, predict from files.

    \b
    edgetl demo                 # what `make demo` runs; writes runs/demo/demo.json
    """
    from edgetl.cli.demo import run_demo

    run_demo(out, cache_dir)


COMMANDS = [train_cmd, cache_group, demo_cmd]
