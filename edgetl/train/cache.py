"""Content-addressed feature cache: one folder per extraction context, checksummed safetensors shards.

Layout::

    <root>/v1/<context_key>/context.json        what produced these features (backbone, preprocess, engine...)
    <root>/v1/<context_key>/shard-<id>.safetensors   features [n, D] + metadata {keys, sha256}
    <root>/v1/<context_key>/bad-<key>.json       content that does not decode: {key, reason, sha256}
    <root>/models/<hash>.{fp32,int8}.onnx        exported / quantized backbones (edgetl.train.int8)

An entry is found by (context_key, image content sha256). The context key hashes the backbone weights hash,
the preprocessing spec, the precision/quantization settings and the cache format version, so changing any of
them misses. Shards are written to a temp file in the same folder and renamed: a reader never sees half a
shard, two concurrent writers of the same shard both produce the same complete file, and a killed run leaves
only a temp file that `edgetl cache prune` removes. Every shard carries a sha256 over its keys and features,
checked on every read; a corrupt shard is reported, deleted and recomputed. A bad-content marker makes an image
skip, so it is checked the same way: its sha256 binds the reason to the context key and the content key, so a
marker that was hand-edited, copied from another context or renamed to another key is reported, deleted, and
that image is decoded again. (Whoever can write the cache could recompute either checksum: they catch damage and
mix-ups, not an attacker.)

The cache may be read-only (a shared or mounted cache): hits are served without writing anything. A write that
fails (full disk, read-only, permissions) is one user error naming the cache folder, never a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgetl.errors import UserError
from edgetl.fileio import atomic_write_bytes

FORMAT_VERSION = 1
SHARD_GLOB = "shard-*.safetensors"
MARKER_GLOB = "bad-*.json"


def default_cache_dir() -> Path:
    env = os.environ.get("EDGETL_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgetl" / "features"


def context_key(context: dict) -> str:
    blob = json.dumps({"format": FORMAT_VERSION, **context}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def shard_checksum(keys: list[str], features: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update("\n".join(keys).encode())
    h.update(str(features.shape).encode())
    h.update(np.ascontiguousarray(features, dtype=np.float32).tobytes())
    return h.hexdigest()


class CorruptShard(Exception):
    pass


def read_shard(path: Path) -> tuple[list[str], np.ndarray]:
    from safetensors.numpy import load

    data = path.read_bytes()  # FileNotFoundError passes through: a concurrent prune is not corruption
    try:
        tensors = load(data)
        meta = _metadata(data)
        keys = json.loads(meta["keys"])
        feats = tensors["features"]
    except Exception as e:  # noqa: BLE001 - any parse failure means the file is damaged
        raise CorruptShard(f"unreadable ({type(e).__name__}: {str(e)[:80]})") from None
    if meta.get("sha256") != shard_checksum(keys, feats) or len(keys) != len(feats):
        raise CorruptShard("checksum mismatch")
    return keys, feats


def _metadata(data: bytes) -> dict:
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n]).get("__metadata__", {})


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


def _discard(path: Path) -> bool:
    """Delete a damaged file if the cache is writable; a read-only cache just ignores it (False)."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        return False
    return True


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    corrupt: list[str] = field(default_factory=list)
    corrupt_markers: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "corrupt_shards": self.corrupt,
            "corrupt_markers": self.corrupt_markers,
        }

    @classmethod
    def total(cls, stats: list[CacheStats]) -> CacheStats:
        """One run reads several contexts (FP32, then INT8): run.json reports them summed."""
        return cls(
            sum(s.hits for s in stats),
            sum(s.misses for s in stats),
            [p for s in stats for p in s.corrupt],
            [p for s in stats for p in s.corrupt_markers],
        )


