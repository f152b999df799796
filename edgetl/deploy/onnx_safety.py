"""ONNX files users hand us are untrusted: external-data references must stay inside the model's folder.

An ONNX tensor can say "my bytes live in file X at offset O". Runtimes open X relative to the model, so a
crafted model could read `/etc/shadow` or `../../secret` into a weight and leak it through outputs. We
refuse absolute paths, `..`, and symlinks before any runtime sees the file.

`check_external_data` imports `onnx` lazily (compile and export time). The device has no `onnx`, and a
bundle's sha256 manifest proves only that the files arrived as their builder wrote them, not that the
builder was friendly, so `check_bundled_onnx` re-checks a bundled model with `external_locations`, a small
standard-library reader of the protobuf wire format that finds every external-data location.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath

from edgetl.errors import UserError

_FIX = "keep external data files inside the model's folder (onnx.save(..., save_as_external_data=True) does)"


def check_location(model_path: Path, location: str) -> Path:
    """The resolved file for one `location` entry, or UserError when it could escape the model's folder."""
    model_path = Path(model_path)
    where = f"{model_path}: external data {location!r}"
    if not location or "\x00" in location:
        raise UserError(f"{where} is empty or malformed; {_FIX}")
    posix, windows = PurePosixPath(location), PureWindowsPath(location)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or location.startswith(("/", "\\")):
        raise UserError(f"{where} is an absolute path; {_FIX}")
    if ".." in posix.parts or ".." in windows.parts:
        raise UserError(f"{where} climbs out of the folder with '..'; {_FIX}")
    folder = model_path.resolve().parent
    candidate = folder
    for part in windows.parts:  # PureWindowsPath splits on both / and \
        candidate = candidate / part
        if candidate.is_symlink():
            raise UserError(f"{where} goes through the symlink {candidate}; {_FIX}")
    resolved = candidate.resolve()
    if not resolved.is_relative_to(folder):
        raise UserError(f"{where} resolves outside {folder}; {_FIX}")
    if not resolved.is_file():
        raise UserError(f"{where}: no such file next to the model; copy the data file next to {model_path.name}")
    return resolved


def _tensors(graph) -> Iterator:
    """Every TensorProto in a graph, including node attributes and nested subgraphs (If/Loop/Scan)."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _attribute_tensors(node.attribute)


def _attribute_tensors(attributes) -> Iterator:
    for attr in attributes:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        if attr.HasField("g"):
            yield from _tensors(attr.g)
        for sub in attr.graphs:
            yield from _tensors(sub)


def check_external_data(model_path: Path) -> list[Path]:
    """Refuse unsafe external data in an ONNX file; return the external files it uses (for bundling)."""
    import onnx

    model_path = Path(model_path)
    if not model_path.is_file():
        raise UserError(f"{model_path}: no such ONNX file; give the model.onnx written by `edgetl export`")
    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception as e:  # protobuf raises its own DecodeError; anything here means "not an ONNX model"
        raise UserError(
            f"{model_path}: not a readable ONNX model ({type(e).__name__}); re-run `edgetl export`"
        ) from None
    tensors = list(_tensors(model.graph))
    for function in model.functions:
        for node in function.node:
            tensors.extend(_attribute_tensors(node.attribute))
    files: list[Path] = []
    for tensor in tensors:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entries = {e.key: e.value for e in tensor.external_data}
        path = check_location(model_path, entries.get("location", ""))
        if path not in files:
            files.append(path)
    return files


# --- the device side: no onnx package --------------------------------------------------------------
#
# Field numbers from onnx.proto. Protobuf merges repeated occurrences of a singular message field, so every
# occurrence is walked; a location is checked whatever the tensor's data_location says (stricter than runtimes).
_MODEL = {7: "graph", 20: "training", 25: "function"}
_TRAINING = {1: "graph", 2: "graph"}
_FUNCTION = {7: "node", 11: "attribute"}
_GRAPH = {1: "node", 5: "tensor", 15: "sparse"}
_NODE = {5: "attribute"}
_ATTRIBUTE = {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"}
_SPARSE = {1: "tensor", 2: "tensor"}
_KINDS = {
    "model": _MODEL,
    "training": _TRAINING,
    "function": _FUNCTION,
    "graph": _GRAPH,
    "node": _NODE,
    "attribute": _ATTRIBUTE,
    "sparse": _SPARSE,
}
_TENSOR_EXTERNAL_DATA = 13
_MAX_DEPTH = 64  # nested subgraphs; deeper than any real model, and it bounds the recursion


class _Malformed(Exception):
    pass


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise _Malformed("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(data: memoryview) -> Iterator[tuple[int, memoryview | None]]:
    """(field number, bytes) for each length-delimited field of one message; (number, None) for the others."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise _Malformed("field runs past the end")
            yield number, data[pos : pos + size]
            pos += size
            continue
        else:  # groups (3, 4) are not used by ONNX; anything else is not protobuf
            raise _Malformed(f"wire type {wire}")
        if pos > len(data):
            raise _Malformed("field runs past the end")
        yield number, None


