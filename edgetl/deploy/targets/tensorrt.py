"""TensorRT target (Jetson and NVIDIA GPUs): real builder code on the TensorRT 10 Python API.

Engines are not portable across TensorRT versions or GPUs, so a bundle always carries the ONNX and the
build settings; an engine built elsewhere (or none at all) is rebuilt on the device on first load and
cached, instead of crashing. Where `tensorrt` is not importable (e.g. an x86 build machine), `compile`
writes that engine-less bundle plus the on-device steps; it never writes a fake engine. Device memory is
handled with cuda-python (`cuda.bindings.runtime`), so the device side needs neither torch nor pycuda.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

from edgetl.contract import MODEL_ONNX, UINT8_NHWC
from edgetl.deploy.targets import base
from edgetl.deploy.targets.base import TARGETS, Artifact, CompileOptions
from edgetl.deploy.targets.tensorrt_plan import BuildSettings, engine_mismatch, on_device_steps
from edgetl.errors import RuntimeMissing, UserError
from edgetl.fileio import cache_root

NOTE = "on a Jetson it comes with JetPack; the device side also needs cuda-python"


def _cuda(call, *args):
    """Call a cuda.bindings.runtime function and turn its error code into an exception."""
    from cuda.bindings import runtime as cudart

    err, *values = call(*args)
    if err != cudart.cudaError_t.cudaSuccess:
        raise RuntimeError(f"CUDA {call.__name__} failed: {err.name}")
    return values[0] if len(values) == 1 else values


def device_identity() -> dict:
    """TensorRT version, GPU name and compute capability here: what an engine must match."""
    import tensorrt as trt
    from cuda.bindings import runtime as cudart

    props = _cuda(cudart.cudaGetDeviceProperties, _cuda(cudart.cudaGetDevice))
    name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
    return {"tensorrt": trt.__version__, "gpu": name, "compute_capability": f"{props.major}.{props.minor}"}


def usable_gpu(why: str) -> dict:
    """device_identity(), or one UserError line when CUDA has no usable GPU here (driver, permissions, none)."""
    try:
        return device_identity()
    except RuntimeError as e:
        raise UserError(f"{why}: no usable GPU here ({e}); check `nvidia-smi` and the CUDA driver") from None


def load_plugins(trt) -> None:
    """Register edgetl's fused-op plugins (IPluginV3) before parsing or deserializing a graph that uses them."""
    from edgetl.ops.native import tensorrt_plugin_path

    path = tensorrt_plugin_path()
    if path is None:
        raise UserError("this engine uses edgetl's fused kernels: build the TensorRT plugin here first (make kernels)")
    trt.get_plugin_registry().load_library(str(path))


def build_engine(onnx: Path, settings: BuildSettings, engine_out: Path, timing_cache: Path) -> dict:
    """Parse the ONNX, build with one optimization profile and a timing cache, write the serialized engine."""
    import tensorrt as trt

    from edgetl.fileio import atomic_write_bytes

    logger = trt.Logger(trt.Logger.WARNING)
    if settings.plugins:
        load_plugins(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"{onnx}: TensorRT cannot parse it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mb << 20)
    for flag in settings.flags():
        config.set_flag(getattr(trt.BuilderFlag, flag))
    profile = builder.create_optimization_profile()
    for name, shapes in settings.profiles().items():
        profile.set_shape(name, *shapes)
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(f"{onnx}: TensorRT could not build an engine with {settings.to_dict()}; see the log above")
    timing_cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    atomic_write_bytes(engine_out, bytes(serialized))
    return {**usable_gpu(f"{onnx}: TensorRT build"), "settings_key": settings.key()}


class TensorRTRunner:
    """One execution context; device buffers grow on demand and are reused between calls."""

    def __init__(self, engine, info: dict) -> None:
        import tensorrt as trt
        from cuda.bindings import runtime as cudart

        self._cudart, self._engine, self.info = cudart, engine, info
        self._context = engine.create_execution_context()
        self._stream = _cuda(cudart.cudaStreamCreate)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if n not in self._inputs]
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)

    def __enter__(self) -> TensorRTRunner:
        return self

    def __exit__(self, *exc) -> None:
        for pointer, _ in self._buffers.values():
            self._cudart.cudaFree(pointer)
        self._buffers.clear()
        self._cudart.cudaStreamDestroy(self._stream)
        self._context = None

    def _buffer(self, name: str, nbytes: int) -> int:
        pointer, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if pointer:
                _cuda(self._cudart.cudaFree, pointer)
            pointer, size = _cuda(self._cudart.cudaMalloc, max(nbytes, 1)), max(nbytes, 1)
            self._buffers[name] = (pointer, size)
        self._context.set_tensor_address(name, int(pointer))
        return pointer

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        copy = self._cudart.cudaMemcpyAsync
        kind = self._cudart.cudaMemcpyKind
        for name in self._inputs:
            array = np.ascontiguousarray(feeds[name], dtype=self._dtypes[name])
            self._context.set_input_shape(name, array.shape)
            _cuda(
                copy,
                self._buffer(name, array.nbytes),
                array.ctypes.data,
                array.nbytes,
                kind.cudaMemcpyHostToDevice,
                self._stream,
            )
        results = {}
        for name in self._outputs:
            results[name] = np.empty(tuple(self._context.get_tensor_shape(name)), self._dtypes[name])
            self._buffer(name, results[name].nbytes)
        if not self._context.execute_async_v3(self._stream):
            raise RuntimeError("TensorRT execute_async_v3 failed; see the TensorRT log")
        for name, array in results.items():
            _cuda(
                copy, array.ctypes.data, self._buffers[name][0], array.nbytes, kind.cudaMemcpyDeviceToHost, self._stream
            )
        _cuda(self._cudart.cudaStreamSynchronize, self._stream)
        return results


