"""The feature cache's segment files (format 2): real files on disk, real concurrent processes, real damage."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import edgetl.train.segments as seg
from edgetl.errors import UserError
from edgetl.train.cache import ROOT_MARKER, FeatureCache, list_contexts, prune, verify
from tests.core.test_cache import _cli, _raise, read_only

REPO = Path(__file__).resolve().parents[2]
CTX = {"backbone": "segments-test"}


def key(i: int) -> str:
    return hashlib.sha256(f"image {i}".encode()).hexdigest()


def feats(rows: range, shape=(16,), dtype=np.float32) -> np.ndarray:
    """Deterministic per row, as a backbone is per image: any writer of row i writes the same bytes."""
    return np.stack([np.random.default_rng(i).standard_normal(shape).astype(dtype) for i in rows])


def write(cache: FeatureCache, rows: range, shape=(16,), dtype=np.float32) -> None:
    cache.write_shard([key(i) for i in rows], feats(rows, shape, dtype))


def everything(root: Path, n: int, **kw) -> dict[str, np.ndarray]:
    return FeatureCache(root, CTX, **kw).open().lookup({key(i) for i in range(n)})


def same_bytes(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes() for k in a)


def one_writer(root: Path, n: int, batch: int = 8) -> dict[str, np.ndarray]:
    with FeatureCache(root, CTX).open() as c:
        for start in range(0, n, batch):
            write(c, range(start, min(start + batch, n)))
    return everything(root, n)


def tree(root: Path) -> dict[str, tuple]:
    """Every file and folder under root with its bytes and mtime: what 'untouched' means."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.stat()
        out[str(p.relative_to(root))] = (p.is_dir(), None if p.is_dir() else p.read_bytes(), st.st_mtime_ns)
    return out


@pytest.mark.parametrize(("shape", "dtype"), [((1280,), np.float32), ((8, 7, 7), np.float16)])
def test_round_trip_features_and_cut_activations(shape, dtype, tmp_path: Path):
    rows = range(5)
    with FeatureCache(tmp_path, CTX, dtype=dtype).open() as c:
        write(c, rows, shape, dtype)
        c.write_shard(["not a hex key", key(99)[:20]], feats(range(2), shape, dtype))  # any string works
    got = everything(tmp_path, 7, dtype=dtype)
    assert sorted(got) == sorted(key(i) for i in rows)
    expected = feats(rows, shape, dtype)
    for i in rows:
        assert got[key(i)].shape == shape and got[key(i)].dtype == dtype
        assert got[key(i)].tobytes() == expected[i].tobytes()
    other = FeatureCache(tmp_path, CTX, dtype=dtype).lookup({"not a hex key", key(99)[:20], "never written"})
    assert sorted(other) == sorted(["not a hex key", key(99)[:20]])


def test_two_writers_on_one_context_equal_one_writer_byte_for_byte(tmp_path: Path):
    ref = one_writer(tmp_path / "ref", 40)
    root = tmp_path / "shared"
    a, b = FeatureCache(root, CTX).open(), FeatureCache(root, CTX).open()
    for start in range(0, 40, 8):  # interleaved, overlapping: b writes every block a writes, and more
        write(a, range(start, start + 8))
        write(b, range(max(0, start - 4), start + 8))
    a.close()
    b.close()
    assert len(list(root.rglob("seg-*.idx"))) == 2
    assert same_bytes(everything(root, 40), ref)
    report = verify(root)
    assert report.corrupt == [] and report.segments == 2 and report.entries == 40 + 56


WRITER = """
import hashlib, json, sys, time
from pathlib import Path
import numpy as np
import edgetl.train.segments as seg
from edgetl.train.cache import FeatureCache
seg.SEGMENT_BYTES = int(sys.argv[4])
start, stop, go = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[5])
cache = FeatureCache(Path(sys.argv[1]), json.loads(sys.argv[6])).open()
while time.time() < go:  # every process starts writing at once
    time.sleep(0.001)
for i in range(start, stop, 4):  # as tests.core.test_segments.write
    rows = range(i, min(i + 4, stop))
    keys = [hashlib.sha256(f"image {r}".encode()).hexdigest() for r in rows]
    cache.write_shard(keys, np.stack([np.random.default_rng(r).standard_normal((16,)).astype(np.float32) for r in rows]))
"""


def test_two_processes_writing_overlapping_keys_concurrently(tmp_path: Path):
    root, n = tmp_path / "shared", 120
    go = time.time() + 2.0
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ranges = [(0, 80), (40, n), (20, 100)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), str(a), str(b), "3000", str(go), json.dumps(CTX)],
            env=env,
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
        )
        for a, b in ranges
    ]
    for p in procs:
        assert p.wait(120) == 0, p.stderr.read()
    assert same_bytes(everything(root, n), one_writer(tmp_path / "ref", n))
    report = verify(root)
    assert report.corrupt == [] and report.entries == sum(b - a for a, b in ranges)
    assert report.segments > len(procs)  # 3000-byte segments: every writer rolled over


