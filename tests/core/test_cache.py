"""The feature cache: content addressing, checksums, crash-safe resume, concurrent runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgetl.train.cache import SHARD_GLOB, FeatureCache, read_shard, verify
from edgetl.train.pipeline import Pipeline
from edgetl.train.run import run_train
from tests.core.conftest import make_folder, tiny_cfg

REPO = Path(__file__).resolve().parents[2]


def _features(cfg) -> tuple[Pipeline, dict[str, np.ndarray]]:
    p = Pipeline(cfg)
    return p, p.features(p.fp32_extractor()).features


def test_pixels_changed_with_same_size_and_mtime_misses(image_folder: Path, tmp_path: Path):
    target = image_folder / "red" / "red_000.bmp"
    arr = np.full((20, 24, 3), 90, np.uint8)
    Image.fromarray(arr).save(target)  # BMP: the file size does not depend on the pixels
    cfg = tiny_cfg(image_folder, tmp_path / "r1")
    r1 = run_train(cfg)
    assert r1["cache"]["misses"] > 0 and r1["cache"]["hits"] == 0
    st = target.stat()
    arr[5, 5] = (91, 0, 0)
    Image.fromarray(arr).save(target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert target.stat().st_size == st.st_size and target.stat().st_mtime_ns == st.st_mtime_ns
    r2 = run_train(tiny_cfg(image_folder, tmp_path / "r2"))
    assert r2["cache"]["misses"] == 1
    assert r2["cache"]["hits"] == r1["cache"]["misses"] - 1


def test_changing_preprocess_or_backbone_weights_misses(image_folder: Path, tmp_path: Path):
    r1 = run_train(tiny_cfg(image_folder, tmp_path / "r1"))
    r2 = run_train(tiny_cfg(image_folder, tmp_path / "r2", img_size=40))
    assert r2["cache"]["hits"] == 0 and r2["cache"]["misses"] == r1["cache"]["misses"]
    assert r1["cache"]["keys"] != r2["cache"]["keys"]


def test_files_swapped_between_classes_update_labels(image_folder: Path, tmp_path: Path):
    a, b = image_folder / "red" / "red_001.png", image_folder / "blue" / "blue_001.png"
    p1, f1 = _features(tiny_cfg(image_folder, tmp_path / "r1"))
    tmp = a.with_suffix(".swap")
    a.rename(tmp)
    b.rename(a.parent / b.name)
    tmp.rename(b.parent / a.name)
    p2, f2 = _features(tiny_cfg(image_folder, tmp_path / "r2"))
    assert p2.caches[0].stats.misses == 0  # same contents: every feature comes from the cache ...
    labels = {Path(it.path).name: p2.ds.classes[it.label] for it in p2.ds.train + p2.ds.val}
    assert labels["red_001.png"] == "blue" and labels["blue_001.png"] == "red"  # ... labels follow the folders
    key_of = {Path(it.path).name: it.key for it in p2.ds.train + p2.ds.val}
    np.testing.assert_array_equal(f2[key_of["red_001.png"]], f1[key_of["red_001.png"]])


def test_flipped_byte_in_a_shard_is_detected_and_recomputed(image_folder: Path, tmp_path: Path, isolated_cache: Path):
    _, before = _features(tiny_cfg(image_folder, tmp_path / "r1"))
    shard = sorted(isolated_cache.rglob(SHARD_GLOB))[0]
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0x01  # inside the float data, past the header
    shard.write_bytes(bytes(data))
    checked, _, bad = verify(isolated_cache)
    assert bad == [str(shard)] and checked >= 1
    out = subprocess.run(
        [sys.executable, "-m", "edgetl", "cache", "verify"],
        capture_output=True,
        text=True,
        env={**os.environ, "EDGETL_CACHE_DIR": str(isolated_cache)},
    )
    assert out.returncode == 1 and "1 corrupt" in out.stdout
    p, after = _features(tiny_cfg(image_folder, tmp_path / "r2"))
    assert p.caches[0].stats.corrupt == [str(shard)] and p.caches[0].stats.misses > 0
    assert set(after) == set(before)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k])
    assert verify(isolated_cache)[2] == []


def test_shard_round_trip_and_checksum(tmp_path: Path):
    cache = FeatureCache(tmp_path, {"backbone": "x"}).open()
    feats = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    keys, got = read_shard(cache.write_shard(["a", "b", "c"], feats))
    assert keys == ["a", "b", "c"]
    np.testing.assert_array_equal(got, feats)


# --- crash safety and concurrency (real subprocesses, real kill -9) --------------------------------

WORKER = """
import sys, time, json, numpy as np
import edgetl.train.features as F
from edgetl.train.pipeline import Pipeline
from tests.core.conftest import tiny_cfg
from pathlib import Path
delay = float(sys.argv[3])
orig = F.TorchExtractor.__call__
def slow(self, x):
    time.sleep(delay)  # gives the test time to kill -9 between and inside batches
    return orig(self, x)
