"""Content-addressed feature cache: one folder per extraction context, append-only checksummed segment files.

Layout (format 2)::

    <root>/edgetl-cache.json                   {"format": 2, "written_by": "edgetl <version>"}
    <root>/v2/<context_key>/context.json       what produced these features (backbone, preprocess, engine...)
    <root>/v2/<context_key>/seg-<writer>.bin   append-only blocks: one batch of [n, ...] features and its keys
    <root>/v2/<context_key>/seg-<writer>.idx   one record per block: offset, shape, sha256, keys
    <root>/v2/<context_key>/bad-<key>.json     content that does not decode: {key, reason, sha256}
    <root>/models/<hash>.{fp32,int8}.onnx      exported / quantized backbones (edgetl.train.int8)

An entry is found by (context_key, image content sha256). The context key hashes the backbone weights hash,
the preprocessing spec, the precision/quantization settings and the cache format version, so changing any of
them misses. Each writer (a FeatureCache in one process) appends batches to segment files of its own
(edgetl.train.segments: the binary layout, and why a crash never leaves a record pointing at unwritten bytes),
so many processes on many machines can fill one shared folder. Every block's sha256 is checked on every read; a
corrupt block is reported once and its keys are not returned, so they are recomputed into a new block (files
are never edited in place; `edgetl cache prune` compacts a damaged segment no one writes any more). When two
writers wrote one key, the first block that verifies is used. A bad-content marker makes an image skip, so its
sha256 binds the reason to the context key and the content key: a marker that was hand-edited, copied from
another context or renamed to another key is reported, deleted, and that image is decoded again. (Whoever can
write the cache could recompute either checksum: they catch damage and mix-ups, not an attacker.)

A root another edgetl version wrote (its edgetl-cache.json, or v<N> folders of another format) is refused with
one line, untouched. A read-only cache serves its hits without writing; a write that fails (full disk,
read-only, permissions) is one user error naming the cache folder, never a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgetl import __version__
from edgetl.errors import UserError
from edgetl.fileio import atomic_write_bytes
from edgetl.train import segments as seg

FORMAT_VERSION = 2
ROOT_MARKER = "edgetl-cache.json"
SEGMENT_GLOB = "seg-*.idx"
MARKER_GLOB = "bad-*.json"
_FORMAT_DIR = re.compile(r"v(\d+)")


def default_cache_dir() -> Path:
    env = os.environ.get("EDGETL_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgetl" / "features"


def context_key(context: dict) -> str:
    blob = json.dumps({"format": FORMAT_VERSION, **context}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def cache_format(root: Path) -> int | None:
    """The format of the cache in `root`: its marker's, else its v<N> folders' (another one first); None if new."""
    root, why = Path(root), "not an edgetl cache marker"
    try:
        fmt = json.loads((root / ROOT_MARKER).read_bytes())["format"]
        if type(fmt) is int:
            return fmt
    except (FileNotFoundError, NotADirectoryError):
        names = os.listdir(root) if root.is_dir() else []
        found = sorted(int(m[1]) for name in names if (m := _FORMAT_DIR.fullmatch(name)) and (root / name).is_dir())
        others = [f for f in found if f != FORMAT_VERSION]
        return others[0] if others else (FORMAT_VERSION if found else None)
    except (OSError, ValueError, KeyError, TypeError) as e:
        why = getattr(e, "strerror", None) or why
    raise UserError(
        f"--cache-dir {root}: cannot read its {ROOT_MARKER} ({why}); pass another --cache-dir, or move that folder away"
    )


def check_format(root: Path) -> None:
    """One line, and nothing under `root` touched, when another edgetl version's cache is there."""
    fmt = cache_format(root)
    if fmt is not None and fmt != FORMAT_VERSION:
        raise UserError(
            f"--cache-dir {root}: holds a feature cache written by another edgetl version (format {fmt}; this edgetl "
            f"reads format {FORMAT_VERSION}); pass another --cache-dir, or move that folder away"
        )