class TensorRTTarget(base.RuntimeTarget):
    name = "tensorrt"
    modules = ("tensorrt", "cuda.bindings.runtime")
    note = NOTE

    def devices(self) -> list[str]:
        if self.available():
            return []
        try:
            here = device_identity()
        except RuntimeError as e:
            return [f"no usable GPU ({e})"]
        return [f"GPU 0 ({here['gpu']}, compute capability {here['compute_capability']})"]

    def compile(self, onnx: Path, out: Path, options: CompileOptions) -> Artifact:
        from edgetl.deploy.artifact import artifact_writer

        # the engine is built where the GPU is: TensorRT need not be installed to stage the bundle
        src, precision = base.open_source(self, onnx, options, ("fp32", "fp16", "int8"), need_runtime=False)
        settings = build_settings(
            src, options, "fp16" if precision == "fp32" and options.precision == "auto" else precision
        )
        buildable = self.available() is None
        extra = {}
        host_tokenizer = base.tokenizer_place(src, self.name, options, graph=False)
        with artifact_writer(out) as stage:
            if host_tokenizer:  # TensorRT has no string tensors: the host tokenizer ships with the engine
                extra["tokenizer"] = base.copy_tokenizer_json(src, stage)
            if src.custom_ops and not options.fused_kernels:
                # Without edgetl's plugin on the device the ai.edgetl nodes become their standard-op decomposition.
                import onnx

                from edgetl.ops.onnx_functions import decompose

                onnx.save(decompose(onnx.load(str(src.path))), str(stage / MODEL_ONNX))
            else:
                shutil.copy2(src.path, stage / MODEL_ONNX)
            for data in src.external_files:  # external weights keep their names next to the model
                target = stage / data.relative_to(src.path.resolve().parent)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(data, target)
            engine = None
            if buildable:
                engine = build_engine(stage / MODEL_ONNX, settings, stage / "model.engine", timing_cache_path())
            else:
                (stage / "BUILD_ON_DEVICE.txt").write_text(on_device_steps(settings, f"{Path(out).name}.tar.gz"))
            manifest = base.write_target_manifest(
                stage,
                self.name,
                src,
                options.device or "GPU",
                "model.engine" if engine else MODEL_ONNX,
                {"requested": settings.precision, "runtime": settings.precision if engine else None},
                engine=engine,
                settings=settings.to_dict(),
                runtime={"tensorrt": engine["tensorrt"] if engine else None},
                on_device={"edgetl": "edgetl build-engine BUNDLE", "trtexec": settings.trtexec()},
                **extra,
            )
        return Artifact(Path(out), manifest)

    def load(self, artifact: Artifact, device: str | None = None) -> TensorRTRunner:
        problem = self.available()
        if problem:
            raise RuntimeMissing(f"bundle target tensorrt: {problem}")
        import tensorrt as trt

        from edgetl.deploy.onnx_safety import check_bundled_onnx

        here = usable_gpu(f"{artifact.root}: TensorRT bundle")
        engine_path, built = artifact.path("model.engine"), artifact.manifest.get("engine")
        why = engine_mismatch(built, here)
        if why:
            engine_path = cached_engine_path(artifact.manifest, here)
            if not engine_path.is_file():
                # TensorRT's parser opens external data named inside the ONNX: only the bundle's own files.
                model = artifact.path(MODEL_ONNX)
                check_bundled_onnx(model, artifact.root, artifact.manifest["files"], artifact.root)
                print(
                    f"tensorrt: {why}; building from the bundled ONNX (cached in {engine_path.parent})", file=sys.stderr
                )
                settings = BuildSettings.from_dict(artifact.manifest["settings"])
                engine_path.parent.mkdir(parents=True, exist_ok=True)
                build_engine(artifact.path(MODEL_ONNX), settings, engine_path, timing_cache_path())
        if artifact.manifest["settings"].get("plugins"):
            load_plugins(trt)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if engine is None:
            raise UserError(f"{engine_path}: TensorRT cannot deserialize this engine; delete it to rebuild it")
        info = {"device": here["gpu"], "precision": artifact.manifest["settings"]["precision"], **here}
        return TensorRTRunner(engine, info)


