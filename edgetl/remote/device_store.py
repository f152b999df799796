"""The bundle store ON THE DEVICE: run by `edgetl deploy` as `python3 -` over SSH, one action per call.

A standalone script: standard library only, Python 3.6 syntax, nothing from edgetl. The host puts
`REQUEST = '<json>'` in front of this source; the answer is one JSON line after MARK. Layout under ROOT:

  bundles/<id>/        verified bundle folders (id: sha256 of the bundle's manifest.json, 20 hex digits)
  index/<id>.json      each file's sha256, size and chunks: later deploys copy unchanged bytes from these files
  current, previous    symlinks to bundles/<id>, each switched by renaming a new symlink over it (atomic)
  incoming/<session>/  one deploy's uploads (chunk pack, wheels, images); removed when it ends, swept by the next
  .stage-*             a bundle being assembled; renamed into bundles/ only once every file matches its sha256
  cache/               EDGETL_CACHE_DIR of the device-side edgetl (OpenVINO blobs, TensorRT engines, timing cache)

Nothing reaches bundles/ unverified and `current` only ever names a complete folder, so a cut upload, a full
disk or a failed load check leaves the active bundle as it was; the next deploy sweeps what was left.
"""

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile

MARK = "@@edgetl-result@@"
MANIFEST = "manifest.json"  # edgetl.contract.MANIFEST (tests check the two agree)
MARGIN = 1 << 20  # bytes kept free beyond what a deploy writes


class Refused(Exception):
    """One line for the user: what went wrong on the device and the fix."""


