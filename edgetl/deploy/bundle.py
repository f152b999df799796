"""Compiled-model folders and the deploy bundle (one tar.gz): manifest, hashes, atomic writes, safe extraction.

A bundle is copied to devices by hand, over flaky links, by people who did not build it, so the device
side trusts nothing it has not checked: every file is listed in `manifest.json` with its sha256, and the
tar is extracted with Python's `data` filter *plus* our own checks (regular files and folders only, no
absolute paths, no `..`, no links, no device files, nothing unlisted). The manifest carries everything the
device needs to run the model without the training stack: classes, preprocessing, input spec, precision,
and the runtime versions it was built with. Standard library + NumPy-free: safe to import on the device.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from edgetl import __version__
from edgetl.deploy.targets.base import Artifact
from edgetl.errors import UserError
from edgetl.fileio import atomic_write_bytes, sha256_file

MANIFEST = "manifest.json"
FORMAT = "edgetl-bundle/1"
MAX_UNPACKED_BYTES = 16 << 30  # refuse tar bombs; a real model bundle is a few hundred MB at most
REQUIRED = ("format", "target", "device", "model", "files", "classes", "preprocess", "input", "precision")


# --- compiled folders ------------------------------------------------------------------------------


@contextlib.contextmanager
def artifact_writer(out: Path) -> Iterator[Path]:
    """Yield a sibling staging folder; `out` is replaced only when the whole compile succeeded."""
    out = Path(out)
    if out.exists() and not (out / MANIFEST).is_file() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out}: exists and is not an edgetl build folder; give a new or empty folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield stage
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            out.rename(old / out.name)
            stage.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            stage.rename(out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def write_manifest(root: Path, fields: dict) -> dict:
    """Hash every file under `root` and write manifest.json atomically; returns the manifest."""
    files = {}
    for path in sorted(Path(root).rglob("*")):
        name = path.relative_to(root).as_posix()
        if name == MANIFEST or path.is_dir():
            continue
        if path.is_symlink() or not path.is_file():
            raise UserError(f"{path}: not a regular file; bundles hold regular files only")
        files[name] = sha256_file(path)
    manifest = {
        "format": FORMAT,
        "edgetl_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **fields,
        "files": files,
    }
    atomic_write_bytes(Path(root) / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def read_manifest(root: Path, origin: str | Path) -> dict:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise UserError(
            f"{origin}: no {MANIFEST}; give a folder written by `edgetl compile` or a bundle from `edgetl package`"
        )
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{origin}: {MANIFEST} is not valid JSON ({e}); rebuild it with `edgetl compile`") from None
    missing = [k for k in REQUIRED if k not in manifest] if isinstance(manifest, dict) else list(REQUIRED)
    if missing or manifest.get("format") != FORMAT:
        raise UserError(
            f"{origin}: {MANIFEST} is not an {FORMAT} manifest (missing {missing}); rebuild with `edgetl compile`"
        )
    check_export(manifest, origin)
    return manifest


def check_export(manifest: dict, origin: str | Path) -> None:
    """Refuse a build whose model failed the parity check of `edgetl export` (manifest "export", copied by compile
    from export.json). Manifests written before the key existed, or from a model without a record (null), pass."""
    record = manifest.get("export")
    if record is None:
        return
    if not isinstance(record, dict):
        raise UserError(f"{origin}: {MANIFEST} has a damaged export entry; rebuild it with `edgetl compile`")
    if record.get("passed") is False:
        raise UserError(
            f"{origin}: {MANIFEST} records that its model failed the parity check of `edgetl export`; "
            "fix the run, re-export, and compile again"
        )


def check_name(name: str, origin) -> None:
    """Refuse a bundle file name that is absolute, climbs with '..' or uses Windows separators or drives."""
    parts = PurePosixPath(name).parts
    if not name or name.startswith(("/", "\\")) or ".." in parts or "\\" in name or ":" in name:
        raise UserError(f"{origin}: unsafe file name {name!r} (absolute or '..'); refusing this bundle")


def verify(root: Path, manifest: dict, origin: str | Path) -> None:
    """Every listed file exists, is a regular file and has the listed sha256."""
    for name, expected in manifest["files"].items():
        check_name(name, origin)
        path = Path(root) / name
        if path.is_symlink() or not path.is_file():
            raise UserError(f"{origin}: {name} is missing or not a regular file; re-copy the bundle")
        if sha256_file(path) != expected:
            raise UserError(
                f"{origin}: {name} does not match its sha256 in {MANIFEST} (modified or corrupted); "
                "re-copy the bundle or rebuild it with `edgetl package`"
            )
    if manifest["model"] not in manifest["files"]:
        raise UserError(
            f"{origin}: the model file {manifest['model']!r} is not listed in {MANIFEST}; rebuild the bundle"
        )


# --- the tar.gz ------------------------------------------------------------------------------------


def package(artifact_dir: Path, out: Path) -> dict:
    """Verify a compiled folder and write it as one tar.gz (manifest first, fixed owners and times)."""
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


def _safe_members(tar: tarfile.TarFile, origin) -> list[tarfile.TarInfo]:
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


@contextlib.contextmanager
def open_bundle(path: Path) -> Iterator[Artifact]:
    """A verified Artifact from a bundle (unpacked to a temp folder, removed afterwards) or a compiled folder."""
    path = Path(path)
    if path.is_dir():
        manifest = read_manifest(path, path)
        verify(path, manifest, path)
        yield Artifact(path, manifest)
        return
    if not path.is_file():
        raise UserError(f"{path}: no such bundle; give a .tar.gz from `edgetl package` or an `edgetl compile` folder")
    with tempfile.TemporaryDirectory(prefix="edgetl-bundle-") as tmp:
        manifest = extract(path, Path(tmp))
        yield Artifact(Path(tmp), manifest)