def build_settings(src, options: CompileOptions, precision: str) -> BuildSettings:
    if src.is_text:
        frame = (0, 0)  # no frames: the profile's sequence lengths come from max_length
    elif src.input_format == UINT8_NHWC:
        frame = options.frame_size or src.preprocess.size
    else:
        frame = src.preprocess.size
    return BuildSettings(
        src.input_name,
        src.input_format,
        tuple(frame),
        precision,
        options.max_batch,
        workspace_mb=options.workspace_mb,
        plugins=bool(src.custom_ops and options.fused_kernels),
        max_length=src.preprocess.max_length if src.is_text else 0,
    )


def timing_cache_path() -> Path:
    """Timing caches are per TensorRT version and GPU too, so they live on the machine, not in bundles."""
    import tensorrt as trt

    return cache_root() / "tensorrt" / trt.__version__ / "timing.cache"


def cached_engine_path(manifest: dict, here: dict) -> Path:
    key = f"{manifest['source']['onnx_sha256'][:16]}-{BuildSettings.from_dict(manifest['settings']).key()}"
    folder = f"{here['tensorrt']}-sm{here['compute_capability'].replace('.', '')}"
    return cache_root() / "tensorrt" / folder / f"{key}.engine"


def build_engine_bundle(bundle: Path, out: Path | None) -> Path:
    """`edgetl build-engine`: add an engine for this device to a bundle (replaced atomically unless --out)."""
    from edgetl.deploy.artifact import write_manifest
    from edgetl.deploy.bundle import open_bundle, package

    problem = TensorRTTarget().available()
    if problem:
        raise RuntimeMissing(f"build-engine: {problem}")
    with open_bundle(bundle) as artifact:
        manifest = artifact.manifest
        if manifest["target"] != "tensorrt":
            raise UserError(f"{bundle}: a {manifest['target']} bundle; build-engine needs one from --target tensorrt")
        from edgetl.deploy.onnx_safety import check_bundled_onnx

        check_bundled_onnx(artifact.path(MODEL_ONNX), artifact.root, manifest["files"], bundle)
        settings = BuildSettings.from_dict(manifest["settings"])
        engine = build_engine(artifact.path(MODEL_ONNX), settings, artifact.path("model.engine"), timing_cache_path())
        (artifact.root / "BUILD_ON_DEVICE.txt").unlink(missing_ok=True)
        fields = {k: v for k, v in manifest.items() if k not in ("format", "edgetl_version", "created", "files")}
        fields.update(
            model="model.engine",
            engine=engine,
            runtime={"tensorrt": engine["tensorrt"]},
            precision={**manifest["precision"], "runtime": settings.precision},
        )
        write_manifest(artifact.root, fields)
        target = Path(out) if out else Path(bundle)
        if target.resolve() != artifact.root.resolve():
            package(artifact.root, target)
    return target


TARGETS.add(TensorRTTarget.name, TensorRTTarget())
