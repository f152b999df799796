"""Where the built native kernels are, and loading them into a runtime. Importing this never fails.

`python -m edgetl.ops.build` (`make kernels`) copies the libraries into `edgetl/ops/lib/`; every function here
answers None when a library is absent, so callers fall back to the ONNX decomposition (the bitsandbytes pattern).
"""

from __future__ import annotations

import sys
import weakref
from pathlib import Path
from typing import Any

LIB_DIR = Path(__file__).resolve().parent / "lib"
_loaded_into: weakref.WeakSet = weakref.WeakSet()  # the ov.Core objects that already hold the extension


def library_filename(stem: str) -> str:
    """`edgetl_openvino` -> `libedgetl_openvino.so` (Linux), `edgetl_openvino.dll` (Windows), `.dylib` (macOS)."""
    if sys.platform == "win32":
        return f"{stem}.dll"
    return f"lib{stem}.dylib" if sys.platform == "darwin" else f"lib{stem}.so"


def _existing(stem: str) -> Path | None:
    path = LIB_DIR / library_filename(stem)
    return path if path.is_file() else None


def openvino_extension_path() -> Path | None:
    """The OpenVINO extension (fused CPU kernels + ONNX node mapping); ship it next to any model that uses them."""
    return _existing("edgetl_openvino")


def cuda_library_path() -> Path | None:
    """The CUDA kernels behind the C ABI of `kernels/cuda/edgetl_cuda.h`."""
    return _existing("edgetl_cuda")


def tensorrt_plugin_path() -> Path | None:
    """The TensorRT plugin library (built only where TensorRT 10 headers exist)."""
    return _existing("edgetl_tensorrt")


def load_openvino_extension(core: Any, path: Path | None = None) -> Path | None:
    """Add the extension to an `openvino.Core` before it reads a model; returns the path loaded, or None if absent.

    Must happen before `read_model`/`compile_model`: the ONNX frontend picks the fused op or the function's
    decomposition while it converts the model.
    """
    path = path or openvino_extension_path()
    if path is not None and core not in _loaded_into:
        core.add_extension(str(path))
        _loaded_into.add(core)
    return path
