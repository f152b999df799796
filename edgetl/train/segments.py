"""Segment files of the feature cache (format 2): append-only blocks of features and the index that finds them.

A writer (one FeatureCache in one process) appends to a pair of files of its own, which no one else writes:

    seg-<writer>.bin   blocks, back to back: BLOCK_HEAD (magic, n rows, dtype, row shape), the n content keys
                       (32 raw bytes each), then the [n, *shape] features in C order
    seg-<writer>.idx   one record per block: RECORD_HEAD (magic, n, offset and length of the block in the .bin,
                       dtype, row shape, sha256 over the whole block), the n keys again, then a crc32 of the record

`<writer>` is the host name, the pid and 8 random hex digits, so writers on many machines never share a file; a
writer rolls over to a new name once its .bin holds SEGMENT_BYTES. A block is written and fsynced before its
record is appended, so a record never points at bytes that were not written: a crash leaves at worst unindexed
bytes at the end of the .bin (never read) or a torn last record (ignored by readers, reported by verify).
Records are parsed with struct and checked with crc32 (no JSON per entry), and a reader reads only the blocks
that hold a key it wants, whole, to check their sha256. Files are never edited in place (a writer only cuts its
own pair back after a failed append): `compact` copies the blocks that verify into a new pair, then removes the
old one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import secrets
import socket
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SEGMENT_BYTES = 256 << 20  # a writer starts a new segment pair once its .bin holds this much (tests lower it)
BLOCK_MAGIC, RECORD_MAGIC = b"EDGB", b"EDGI"
MAX_NDIM = 6  # of one row: [D] features, [C, H, W] activations at a fine-tuning cut
BLOCK_HEAD = struct.Struct("<4sIBB6x6I")  # magic, n, dtype code, row ndim, row shape (0-padded): 40 bytes
RECORD_HEAD = struct.Struct("<4sIQQBB6x6I32s")  # magic, n, offset, length, dtype, ndim, shape, sha256: 88 bytes
CRC = struct.Struct("<I")
KEY_BYTES = 32
DTYPES = {1: np.dtype("<f4"), 2: np.dtype("<f2")}
_CODES = {"f4": 1, "f2": 2}
_HEX_KEY = re.compile(r"[0-9a-f]{64}")


def raw_key(key: str) -> bytes:
    """A content key as stored: a sha256 hex digest (what edgetl.data passes) as its 32 bytes; any other string
    (a test's "k") as the sha256 of it, so every key works and no two share their bytes in practice."""
    if _HEX_KEY.fullmatch(key):
        return bytes.fromhex(key)
    return hashlib.sha256(b"edgetl cache key\0" + key.encode("utf-8", "surrogatepass")).digest()


def writer_name() -> str:
    host = re.sub(r"[^A-Za-z0-9_-]+", "-", socket.gethostname())[:32].strip("-") or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


def bin_of(idx: Path) -> Path:
    return Path(idx).with_name(Path(idx).name[: -len(".idx")] + ".bin")


class CorruptBlock(Exception):
    pass


@dataclass(frozen=True)
class Record:
    """One block, as its index record describes it."""

    n: int
    offset: int
    length: int
    code: int  # key of DTYPES
    shape: tuple[int, ...]  # of one row
    sha256: bytes
    keys: bytes  # n * 32 raw key bytes

    @property
    def dtype(self) -> np.dtype:
        return DTYPES[self.code]

    def key_list(self) -> list[bytes]:
        k = self.keys
        return [k[i : i + KEY_BYTES] for i in range(0, len(k), KEY_BYTES)]

    def pack(self) -> bytes:
        shape = (*self.shape, *(0,) * (MAX_NDIM - len(self.shape)))
        head = RECORD_HEAD.pack(
            RECORD_MAGIC, self.n, self.offset, self.length, self.code, len(self.shape), *shape, self.sha256
        )
        body = head + self.keys
        return body + CRC.pack(zlib.crc32(body))


def block_length(n: int, code: int, shape: tuple[int, ...]) -> int:
    return BLOCK_HEAD.size + KEY_BYTES * n + n * int(np.prod(shape, dtype=np.int64)) * DTYPES[code].itemsize


def make_block(keys: bytes, features: np.ndarray) -> tuple[Record, list[bytes]]:
    """The record (offset 0) and the bytes of a block holding `features` [n, ...] under `keys` (n * 32 bytes)."""
    code = _CODES.get(f"{features.dtype.kind}{features.dtype.itemsize}")
    if code is None or not 1 <= features.ndim <= MAX_NDIM + 1:
        raise ValueError(f"the feature cache stores [n, ...] float32 or float16 rows, not {features.dtype}")
    features = np.ascontiguousarray(features, DTYPES[code])
    n, shape = features.shape[0], tuple(int(s) for s in features.shape[1:])
    if len(keys) != KEY_BYTES * n:
        raise ValueError(f"{len(keys) // KEY_BYTES} keys for {n} rows of features")
    head = BLOCK_HEAD.pack(BLOCK_MAGIC, n, code, len(shape), *shape, *(0,) * (MAX_NDIM - len(shape)))
    parts = [head, keys, features.tobytes()]
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return Record(n, 0, sum(len(p) for p in parts), code, shape, digest.digest(), keys), parts


def read_index(path: Path) -> tuple[list[Record], int]:
    """The complete, crc-checked records of an index file and the bytes after the last of them (a torn tail:
    a writer killed mid-append, or one appending right now). FileNotFoundError passes through."""
    data = memoryview(Path(path).read_bytes())
    records, pos = [], 0
    while (rec := _parse_record(data, pos)) is not None:
        records.append(rec)
        pos += RECORD_HEAD.size + KEY_BYTES * rec.n + CRC.size
    return records, len(data) - pos


def _parse_record(data: memoryview, pos: int) -> Record | None:
    if len(data) - pos < RECORD_HEAD.size + CRC.size:
        return None
    magic, n, offset, length, code, ndim, *rest = RECORD_HEAD.unpack_from(data, pos)
    end = pos + RECORD_HEAD.size + KEY_BYTES * n
    if magic != RECORD_MAGIC or code not in DTYPES or ndim > MAX_NDIM or end + CRC.size > len(data):
        return None
    if CRC.unpack_from(data, end)[0] != zlib.crc32(data[pos:end]):
        return None
    keys = bytes(data[end - KEY_BYTES * n : end])
    return Record(n, offset, length, code, tuple(rest[:ndim]), rest[MAX_NDIM], keys)


def read_block_bytes(f, rec: Record) -> bytearray:
    """The whole block `rec` points at in the open .bin `f`, checked against its sha256, or CorruptBlock."""
    if rec.length != block_length(rec.n, rec.code, rec.shape):
        raise CorruptBlock("its index record is inconsistent")
    buf = bytearray(rec.length)
    f.seek(rec.offset)
    got = f.readinto(buf)
    if got < rec.length:
        raise CorruptBlock(f"the index points past the end of the file: {rec.length} bytes wanted, {got} there")
    if hashlib.sha256(buf).digest() != rec.sha256:
        raise CorruptBlock("checksum mismatch")
    return buf


def read_block(f, rec: Record) -> np.ndarray:
    """The features [n, *shape] of block `rec` in the open .bin `f`, checked, or CorruptBlock."""
    buf = read_block_bytes(f, rec)
    return np.frombuffer(buf, rec.dtype, offset=BLOCK_HEAD.size + KEY_BYTES * rec.n).reshape(rec.n, *rec.shape)


def find(folder: Path, wanted: dict[bytes, str], on_corrupt, warn) -> dict[str, np.ndarray]:
    """Rows of the `wanted` keys (raw key -> key) from the segments in `folder`, reading only the blocks that hold
    one, the first block that verifies winning. A block that does not verify is passed to on_corrupt(where, why,
    n) and skipped; a torn index tail is a writer killed, or busy, mid-append: not read."""
    found: dict[str, np.ndarray] = {}
    for idx in sorted(folder.glob("seg-*.idx")) if wanted else []:
        try:
            records = read_index(idx)[0]
            records = [r for r in records if any(wanted.get(k) not in found for k in r.key_list() if k in wanted)]
            f = open(bin_of(idx), "rb") if records else contextlib.nullcontext()  # noqa: SIM115 - with below
        except FileNotFoundError:  # compacted by a concurrent prune between glob and read
            continue
        except OSError as e:
            warn(f"cache: cannot read {e.filename} ({e.strerror}); its features will be recomputed")
            continue
        with f:
            for rec in records:
                rows = [(i, wanted[k]) for i, k in enumerate(rec.key_list()) if k in wanted]
                if all(key in found for _, key in rows):  # an earlier block of this segment had them
                    continue
                try:
                    feats = read_block(f, rec)
                except (CorruptBlock, OSError) as e:
                    why = e if isinstance(e, CorruptBlock) else f"unreadable: {e.strerror or e}"
                    on_corrupt(f"{bin_of(idx)}@{rec.offset}", str(why), rec.n)
                    continue
                for i, key in rows:
                    found.setdefault(key, feats[i])
    return found


def _write_all(fd: int, parts: list[bytes]) -> None:
    for part in parts:
        view = memoryview(part)
        while view:
            view = view[os.write(fd, view) :]


def _create(path: Path) -> int:
    """A new file that no one else has (O_EXCL), write-only."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)


class SegmentWriter:
    """One writer's segment pair in `folder`: created on the first append, rolled over past SEGMENT_BYTES.

    Thread-safe; a process forked from the writer's starts a pair of its own. Never closing it loses nothing
    (every append is written by the time it returns): close() only releases the two file descriptors."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.bin: int | None = None
        self.idx: int | None = None
        self.stem = ""
        self.size = self.idx_size = self.pid = 0
        self.lock = threading.Lock()

    def paths(self) -> tuple[Path, Path]:
        return self.folder / f"{self.stem}.bin", self.folder / f"{self.stem}.idx"

    def append(self, keys: bytes, features: np.ndarray) -> tuple[Path, Record]:
        """Writes one block, fsynced, then its index record; returns the .bin and the record. On any failure the
        pair is cut back to its last complete block and left: the next append starts a new pair."""
        rec, parts = make_block(keys, features)
        with self.lock:
            if self.bin is not None and (self.size >= SEGMENT_BYTES or self.pid != os.getpid()):
                self.close()
            if self.bin is None:
                self._open()
            rec = dataclasses.replace(rec, offset=self.size)
            packed = rec.pack()
            try:
                _write_all(self.bin, parts)
                os.fsync(self.bin)
                _write_all(self.idx, [packed])
                os.fsync(self.idx)  # so a reader on another machine (NFS) has the block once this returns
            except BaseException:
                self._abandon()
                raise
            self.size += rec.length
            self.idx_size += len(packed)
            return self.paths()[0], rec

    def _open(self) -> None:
        self.stem = f"seg-{writer_name()}"
        self.size = self.idx_size = 0
        bin_path, idx_path = self.paths()
        self.idx = _create(idx_path)  # the index first: an index without its .bin yet holds no record
        try:
            self.bin = _create(bin_path)
        except BaseException:
            self._abandon()
            raise
        self.pid = os.getpid()

    def _abandon(self) -> None:
        for fd, size in ((self.bin, self.size), (self.idx, self.idx_size)):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
        empty, paths = self.size == 0, self.paths()
        self.close()
        if empty:  # nothing was written: leave no file behind
            for path in paths:
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)

    def close(self) -> None:
        for fd in (self.bin, self.idx):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.bin = self.idx = None

    def __getstate__(self) -> dict:  # a pickled copy (another process) writes a pair of its own
        return {"folder": self.folder}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["folder"])

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


