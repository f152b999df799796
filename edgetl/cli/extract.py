"""CLI: `edgetl extract`: fill the feature cache without training (one process, a --shard of N jobs, or Ray)."""

from __future__ import annotations

import click

from edgetl.cli.train import train_cmd

# Options that decide which features a run needs: taken from `edgetl train` itself, so the two never drift.
SHARED = (
    "data",
    "backbone",
    "weights",
    "img_size",
    "cache_dir",
    "seed",
    "threads",
    "strict",
    "quantize",
    "target",
    "calib_size",
    "calib_method",
    "quant_ignore",
    "quant_overflow_fix",
    "unfreeze",
    "ft_prefix",
    "no_progress",
)

EXAMPLES = """
\b
Examples:
  edgetl extract --data ~/photos --cache-dir /shared/edgetl-cache                 # then: edgetl train ... (all hits)
  edgetl extract --data ~/photos --shard 3/16 --cache-dir /shared/edgetl-cache    # job 3 of 16 (slurm, k8s, ...)
  edgetl extract --data s3://bucket/photos --cache-dir /shared/cache --ray auto --quantize int8
  edgetl extract --data ~/photos --ray 10.0.0.5:6379 --workers 8 --threads-per-worker 2
"""


@click.command("extract", epilog=EXAMPLES)
@click.option("--shard", metavar="I/N", help="Extract only the I-th (0-based) of N equal slices of the data.")
@click.option(
    "--ray", metavar="auto|ADDRESS", help="Run on Ray: auto (the running cluster, else a local one) or HOST:PORT."
)
@click.option("--workers", type=int, help="Ray: backbone actors [default: the cluster's CPUs / threads per worker].")
@click.option("--threads-per-worker", type=int, default=1, show_default=True, help="Ray: CPU threads per actor.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (for scripts) instead of a table.")
def extract_cmd(as_json: bool, **o) -> None:
    """Compute and cache backbone features for --data, as `edgetl train --cache-features` would, without training."""
    from edgetl.config import TrainCfg
    from edgetl.train.extract import ScaleCfg, run_extract
    from edgetl.train.features import Shard
    from edgetl.train.summary import print_extract_summary

    scale = ScaleCfg(Shard.parse(o.pop("shard")), o.pop("ray"), o.pop("workers"), o.pop("threads_per_worker"))
    o["quant_auto_fallback"] = False  # the first INT8 model's features; train computes a fallback's when it needs one
    report = run_extract(TrainCfg.from_cli(o), scale)
    if as_json:
        import json

        click.echo(json.dumps(report, indent=1, default=str))
    else:
        print_extract_summary(report)


extract_cmd.params[:0] = [p for p in train_cmd.params if p.name in SHARED]

COMMANDS = [extract_cmd]
