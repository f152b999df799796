"""Content-addressed feature cache: one folder per extraction context, checksummed safetensors shards.

Layout::

    <root>/v1/<context_key>/context.json        what produced these features (backbone, preprocess, engine...)
    <root>/v1/<context_key>/shard-<id>.safetensors   features [n, D] + metadata {keys, sha256}
    <root>/v1/<context_key>/bad-<key>.json       content that does not decode, with the reason
    <root>/models/<hash>.{fp32,int8}.onnx        exported / quantized backbones (edgetl.train.int8)

An entry is found by (context_key, image content sha256). The context key hashes the backbone weights hash,
the preprocessing spec, the precision/quantization settings and the cache format version, so changing any of
them misses. Shards are written to a temp file in the same folder and renamed: a reader never sees half a
shard, two concurrent writers of the same shard both produce the same complete file, and a killed run leaves
only a temp file that `edgetl cache prune` removes. Every shard carries a sha256 over its keys and features,
checked on every read; a corrupt shard is reported, deleted and recomputed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgetl.fileio import atomic_write_bytes

FORMAT_VERSION = 1
SHARD_GLOB = "shard-*.safetensors"


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


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    corrupt: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"hits": self.hits, "misses": self.misses, "corrupt_shards": self.corrupt}

    @classmethod
    def total(cls, stats: list[CacheStats]) -> CacheStats:
        """One run reads several contexts (FP32, then INT8): run.json reports them summed."""
        return cls(sum(s.hits for s in stats), sum(s.misses for s in stats), [p for s in stats for p in s.corrupt])


class FeatureCache:
    """Features for one extraction context. `lookup` then `write_shard` for what was missing."""

    def __init__(self, root: Path, context: dict, warn=print) -> None:
        self.root = Path(root)
        self.context = context
        self.key = context_key(context)
        self.dir = self.root / f"v{FORMAT_VERSION}" / self.key
        self.warn = warn
        self.stats = CacheStats()

    def open(self) -> FeatureCache:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            ctx = self.dir / "context.json"
            if not ctx.exists():
                atomic_write_bytes(ctx, json.dumps({"format": FORMAT_VERSION, **self.context}, indent=1).encode())
        except OSError as e:
            from edgetl.errors import UserError

            raise UserError(
                f"--cache-dir {self.root}: cannot write there ({e.strerror}); choose a writable folder"
            ) from None
        return self

    def lookup(self, keys: set[str]) -> dict[str, np.ndarray]:
        """Features of every cached key (verifying each shard read); corrupt shards are deleted."""
        found: dict[str, np.ndarray] = {}
        for shard in sorted(self.dir.glob(SHARD_GLOB)):
            try:
                skeys, feats = read_shard(shard)
            except CorruptShard as e:
                self.warn(f"cache: corrupt shard {shard} ({e}); deleting it, its features will be recomputed")
                self.stats.corrupt.append(str(shard))
                shard.unlink(missing_ok=True)
                continue
            except FileNotFoundError:  # pruned by a concurrent process between glob and read
                continue
            for k, f in zip(skeys, feats, strict=True):
                if k in keys:
                    found[k] = f
        os.utime(self.dir)  # last use, for `cache prune --older-than`
        return found

    def mark_bad(self, key: str, reason: str) -> None:
        """Remember that this content does not decode (so it is reported, not retried, on every run)."""
        atomic_write_bytes(self.dir / f"bad-{key}.json", json.dumps({"key": key, "reason": reason}).encode())

    def bad_keys(self, keys: set[str]) -> dict[str, str]:
        out = {}
        for path in self.dir.glob("bad-*.json"):
            key = path.stem[4:]
            if key in keys:
                try:
                    out[key] = json.loads(path.read_text())["reason"]
                except (OSError, ValueError, KeyError):
                    path.unlink(missing_ok=True)  # damaged marker: decode the file again
        return out

    def write_shard(self, keys: list[str], features: np.ndarray) -> Path:
        from safetensors.numpy import save

        features = np.ascontiguousarray(features, dtype=np.float32)
        checksum = shard_checksum(keys, features)
        meta = {"keys": json.dumps(keys), "sha256": checksum, "format": str(FORMAT_VERSION)}
        path = self.dir / f"shard-{checksum[:24]}.safetensors"
        atomic_write_bytes(path, save({"features": features}, metadata=meta))
        return path


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


def verify(root: Path) -> tuple[int, int, list[str]]:
    """(shards checked, entries, corrupt shard paths). Read-only."""
    checked, entries, bad = 0, 0, []
    for ctx in list_contexts(root):
        for shard in sorted(Path(ctx["path"]).glob(SHARD_GLOB)):
            checked += 1
            try:
                keys, _ = read_shard(shard)
                entries += len(keys)
            except CorruptShard:
                bad.append(str(shard))
            except FileNotFoundError:
                checked -= 1
    return checked, entries, bad


def prune(root: Path, older_than_days: float | None, everything: bool, stale_tmp_s: float = 3600) -> dict:
    """Remove corrupt shards, temp files left by killed runs, and (optionally) contexts unused for N days."""
    removed = {"contexts": 0, "corrupt_shards": 0, "temp_files": 0, "bytes": 0}
    now = time.time()
    for ctx in list_contexts(root):
        d = Path(ctx["path"])
        if everything or (older_than_days is not None and now - ctx["last_used"] > older_than_days * 86400):
            removed["bytes"] += ctx["bytes"]
            shutil.rmtree(d, ignore_errors=True)
            removed["contexts"] += 1
            continue
        removed["temp_files"] += _remove_stale_temps(d, now - stale_tmp_s)
        for shard in d.glob(SHARD_GLOB):
            try:
                read_shard(shard)
            except CorruptShard:
                removed["bytes"] += _size(shard)
                shard.unlink(missing_ok=True)
                removed["corrupt_shards"] += 1
            except FileNotFoundError:
                continue
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
