"""Putting a bundle on the device so that no step can leave a half-installed one (edgetl.remote.device_store).

1. status: the device sweeps what an earlier deploy left, says whether it holds this bundle already (by the
   sha256 of its manifest.json) and which of its files (by sha256) it has.
2. plan: the files it lacks are sent as lists of content-defined chunks (edgetl.remote.chunks); it answers which
   chunks none of its stored files hold, after checking its disk has room.
3. upload: only those chunks, as one pack file into a session folder (sftp).
4. assemble: the device builds the bundle folder in a staging folder (hard links for whole files it has, chunks
   from the pack or its stored files), checks every file against the manifest's sha256, then renames it into
   bundles/<id>. The caller then runs the device's edgetl on it and only then switches `current` (`activate`).
A new head re-sends the chunks around the head's weights and the manifest, not the backbone.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import secrets
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from edgetl.contract import MANIFEST
from edgetl.errors import UserError
from edgetl.remote import chunks, device_store
from edgetl.remote.ssh import Connection, UploadError
from edgetl.remote.wheelhouse import deploy_cache

STORE = inspect.getsource(device_store)


@dataclass
class Local:
    """The bundle on the host, opened and verified (edgetl.deploy.bundle.open_bundle)."""

    source: Path
    root: Path
    manifest: dict
    manifest_text: str

    @property
    def id(self) -> str:
        return hashlib.sha256(self.manifest_text.encode()).hexdigest()[:20]


@contextlib.contextmanager
def open_local(bundle: Path) -> Iterator[Local]:
    from edgetl.deploy.bundle import open_bundle

    with open_bundle(Path(bundle)) as artifact:
        text = (artifact.root / MANIFEST).read_text()
        yield Local(Path(bundle), artifact.root, artifact.manifest, text)


class Session:
    """One deploy's calls to the device store, and its upload folder incoming/<session> there."""

    def __init__(self, conn: Connection, python: str, root: str) -> None:
        self.conn, self.python, self.root = conn, python, root
        self.id = secrets.token_hex(6)
        self._folders: dict[str, str] = {}

    def store(self, action: str, timeout: float = 600, **request) -> dict:
        request = {"action": action, "root": self.root, "session": self.id, **request}
        return self.conn.call(STORE, request, self.python, timeout, what=f"the device store ({action})")

    def folder(self, sub: str) -> str:
        if sub not in self._folders:
            self._folders[sub] = self.store("session", sub=sub)["dir"]
        return self._folders[sub]

    def end(self) -> None:
        """Remove this session's uploads on the device (the next deploy sweeps them if the link is gone)."""
        with contextlib.suppress(UserError):
            self.store("discard", timeout=60)


@dataclass
class PushReport:
    present: bool  # the device had this bundle already: nothing was sent
    files: int = 0
    files_had: int = 0
    chunks_sent: int = 0
    chunks_total: int = 0
    bytes_sent: int = 0
    status: dict = field(default_factory=dict)


def plan_for(local: Local) -> dict:
    """{id, manifest, files: {name: {sha256, size, chunks}}}: what the device needs to build and check the folder."""
    cache = deploy_cache() / "recipes"
    files = {}
    for name, sha in sorted(local.manifest["files"].items()):
        path = local.root / name
        files[name] = {"sha256": sha, "size": path.stat().st_size, "chunks": chunks.cached_recipe(path, sha, cache)}
    return {"id": local.id, "manifest": local.manifest_text, "files": files, "reuse": True}


def write_pack(local: Local, plan: dict, missing: list[list], dest: Path) -> list[list]:
    """Concatenate the missing chunks (read from the local files) into `dest`; returns [[sha, offset, length]]."""
    where: dict[str, tuple[Path, int]] = {}
    for name, entry in plan["files"].items():
        offset = 0
        for digest, length in entry["chunks"]:
            where.setdefault(digest, (local.root / name, offset))
            offset += length
    index, position = [], 0
    with open(dest, "wb") as out:
        for digest, length in missing:
            path, offset = where[digest]
            with open(path, "rb") as f:
                f.seek(offset)
                out.write(f.read(length))
            index.append([digest, position, length])
            position += length
    return index


def push(session: Session, local: Local, say: Callable[[str], None], full_upload: bool = False) -> PushReport:
    """Steps 1-4 above. The bundle ends in bundles/<id> on the device, verified, not yet active."""
    plan = plan_for(local)
    status = session.store("status", id=local.id, files=sorted({e["sha256"] for e in plan["files"].values()}))
    if status["present"] and not full_upload:
        return PushReport(True, len(plan["files"]), len(plan["files"]), status=status)
    have = set() if full_upload else set(status["have_files"])
    plan["reuse"] = not full_upload
    for entry in plan["files"].values():
        if entry["sha256"] in have:
            entry["chunks"] = []  # the device links its own copy: its chunk list is not needed
    total = sum(len(e["chunks"]) for e in plan["files"].values())
    missing = session.store("plan", plan=plan)["missing"]
    nbytes = sum(length for _, length in missing)
    files_had = sum(1 for e in plan["files"].values() if e["sha256"] in have)
    say(
        f"bundle {local.id}: {files_had} of {len(plan['files'])} file(s) on the device already; sending "
        f"{len(missing)} of {total} chunk(s), {nbytes / 1e6:.2f} MB"
    )
    pack = []
    if missing:
        pack = _upload_pack(session, local, plan, missing, nbytes)
    session.store("assemble", pack=pack, timeout=1800)
    return PushReport(False, len(plan["files"]), files_had, len(missing), total, nbytes, status)


def _upload_pack(session: Session, local: Local, plan: dict, missing: list[list], nbytes: int) -> list[list]:
    remote = f"{session.folder('')}/pack"
    with tempfile.TemporaryDirectory(prefix="edgetl-pack-") as tmp:
        index = write_pack(local, plan, missing, Path(tmp) / "pack")
        try:
            session.conn.put([(Path(tmp) / "pack", remote)], "bundle", "the bundle upload")
        except UploadError as e:
            raise _upload_failure(session, e, nbytes) from None
    return index


def _upload_failure(session: Session, error: UploadError, nbytes: int) -> UserError:
    """A failed upload: the device removes what arrived; a full disk is named as such, a cut link as a cut."""
    try:
        free = session.store("discard", timeout=60)["free_bytes"]
    except UserError:  # the link is gone: the next deploy sweeps the partial upload
        return error
    if "No space" in error.stderr or free < nbytes:
        return UserError(
            f"{session.conn.target}: the disk holding {session.root} is full ({free / 1e6:.1f} MB free, "
            f"{nbytes / 1e6:.1f} MB to upload); free some space there or choose another folder with --remote-dir"
        )
    return error