def marker_checksum(context: str, key: str, reason: str) -> str:
    """Binds a marker to its context folder and content key: copied or renamed, it no longer verifies."""
    blob = json.dumps(["edgetl bad-content marker", FORMAT_VERSION, context, key, reason], separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class CorruptMarker(Exception):
    pass


def marker_path(folder: Path, key: str) -> Path:
    return Path(folder) / f"bad-{key}.json"


def read_marker(path: Path, context: str) -> tuple[str, str]:
    """(content key, reason) of a marker in the folder of context key `context`, or CorruptMarker."""
    data = path.read_bytes()  # FileNotFoundError passes through: a concurrent prune is not corruption
    try:
        marker = json.loads(data)
        key, reason, checksum = marker["key"], marker["reason"], marker.get("sha256")
    except Exception as e:  # noqa: BLE001 - any parse failure means the file is damaged
        raise CorruptMarker(f"unreadable ({type(e).__name__}: {str(e)[:80]})") from None
    if not (isinstance(key, str) and isinstance(reason, str)):
        raise CorruptMarker("unreadable (key and reason must be strings)")
    if checksum is None:
        raise CorruptMarker("no checksum (hand-written, or written by an older edgetl)")
    if path.name != marker_path(path.parent, key).name:
        raise CorruptMarker(f"it names another key ({key[:16]}...) than its file name")
    if checksum != marker_checksum(context, key, reason):
        raise CorruptMarker("checksum mismatch (edited, or copied from another cache context)")
    return key, reason


def unwritable(root: Path, e: OSError) -> UserError:
    """One line for any failed cache write: the fix for a full disk is not the fix for a read-only folder."""
    why = (e.strerror or str(e) or type(e).__name__).splitlines()[0]
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free disk space there or choose another --cache-dir"
    elif e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = "choose a writable --cache-dir"
    else:
        fix = "free disk space there or choose a writable --cache-dir"
    return UserError(f"--cache-dir {root}: cannot write the feature cache ({why}); {fix}")


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    corrupt_blocks: list[str] = field(default_factory=list)  # "<segment .bin>@<offset>"
    corrupt_markers: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        names = ("hits", "misses", "corrupt_blocks", "corrupt_markers")
        return {name: getattr(self, name) for name in names}

    @classmethod
    def total(cls, stats: list[CacheStats]) -> CacheStats:
        """One run reads several contexts (FP32, then INT8): run.json reports them summed."""
        return cls(
            sum(s.hits for s in stats),
            sum(s.misses for s in stats),
            [p for s in stats for p in s.corrupt_blocks],
            [p for s in stats for p in s.corrupt_markers],
        )


class FeatureCache:
    """Features for one extraction context. `lookup` then `write_shard` for what was missing; `close` (or `with`)
    releases the open segment files (never closing loses nothing: every write is on disk when it returns)."""

    def __init__(self, root: Path, context: dict, warn=print, dtype=np.float32) -> None:
        self.root = Path(root)
        self.dtype = dtype  # what blocks store: float32 features; float16 activations at a fine-tuning cut
        self.context = context
        self.key = context_key(context)
        self.dir = self.root / f"v{FORMAT_VERSION}" / self.key
        self.warn = warn
        self.stats = CacheStats()
        self._writer = seg.SegmentWriter(self.dir)
        self._reported: set[str] = set()  # corrupt blocks already warned about

    def open(self) -> FeatureCache:
        """Creates the root marker and the context folder; writes nothing when they exist (a read-only cache opens).
        Another edgetl version's cache is refused, untouched."""
        check_format(self.root)
        marker = json.dumps({"format": FORMAT_VERSION, "written_by": f"edgetl {__version__}"}).encode()
        context = json.dumps({"format": FORMAT_VERSION, **self.context}, indent=1).encode()
        try:
            for folder, name, blob in ((self.root, ROOT_MARKER, marker), (self.dir, "context.json", context)):
                folder.mkdir(parents=True, exist_ok=True)  # exist_ok also holds on a read-only file system
                if not (folder / name).exists():
                    atomic_write_bytes(folder / name, blob)
        except OSError as e:
            raise unwritable(self.root, e) from None
        return self

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def lookup(self, keys: set[str]) -> dict[str, np.ndarray]:
        """Features of every cached key, from the blocks that hold one (each checked as it is read)."""
        found = seg.find(self.dir, {seg.raw_key(k): k for k in keys}, self._corrupt_block, self.warn)
        with contextlib.suppress(OSError):  # best effort: a read-only cache still serves its hits
            os.utime(self.dir)  # last use, for `cache prune --older-than`
        return found

    def _corrupt_block(self, where: str, why: str, n: int) -> None:
        if where in self._reported:
            return
        self._reported.add(where)
        self.warn(
            f"cache: corrupt block {where} ({why}); its {n} features come from another block or are recomputed "
            "(`edgetl cache prune` compacts that segment)"
        )
        self.stats.corrupt_blocks.append(where)

    def mark_bad(self, key: str, reason: str) -> None:
        """Remember that this content does not decode (so it is reported, not retried, on every run)."""
        marker = {"format": FORMAT_VERSION, "key": key, "reason": reason}
        marker["sha256"] = marker_checksum(self.key, key, reason)
        self._write(marker_path(self.dir, key), json.dumps(marker).encode())

    def bad_keys(self, keys: set[str]) -> dict[str, str]:
        """Reasons of the keys marked bad; a marker that does not verify is dropped so its image is decoded again."""
        out = {}
        for path in sorted(self.dir.glob(MARKER_GLOB)):
            if path.name[len("bad-") : -len(".json")] not in keys:
                continue
            try:
                key, reason = read_marker(path, self.key)
            except CorruptMarker as e:
                try:
                    path.unlink(missing_ok=True)
                    action = "deleted it"
                except OSError:  # a read-only cache: ignored all the same
                    action = "could not delete it"
                self.warn(f"cache: corrupt bad-file marker {path} ({e}); {action}, that image will be decoded again")
                self.stats.corrupt_markers.append(str(path))
                continue
            except FileNotFoundError:  # pruned by a concurrent process between glob and read
                continue
            except OSError as e:
                self.warn(f"cache: cannot read {path} ({e.strerror}); that image will be decoded again")
                continue
            out[key] = reason
        return out

    def write_shard(self, keys: list[str], features: np.ndarray) -> tuple[Path, int]:
        """Appends one block (one extraction batch) to this writer's segment; returns its .bin and offset."""
        features = np.ascontiguousarray(features, dtype=self.dtype)
        if len(keys) != len(features):
            raise ValueError(f"{len(keys)} keys for {len(features)} rows of features")
        try:
            path, rec = self._writer.append(b"".join(seg.raw_key(k) for k in keys), features)
        except OSError as e:
            raise unwritable(self.root, e) from None
        return path, rec.offset

    def _write(self, path: Path, data: bytes) -> None:
        # atomic_write_bytes removes its temp file when the write fails, so a full disk leaves nothing behind
        try:
            atomic_write_bytes(path, data)
        except OSError as e:
            raise unwritable(self.root, e) from None


# --- maintenance: ls / verify / prune ----------------------------------------------------------------


def list_contexts(root: Path) -> list[dict]:
    """Per context: segments, entries (rows; a key two writers wrote counts twice), bytes, temp files, last use."""
    check_format(root)
    out = []
    for d in sorted((Path(root) / f"v{FORMAT_VERSION}").glob("*")):
        if not d.is_dir():
            continue
        segments, entries = sorted(d.glob(SEGMENT_GLOB)), 0
        for idx in segments:
            with contextlib.suppress(FileNotFoundError):  # compacted by a concurrent prune
                entries += sum(rec.n for rec in seg.read_index(idx)[0])
        try:
            ctx = json.loads((d / "context.json").read_text())
        except (OSError, ValueError):
            ctx = {}
        out.append(
            {
                "key": d.name,
                "path": str(d),
                "context": ctx,
                "segments": len(segments),
                "entries": entries,
                "bytes": sum(_size(s) for s in d.glob("seg-*")),
                "temp_files": len(list(d.glob(".*.tmp"))),
                "last_used": d.stat().st_mtime,
            }
        )
    return out


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # removed by a concurrent prune or writer
        return 0


@dataclass
class VerifyReport:
    segments: int = 0
    blocks: int = 0
    entries: int = 0
    markers: int = 0
    corrupt_blocks: list[str] = field(default_factory=list)  # "<segment .bin>@<offset>"
    torn_tails: list[str] = field(default_factory=list)  # index files whose last record is partial
    corrupt_markers: list[str] = field(default_factory=list)
    why: dict[str, str] = field(default_factory=dict)  # corrupt block -> reason

    @property
    def corrupt(self) -> list[str]:
        return self.corrupt_blocks + self.torn_tails + self.corrupt_markers


def verify(root: Path) -> VerifyReport:
    """Every block of every segment and every bad-file marker checked against its checksum. Read-only."""
    r = VerifyReport()
    for ctx in list_contexts(root):
        for idx in sorted(Path(ctx["path"]).glob(SEGMENT_GLOB)):
            try:
                c = seg.check_segment(idx)
            except FileNotFoundError:
                continue
            r.segments, r.blocks, r.entries = r.segments + 1, r.blocks + c.blocks, r.entries + c.entries
            r.corrupt_blocks += list(c.corrupt)
            r.why.update(c.corrupt)
            if c.torn_bytes:
                r.torn_tails.append(str(idx))
        for marker in sorted(Path(ctx["path"]).glob(MARKER_GLOB)):
            try:
                read_marker(marker, ctx["key"])
            except CorruptMarker:
                r.corrupt_markers.append(str(marker))
            except FileNotFoundError:
                continue
            r.markers += 1
    return r


def prune(root: Path, older_than_days: float | None, everything: bool, stale_tmp_s: float = 3600) -> dict:
    """Remove corrupt markers, temp files left by killed runs, (optionally) contexts unused for N days, and
    compact the segments holding corrupt blocks or a torn index tail that no one wrote for `stale_tmp_s`."""
    removed = dict.fromkeys(
        ("contexts", "compacted_segments", "corrupt_blocks", "torn_tails", "busy_segments", "corrupt_markers"), 0
    )
    removed |= {"temp_files": 0, "bytes": 0}
    now = time.time()
    for ctx in list_contexts(root):
        d = Path(ctx["path"])
        if everything or (older_than_days is not None and now - ctx["last_used"] > older_than_days * 86400):
            removed["bytes"] += ctx["bytes"]
            shutil.rmtree(d, ignore_errors=True)
            removed["contexts"] += 1
            continue
        removed["temp_files"] += _remove_stale_temps(d, now - stale_tmp_s)
        try:
            seg.prune_segments(d, now - stale_tmp_s, removed)
            for path in d.glob(MARKER_GLOB):
                with contextlib.suppress(FileNotFoundError):
                    try:
                        read_marker(path, d.name)
                    except CorruptMarker:
                        removed["bytes"] += _size(path)
                        path.unlink(missing_ok=True)
                        removed["corrupt_markers"] += 1
        except OSError as e:
            raise unwritable(Path(root), e) from None
    models = Path(root) / "models"  # quantized backbones (edgetl.train.int8), keyed like the features
    if everything and models.is_dir():
        removed["bytes"] += sum(_size(m) for m in models.iterdir())
        shutil.rmtree(models, ignore_errors=True)
    elif models.is_dir():
        removed["temp_files"] += _remove_stale_temps(models, now - stale_tmp_s)
    return removed


def _remove_stale_temps(folder: Path, older_than: float) -> int:
    """Temp files of killed writers (a live writer's temp file is young: it is left alone)."""
    n = 0
    for tmp in folder.glob(".*.tmp*"):
        with contextlib.suppress(FileNotFoundError):
            if tmp.stat().st_mtime < older_than:
                tmp.unlink()
                n += 1
    return n
