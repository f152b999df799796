"""A compiled model folder (`Artifact`): its manifest.json, the sha256 of every file, the atomic write of the
folder, and the checks a device runs before trusting one. `bundle` packs such a folder into one tar.gz.
Standard library only: safe to import on the device.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from edgetl import __version__
from edgetl.contract import BUNDLE_FORMAT, MANIFEST
from edgetl.errors import UserError
from edgetl.fileio import atomic_write_bytes, sha256_file

REQUIRED = ("format", "target", "device", "model", "files", "classes", "preprocess", "input", "precision")


@contextlib.contextmanager
def artifact_writer(out: Path) -> Iterator[Path]:
    """Yield a sibling staging folder; `out` is replaced only when the whole compile succeeded."""
    import shutil
    import tempfile

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
        "format": BUNDLE_FORMAT,
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
    if missing or manifest.get("format") != BUNDLE_FORMAT:
        raise UserError(
            f"{origin}: {MANIFEST} is not an {BUNDLE_FORMAT} manifest (missing {missing}); rebuild with `edgetl compile`"
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


@dataclass
class Artifact:
    """A compiled model folder: the model files plus manifest.json (the format: `write_manifest`)."""

    root: Path
    manifest: dict
    # The folder is named by the sha256 of its bundle (unpacked in the cache by edgetl.deploy.bundle): its path
    # identifies its content, so runtimes may key their caches by path
    content_addressed: bool = False

    @property
    def target(self) -> str:
        return self.manifest["target"]

    @property
    def device(self) -> str:
        return self.manifest["device"]

    @property
    def model_path(self) -> Path:
        return self.root / self.manifest["model"]

    def path(self, name: str) -> Path:
        return self.root / name
