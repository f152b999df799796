"""What this machine already checked: a bundle file it hashed, and the unpacked copy whose every file it hashed.

Opening a bundle hashes the archive (to find its unpacked copy in the cache) and every unpacked file (against the
manifest): ~7 ms of the ~0.25 s of a one-image `edgetl predict` (benchmarks/startup.py). Once both checks passed,
the next open of the same file trusts them the way git trusts its index: it compares each file's stat (device,
inode, size, mtime, ctime) with the one taken before the hashing, and hashes everything again on any difference.
Any write changes ctime, which no user call can set back, so a changed, replaced or copied-over file shows.
A stat whose mtime or ctime is within RACY_NS of the moment it was taken is never recorded: a second write in the
same timestamp tick could leave it unchanged (FAT's times step in 2 s).

Records: <cache>/bundles/.opened/<device>-<inode>.json, one per bundle file, pruned with the unpacked copies.
Standard library only: safe to import on the device.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from pathlib import Path

from edgetl.contract import MANIFEST
from edgetl.deploy.artifact import read_manifest
from edgetl.errors import UserError
from edgetl.fileio import atomic_write_bytes

OPENED = ".opened"
RACY_NS = 2_000_000_000
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def stat_key(path: Path, follow: bool = True) -> list[int]:
    st = os.stat(path, follow_symlinks=follow)
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def settled_key(path: Path, follow: bool = True) -> list[int] | None:
    """The stat key of `path`, or None where it changed too recently to be told apart from a next write."""
    taken = time.time_ns()
    key = stat_key(path, follow)
    return key if max(key[3], key[4]) < taken - RACY_NS else None


def file_keys(folder: Path, manifest: dict, settled: bool = False) -> dict[str, list[int]] | None:
    """The stat keys (links not followed) of the manifest and every file it lists; None where one is missing or,
    with `settled`, too recent."""
    keys = {}
    try:
        for name in (MANIFEST, *manifest["files"]):
            key = settled_key(folder / name, follow=False) if settled else stat_key(folder / name, follow=False)
            if key is None:
                return None
            keys[name] = key
    except OSError:
        return None
    return keys


def _record(root: Path, key: list[int]) -> Path:
    return root / OPENED / f"{key[0]}-{key[1]}.json"


def recall(root: Path, bundle: Path) -> tuple[Path, dict] | None:
    """(folder, manifest) of `bundle` unpacked under `root`, where neither changed since both were hashed; else None
    (the caller hashes and verifies)."""
    try:
        key = stat_key(bundle)
        record = json.loads(_record(root, key).read_text())
        if record["bundle"] != key or not SHA256_HEX.fullmatch(record["folder"]):
            return None
        folder = root / record["folder"]
        manifest = read_manifest(folder, bundle)
        if record["files"] != file_keys(folder, manifest):
            return None
    except (OSError, ValueError, KeyError, TypeError, UserError):
        return None
    with contextlib.suppress(OSError):  # a read-only cache is still read
        os.utime(folder)  # most recently used
    return folder, manifest


def remember(root: Path, bundle_key: list[int] | None, folder: Path, files: dict | None) -> None:
    """Record a bundle and its unpacked copy that were just hashed, from stat keys taken before the hashing (a write
    during it shows at the next open). Nothing is recorded where a key is too recent; a cache that cannot be
    written costs the next open the hashing, nothing else."""
    if bundle_key is None or files is None:
        return
    record = {"bundle": bundle_key, "folder": folder.name, "files": files}
    with contextlib.suppress(OSError):
        (root / OPENED).mkdir(exist_ok=True)
        atomic_write_bytes(_record(root, bundle_key), json.dumps(record).encode())


def prune(root: Path) -> None:
    """Remove the records whose unpacked copy is gone (evicted from the cache)."""
    for path in (root / OPENED).glob("*.json") if (root / OPENED).is_dir() else ():
        try:
            gone = not (root / json.loads(path.read_text())["folder"]).is_dir()
        except (OSError, ValueError, KeyError, TypeError):
            gone = True
        if gone:
            path.unlink(missing_ok=True)
