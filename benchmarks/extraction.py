"""Claim: edgetl's cold feature extraction is at least as fast as a plain by-hand timm loop, and INT8 (OpenVINO)
extraction is >= 5x that loop, at 64 px (digits) and at 224 px (real photos, JPEG files on disk).

In one process, alternating rounds so drift hits both sides alike:
- by hand: the simplest script a user writes: timm `tf_efficientnet_lite0` with the same weights, NCHW, batch 64,
  torch's default threads, `forward_features` + pooling, on the SAME preprocessed inputs already in memory
  (decoding is not timed for it: the stricter bar);
- edgetl FP32: `Pipeline.features()` into an empty cache: decode + preprocess + backbone + hashing + shard writes;
- edgetl INT8: the same into an empty cache with the INT8 backbone in OpenVINO. Model construction is outside the
  timing on every side: the by-hand model is built before its loop, the INT8 model is quantized and compiled
  once before the rounds (compile time reported on its own: OpenVINO compiles once per run).
Images/s per round; the ratio is per round (median over rounds). Run it alone on the machine.
Writes benchmarks/results/extraction.json.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import write_result

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root: tests.photos

from tests.photos import make_photo_folder  # noqa: E402

ROUNDS = 3
BY_HAND_BATCH = 64


def by_hand(x: np.ndarray) -> float:
    """images/s of the plain loop (model built outside the timing, like a user's script would)."""
    import timm
    import torch

    from edgetl.models.backbones import build_backbone

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0).eval()
    model.load_state_dict(build_backbone("efficientnet_lite0").model.state_dict())
    xt = torch.from_numpy(x)
    t = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(xt), BY_HAND_BATCH):
            model(xt[i : i + BY_HAND_BATCH])
    return len(x) / (time.perf_counter() - t)


def edgetl_cold(p, make_extractor, cache_root: Path) -> tuple[float, int]:
    """images/s of edgetl's extraction stage into an empty cache (a fresh folder every round)."""
    shutil.rmtree(cache_root, ignore_errors=True)
    p.cache_dir, p.caches = cache_root, []
    t = time.perf_counter()
    got = p.features(make_extractor())
    dt = time.perf_counter() - t
    assert got.images == len(p.ds.train) + len(p.ds.val), "the cache was not cold"
    return got.images / dt, got.images


def case(name: str, cfg, tmp: Path) -> dict:
    from edgetl.train.features import decode
    from edgetl.train.int8 import Int8Run
    from edgetl.train.pipeline import Pipeline

    p = Pipeline(cfg)
    _, x = decode(p.ds.train + p.ds.val, p.pre, p.skip)  # the by-hand loop's inputs: the same images
    q = Int8Run(p)
    q.models = tmp / f"{name}-models"  # INT8 model built once here, outside the timing
    q.models.mkdir(parents=True)
    qcfg = cfg.quantize
    items, calib = q.calibration()
    q.int8_onnx(qcfg, items, calib)
    p.backbone()  # built outside the timing, as by hand
    int8 = q.extractor(qcfg, items, calib)
    t = time.perf_counter()
    int8(x[:1])  # compile
    compile_s = time.perf_counter() - t
    rounds = []
    for r in range(ROUNDS):
        hand = by_hand(x)
        fp32, n = edgetl_cold(p, p.fp32_extractor, tmp / f"{name}-cache-{r}")
        i8, _ = edgetl_cold(p, lambda: int8, tmp / f"{name}-cache-int8-{r}")
        rounds.append({"by_hand": hand, "edgetl_fp32": fp32, "edgetl_int8_openvino": i8})
        print(f"{name} round {r}: by hand {hand:.0f} img/s, edgetl FP32 {fp32:.0f}, INT8 {i8:.0f}", flush=True)
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    return {
        "images": n,
        "input_size": list(p.pre.size),
        "edgetl_batch": p.extract_batch,
        "int8_compile_s": compile_s,
        "int8_precision_used": int8.precision_used,
        "by_hand_batch": BY_HAND_BATCH,
        "rounds": rounds,
        "median_images_per_s": med,
        "fp32_vs_by_hand": statistics.median(r["edgetl_fp32"] / r["by_hand"] for r in rounds),
        "int8_vs_by_hand_fp32": statistics.median(r["edgetl_int8_openvino"] / r["by_hand"] for r in rounds),
    }


def main() -> dict:
    import torch

    from edgetl.config import QuantizeCfg, TrainCfg

    with tempfile.TemporaryDirectory(prefix="edgetl-extraction-") as tmp:
        tmp = Path(tmp)
        photos = make_photo_folder(tmp / "photos", per_class=32, size=320, kind="distinct")
        common = dict(progress=False, cache_dir=tmp / "unused", quantize=QuantizeCfg(target="openvino"))
        cases = {
            "digits_64px": case("digits", TrainCfg(out=tmp / "r1", **common), tmp),
            "photos_224px": case("photos", TrainCfg(data=str(photos), img_size=224, out=tmp / "r2", **common), tmp),
        }
    result = {
        "claim": "edgetl cold extraction vs a by-hand timm loop (same inputs in memory); INT8 OpenVINO vs that loop",
        "goal": {"fp32_vs_by_hand": 1.0, "int8_vs_by_hand_fp32": 5.0},
        "torch_threads": torch.get_num_threads(),
        "cases": cases,
    }
    write_result("extraction", result)
    for name, c in cases.items():
        print(
            f"{name}: edgetl FP32 {c['fp32_vs_by_hand']:.2f}x the by-hand loop, "
            f"INT8 OpenVINO {c['int8_vs_by_hand_fp32']:.1f}x ({c['images']} images, batch {c['edgetl_batch']})"
        )
    return result


if __name__ == "__main__":
    main()