# --- maintenance ---------------------------------------------------------------------------------------


@dataclass
class SegmentCheck:
    blocks: int = 0  # every indexed block, corrupt ones included
    entries: int = 0  # rows of the blocks that verify
    corrupt: dict[str, str] = dataclasses.field(default_factory=dict)  # "<bin>@<offset>" -> why
    torn_bytes: int = 0  # after the index's last complete record


def check_segment(idx: Path) -> SegmentCheck:
    """Every block of a segment read and checked (read-only). FileNotFoundError passes for the index."""
    records, torn = read_index(idx)
    c = SegmentCheck(len(records), torn_bytes=torn)
    try:
        f = open(bin_of(idx), "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        f = None
    with f or contextlib.nullcontext():
        for rec in records:
            try:
                if f is None:
                    raise CorruptBlock("its .bin is missing")
                read_block_bytes(f, rec)
                c.entries += rec.n
            except CorruptBlock as e:
                c.corrupt[f"{bin_of(idx)}@{rec.offset}"] = str(e)
    return c


def compact(idx: Path) -> int:
    """Copies the blocks of a segment that verify into a new pair (temp files, fsync, rename; .bin first), then
    removes the old pair (.idx first). Returns the bytes freed. Only for a segment no one writes any more."""
    old_bin = bin_of(idx)
    before = sum(p.stat().st_size for p in (idx, old_bin) if p.exists())
    stem = f"seg-{writer_name()}"
    tmp = [idx.parent / f".{stem}.bin.tmp", idx.parent / f".{stem}.idx.tmp"]
    records, _ = read_index(idx)
    kept = 0  # bytes of the blocks copied, then of the new pair
    try:
        with open(tmp[0], "xb") as out_bin, open(tmp[1], "xb") as out_idx:
            with contextlib.suppress(FileNotFoundError), open(old_bin, "rb") as src:
                for rec in records:
                    try:
                        block = read_block_bytes(src, rec)
                    except CorruptBlock:
                        continue
                    out_idx.write(dataclasses.replace(rec, offset=out_bin.tell()).pack())
                    out_bin.write(block)
                    kept += rec.length
            for f in (out_bin, out_idx):
                f.flush()
                os.fsync(f.fileno())
        if kept:
            kept = tmp[0].stat().st_size + tmp[1].stat().st_size
            os.replace(tmp[0], idx.parent / f"{stem}.bin")
            os.replace(tmp[1], idx.parent / f"{stem}.idx")
    finally:
        for t in tmp:
            t.unlink(missing_ok=True)
    idx.unlink(missing_ok=True)
    old_bin.unlink(missing_ok=True)
    return before - kept


def prune_segments(folder: Path, stale_before: float, removed: dict) -> None:
    """Compacts the segments holding corrupt blocks or a torn index tail that no one wrote since `stale_before`
    (a live writer's are counted as busy), and removes a .bin whose index is gone (a compaction killed between
    its two renames). Adds to the counts in `removed`."""
    for idx in sorted(folder.glob("seg-*.idx")):
        try:
            c = check_segment(idx)
            if not (c.corrupt or c.torn_bytes):
                continue
            if max(_mtime(idx), _mtime(bin_of(idx))) >= stale_before:
                removed["busy_segments"] += 1
                continue
            removed["bytes"] += compact(idx)
        except FileNotFoundError:  # compacted by a concurrent prune
            continue
        removed["compacted_segments"] += 1
        removed["corrupt_blocks"] += len(c.corrupt)
        removed["torn_tails"] += bool(c.torn_bytes)
    for orphan in folder.glob("seg-*.bin"):
        if not orphan.with_name(orphan.name[: -len(".bin")] + ".idx").exists() and _mtime(orphan) < stale_before:
            with contextlib.suppress(FileNotFoundError):
                removed["bytes"] += orphan.stat().st_size
                orphan.unlink()
                removed["temp_files"] += 1


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0