class FeatureCache:
    """Features for one extraction context. `lookup` then `write_shard` for what was missing."""

    def __init__(self, root: Path, context: dict, warn=print, dtype=np.float32) -> None:
        self.root = Path(root)
        self.dtype = dtype  # what shards store: float32 features; float16 activations at a fine-tuning cut
        self.context = context
        self.key = context_key(context)
        self.dir = self.root / f"v{FORMAT_VERSION}" / self.key
        self.warn = warn
        self.stats = CacheStats()

    def open(self) -> FeatureCache:
        """Creates the context folder; writes nothing when it exists, so a read-only cache opens."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)  # exist_ok also holds on a read-only file system
            ctx = self.dir / "context.json"
            if not ctx.exists():
                atomic_write_bytes(ctx, json.dumps({"format": FORMAT_VERSION, **self.context}, indent=1).encode())
        except OSError as e:
            raise unwritable(self.root, e) from None
        return self

    def lookup(self, keys: set[str]) -> dict[str, np.ndarray]:
        """Features of every cached key (verifying each shard read); corrupt shards are deleted."""
        found: dict[str, np.ndarray] = {}
        for shard in sorted(self.dir.glob(SHARD_GLOB)):
            try:
                skeys, feats = read_shard(shard)
            except CorruptShard as e:
                self._corrupt(shard, e, "shard", "its features will be recomputed", self.stats.corrupt)
                continue
            except FileNotFoundError:  # pruned by a concurrent process between glob and read
                continue
            for k, f in zip(skeys, feats, strict=True):
                if k in keys:
                    found[k] = f
        with contextlib.suppress(OSError):  # best effort: a read-only cache still serves its hits
            os.utime(self.dir)  # last use, for `cache prune --older-than`
        return found

    def _corrupt(self, path: Path, why: Exception, kind: str, then: str, into: list[str]) -> None:
        action = "deleted it" if _discard(path) else "could not delete it"
        self.warn(f"cache: corrupt {kind} {path} ({why}); {action}, {then}")
        into.append(str(path))

    def mark_bad(self, key: str, reason: str) -> None:
        """Remember that this content does not decode (so it is reported, not retried, on every run)."""
        marker = {
            "format": FORMAT_VERSION,
            "key": key,
            "reason": reason,
            "sha256": marker_checksum(self.key, key, reason),
        }
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
                self._corrupt(
                    path, e, "bad-file marker", "that image will be decoded again", self.stats.corrupt_markers
                )
                continue
            except FileNotFoundError:  # pruned by a concurrent process between glob and read
                continue
            except OSError as e:
                self.warn(f"cache: cannot read {path} ({e.strerror}); that image will be decoded again")
                continue
            out[key] = reason
        return out

    def write_shard(self, keys: list[str], features: np.ndarray) -> Path:
        from safetensors.numpy import save

        features = np.ascontiguousarray(features, dtype=self.dtype)
        checksum = shard_checksum(keys, features)
        meta = {"keys": json.dumps(keys), "sha256": checksum, "format": str(FORMAT_VERSION)}
        path = self.dir / f"shard-{checksum[:24]}.safetensors"
        self._write(path, save({"features": features}, metadata=meta))
        return path

    def _write(self, path: Path, data: bytes) -> None:
        # atomic_write_bytes removes its temp file when the write fails, so a full disk leaves nothing behind
        try:
            atomic_write_bytes(path, data)
        except OSError as e:
            raise unwritable(self.root, e) from None


# --- maintenance: ls / verify / prune ----------------------------------------------------------------


def list_contexts(root: Path) -> list[dict]:
    out = []
    for d in sorted((Path(root) / f"v{FORMAT_VERSION}").glob("*")):
        if not d.is_dir():
            continue
        shards = [s for s in d.glob(SHARD_GLOB) if s.exists()]
        try:
            ctx = json.loads((d / "context.json").read_text())
        except (OSError, ValueError):
            ctx = {}
        out.append(
            {
                "key": d.name,
                "path": str(d),
                "context": ctx,
                "shards": len(shards),
                "bytes": sum(_size(s) for s in shards),
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
    shards: int = 0
    entries: int = 0
    markers: int = 0
    corrupt_shards: list[str] = field(default_factory=list)
    corrupt_markers: list[str] = field(default_factory=list)

    @property
    def corrupt(self) -> list[str]:
        return self.corrupt_shards + self.corrupt_markers


def verify(root: Path) -> VerifyReport:
    """Every shard and bad-file marker checked against its checksum. Read-only."""
    r = VerifyReport()
    for ctx in list_contexts(root):
        for shard in sorted(Path(ctx["path"]).glob(SHARD_GLOB)):
            try:
                keys, _ = read_shard(shard)
                r.entries += len(keys)
            except CorruptShard:
                r.corrupt_shards.append(str(shard))
            except FileNotFoundError:
                continue
            r.shards += 1
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
    """Remove corrupt shards and markers, temp files left by killed runs, and (optionally) contexts unused for N days."""
    removed = {"contexts": 0, "corrupt_shards": 0, "corrupt_markers": 0, "temp_files": 0, "bytes": 0}
    now = time.time()
    for ctx in list_contexts(root):
        d = Path(ctx["path"])
        if everything or (older_than_days is not None and now - ctx["last_used"] > older_than_days * 86400):
            removed["bytes"] += ctx["bytes"]
            shutil.rmtree(d, ignore_errors=True)
            removed["contexts"] += 1
            continue
        removed["temp_files"] += _remove_stale_temps(d, now - stale_tmp_s)
        checks = (
            (SHARD_GLOB, read_shard, CorruptShard, "corrupt_shards"),
            (MARKER_GLOB, lambda m, d=d: read_marker(m, d.name), CorruptMarker, "corrupt_markers"),
        )
        for pattern, read, corrupt, counter in checks:
            for path in d.glob(pattern):
                try:
                    read(path)
                except corrupt:
                    removed["bytes"] += _size(path)
                    _remove(root, path)
                    removed[counter] += 1
                except FileNotFoundError:
                    continue
    models = Path(root) / "models"  # quantized backbones (edgetl.train.int8), keyed like the features
    if everything and models.is_dir():
        removed["bytes"] += sum(_size(m) for m in models.iterdir())
        shutil.rmtree(models, ignore_errors=True)
    elif models.is_dir():
        removed["temp_files"] += _remove_stale_temps(models, now - stale_tmp_s)
    return removed


def _remove(root: Path, path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as e:
        raise unwritable(Path(root), e) from None


def _remove_stale_temps(folder: Path, older_than: float) -> int:
    """Temp files of killed writers (a live writer's temp file is young: it is left alone)."""
    n = 0
    for tmp in folder.glob(".*.tmp*"):
        with contextlib.suppress(FileNotFoundError):
            if tmp.stat().st_mtime < older_than:
                tmp.unlink()
                n += 1
    return n