def test_a_torn_index_tail_is_ignored_reported_and_compacted(tmp_path: Path):
    with FeatureCache(tmp_path, CTX).open() as c:
        for start in (0, 8, 16):
            write(c, range(start, start + 8))
    idx = next(tmp_path.rglob("seg-*.idx"))
    with open(idx, "r+b") as f:
        f.truncate(idx.stat().st_size - 7)  # a writer killed inside its last append
    warnings: list[str] = []
    cache = FeatureCache(tmp_path, CTX, warn=warnings.append).open()
    got = cache.lookup({key(i) for i in range(24)})
    assert sorted(got) == sorted(key(i) for i in range(16)) and warnings == [] and cache.stats.corrupt_blocks == []
    report = verify(tmp_path)
    assert report.torn_tails == [str(idx)] and report.corrupt == [str(idx)] and report.blocks == 2
    assert prune(tmp_path, None, False)["busy_segments"] == 1 and idx.exists()  # written just now: left alone
    removed = prune(tmp_path, None, False, stale_tmp_s=0)
    assert (removed["compacted_segments"], removed["torn_tails"], removed["corrupt_blocks"]) == (1, 1, 0)
    assert not idx.exists() and verify(tmp_path).corrupt == []
    assert same_bytes(everything(tmp_path, 24), got)


@pytest.mark.parametrize("damage", ["zeros", "flipped crc"])
def test_an_index_tail_that_does_not_check_is_ignored(damage: str, tmp_path: Path):
    with FeatureCache(tmp_path, CTX).open() as c:
        write(c, range(8))
        write(c, range(8, 16))
    idx = next(tmp_path.rglob("seg-*.idx"))
    data = bytearray(idx.read_bytes())
    if damage == "zeros":  # a file system that grew the file but lost the data in a power cut
        data += bytes(200)
    else:
        data[-1] ^= 0x10
    idx.write_bytes(bytes(data))
    assert sorted(everything(tmp_path, 16)) == sorted(key(i) for i in range(16 if damage == "zeros" else 8))
    assert verify(tmp_path).torn_tails == [str(idx)]


def test_a_flipped_byte_is_reported_once_and_its_keys_come_back_missing(tmp_path: Path):
    with FeatureCache(tmp_path, CTX).open() as c:
        for start in (0, 8, 16):
            write(c, range(start, start + 8))
    idx = next(tmp_path.rglob("seg-*.idx"))
    middle = seg.read_index(idx)[0][1]
    data = bytearray(seg.bin_of(idx).read_bytes())
    data[middle.offset + middle.length - 3] ^= 0x40
    seg.bin_of(idx).write_bytes(bytes(data))
    where = f"{seg.bin_of(idx)}@{middle.offset}"
    warnings: list[str] = []
    cache = FeatureCache(tmp_path, CTX, warn=warnings.append).open()
    wanted = {key(i) for i in range(24)}
    assert sorted(cache.lookup(wanted)) == sorted(key(i) for i in [*range(8), *range(16, 24)])
    assert sorted(cache.lookup(wanted)) == sorted(key(i) for i in [*range(8), *range(16, 24)])
    assert len(warnings) == 1 and "\n" not in warnings[0] and where in warnings[0] and "checksum" in warnings[0]
    assert cache.stats.corrupt_blocks == [where]
    write(cache, range(8, 16))  # what a run does with the misses
    assert same_bytes(cache.lookup(wanted), one_writer(tmp_path / "ref", 24))
    assert verify(tmp_path).corrupt_blocks == [where]
    before = seg.bin_of(idx).read_bytes()
    assert json.loads(json.dumps(cache.stats.to_dict()))["corrupt_blocks"] == [where]  # run.json's cache dict
    assert seg.bin_of(idx).read_bytes() == before  # nothing is edited in place


def test_an_index_record_pointing_past_the_end_of_its_bin(tmp_path: Path):
    with FeatureCache(tmp_path, CTX).open() as c:
        write(c, range(8))
        write(c, range(8, 16))
    idx = next(tmp_path.rglob("seg-*.idx"))
    last = seg.read_index(idx)[0][-1]
    with open(seg.bin_of(idx), "r+b") as f:
        f.truncate(last.offset + 100)
    warnings: list[str] = []
    got = FeatureCache(tmp_path, CTX, warn=warnings.append).open().lookup({key(i) for i in range(16)})
    assert sorted(got) == sorted(key(i) for i in range(8))
    assert len(warnings) == 1 and f"@{last.offset}" in warnings[0] and "past the end" in warnings[0]


