"""Image folders at fsspec URLs (`file://`, `s3://`, `gs://`, `az://`, `memory://`, ...): the same two layouts and
rules as a local folder (edgetl.data.folders), for data that lives in object storage.

The tree is listed once (`fs.find` with details: one recursive listing on object stores, no per-folder round
trips), filtered with the local rules (hidden names and IGNORED_DIRS, IMAGE_EXTENSIONS only, nested folders
inside a class included, class folders sorted) and read in chunks with `fs.cat` (concurrent on asynchronous
filesystems such as s3fs and gcsfs) to key every image by the sha256 of its bytes: the same key a local copy of
the file gets. Each `Item.path` is the full URL, so an extraction worker on another machine reopens it
(`Item.load` -> edgetl.data.items.read_bytes). Folder symlinks are not followed here (fsspec lists them as links).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgetl.data.folders import build_dataset, class_folders, is_hidden, pick_classes, walk_order
from edgetl.data.items import Dataset, Item, content_key, explain, url_filesystem
from edgetl.errors import UserError
from edgetl.images import IMAGE_EXTENSIONS, Skipper

CHUNK_FILES = 256  # objects per fs.cat call: s3fs/gcsfs fetch them concurrently
CHUNK_BYTES = 64 << 20  # and at most about this many bytes held at once
GLOB_CHARS = ("*", "?", "[")  # fs.cat expands globs: such names are read one by one with fs.cat_file


@dataclass
class Tree:
    """A listing relative to the data URL: image files (path parts -> (path in the filesystem, type, size)) and
    every folder (path parts), hidden names already left out."""

    files: dict[tuple[str, ...], tuple[str, str, int]] = field(default_factory=dict)
    dirs: set[tuple[str, ...]] = field(default_factory=set)


def load_url_folder(url: str, seed: int, strict: bool, warn, val_fraction: float = 0.2) -> Dataset:
    """URL/train + URL/val when both exist, otherwise URL/<class>/... split by content, as for a local folder."""
    fs, root = url_filesystem(url)
    if "::" not in url and url.split("://", 1)[0] in ("file", "local"):
        url = fs.unstrip_protocol(root)  # file://rel/dir -> file:///abs/rel/dir: a worker elsewhere reopens it
    tree = _list(fs, root, url)
    skip = Skipper(strict, warn)
    train_val = {("train",), ("val",)} <= tree.dirs

    def scan(sub: str | None, classes: list[str] | None) -> tuple[list[str], list[Item]]:
        return _scan(fs, url, tree, (sub,) if sub else (), classes, skip)

    return build_dataset(url, scan, train_val, seed, skip, warn, val_fraction)


def join(url: str, *parts: str) -> str:
    """`url` / parts, the parts added to the chain's link that holds the path (`zip://inner::s3://b/x.zip` ->
    `zip://inner/cat/a.jpg::s3://b/x.zip`; `simplecache::s3://b/p` -> `simplecache::s3://b/p/cat/a.jpg`)."""
    if not parts:
        return url
    links = url.split("::")
    i = next((k for k, link in enumerate(links) if "://" in link), 0)
    links[i] = links[i] + ("" if links[i].endswith("/") else "/") + "/".join(parts)
    return "::".join(links)


def _list(fs, root: str, url: str) -> Tree:
    """The whole tree under `root`, or one line saying why not: missing, not a folder, no access."""
    try:
        info = fs.info(root)
        if info.get("type") != "directory":
            raise UserError(f"--data {url} is not a folder; give a folder of class folders (URL/<class>/<images>)")
        found = fs.find(root, withdirs=True, detail=True)
    except UserError:
        raise
    except FileNotFoundError:
        raise UserError(
            f"--data {url} does not exist; give a folder of class folders (URL/<class>/<images>, or URL/train + "
            "URL/val)"
        ) from None
    except Exception as e:  # credentials, permissions, network: the storage client's own error types
        raise UserError(f"--data {url}: cannot list it ({explain(e)})") from None
    return _tree(found, root)


def _tree(found: dict[str, dict], root: str) -> Tree:
    prefix = root.rstrip("/") + "/"
    tree = Tree()
    for name, info in found.items():
        kind = "directory" if name.endswith("/") else info.get("type", "file")
        name = name.rstrip("/")
        if not name.startswith(prefix):
            continue  # the root itself
        parts = tuple(name[len(prefix) :].split("/"))
        if "" in parts or any(is_hidden(p) for p in parts):
            continue
        tree.dirs.update(parts[:i] for i in range(1, len(parts)))
        if kind == "directory":
            tree.dirs.add(parts)
        elif parts[-1].lower().endswith(IMAGE_EXTENSIONS):
            tree.files[parts] = (name, kind, int(info.get("size") or 0))
    return tree


def _scan(fs, url: str, tree: Tree, base: tuple[str, ...], classes: list[str] | None, skip: Skipper):
    """(classes, items) of the split at `base` (() for the whole tree, ("train",) or ("val",))."""
    n = len(base)
    folders = class_folders([p[n] for p in tree.dirs if len(p) == n + 1 and p[:n] == base], join(url, *base))
    by_folder: dict[str, list[tuple[str, ...]]] = {d: [] for d in folders.values()}
    for parts in tree.files:
        if len(parts) > n + 1 and parts[:n] == base and parts[n] in by_folder:
            by_folder[parts[n]].append(parts)
    per_class = {name: sorted(by_folder[d], key=lambda p: walk_order(p[n + 1 :])) for name, d in folders.items()}
    where = {name: join(url, *base, d) for name, d in folders.items()}
    classes = pick_classes(per_class, classes, where, skip)
    wanted = [(label, parts) for label, name in enumerate(classes) for parts in per_class.get(name, [])]
    items = []
    for chunk in _chunks(wanted, tree):
        contents = _read(fs, url, [tree.files[parts] for _, parts in chunk])
        for (label, parts), data in zip(chunk, contents, strict=True):
            path = join(url, *parts)
            if isinstance(data, str):
                skip(path, data)
            else:
                items.append(Item(path=path, label=label, key=content_key(data)))
    return classes, items


def _chunks(wanted: list, tree: Tree):
    chunk, size = [], 0
    for entry in wanted:
        chunk.append(entry)
        size += tree.files[entry[1]][2]
        if len(chunk) >= CHUNK_FILES or size >= CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _read(fs, url: str, files: list[tuple[str, str, int]]) -> list[bytes | str]:
    """Each file's bytes, or the reason it is skipped (the same words as for a local file)."""
    batch = [name for name, kind, _ in files if kind == "file" and not any(c in name for c in GLOB_CHARS)]
    try:
        fetched = fs.cat(batch, on_error="return") if batch else {}
    except Exception as e:  # the call as a whole failed (credentials expired, network down): not one bad file
        raise UserError(f"--data {url}: reading failed ({explain(e)})") from None
    out: list[bytes | str] = []
    for name, kind, _ in files:
        if kind != "file":
            out.append("not a regular file (broken symlink or special file)")
            continue
        data = fetched.get(name)
        if data is None:
            try:
                data = fs.cat_file(name)
            except Exception as e:
                data = e
        out.append(f"unreadable ({_why(data)})" if isinstance(data, BaseException) else data)
    return out


def _why(e: BaseException) -> str:
    return (e.strerror or explain(e)) if isinstance(e, OSError) else explain(e)
