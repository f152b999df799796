"""ONNX files users hand us are untrusted: external-data references must stay inside the model's folder.

An ONNX tensor can say "my bytes live in file X at offset O". Runtimes open X relative to the model, so a
crafted model could read `/etc/shadow` or `../../secret` into a weight and leak it through outputs. We
refuse absolute paths, `..`, and symlinks before any runtime sees the file.

`check_location` needs nothing but the standard library; `check_external_data` imports `onnx` lazily
(compile and export time only: on the device a bundle is trusted through its sha256 manifest).
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
