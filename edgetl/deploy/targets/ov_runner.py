"""OpenVINO on the device: the Core, the compile config and its blob cache, what precision really runs, the Runner.

Compiled blobs are cached per OpenVINO version and device, keyed by model content. On AMX CPUs an FP32 model runs
in bf16 unless `--precision fp32` forces f32: `runtime_precision` reads what the plugin chose.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from edgetl.deploy.targets.base import Artifact
from edgetl.errors import UserError
from edgetl.fileio import cache_root

HINTS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}  # --precision -> INFERENCE_PRECISION_HINT


def precision_name(hint: str) -> str:
    """An INFERENCE_PRECISION_HINT value as edgetl names precisions ('f32' -> 'fp32'; unknown ones unchanged)."""
    return {v: k for k, v in HINTS.items()}.get(hint, hint)


def import_openvino():
    """`import openvino` without its model converter. OpenVINO's __init__ imports openvino.tools.ovc (for
    `ov.convert_model`) and with it its telemetry: ~90 ms of a one-image `edgetl predict` (benchmarks/startup.py),
    and the device side never converts. A None in sys.modules makes that one import raise ImportError, which
    OpenVINO's __init__ catches; `ov.convert_model` then imports the converter on its first call, so host code (and
    any library) calling it later in the same process still works."""
    if "openvino" in sys.modules or "openvino.tools.ovc" in sys.modules:
        import openvino

        return openvino
    sys.modules["openvino.tools.ovc"] = None
    try:
        import openvino
    finally:
        del sys.modules["openvino.tools.ovc"]
    if not hasattr(openvino, "convert_model"):
        openvino.convert_model = _convert_model
    return openvino


def _convert_model(*args, **kwargs):
    from openvino.tools.ovc import convert_model

    return convert_model(*args, **kwargs)


def version() -> str:
    import openvino as ov

    return ov.get_version().split("-")[0]


def has_device(core, device: str) -> bool:
    family = device.split(".")[0].split(":")[0]
    return family in {"AUTO", "HETERO", "MULTI"} or any(d.split(".")[0] == family for d in core.available_devices)


def native_extension() -> Path:
    """The built OpenVINO extension for ai.edgetl ops (edgetl.ops.native), or a UserError saying how to get it."""
    try:
        from edgetl.ops.native import openvino_extension_path
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith("edgetl"):
            raise
        raise UserError(
            "--fused-kernels: this edgetl install has no native kernels (edgetl.ops.native); "
            "drop --fused-kernels to use the standard-op decomposition"
        ) from None
    path = openvino_extension_path()
    if path is None:
        raise UserError(
            "--fused-kernels: the OpenVINO extension is not built; run `make kernels` or drop --fused-kernels"
        )
    return Path(path)


def model_cache_dir(device: str) -> Path:
    """One cache folder per OpenVINO version and device, so blobs from another version are never reused."""
    return cache_root() / "openvino" / version() / device.replace(":", "_").replace("/", "_")


def compile_config(settings: dict, device: str) -> dict:
    config = {"PERFORMANCE_HINT": settings["performance_hint"]}
    if settings.get("inference_precision_hint"):
        config["INFERENCE_PRECISION_HINT"] = settings["inference_precision_hint"]
    cache = model_cache_dir(device)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        config["CACHE_DIR"] = str(cache)
    except OSError:
        pass  # a read-only home only costs the cache, never the run
    return config


_COMPUTE_LAYERS = {"Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul"}


def runtime_precision(compiled, branches=()) -> str | None:
    """What the compiled model runs in, read off the runtime: the floating-point precision the plugin chose,
    prefixed "int8 + " when convolutions or matrix products of its execution graph run in i8/u8. The execution
    graph shows an If as one node: `branches` are its bodies compiled on their own (`if_branches`), read too."""
    try:
        floating = precision_name(compiled.get_property("INFERENCE_PRECISION_HINT").to_string())
    except RuntimeError:  # some plugins (NPU) do not report it
        return None
    int8 = any(_runs_int8(c) for c in (compiled, *branches))
    return f"int8 + {floating}" if int8 else floating


def _runs_int8(compiled) -> bool:
    try:
        return any(
            rt["layerType"].astype(str) in _COMPUTE_LAYERS and rt["runtimePrecision"].astype(str) in ("i8", "u8")
            for rt in (op.get_rt_info() for op in compiled.get_runtime_model().get_ordered_ops())
        )
    except (RuntimeError, KeyError):  # a plugin without an execution graph: the hint is all it says
        return False


def if_branches(core, model, device: str, config: dict) -> list:
    """The else body of each If in `model` (seq_bucket's static branch), compiled alone with the same config: the
    joined execution graph shows an If as one node. One body is enough, the static one is a reshaped copy of the
    same layers (both measured int8 alike); it costs 0.45 s on a first load, 0.1 s once the model cache has it."""
    bodies = [op.get_function(1) for op in model.get_ordered_ops() if op.get_type_name() == "If"]
    return [core.compile_model(body, device, config) for body in bodies]


def runtime_info(compiled, device: str, branches=()) -> dict:
    info = {"device": device, "execution_devices": list(compiled.get_property("EXECUTION_DEVICES"))}
    info["precision"] = runtime_precision(compiled, branches)
    return info


class OpenVINORunner:
    def __init__(self, compiled, info: dict) -> None:
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self._outputs = [(port.get_any_name(), port) for port in compiled.outputs]
        self.info = info

    def __enter__(self) -> OpenVINORunner:
        return self

    def __exit__(self, *exc) -> None:
        self._request = None
        self._compiled = None

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = self._request.infer(feeds)
        return {name: np.asarray(result[port]) for name, port in self._outputs}


def bundled_extension(artifact: Artifact, name) -> Path:
    """The native extension a bundle names: only one of the bundle's own listed (hash-checked) files is loaded."""
    from edgetl.deploy.artifact import check_name

    origin = artifact.root
    if not isinstance(name, str):
        raise UserError(f"{origin}: settings.extension must be a file name in the bundle; refusing this bundle")
    check_name(name, origin)
    if name not in artifact.manifest["files"]:
        raise UserError(
            f"{origin}: settings.extension {name!r} is not a file listed in manifest.json; refusing this bundle"
        )
    return artifact.path(name)


def first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def open_runner(artifact: Artifact, device: str) -> OpenVINORunner:
    """Compile the bundle's model.xml for `device` (the bundle's own extension added first) and wrap it."""
    import openvino as ov

    settings = artifact.manifest["settings"]
    core = ov.Core()
    if settings.get("extension"):
        extension = bundled_extension(artifact, settings["extension"])
        try:
            core.add_extension(str(extension))
        except RuntimeError as e:
            raise UserError(
                f"{extension}: OpenVINO cannot load this native extension here ({first_line(e)}); "
                "rebuild the bundle with --no-fused-kernels or on this OpenVINO version"
            ) from None
    config = compile_config(settings, device)
    try:
        if artifact.content_addressed and not settings.get("static_tokens"):
            # OpenVINO keys a model given by path by the path: safe only where the path names the content. With a
            # cached blob the model is then never read (0.04 s of a 224-px Lite0's start-up, measured)
            compiled, branches = core.compile_model(str(artifact.model_path), device, config), []
        else:  # compile from the object: cache keyed by content; static_tokens models hold an If to read
            model = core.read_model(str(artifact.model_path))
            compiled = core.compile_model(model, device, config)
            branches = if_branches(core, model, device, config)
    except RuntimeError as e:
        raise UserError(
            f"--device {device}: OpenVINO cannot compile for it here ({first_line(e)}); "
            f"devices here: {', '.join(core.available_devices)}"
        ) from None
    return OpenVINORunner(compiled, runtime_info(compiled, device, branches))
