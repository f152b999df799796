"""File helpers shared by every stage (torch-free): content hashes and atomic writes.

hashlib and tempfile are imported where used: a bundle opened again on the device needs neither (edgetl.deploy.opened).
"""

from __future__ import annotations

import os
from pathlib import Path


def sha256_file(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Temp file in the same folder, fsync, rename: readers see the old file or the new one, never half.

    The temp name is `.<name>.<random>.tmp`, which `edgetl cache prune` recognises as a killed writer's leftover.
    """
    import tempfile

    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cache_root() -> Path:
    """Where compiled-model caches live on this machine: $EDGETL_CACHE_DIR, else $XDG_CACHE_HOME/edgetl.

    Kept apart from edgetl.train.cache.default_cache_dir on purpose: that is the feature store ($EDGETL_CACHE_DIR itself,
    else this root's features/), and the runtime caches here (openvino/, tensorrt/, the unpacked bundles/, probe/
    results, onnx-external-data/) never collide with its v2/ or edgetl-cache.json.
    """
    import os

    if os.environ.get("EDGETL_CACHE_DIR"):
        return Path(os.environ["EDGETL_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgetl"


def cached_json(path: Path, compute, valid=lambda value: True):
    """`compute()`'s JSON-able answer, kept in `path` (named by what it depends on, e.g. a file's sha256): read back
    when present and `valid`, else computed and written; an unwritable cache only costs the next call the work."""
    import json

    try:
        found = json.loads(Path(path).read_text())
        if valid(found):
            return found
    except (OSError, ValueError):
        pass
    found = compute()
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(Path(path), json.dumps(found).encode())
    except OSError:
        pass
    return found