def test_segments_roll_over_at_a_small_size_and_close_releases_them(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(seg, "SEGMENT_BYTES", 1500)  # one 8-row block of [16] float32 is 808 bytes
    with FeatureCache(tmp_path, CTX).open() as c:
        for start in range(0, 48, 8):
            write(c, range(start, start + 8))
        assert c._writer.bin is not None
    assert c._writer.bin is None and c._writer.idx is None
    (ctx,) = list_contexts(tmp_path)
    assert (ctx["segments"], ctx["entries"]) == (3, 48)
    assert same_bytes(everything(tmp_path, 48), one_writer(tmp_path / "ref", 48))


def test_a_failed_append_cuts_the_segment_back_and_the_next_one_starts_a_new_pair(tmp_path: Path, monkeypatch):
    cache = FeatureCache(tmp_path, CTX).open()
    write(cache, range(8))
    (bin_path,) = tmp_path.rglob("seg-*.bin")
    size = bin_path.stat().st_size
    with monkeypatch.context() as m:
        m.setattr(os, "fsync", _raise(errno.ENOSPC))
        with pytest.raises(UserError, match="No space left on device"):
            write(cache, range(8, 16))
    assert bin_path.stat().st_size == size and len(seg.read_index(bin_path.with_suffix(".idx"))[0]) == 1
    write(cache, range(8, 16))
    assert len(list(tmp_path.rglob("seg-*.bin"))) == 2 and verify(tmp_path).corrupt == []
    assert same_bytes(everything(tmp_path, 16), one_writer(tmp_path / "ref", 16))


def test_a_pickled_or_forked_cache_writes_a_segment_of_its_own(tmp_path: Path):
    a = FeatureCache(tmp_path, CTX).open()
    write(a, range(8))
    b = pickle.loads(pickle.dumps(a))  # a Ray actor or a spawned worker gets a copy
    write(b, range(8, 16))
    write(a, range(16, 24))
    pid = os.fork()
    if pid == 0:  # a forked child must not append to its parent's files
        try:
            write(a, range(24, 32))
        finally:
            os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    write(a, range(32, 40))
    assert len(list(tmp_path.rglob("seg-*.idx"))) == 3
    assert same_bytes(everything(tmp_path, 40), one_writer(tmp_path / "ref", 40))
    assert verify(tmp_path).corrupt == []


def test_a_read_only_cache_serves_its_hits(tmp_path: Path, monkeypatch):
    root = tmp_path / "cache"
    ref = one_writer(root, 16)
    with read_only(root, monkeypatch):
        cache = FeatureCache(root, CTX).open()
        assert same_bytes(cache.lookup({key(i) for i in range(16)}), ref)
        with pytest.raises(UserError) as e:
            write(cache, range(16, 24))
    assert "\n" not in str(e.value) and str(e.value).endswith("choose a writable --cache-dir")


def test_bytes_per_entry_are_close_to_the_raw_features(tmp_path: Path):
    with FeatureCache(tmp_path, CTX).open() as c:
        for start in range(0, 640, 64):  # what extraction writes: 64 images a block, 1280 float32 (Lite0)
            write(c, range(start, start + 64), (1280,))
    blocks = sum(p.stat().st_size for p in tmp_path.rglob("seg-*"))
    raw = 640 * 1280 * 4
    (ctx,) = list_contexts(tmp_path)
    assert ctx["bytes"] == blocks and ctx["entries"] == 640
    assert 0 < (blocks - raw) / 640 < 70  # 40 header + 32 key bytes in the .bin, 92 / 64 + 32 in the .idx
    assert blocks / raw < 1.10


# --- a cache folder another edgetl version wrote: one line, exit 2, nothing lost ----------------------------


def _v1_cache(root: Path) -> None:
    d = root / "v1" / ("ab" * 16)
    d.mkdir(parents=True)
    (d / "context.json").write_text('{"format": 1, "backbone": "x"}')
    (d / "shard-0123.safetensors").write_bytes(b"\x08" + bytes(100))
    (d / f"bad-{'c' * 64}.json").write_text("{}")
    (root / "models").mkdir()
    (root / "models" / "abc.int8.onnx").write_bytes(b"onnx")


OLD_CACHES = {
    "v1 folder": (_v1_cache, "format 1"),
    "marker of format 1": (lambda r: (r / ROOT_MARKER).write_text('{"format": 1}'), "format 1"),
    "marker of format 3": (lambda r: (r / ROOT_MARKER).write_text('{"format": 3, "written_by": "x"}'), "format 3"),
    "unreadable marker": (lambda r: (r / ROOT_MARKER).write_text("{nope"), "not an edgetl cache marker"),
}


@pytest.mark.parametrize("kind", OLD_CACHES)
def test_another_versions_cache_is_refused_in_one_line_and_left_untouched(kind: str, tmp_path: Path, capsys):
    root = tmp_path / "old"
    root.mkdir()
    make, says = OLD_CACHES[kind]
    make(root)
    (root / "v2").mkdir(exist_ok=True)  # even next to a folder of this format
    before = tree(root)
    calls = [
        lambda: FeatureCache(root, CTX).open(),
        lambda: list_contexts(root),
        lambda: verify(root),
        lambda: prune(root, 0, True, stale_tmp_s=0),
    ]
    for call in calls:
        with pytest.raises(UserError) as e:
            call()
        assert "\n" not in str(e.value) and str(e.value).startswith(f"--cache-dir {root}: ") and says in str(e.value)
        assert str(e.value).endswith("pass another --cache-dir, or move that folder away")
    for cmd in (["ls"], ["verify"], ["prune", "--all"]):
        code, out, err = _cli(["cache", *cmd, "--cache-dir", str(root)], capsys)
        assert code == 2 and out == "" and len(err.splitlines()) == 1 and says in err
    assert tree(root) == before


def test_edgetl_train_refuses_a_format_1_cache_and_touches_nothing(image_folder: Path, tmp_path: Path, capsys):
    root = tmp_path / "old"
    root.mkdir()
    _v1_cache(root)
    before = tree(root)
    args = ["train", "--data", str(image_folder), "--backbone", "test_tiny", "--epochs", "1", "--no-progress"]
    code, _, err = _cli([*args, "--out", str(tmp_path / "r"), "--cache-dir", str(root)], capsys)
    assert code == 2 and err.splitlines() == [
        f"error: --cache-dir {root}: holds a feature cache written by another edgetl version (format 1; this edgetl "
        "reads format 2); pass another --cache-dir, or move that folder away"
    ]
    assert tree(root) == before


def test_a_new_or_shared_folder_is_fine_and_gets_a_marker(tmp_path: Path, capsys):
    root = tmp_path / "shared"
    for other in ("openvino", "models", "probe", "v2x"):  # runtime caches that share $EDGETL_CACHE_DIR
        (root / other).mkdir(parents=True)
    assert list_contexts(root) == [] and list_contexts(tmp_path / "missing") == []
    FeatureCache(root, CTX).open()
    assert json.loads((root / ROOT_MARKER).read_text())["format"] == 2
    write(FeatureCache(root, CTX).open(), range(4))
    code, out, _ = _cli(["cache", "ls", "--cache-dir", str(root)], capsys)
    assert code == 0 and "segments" in out and "entries" in out


# --- prune ---------------------------------------------------------------------------------------------


def test_prune_compacts_damaged_idle_segments_and_leaves_good_ones(tmp_path: Path, capsys):
    good = FeatureCache(tmp_path, CTX).open()
    write(good, range(0, 8))
    good.close()
    bad = FeatureCache(tmp_path, CTX).open()
    for start in (8, 16, 24):
        write(bad, range(start, start + 8))
    bad.close()
    bad_bin, bad_idx = bad._writer.paths()
    first = seg.read_index(bad_idx)[0][0]
    data = bytearray(bad_bin.read_bytes())
    data[first.offset + 50] ^= 1  # a key byte of the first block
    bad_bin.write_bytes(bytes(data))
    with open(bad_idx, "ab") as f:
        f.write(b"EDGI\x08")  # and a torn tail
    good_files = {p.name: p.read_bytes() for p in tmp_path.rglob("seg-*") if bad_idx.stem not in p.name}
    (bad_idx.parent / ".seg-x.bin.tmp").write_bytes(b"killed compaction")
    old = time.time() - 7200
    for p in bad_idx.parent.iterdir():
        os.utime(p, (old, old))
    code, out, _ = _cli(["cache", "prune", "--cache-dir", str(tmp_path)], capsys)
    assert code == 0 and "compacted 1 segments (1 corrupt blocks, 1 torn index tails dropped)" in out
    assert "1 temp files" in out
    assert not bad_idx.exists() and not bad_bin.exists()
    assert {p.name: p.read_bytes() for p in tmp_path.rglob("seg-*") if p.name in good_files} == good_files
    report = verify(tmp_path)
    assert report.corrupt == [] and (report.segments, report.blocks, report.entries) == (2, 3, 24)
    got = everything(tmp_path, 32)
    assert sorted(got) == sorted(key(i) for i in [*range(8), *range(16, 32)])
    assert same_bytes(got, {k: v for k, v in one_writer(tmp_path / "ref", 32).items() if k in got})
    code, out, _ = _cli(["cache", "verify", "--cache-dir", str(tmp_path)], capsys)
    assert code == 0 and "2 segments, 3 blocks, 24 entries" in out and ": 0 corrupt" in out