def _tensor_locations(data: memoryview, out: list[str]) -> None:
    for number, entry in _fields(data):
        if number != _TENSOR_EXTERNAL_DATA or entry is None:
            continue
        pairs = {n: bytes(v) for n, v in _fields(entry) if v is not None}
        if pairs.get(1, b"") == b"location":
            try:
                out.append(pairs.get(2, b"").decode("utf-8"))
            except UnicodeDecodeError:
                raise _Malformed("location is not UTF-8") from None


def _walk(data: memoryview, kind: str, out: list[str], depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise _Malformed("nested too deeply")
    if kind == "tensor":
        _tensor_locations(data, out)
        return
    fields = _KINDS[kind]
    for number, sub in _fields(data):
        if sub is not None and number in fields:
            _walk(sub, fields[number], out, depth + 1)


def external_locations(model_path: Path) -> list[str]:
    """Every external-data `location` in an ONNX file, read with the standard library only (no onnx package)."""
    model_path = Path(model_path)
    try:
        data = memoryview(model_path.read_bytes())
    except OSError as e:
        raise UserError(f"{model_path}: cannot read it ({e.strerror or e})") from None
    out: list[str] = []
    try:
        _walk(data, "model", out, 0)
    except _Malformed as e:
        raise UserError(f"{model_path}: not a readable ONNX model ({e}); rebuild the bundle") from None
    return list(dict.fromkeys(out))


def check_bundled_onnx(model_path: Path, root: Path, listed: dict | list, origin: str | Path) -> None:
    """Refuse a bundled ONNX whose external data is not a file of the bundle listed (with its hash) in the manifest.

    Runs on the device before a runtime opens the model: a bundle is only as trustworthy as whoever built it.
    """
    root = Path(root).resolve()
    for location in _known_locations(model_path, root, listed):
        path = check_location(model_path, location)
        name = path.relative_to(root).as_posix() if path.is_relative_to(root) else None
        if name is None or name not in listed:
            raise UserError(
                f"{origin}: {Path(model_path).name} reads external data {location!r}, which is not a file listed "
                "in the bundle's manifest.json; refusing this bundle"
            )


def _known_locations(model_path: Path, root: Path, listed: dict | list) -> list[str]:
    """`external_locations`, remembered per model sha256 (the manifest's, verified when the bundle was opened):
    reading a Lite0 graph's protobuf costs 13 ms of a one-image `edgetl predict`, the cached answer none."""
    from edgetl.fileio import cache_root, cached_json

    name = (
        Path(model_path).resolve().relative_to(root).as_posix()
        if Path(model_path).resolve().is_relative_to(root)
        else None
    )
    sha = listed.get(name) if isinstance(listed, dict) and name else None
    if not isinstance(sha, str) or len(sha) != 64:
        return external_locations(model_path)
    path = cache_root() / "onnx-external-data" / f"{sha}.json"
    return cached_json(path, lambda: external_locations(model_path), lambda v: isinstance(v, list))
