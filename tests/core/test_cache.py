"""The feature cache: content addressing, checksums, crash-safe resume, concurrent runs."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgetl.errors import UserError
from edgetl.train.cache import FeatureCache, prune, verify
from edgetl.train.pipeline import Pipeline
from edgetl.train.run import run_train
from edgetl.train.segments import bin_of, read_index
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


def test_flipped_byte_in_a_block_is_detected_recomputed_and_compacted_away(
    image_folder: Path, tmp_path: Path, isolated_cache: Path
):
    _, before = _features(tiny_cfg(image_folder, tmp_path / "r1"))
    idx = sorted(isolated_cache.rglob("seg-*.idx"))[0]
    last = read_index(idx)[0][-1]
    data = bytearray(bin_of(idx).read_bytes())
    data[-5] ^= 0x01  # inside the float data of the last block
    bin_of(idx).write_bytes(bytes(data))
    where = f"{bin_of(idx)}@{last.offset}"
    report = verify(isolated_cache)
    assert report.corrupt == [where] and report.blocks >= 2 and report.why[where] == "checksum mismatch"
    out = subprocess.run(
        [sys.executable, "-m", "edgetl", "cache", "verify"],
        capture_output=True,
        text=True,
        env={**os.environ, "EDGETL_CACHE_DIR": str(isolated_cache)},
    )
    assert out.returncode == 1 and ": 1 corrupt" in out.stdout and f"corrupt block: {where}" in out.stdout
    p, after = _features(tiny_cfg(image_folder, tmp_path / "r2"))
    assert p.caches[0].stats.corrupt_blocks == [where] and p.caches[0].stats.misses == last.n
    assert set(after) == set(before)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k])
    assert verify(isolated_cache).corrupt == [where]  # append-only: the damaged block stays until prune
    removed = prune(isolated_cache, None, False, stale_tmp_s=0)
    assert (removed["compacted_segments"], removed["corrupt_blocks"]) == (1, 1)
    assert verify(isolated_cache).corrupt == []
    p, again = _features(tiny_cfg(image_folder, tmp_path / "r3"))
    assert p.caches[0].stats.misses == 0 and p.caches[0].stats.corrupt_blocks == []
    for k in before:
        assert again[k].tobytes() == before[k].tobytes()


def test_block_round_trip_and_checksum(tmp_path: Path):
    cache = FeatureCache(tmp_path, {"backbone": "x"}).open()
    feats = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    path, offset = cache.write_shard(["a", "b", "c"], feats)
    assert (path.parent, offset) == (cache.dir, 0)
    got = FeatureCache(tmp_path, {"backbone": "x"}).open().lookup({"a", "b", "c", "d"})
    assert sorted(got) == ["a", "b", "c"]
    np.testing.assert_array_equal(np.stack([got[k] for k in "abc"]), feats)
    assert verify(tmp_path).entries == 3


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


def _blocks(cache: Path) -> int:
    """Blocks written so far (the index records: a block counts once its record is complete)."""
    n = 0
    for idx in cache.rglob("seg-*.idx"):
        with contextlib.suppress(FileNotFoundError):
            n += len(read_index(idx)[0])
    return n


def test_kill_9_then_resume_gives_bit_identical_features(tmp_path: Path):
    data = make_folder(tmp_path / "data", per_class=10)  # 30 images, 8 batches of 4
    ref_cache, cache = tmp_path / "ref-cache", tmp_path / "cache"
    ref = _worker(data, tmp_path / "ref", ref_cache, 0.0)
    assert ref.wait(120) == 0, ref.stderr.read()
    expected = _load(tmp_path / "ref")
    for kill_after_blocks in (1, 3, 6):  # several points: early, middle, late
        proc = _worker(data, tmp_path / f"k{kill_after_blocks}", cache, 0.4)
        deadline = time.time() + 120
        while _blocks(cache) < kill_after_blocks and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = _worker(data, tmp_path / "resume", cache, 0.0)
    assert done.wait(120) == 0, done.stderr.read()
    stats = json.loads(done.stdout.read())
    assert stats["hits"] >= 6 * 4 and stats["corrupt_blocks"] == []
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
    assert verify(cache).corrupt == []
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
    from edgetl.config import QuantizeCfg

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
    while _blocks(cache) < 2 and proc.poll() is None and time.time() < deadline:
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
    from edgetl.export.run import export_run

    out = tmp_path / "r"
    run_train(tiny_cfg(image_folder, out))
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(image_folder / "red" / "new.png")
    with pytest.raises(UserError, match="validation images differ from the ones this run was trained with"):
        export_run(out, echo=lambda line: None)


# --- bad-file markers are checked like blocks --------------------------------------------------------------

GOOD, OTHER = "a" * 64, "b" * 64
FORGERIES = ["no checksum", "edited reason", "copied from another context", "renamed from another key", "not JSON"]


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    """`edgetl ...` in this process (as the console script runs it), so a test can simulate a full disk."""
    from edgetl.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_a_valid_marker_round_trips_verifies_and_survives_prune(tmp_path: Path):
    cache = FeatureCache(tmp_path, {"backbone": "x"}).open()
    cache.mark_bad(GOOD, "truncated or corrupt image (broken data stream)")
    assert cache.bad_keys({GOOD, OTHER}) == {GOOD: "truncated or corrupt image (broken data stream)"}
    report = verify(tmp_path)
    assert (report.markers, report.corrupt) == (1, [])
    assert prune(tmp_path, None, False)["corrupt_markers"] == 0
    assert cache.bad_keys({GOOD}) == {GOOD: "truncated or corrupt image (broken data stream)"}


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_marker_that_does_not_verify_is_reported_deleted_and_ignored(forgery: str, tmp_path: Path):
    warnings: list[str] = []
    cache = FeatureCache(tmp_path, {"backbone": "x"}, warn=warnings.append).open()
    marker = cache.dir / f"bad-{GOOD}.json"
    if forgery == "no checksum":  # hand-written, or the format of an older edgetl
        marker.write_text(json.dumps({"key": GOOD, "reason": "forged"}))
    elif forgery == "edited reason":
        cache.mark_bad(GOOD, "truncated")
        edited = {**json.loads(marker.read_text()), "reason": "forged"}
        marker.write_text(json.dumps(edited))
    elif forgery == "copied from another context":  # valid there, for the same content key
        other = FeatureCache(tmp_path, {"backbone": "y"}).open()
        other.mark_bad(GOOD, "forged")
        shutil.copy(other.dir / marker.name, marker)
    elif forgery == "renamed from another key":
        cache.mark_bad(OTHER, "forged")
        (cache.dir / f"bad-{OTHER}.json").rename(marker)
    else:
        marker.write_bytes(b"\x00 not json")
    assert verify(tmp_path).corrupt == [str(marker)]
    assert cache.bad_keys({GOOD, OTHER}) == {}
    assert not marker.exists() and cache.stats.corrupt_markers == [str(marker)]
    assert len(warnings) == 1 and str(marker) in warnings[0] and "decoded again" in warnings[0]
    assert verify(tmp_path).corrupt == []


def test_a_forged_marker_no_longer_skips_a_good_image(image_folder: Path, tmp_path: Path, isolated_cache: Path, capsys):
    p1, before = _features(tiny_cfg(image_folder, tmp_path / "r1"))
    folder = p1.caches[0].dir
    victim = sorted(before)[0]
    for segment in folder.glob("seg-*"):
        segment.unlink()  # so the victim has to be decoded again, not served from a block
    marker = folder / f"bad-{victim}.json"
    forged = json.dumps({"key": victim, "reason": "truncated or corrupt image (forged)"})
    marker.write_text(forged)

    code, out, _ = _cli(["cache", "verify", "--cache-dir", str(isolated_cache)], capsys)
    assert code == 1 and f"corrupt: {marker}" in out and "1 bad-file markers" in out and ": 1 corrupt" in out
    code, out, _ = _cli(["cache", "prune", "--cache-dir", str(isolated_cache)], capsys)
    assert code == 0 and "1 corrupt markers" in out and not marker.exists()

    marker.write_text(forged)
    p2, after = _features(tiny_cfg(image_folder, tmp_path / "r2"))
    assert p2.skip.skipped == [] and p2.caches[0].stats.corrupt_markers == [str(marker)]
    assert not marker.exists() and set(after) == set(before)
    np.testing.assert_array_equal(after[victim], before[victim])
    assert verify(isolated_cache).corrupt == []


# --- read-only cache, full disk ------------------------------------------------------------------------


def _refuses_writes(folder: Path) -> bool:
    probe = folder / ".probe"
    try:
        probe.write_bytes(b"")
    except OSError:
        return True
    probe.unlink()
    return False


def _raise(code: int):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return fail


@contextlib.contextmanager
def read_only(folder: Path, monkeypatch: pytest.MonkeyPatch):
    """Makes `folder` and its subfolders refuse writes, as honestly as this machine allows; yields how.

    - "chattr": `chattr +i` (root with CAP_LINUX_IMMUTABLE, on ext4/xfs/btrfs): the kernel itself refuses new
      files, renames, deletes and utime, with EPERM where a read-only mount says EROFS. Nothing is simulated.
    - "chmod": not root: chmod a-w refuses new files for real, but the owner may still set a folder's times,
      so os.utime is patched to raise EROFS as a read-only mount would (the fault this guards against).
    - "patched": root without chattr: chmod stops nothing for root, so os.utime and the cache's file writes
      (edgetl.train.cache.atomic_write_bytes, edgetl.train.segments._create) are patched to raise EROFS.
    """
    dirs = [str(d) for d in [folder, *folder.rglob("*")] if d.is_dir()]
    if shutil.which("chattr"):
        try:
            subprocess.run(["chattr", "+i", *dirs], capture_output=True)
            if _refuses_writes(folder):
                yield "chattr"
                return
        finally:
            subprocess.run(["chattr", "-i", *dirs], capture_output=True)
    with monkeypatch.context() as m:
        m.setattr(os, "utime", _raise(errno.EROFS))
        if os.geteuid() != 0:
            try:
                for d in dirs:
                    os.chmod(d, 0o555)
                assert _refuses_writes(folder)
                yield "chmod"
            finally:
                for d in dirs:
                    os.chmod(d, 0o755)
        else:
            m.setattr("edgetl.train.cache.atomic_write_bytes", _raise(errno.EROFS))
            m.setattr("edgetl.train.segments._create", _raise(errno.EROFS))
            yield "patched"


def test_read_only_cache_serves_every_hit_and_a_miss_is_one_user_error(
    image_folder: Path, tmp_path: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
):
    _, before = _features(tiny_cfg(image_folder, tmp_path / "r1"))
    with read_only(isolated_cache, monkeypatch):
        p, after = _features(tiny_cfg(image_folder, tmp_path / "r2"))
        assert p.caches[0].stats.misses == 0 and p.caches[0].stats.hits == len(before)
        for k in before:
            np.testing.assert_array_equal(after[k], before[k])
        Image.fromarray(np.full((20, 24, 3), 7, np.uint8)).save(image_folder / "red" / "new.png")
        with pytest.raises(UserError) as e:
            _features(tiny_cfg(image_folder, tmp_path / "r3"))
    message = str(e.value)
    assert e.value.exit_code == 2 and "\n" not in message
    assert message.startswith(f"--cache-dir {isolated_cache}: cannot write the feature cache (")
    assert message.endswith("); choose a writable --cache-dir")
    assert list(isolated_cache.rglob(".*.tmp*")) == []
    assert verify(isolated_cache).corrupt == []  # the failed write left no half block and no torn index


WRITES = {
    "open": lambda cache: cache.open(),
    "write_shard": lambda cache: cache.write_shard(["k"], np.ones((1, 4), np.float32)),
    "mark_bad": lambda cache: cache.mark_bad("k", "truncated"),
}
FIXES = {
    errno.ENOSPC: "(No space left on device); free disk space there or choose another --cache-dir",
    errno.EROFS: "(Read-only file system); choose a writable --cache-dir",
    errno.EACCES: "(Permission denied); choose a writable --cache-dir",
    errno.EIO: "(Input/output error); free disk space there or choose a writable --cache-dir",
}


@pytest.mark.parametrize(
    ("write", "code"),
    [(w, errno.ENOSPC) for w in WRITES] + [("write_shard", c) for c in (errno.EROFS, errno.EACCES, errno.EIO)],
)
def test_a_failed_cache_write_is_one_user_error_and_leaves_no_temp_file(
    write: str, code: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A full disk cannot be made here: os.fsync, the last step of every atomic write, raises ENOSPC (or the other
    errno) the way a full disk does once the data reaches it, after the temp file exists."""
    root = tmp_path / "cache"
    cache = FeatureCache(root, {"backbone": "x"})
    if write != "open":
        cache.open()
    monkeypatch.setattr(os, "fsync", _raise(code))
    with pytest.raises(UserError) as e:
        WRITES[write](cache)
    assert e.value.exit_code == 2
    assert str(e.value) == f"--cache-dir {root}: cannot write the feature cache {FIXES[code]}"
    files = sorted(p.name for p in root.rglob("*") if p.is_file())
    assert files == ([] if write == "open" else ["context.json", "edgetl-cache.json"])  # no temp, no half file


def test_full_disk_during_edgetl_train_is_one_error_line_exit_2(
    image_folder: Path, tmp_path: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    """A full disk cannot be made here: os.fsync raises ENOSPC as a full disk does (see the test above)."""
    _features(tiny_cfg(image_folder, tmp_path / "r1"))  # the cache holds every image ...
    Image.fromarray(np.full((20, 24, 3), 7, np.uint8)).save(image_folder / "red" / "new.png")  # ... but this one
    monkeypatch.delenv("EDGETL_DEBUG", raising=False)
    monkeypatch.setattr(os, "fsync", _raise(errno.ENOSPC))
    args = ["train", "--data", str(image_folder), "--backbone", "test_tiny", "--epochs", "1", "--no-progress"]
    code, _, err = _cli([*args, "--out", str(tmp_path / "r2"), "--cache-dir", str(isolated_cache)], capsys)
    assert code == 2
    assert err.splitlines() == [
        f"error: --cache-dir {isolated_cache}: cannot write the feature cache (No space left on device); "
        "free disk space there or choose another --cache-dir"
    ]
    assert list(isolated_cache.rglob(".*.tmp*")) == []
    assert verify(isolated_cache).corrupt == []