F.TorchExtractor.__call__ = slow
p = Pipeline(tiny_cfg(Path(sys.argv[1]), Path(sys.argv[2]) / "run", extract_batch=4))
got = p.features(p.fp32_extractor()).features
np.savez(Path(sys.argv[2]) / "features.npz", **got)
print(json.dumps(p.caches[0].stats.to_dict()))
"""


def _worker(data: Path, out: Path, cache: Path, delay: float) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "EDGETL_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(data), str(out), str(delay)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def _load(out: Path) -> dict[str, np.ndarray]:
    with np.load(out / "features.npz") as z:
        return {k: z[k] for k in z.files}


def _shards(cache: Path) -> int:
    return len(list(cache.rglob(SHARD_GLOB)))


def test_kill_9_then_resume_gives_bit_identical_features(tmp_path: Path):
    data = make_folder(tmp_path / "data", per_class=10)  # 30 images, 8 batches of 4
    ref_cache, cache = tmp_path / "ref-cache", tmp_path / "cache"
    ref = _worker(data, tmp_path / "ref", ref_cache, 0.0)
    assert ref.wait(120) == 0, ref.stderr.read()
    expected = _load(tmp_path / "ref")
    for kill_after_shards in (1, 3, 6):  # several points: early, middle, late
        proc = _worker(data, tmp_path / f"k{kill_after_shards}", cache, 0.4)
        deadline = time.time() + 120
        while _shards(cache) < kill_after_shards and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = _worker(data, tmp_path / "resume", cache, 0.0)
    assert done.wait(120) == 0, done.stderr.read()
    stats = json.loads(done.stdout.read())
    assert stats["hits"] >= 6 * 4 and stats["corrupt_shards"] == []
    got = _load(tmp_path / "resume")
    assert set(got) == set(expected)
    for k in expected:
        assert got[k].tobytes() == expected[k].tobytes(), "resumed features differ from an uninterrupted run"


def test_two_concurrent_runs_share_a_cache_dir(tmp_path: Path):
    data = make_folder(tmp_path / "data", per_class=8)
    cache = tmp_path / "cache"
    procs = [_worker(data, tmp_path / f"w{i}", cache, 0.05) for i in range(2)]
    for p in procs:
        assert p.wait(180) == 0, p.stderr.read()
    a, b = _load(tmp_path / "w0"), _load(tmp_path / "w1")
    assert set(a) == set(b) and len(a) == 24
    for k in a:
        assert a[k].tobytes() == b[k].tobytes()
    assert verify(cache)[2] == []
    third = _worker(data, tmp_path / "w2", cache, 0.0)
    assert third.wait(120) == 0
    assert json.loads(third.stdout.read())["misses"] == 0


@pytest.mark.parametrize("cmd", [["ls"], ["prune"], ["verify"]])
def test_cache_commands_run_on_an_empty_cache(cmd, tmp_path: Path):
    out = subprocess.run(
        [sys.executable, "-m", "edgetl", "cache", *cmd, "--cache-dir", str(tmp_path / "c")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr


def test_a_bad_file_is_remembered_reported_every_run_and_never_shifts_batches(image_folder: Path, tmp_path: Path):
    (image_folder / "green" / "aaa-broken.png").write_bytes(b"not an image at all")
    r1 = run_train(tiny_cfg(image_folder, tmp_path / "r1"))
    r2 = run_train(tiny_cfg(image_folder, tmp_path / "r2"))
    for r in (r1, r2):
        assert [Path(s["path"]).name for s in r["data"]["skipped"]] == ["aaa-broken.png"]
    assert r2["cache"]["misses"] == 0 and r2["cache"]["hits"] == r1["cache"]["misses"] - 1  # bad: not retried


def test_int8_run_reports_a_bad_file_once(image_folder: Path, tmp_path: Path):
    from edgetl.train.config import QuantizeCfg

    (image_folder / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    r = run_train(tiny_cfg(image_folder, tmp_path / "r", quantize=QuantizeCfg(calib_size=16, target="onnxruntime")))
    assert [Path(s["path"]).name for s in r["data"]["skipped"]] == ["broken.jpg"]


def test_kill_9_with_a_bad_file_in_the_data_still_resumes_bit_identically(tmp_path: Path):
    data = make_folder(tmp_path / "data", per_class=6)
    (data / "blue" / "broken.png").write_bytes(b"junk")
    ref = _worker(data, tmp_path / "ref", tmp_path / "ref-cache", 0.0)
    assert ref.wait(120) == 0, ref.stderr.read()
    cache = tmp_path / "cache"
    proc = _worker(data, tmp_path / "k", cache, 0.4)
    deadline = time.time() + 120
    while _shards(cache) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _worker(data, tmp_path / "resume", cache, 0.0)
    assert done.wait(120) == 0, done.stderr.read()
    expected, got = _load(tmp_path / "ref"), _load(tmp_path / "resume")
    assert set(got) == set(expected) and len(got) == 18
    for k in expected:
        assert got[k].tobytes() == expected[k].tobytes()


def test_overwrite_removes_the_previous_runs_artifacts(image_folder: Path, tmp_path: Path):
    out = tmp_path / "r"
    run_train(tiny_cfg(image_folder, out))
    (out / "model.onnx").write_bytes(b"an export of the previous head")
    run_train(tiny_cfg(image_folder, out, overwrite=True))
    assert not (out / "model.onnx").exists() and (out / "run.json").exists()


def test_export_refuses_data_that_changed_since_training(image_folder: Path, tmp_path: Path):
    from edgetl.errors import UserError
    from edgetl.export.model import export_run

    out = tmp_path / "r"
    run_train(tiny_cfg(image_folder, out))
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(image_folder / "red" / "new.png")
    with pytest.raises(UserError, match="validation images differ from the ones this run was trained with"):
        export_run(out, echo=lambda line: None)
