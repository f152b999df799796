"""Compiled-model folders and the deploy bundle (one tar.gz): manifest, hashes, atomic writes, safe extraction.

A bundle is copied to devices by hand, over flaky links, by people who did not build it, so the device
side trusts nothing it has not checked: every file is listed in `manifest.json` with its sha256, and the
tar is extracted with Python's `data` filter *plus* our own checks (regular files and folders only, no
absolute paths, no `..`, no links, no device files, nothing unlisted). The manifest carries everything the
device needs to run the model without the training stack: classes, preprocessing, input spec, precision,
and the runtime versions it was built with. Standard library + NumPy-free: safe to import on the device. The
archive modules are imported only to pack or unpack: opening a bundle already unpacked needs none of them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from edgetl.deploy import opened
from edgetl.deploy.artifact import MANIFEST, Artifact, check_name, read_manifest, verify
from edgetl.errors import UserError
from edgetl.fileio import atomic_write_bytes, sha256_file

MAX_UNPACKED_BYTES = 16 << 30  # refuse tar bombs; a real model bundle is a few hundred MB at most

# --- the tar.gz ------------------------------------------------------------------------------------


def package(artifact_dir: Path, out: Path) -> dict:
    """Verify a compiled folder and write it as one tar.gz (manifest first, fixed owners and times)."""
    import gzip
    import io
    import tarfile

    artifact_dir, out = Path(artifact_dir), Path(out)
    if not artifact_dir.is_dir():
        raise UserError(f"{artifact_dir}: not a folder; give the --out folder of `edgetl compile`")
    manifest = read_manifest(artifact_dir, artifact_dir)
    verify(artifact_dir, manifest, artifact_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    # gzip's header stamps the time (and tarfile's "w:gz" the file name): mtime=0 and no name keep two packages
    # of the same folder byte-identical.
    with (
        gzip.GzipFile(filename="", fileobj=buffer, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name in [MANIFEST, *sorted(manifest["files"])]:
            data = (artifact_dir / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    atomic_write_bytes(out, buffer.getvalue())
    return manifest


def _safe_members(tar, origin) -> list:
    """The tarfile.TarInfo members to extract, each checked."""
    members, seen, total = [], set(), 0
    for m in tar.getmembers():
        check_name(m.name, origin)
        if m.issym() or m.islnk():
            raise UserError(f"{origin}: {m.name} is a link; bundles hold regular files only, refusing it")
        if m.isdir():
            continue
        if not m.isfile():
            raise UserError(f"{origin}: {m.name} is a device or special file; refusing this bundle")
        name = PurePosixPath(m.name).as_posix()
        if name in seen:
            raise UserError(f"{origin}: {name} appears twice in the archive; refusing this bundle")
        seen.add(name)
        total += m.size
        if total > MAX_UNPACKED_BYTES:
            raise UserError(f"{origin}: unpacks to more than {MAX_UNPACKED_BYTES >> 30} GiB; refusing it")
        members.append(m)
    return members


def extract(bundle: Path, dest: Path) -> dict:
    """Safely unpack a bundle into `dest` and verify it; returns the manifest."""
    import tarfile

    try:
        with tarfile.open(bundle, mode="r:*") as tar:
            members = _safe_members(tar, bundle)
            if MANIFEST not in {m.name for m in members}:
                raise UserError(f"{bundle}: no {MANIFEST} inside; build bundles with `edgetl package`")
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as e:
        why = " ".join(str(e).split())  # tarfile's messages span several lines; the user gets one
        raise UserError(
            f"{bundle}: not a readable bundle ({why}); re-copy it or rebuild it with `edgetl package`"
        ) from None
    manifest = read_manifest(dest, bundle)
    unlisted = {m.name for m in members} - set(manifest["files"]) - {MANIFEST}
    if unlisted:
        raise UserError(f"{bundle}: files not listed in {MANIFEST}: {sorted(unlisted)}; refusing a tampered bundle")
    verify(dest, manifest, bundle)
    return manifest


UNPACKED_KEPT = 8  # bundles kept unpacked in the cache (the most recently opened)


@contextlib.contextmanager
def open_bundle(path: Path) -> Iterator[Artifact]:
    """A verified Artifact from a bundle or a compiled folder. A bundle is unpacked once into the cache, keyed by
    the sha256 of the archive, and every file is checked against the manifest at each open (by hashing, or by stat
    where this machine hashed that very file before: edgetl.deploy.opened); where the cache is not writable it is
    unpacked to a temp folder, removed afterwards."""
    path = Path(path)
    if path.is_dir():
        manifest = read_manifest(path, path)
        verify(path, manifest, path)
        yield Artifact(path, manifest)
        return
    if not path.is_file():
        raise UserError(f"{path}: no such bundle; give a .tar.gz from `edgetl package` or an `edgetl compile` folder")
    cached = _unpacked(path)
    if cached is not None:
        yield Artifact(*cached, content_addressed=True)
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgetl-bundle-") as tmp:
        manifest = extract(path, Path(tmp))
        yield Artifact(Path(tmp), manifest)


def _unpacked(bundle: Path) -> tuple[Path, dict] | None:
    """(folder, manifest) of the bundle unpacked in the cache; None where the cache cannot be written."""
    from edgetl.fileio import cache_root

    root = cache_root() / "bundles"
    known = opened.recall(root, bundle)
    if known is not None:
        return known
    import shutil
    import tempfile

    bundle_key = opened.settled_key(bundle)  # stat keys before hashing: a write during it shows at the next open
    folder = root / sha256_file(bundle)
    if (folder / MANIFEST).is_file():  # complete: an unpack is renamed into place only once verified
        try:
            manifest = read_manifest(folder, bundle)
            files = opened.file_keys(folder, manifest, settled=True)
            verify(folder, manifest, bundle)
            with contextlib.suppress(OSError):  # a read-only cache is still read
                os.utime(folder)  # most recently used
            opened.remember(root, bundle_key, folder, files)
            return folder, manifest
        except UserError:  # the cached copy changed on disk: unpack the bundle again
            shutil.rmtree(folder, ignore_errors=True)
    try:
        root.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=root))
    except OSError:
        return None
    try:
        manifest = extract(bundle, stage)
        stage.rename(folder)
    except OSError:  # another process put the same bundle in place first, or the disk is full: use a temp folder
        return None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    kept = sorted((d for d in root.iterdir() if not d.name.startswith(".")), key=lambda d: d.stat().st_mtime)
    for old in kept[:-UNPACKED_KEPT]:
        shutil.rmtree(old, ignore_errors=True)
    opened.prune(root)
    return folder, manifest