def paths(request):
    root = os.path.abspath(os.path.expanduser(request["root"]))
    for sub in ("bundles", "index", "incoming", "cache"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    return root


def lock(root):
    fd = os.open(os.path.join(root, ".lock"), os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


@contextlib.contextmanager
def locked(root):
    """The store's lock held for the block: one deploy at a time changes the store."""
    fd = lock(root)
    try:
        yield
    finally:
        os.close(fd)


def link_target(root, name):
    path = os.path.join(root, name)
    return os.path.basename(os.readlink(path)) if os.path.islink(path) else None


def free_bytes(root):
    return shutil.disk_usage(root).free


def sweep(root, keep=None):
    """Remove what an earlier deploy left behind: uploads, half-assembled bundles, temporary links."""
    removed = []
    for name in os.listdir(os.path.join(root, "incoming")):
        if name != keep:
            shutil.rmtree(os.path.join(root, "incoming", name), ignore_errors=True)
            removed.append("incoming/" + name)
    for name in os.listdir(root):
        if name.startswith((".stage-", ".link-")):
            path = os.path.join(root, name)
            if os.path.islink(path) or not os.path.isdir(path):
                os.unlink(path)
            else:
                shutil.rmtree(path, ignore_errors=True)
            removed.append(name)
    return removed


def stored(root):
    """{file sha256: path}, {chunk sha256: (path, offset, length)} and {file sha256: its chunk list} over the
    bundles kept on the device."""
    files, chunks, recipes = {}, {}, {}
    for name in sorted(os.listdir(os.path.join(root, "index"))):
        bundle = os.path.join(root, "bundles", name[: -len(".json")])
        if not name.endswith(".json") or not os.path.isdir(bundle):
            continue
        with open(os.path.join(root, "index", name)) as f:
            index = json.load(f)
        for file_name, entry in index["files"].items():
            path = os.path.join(bundle, file_name)
            if not os.path.isfile(path):  # e.g. BUILD_ON_DEVICE.txt, removed by the TensorRT engine build
                continue
            files.setdefault(entry["sha256"], path)
            recipes.setdefault(entry["sha256"], entry.get("chunks", []))
            offset = 0
            for digest, length in entry.get("chunks", []):
                chunks.setdefault(digest, (path, offset, length))
                offset += length
    return files, chunks, recipes


def action_status(request):
    """Start of a deploy: sweep leftovers; is the bundle here already, which of its files are, and the disk."""
    root = paths(request)
    fd = lock(root)
    try:
        swept = sweep(root, keep=request.get("session"))
        files = stored(root)[0]
        return {
            "root": root,
            "present": os.path.isdir(os.path.join(root, "bundles", request.get("id", "")))
            if request.get("id")
            else False,
            "have_files": [h for h in request.get("files", []) if h in files],
            "current": link_target(root, "current"),
            "previous": link_target(root, "previous"),
            "free_bytes": free_bytes(root),
            "swept": swept,
        }
    finally:
        os.close(fd)


def action_plan(request):
    """Keep the plan (files and their chunk lists) in the session folder; answer which chunks must be sent."""
    root = paths(request)
    session = os.path.join(root, "incoming", request["session"])
    os.makedirs(session, exist_ok=True)
    plan = request["plan"]
    files, chunks, _ = stored(root) if plan.get("reuse", True) else ({}, {}, {})
    missing, seen, assemble = [], set(), 0
    for entry in plan["files"].values():
        if entry["sha256"] in files:
            continue
        assemble += entry["size"]
        for digest, length in entry["chunks"]:
            if digest not in chunks and digest not in seen:
                seen.add(digest)
                missing.append([digest, length])
    need = sum(length for _, length in missing) + assemble + MARGIN
    free = free_bytes(root)
    if free < need:
        raise Refused(disk_full(root, free, need))
    plan["need_bytes"] = need
    with open(os.path.join(session, "plan.json"), "w") as f:
        json.dump(plan, f)
    os.makedirs(os.path.join(session, "files"), exist_ok=True)
    return {"missing": missing, "free_bytes": free, "need_bytes": need, "session_dir": session}


def disk_full(root, free=None, need=None):
    sizes = f" ({free / 1e6:.1f} MB free, {need / 1e6:.1f} MB needed)" if need else ""
    return f"the disk holding {root} is full{sizes}; free some space there or choose another folder with " \
        "--remote-dir"  # fmt: skip


def read_at(path, offset, length):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def build_file(dest, entry, pack, sources):
    """Write one file from its chunks: from the uploaded pack, else from a stored file holding that chunk."""
    with open(dest, "wb") as out:
        for digest, length in entry["chunks"]:
            if digest in pack:
                data = read_at(pack[digest][0], pack[digest][1], length)
                where = "the upload"
            else:
                path, offset, _ = sources[digest]
                data, where = read_at(path, offset, length), path
            if len(data) != length or hashlib.sha256(data).hexdigest() != digest:
                raise Refused(
                    "a chunk of {} from {} is incomplete or damaged; run the deploy again (add "
                    "--full-upload if a stored bundle was modified)".format(entry["name"], where)
                )
            out.write(data)


def place_file(dest, entry, files, pack, sources):
    """A stored file with the same sha256 is hard-linked (copied across file systems); others are built."""
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    source = files.get(entry["sha256"])
    if source is not None:
        try:
            os.link(source, dest)
        except OSError:
            shutil.copyfile(source, dest)
        return
    build_file(dest, entry, pack, sources)


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(folder, plan):
    """Every file of the manifest is there with its sha256 (what edgetl.deploy.artifact.verify checks)."""
    for name, entry in plan["files"].items():
        path = os.path.join(folder, name)
        if os.path.islink(path) or not os.path.isfile(path) or sha256_file(path) != entry["sha256"]:
            raise Refused(
                f"{name} does not match its sha256 in {MANIFEST} after assembly; run the deploy again (add "
                "--full-upload if a stored bundle was modified)"
            )


def safe_name(name):
    parts = name.split("/")
    if not name or name.startswith("/") or ".." in parts or "\\" in name or name == MANIFEST:
        raise Refused(f"unsafe file name {name!r} in the plan; refusing it")


def action_assemble(request):
    """Build the bundle folder from the pack and the stored files, verify it, write its index, move it in place."""
    root = paths(request)
    session = os.path.join(root, "incoming", request["session"])
    with open(os.path.join(session, "plan.json")) as f:
        plan = json.load(f)
    bundles = os.path.join(root, "bundles")
    final = os.path.join(bundles, plan["id"])
    if os.path.isdir(final):
        return {"bundle": final, "assembled": False}
    pack_path = os.path.join(session, "pack")
    pack = {digest: (pack_path, offset) for digest, offset, _ in request.get("pack", [])}
    fd = lock(root)
    stage = tempfile.mkdtemp(prefix=".stage-", dir=root)
    try:
        files, sources, recipes = stored(root) if plan.get("reuse", True) else ({}, {}, {})
        for name, entry in sorted(plan["files"].items()):
            safe_name(name)
            place_file(os.path.join(stage, name), dict(entry, name=name), files, pack, sources)
        with open(os.path.join(stage, MANIFEST), "w") as f:
            f.write(plan["manifest"])
        verify(stage, plan)
        # a file the host sent no chunk list for (the device had it) keeps the stored file's list
        index = {"files": {n: {"sha256": e["sha256"], "size": e["size"],
                               "chunks": e["chunks"] or recipes.get(e["sha256"], [])}
                           for n, e in plan["files"].items()}}  # fmt: skip
        with open(os.path.join(root, "index", plan["id"] + ".json"), "w") as f:
            json.dump(index, f)
        os.chmod(stage, 0o755)
        os.rename(stage, final)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise Refused(disk_full(root, free_bytes(root), plan.get("need_bytes"))) from None
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if os.path.exists(pack_path):
            os.unlink(pack_path)
        os.close(fd)
    return {"bundle": final, "assembled": True}


def switch(root, name, bundle_id):
    """Point ROOT/name at bundles/<id>: a new symlink renamed over the old one (readers see old or new)."""
    tmp = os.path.join(root, f".link-{name}-{os.getpid()}")
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(os.path.join("bundles", bundle_id), tmp)
    os.rename(tmp, os.path.join(root, name))


def collect(root, keep):
    """Keep `keep` bundles (current and previous always, then the most recently activated), remove the rest."""
    bundles = os.path.join(root, "bundles")
    pinned = {link_target(root, "current"), link_target(root, "previous")}
    names = sorted(os.listdir(bundles), key=lambda n: os.path.getmtime(os.path.join(bundles, n)), reverse=True)
    kept = [n for n in names if n in pinned]
    removed = []
    for name in names:
        if name in pinned:
            continue
        if len(kept) < keep:
            kept.append(name)
            continue
        shutil.rmtree(os.path.join(bundles, name), ignore_errors=True)
        index = os.path.join(root, "index", name + ".json")
        if os.path.exists(index):
            os.unlink(index)
        removed.append(name)
    return removed


def action_activate(request):
    root = paths(request)
    bundle_id = request["id"]
    if not os.path.isdir(os.path.join(root, "bundles", bundle_id)):
        raise Refused(f"bundle {bundle_id} is not on the device; deploy it first")
    fd = lock(root)
    try:
        current = link_target(root, "current")
        if current != bundle_id:
            if current is not None:
                switch(root, "previous", current)
            switch(root, "current", bundle_id)
        os.utime(os.path.join(root, "bundles", bundle_id))
        removed = collect(root, max(int(request.get("keep", 3)), 2))
        sweep(root, keep=request.get("session"))
        return {"current": bundle_id, "previous": link_target(root, "previous"), "removed": removed,
                "changed": current != bundle_id}  # fmt: skip
    finally:
        os.close(fd)


def action_rollback(request):
    root = paths(request)
    with locked(root):
        current, previous = link_target(root, "current"), link_target(root, "previous")
        if previous is None or not os.path.isdir(os.path.join(root, "bundles", previous)):
            raise Refused(f"no previous bundle in {root} to roll back to (deploy twice first)")
        switch(root, "current", previous)
        if current is not None:
            switch(root, "previous", current)
        return {"current": previous, "previous": current}


def action_discard(request):
    """End a deploy that failed after assembly: its bundle goes unless it is current or previous."""
    root = paths(request)
    with locked(root):
        bundle_id = request.get("id")
        removed = False
        if bundle_id and bundle_id not in (link_target(root, "current"), link_target(root, "previous")):
            shutil.rmtree(os.path.join(root, "bundles", bundle_id), ignore_errors=True)
            index = os.path.join(root, "index", bundle_id + ".json")
            if os.path.exists(index):
                os.unlink(index)
            removed = True
        if request.get("session"):
            shutil.rmtree(os.path.join(root, "incoming", request["session"]), ignore_errors=True)
        return {"removed": removed, "free_bytes": free_bytes(root)}


def action_session(request):
    """A folder for one deploy's uploads (wheels, images, bench results): incoming/<session>/<sub>."""
    root = paths(request)
    folder = os.path.normpath(os.path.join(root, "incoming", request["session"], request.get("sub", "")))
    os.makedirs(folder, exist_ok=True)
    return {"dir": folder, "root": root, "free_bytes": free_bytes(root)}


ACTIONS = {"status": action_status, "plan": action_plan, "assemble": action_assemble, "activate": action_activate,
           "rollback": action_rollback, "discard": action_discard, "session": action_session}  # fmt: skip


def main(text):
    request = json.loads(text)
    try:
        answer = ACTIONS[request["action"]](request)
    except Refused as e:
        answer = {"error": str(e)}
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            answer = {"error": disk_full(request.get("root", "~/.edgetl"))}
        else:
            answer = {"error": "the device store failed: {} ({}); check {}".format(
                e.strerror or e, e.filename or "", request.get("root"))}  # fmt: skip
    sys.stdout.write("\n" + MARK + json.dumps(answer) + "\n")


if __name__ == "__main__":
    main(globals().get("REQUEST", "{}"))
