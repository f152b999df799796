"""Claim: extraction scales out without a cost of its own: on this machine, `edgetl extract --ray` (a local Ray
cluster) reaches at least 0.9x the best single-machine rate, and the cache N jobs write costs what its features do.

Whole `edgetl extract` processes, each into an empty cache, on a folder of real photos (JPEG/PNG crops of
scikit-image's photographs) at 224 px, EfficientNet-Lite0 FP32 (what `edgetl train --cache-features` extracts):

- 1 process       torch's default threads (all cores)
- 2 shards        `--shard 0/2` and `--shard 1/2` at the same time, `--threads 1` each
- ray 1 worker    `--ray auto --workers 1 --threads-per-worker <cores>`
- ray 2 workers   `--ray auto --workers 2 --threads-per-worker 1`

Per configuration: images/s over the extraction stage (decode + backbone + cache writes: what grows with the
data) and end to end (whole processes, Python start and listing included), Ray's start-up (joining or starting
the cluster) and per-worker overhead (the first batch of each actor: model load + that batch), cache bytes per
image. Also the single-core rates of the stages a 10-million-image plan is made of: decode + preprocess, sha256
of the files, segment writes. Rounds are interleaved; ratios are per round (median). Run it alone on the machine.
Writes benchmarks/results/scale.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import write_result

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root: tests.photos

from tests.photos import make_photo_folder  # noqa: E402

ROUNDS = 2
PER_CLASS = 150  # 6 classes: 900 photos, about 15 s of backbone per configuration on 2 cores
EDGETL = [sys.executable, "-m", "edgetl", "extract", "--no-progress", "--json", "--img-size", "224"]


def run(data: Path, cache: Path, *flags: str) -> tuple[dict, float]:
    t = time.perf_counter()
    done = subprocess.run(
        [*EDGETL, "--data", str(data), "--cache-dir", str(cache), *flags],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "RAY_ADDRESS": ""},
    )
    if done.returncode:
        raise SystemExit(f"edgetl extract {' '.join(flags)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout), time.perf_counter() - t


def configuration(name: str, data: Path, work: Path) -> dict:
    cache = work / name.replace(" ", "-")
    shutil.rmtree(cache, ignore_errors=True)
    cores = str(os.cpu_count())
    if name == "2 shards":
        t = time.perf_counter()
        jobs = [
            subprocess.Popen(
                [*EDGETL, "--data", str(data), "--cache-dir", str(cache), "--shard", f"{i}/2", "--threads", "1"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]
        reports = [json.loads(j.communicate()[0]) for j in jobs]
        wall = time.perf_counter() - t
        images = sum(r["rows"][0]["computed"] for r in reports)
        extract_s = max(r["rows"][0]["seconds"] for r in reports)  # the two run side by side
        steady = sum(r["rows"][0]["steady_images_per_s"] for r in reports)
        first_s = max(r["rows"][0]["first_batch"][0] for r in reports)
        report = reports[0]
    else:
        flags = {
            "1 process": (),
            "ray 1 worker": ("--ray", "auto", "--workers", "1", "--threads-per-worker", cores),
            "ray 2 workers": ("--ray", "auto", "--workers", "2", "--threads-per-worker", "1"),
        }[name]
        report, wall = run(data, cache, *flags)
        row = report["rows"][0]
        images, extract_s, steady, first_s = (
            row["computed"],
            row["seconds"],
            row["steady_images_per_s"],
            row["first_batch"][0],
        )
    from edgetl.train.cache import list_contexts

    ctx = list_contexts(cache)[0]
    ray = (report["timing"].get("ray") or [{}])[0]
    return {
        "images": images,
        "extract_s": extract_s,
        "images_per_s": images / extract_s,
        "steady_images_per_s": steady,  # after the first batch: the rate a large data set runs at
        "to_first_batch_s": first_s,  # start-up: Ray's pipeline and actors, model load, the first batch
        "wall_s": wall,
        "images_per_s_end_to_end": images / wall,
        "ray_connect_s": report["timing"].get("ray_connect_s"),
        "ray_to_first_batch_s": ray.get("to_first_batch_s"),
        "ray_actor_first_batch_s": ray.get("actor_first_batch_s"),
        "cache_bytes_per_image": ctx["bytes"] / ctx["entries"],
    }


def stage_rates(data: Path) -> dict:
    """Single-thread rates of decode + preprocess, hashing and segment writes on the same photos."""
    from edgetl.data import load_dataset
    from edgetl.models.backbones import describe_backbone
    from edgetl.preprocess import Preprocess
    from edgetl.train.features import decode_batch
    from edgetl.train.segments import SegmentWriter

    ds = load_dataset(str(data), 0, False, print)
    items = ds.train + ds.val
    pre = Preprocess.from_dict({**describe_backbone("efficientnet_lite0").preprocess.to_dict(), "size": [224, 224]})
    t = time.perf_counter()
    for i in range(0, len(items), 16):
        decode_batch(items[i : i + 16], pre)
    decode = len(items) / (time.perf_counter() - t)
    blobs = [Path(it.path).read_bytes() for it in items]
    t = time.perf_counter()
    for b in blobs:
        hashlib.sha256(b).digest()
    hashing = sum(map(len, blobs)) / (time.perf_counter() - t)
    feats = np.random.default_rng(0).standard_normal((64, 1280)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        w = SegmentWriter(Path(tmp))
        t = time.perf_counter()
        for i in range(50):
            w.append(b"".join(hashlib.sha256(f"{i}-{j}".encode()).digest() for j in range(64)), feats)
        write = 50 * 64 / (time.perf_counter() - t)
        w.close()
    return {
        "decode_preprocess_images_per_s_1_thread": decode,
        "file_bytes_per_image": sum(map(len, blobs)) / len(blobs),
        "sha256_mb_per_s": hashing / 1e6,
        "segment_write_images_per_s": write,
    }


def r_has(rounds: list[dict], name: str, key: str) -> bool:
    return all(r[name].get(key) is not None for r in rounds)


def break_even(rounds: list[dict], against: str) -> float | None:
    """Images from which Ray with 2 workers finishes before `against`: its start-up paid back by its steady rate
    (None: it never does, its steady rate is not higher)."""
    med = {n: {k: statistics.median(r[n][k] for r in rounds) for k in ("steady_images_per_s", "to_first_batch_s")}
           for n in (against, "ray 2 workers")}  # fmt: skip
    ray, other = med["ray 2 workers"], med[against]
    gain = 1 / other["steady_images_per_s"] - 1 / ray["steady_images_per_s"]  # seconds saved per image
    return (ray["to_first_batch_s"] - other["to_first_batch_s"]) / gain if gain > 0 else None


def main() -> None:
    from importlib.metadata import version

    from edgetl.machine import cpu_info

    names = ["1 process", "2 shards", "ray 1 worker", "ray 2 workers"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = make_photo_folder(work / "photos", per_class=PER_CLASS, size=256)
        rounds = []
        for r in range(ROUNDS):
            order = names if r % 2 == 0 else names[::-1]
            rounds.append({n: configuration(n, data, work) for n in order})
            print(json.dumps({n: round(v["steady_images_per_s"], 1) for n, v in rounds[-1].items()}), flush=True)
        stages = stage_rates(data)
    best_single = [max(r["1 process"]["steady_images_per_s"], r["2 shards"]["steady_images_per_s"]) for r in rounds]
    result = {
        "claim": "Ray extraction on this machine reaches >= 0.9x the best single-machine rate after start-up; "
        "its start-up is a fixed cost per run (to_first_batch_s), paid back on large data sets",
        "rounds": rounds,
        "median": {
            n: {
                k: statistics.median(r[n][k] for r in rounds)
                for k in (
                    "images_per_s",
                    "steady_images_per_s",
                    "to_first_batch_s",
                    "wall_s",
                    "images_per_s_end_to_end",
                    "ray_connect_s",
                    "cache_bytes_per_image",
                )
                if r_has(rounds, n, k)
            }
            for n in names
        },  # fmt: skip
        "ray_2_workers_vs_best_single_steady": statistics.median(
            r["ray 2 workers"]["steady_images_per_s"] / b for r, b in zip(rounds, best_single, strict=True)
        ),
        "ray_1_worker_vs_best_single_steady": statistics.median(
            r["ray 1 worker"]["steady_images_per_s"] / b for r, b in zip(rounds, best_single, strict=True)
        ),
        "ray_2_workers_vs_1_process_end_to_end": statistics.median(
            r["ray 2 workers"]["images_per_s_end_to_end"] / r["1 process"]["images_per_s_end_to_end"] for r in rounds
        ),
        "ray_2_workers_break_even_images": {n: break_even(rounds, n) for n in ("1 process", "2 shards")},
        "stages": stages,
        "images": rounds[0]["1 process"]["images"],
        "size": 224,
        "backbone": "efficientnet_lite0 FP32 (PyTorch, channels-last, BatchNorm folded)",
        "machine": cpu_info(),
        "versions": {"ray": version("ray"), "torch": version("torch")},
    }
    write_result("scale", result)
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=1))


if __name__ == "__main__":
    main()
