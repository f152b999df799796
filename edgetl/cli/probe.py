"""CLI: `edgetl probe`, "is transfer worth it here?" before any fine-tuning (edgetl.train.probe)."""

from __future__ import annotations

from pathlib import Path

import click

from edgetl.config import TrainCfg

TRAIN = TrainCfg()  # defaults are the config's own, as in `edgetl train`

# The options `edgetl probe` shares with `edgetl train`: same names, defaults and meaning (a list so `train` can
# adopt it; applied bottom-up by `shared_options`).
SHARED_OPTIONS = [
    click.option(
        "--data",
        default=TRAIN.data,
        show_default=True,
        help="'digits', an ImageFolder tree, or its URL (s3://, gs://, file://).",
    ),
    click.option("--backbone", default=TRAIN.backbone, show_default=True, help="Registered name or timm:NAME."),
    click.option("--weights", type=click.Path(dir_okay=False), help="Weights file (.safetensors or .pth state dict)."),
    click.option("--img-size", type=int, help="Square input size [default: 64 for digits, else the backbone's]."),
    click.option("--seed", type=int, default=TRAIN.seed, show_default=True),
    click.option(
        "--cache-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="EDGETL_CACHE_DIR",
        help="Feature cache folder [default: ~/.cache/edgetl/features, or $EDGETL_CACHE_DIR].",
    ),
    click.option("--threads", type=int, help="CPU threads for the backbone and training."),
    click.option("--strict", is_flag=True, help="Stop (exit 2) at the first unusable image instead of skipping it."),
    click.option("--no-progress", is_flag=True, help="No progress bars."),
]


def shared_options(fn):
    for option in reversed(SHARED_OPTIONS):
        fn = option(fn)
    return fn


EXAMPLES = """
\b
Examples:
  edgetl probe                                   # Lite0 on the built-in digits, 64x64
  edgetl probe --data ~/scans --json probe.json
  edgetl probe --data ~/scans --out runs/scans   # -> runs/scans/probe.json
  edgetl probe --data ~/scans --backbone timm:resnet18 --weights resnet18.safetensors --img-size 128
  edgetl probe --data ~/scans --scratch-steps 0  # no from-scratch baseline (and no 'gains little' verdict)
"""


@click.command("probe", epilog=EXAMPLES)
@shared_options
@click.option("--k", type=int, default=10, show_default=True, help="Neighbours of the kNN vote.")
@click.option("--folds", type=int, default=5, show_default=True, help="Stratified folds of the kNN accuracy.")
@click.option(
    "--scratch-steps",
    type=int,
    help="AdamW steps of the from-scratch CNN [default: 1000]; 0 skips it.",
)
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write the numbers and verdict as JSON.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Also write OUT/probe.json.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --json file or OUT/probe.json.")
def probe_cmd(**o) -> None:
    """Is transfer worth it here? kNN, linear probe and LogME on the frozen backbone's cached features, and a
    small CNN trained from scratch on the same split; one verdict: frozen is enough / fine-tune the last
    blocks / transfer gains little."""
    from edgetl.train.probe import ProbeCfg, print_probe_summary, run_probe

    data = o["data"] if o["data"] == "digits" or "://" in o["data"] else str(Path(o["data"]).expanduser().resolve())
    train = TrainCfg(
        data=data,
        backbone=o["backbone"],
        weights=o["weights"],
        img_size=o["img_size"],
        seed=o["seed"],
        cache_dir=o["cache_dir"],
        threads=o["threads"],
        strict=o["strict"],
        progress=not o["no_progress"],
    )
    cfg = ProbeCfg(train, o["k"], o["folds"], o["scratch_steps"], o["out"], o["json_path"], o["overwrite"])
    print_probe_summary(run_probe(cfg))


COMMANDS = [probe_cmd]
