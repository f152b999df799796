"""OpenVINO target: IR (.xml/.bin) for Intel CPUs, iGPUs and NPUs.

Preprocessing stays inside the model (the exported graph already holds Cast/Transpose/Resize/Mul/Add, which
OpenVINO fuses; the float-nchw form gets NumPy preprocessing on the device). Compiled with a latency hint;
the precision the plugin actually picks is recorded, because on AMX CPUs an FP32 model runs in bf16 unless
`--precision fp32` forces f32. NPUs need static shapes, so for them the IR is reshaped to batch 1 and a
fixed frame size. Compiled blobs are cached per OpenVINO version and device, keyed by model content.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from edgetl.contract import TEXT, TOKEN_IDS, TOKEN_INPUTS, UINT8_NHWC
from edgetl.deploy.targets import ov_tokenizer
from edgetl.deploy.targets.base import (
    TARGETS,
    Artifact,
    CompileOptions,
    RuntimeTarget,
    cache_root,
    copy_tokenizer_json,
    open_source,
    require,
    tokenizer_place,
    write_target_manifest,
)
from edgetl.deploy.targets.seq_bucket import BUCKET, static_size, with_static_bucket
from edgetl.errors import UserError

HINTS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}  # --precision -> INFERENCE_PRECISION_HINT


def precision_name(hint: str) -> str:
    """An INFERENCE_PRECISION_HINT value as edgetl names precisions ('f32' -> 'fp32'; unknown ones unchanged)."""
    return {v: k for k, v in HINTS.items()}.get(hint, hint)


def _version() -> str:
    import openvino as ov

    return ov.get_version().split("-")[0]


def _has_device(core, device: str) -> bool:
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


def _extension_for(src, fused_kernels: bool | None) -> Path | None:
    """The native extension to use: required with --fused-kernels; by default wherever the model has ai.edgetl
    ops and the extension is built (measured faster on OpenVINO CPU: benchmarks/results/kernels.json)."""
    if fused_kernels:
        return native_extension()
    if fused_kernels is None and src.custom_ops:
        from edgetl.ops.native import openvino_extension_path

        path = openvino_extension_path()
        return Path(path) if path else None
    return None


def model_cache_dir(device: str) -> Path:
    """One cache folder per OpenVINO version and device, so blobs from another version are never reused."""
    return cache_root() / "openvino" / _version() / device.replace(":", "_").replace("/", "_")


def _compile_config(settings: dict, device: str) -> dict:
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


def _runtime_info(compiled, device: str, branches=()) -> dict:
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


class OpenVINOTarget(RuntimeTarget):
    name = "openvino"

    def devices(self) -> list[str]:
        if self.available():
            return []
        import openvino as ov

        core = ov.Core()
        return [f"{d} ({core.get_property(d, 'FULL_DEVICE_NAME')})" for d in core.available_devices]

    def compile(self, onnx: Path, out: Path, options: CompileOptions) -> Artifact:
        from edgetl.deploy.bundle import artifact_writer

        src, _ = open_source(self, onnx, options, ("fp32", "fp16", "bf16", "int8"))
        import openvino as ov

        device = options.device or "CPU"
        extension = _extension_for(src, options.fused_kernels)
        static = options.static or device.startswith("NPU")
        model = _convert(src, extension)
        fields = src.manifest_fields()
        tokenizer = tokenizer_place(src, self.name, options)
        if tokenizer and static:
            raise UserError("--static / NPU: a text model has a variable sequence length; use --device CPU or GPU")
        if options.static_tokens is not None and not tokenizer:
            raise UserError(f"--static-tokens: {src.path} classifies images; drop the option")
        static_tokens = None
        if tokenizer:
            static_tokens = static_size(
                src.meta.get("token_lengths"), src.preprocess.max_length, options.static_tokens
            )  # fewer distinct shapes, static ones for a short sentence: faster on the CPU plugin (seq_bucket)
            model = with_static_bucket(model, src.preprocess.max_length, static_tokens)
        tokenizer_ops = None
        if tokenizer == "graph":
            tokenizer_ops, tokenizer_extension, tables = ov_tokenizer.choose(src, options.fused_kernels)
            extension = extension or tokenizer_extension
            model = with_tokenizer(src, model, tables, tokenizer_extension)
            fields["input"] = {"name": "text", "format": TEXT, "dtype": "string", "shape": ["N"], "frame_size": None}
        if static:
            frame = _static_shape(src, options)
            model.reshape({src.input_name: frame})
            fields["input"].update(shape=frame, frame_size=frame[1:3] if src.input_format == UINT8_NHWC else None)
        settings = {
            "performance_hint": "LATENCY",
            "inference_precision_hint": HINTS.get(options.precision),
            "static": static,
            "compress_to_fp16": False,
            "extension": f"extensions/{extension.name}" if extension else None,
            "fused_ops": _fused_ops(model),  # which edgetl ops run as native kernels (empty: decomposition)
            "seq_bucket": BUCKET if tokenizer else None,  # token ids padded in-graph to a multiple of this
            "static_tokens": static_tokens,  # one text of at most this many tokens runs a static-shape branch
            "tokenizer_ops": tokenizer_ops,  # edgetl (native BertTokenize), openvino_tokenizers; None: not in graph
        }
        with artifact_writer(out) as stage:
            extra = {"tokenizer": copy_tokenizer_json(src, stage)} if tokenizer == "host" else {}
            ov.save_model(model, str(stage / "model.xml"), compress_to_fp16=False)
            if extension:
                (stage / "extensions").mkdir()
                shutil.copy2(extension, stage / settings["extension"])
            info = self._check_compiles(model, device, settings, fields["input"], extension)
            manifest = write_target_manifest(
                stage,
                self.name,
                src,
                device,
                "model.xml",
                {"requested": options.precision, "runtime": info.get("precision")},
                input=fields["input"],  # with the static shape, when --static
                settings=settings,
                runtime={"openvino": _version()},
                build=info,
                **extra,
            )
        return Artifact(Path(out), manifest)

    def _check_compiles(self, model, device: str, settings: dict, input_spec: dict, extension: Path | None) -> dict:
        """Compile and run one frame here when this machine has the device, to record what really runs."""
        import openvino as ov

        core = ov.Core()
        if not _has_device(core, device):
            return {"checked": False, "note": f"{device} is not present on the build machine; checked on first load"}
        try:
            if extension:
                core.add_extension(str(extension))
            config = _compile_config(settings, device)
            compiled = core.compile_model(model, device, config)
            request = compiled.create_infer_request()
            request.infer(example_feeds(input_spec))
            branches = if_branches(core, model, device, config)
        except Exception as e:  # OpenVINO raises plain RuntimeError with many lines of plugin text
            raise UserError(
                f"--device {device}: OpenVINO cannot compile or run the model here ({_first_line(e)}); "
                "try --precision fp32, or another --device"
            ) from None
        return {"checked": True, **_runtime_info(compiled, device, branches)}

    def load(self, artifact: Artifact, device: str | None = None) -> OpenVINORunner:
        require(self)
        import openvino as ov

        device = device or artifact.device
        settings = artifact.manifest["settings"]
        if artifact.manifest["input"]["format"] == TEXT and settings.get("tokenizer_ops") != ov_tokenizer.NATIVE:
            load_tokenizer_ops()  # before the Core exists: openvino_tokenizers adds its ops to Cores made after
        core = ov.Core()
        if settings.get("extension"):
            extension = bundled_extension(artifact, settings["extension"])
            try:
                core.add_extension(str(extension))
            except RuntimeError as e:
                raise UserError(
                    f"{extension}: OpenVINO cannot load this native extension here ({_first_line(e)}); "
                    "rebuild the bundle with --no-fused-kernels or on this OpenVINO version"
                ) from None
        model = core.read_model(str(artifact.model_path))  # compile from the object: cache keyed by content
        config = _compile_config(settings, device)
        try:
            compiled = core.compile_model(model, device, config)
            branches = if_branches(core, model, device, config)
        except RuntimeError as e:
            raise UserError(
                f"--device {device}: OpenVINO cannot compile for it here ({_first_line(e)}); "
                f"devices here: {', '.join(core.available_devices)}"
            ) from None
        return OpenVINORunner(compiled, _runtime_info(compiled, device, branches))


def bundled_extension(artifact: Artifact, name) -> Path:
    """The native extension a bundle names: only one of the bundle's own listed (hash-checked) files is loaded."""
    from edgetl.deploy.bundle import check_name

    origin = artifact.root
    if not isinstance(name, str):
        raise UserError(f"{origin}: settings.extension must be a file name in the bundle; refusing this bundle")
    check_name(name, origin)
    if name not in artifact.manifest["files"]:
        raise UserError(
            f"{origin}: settings.extension {name!r} is not a file listed in manifest.json; refusing this bundle"
        )
    return artifact.path(name)


def load_tokenizer_ops() -> None:
    """Importing openvino_tokenizers registers its string ops with OpenVINO (text models need them)."""
    try:
        import openvino_tokenizers  # noqa: F401
    except ImportError:
        raise UserError(
            "this text model tokenizes inside the graph: pip install openvino-tokenizers (the version of openvino)"
        ) from None


_TOKENIZER_CORE = None


def with_tokenizer(src, encoder, tables=None, extension: Path | None = None):
    """The tokenizer connected in front of the token-ids graph: strings in. edgetl's native op when `tables` are
    given (ov_tokenizer), else the exported openvino-tokenizers model (hash-checked)."""
    import openvino as ov

    if tables is not None:
        return connect_tokenizer(ov_tokenizer.native_tokenizer(tables, src.preprocess.max_length, extension), encoder)
    load_tokenizer_ops()
    src.tokenizer_file("tokenizer.openvino.bin")
    # one Core for the process: a read model must not outlive the Core that loaded its ops (measured: segfault)
    global _TOKENIZER_CORE
    _TOKENIZER_CORE = _TOKENIZER_CORE or ov.Core()
    return connect_tokenizer(_TOKENIZER_CORE.read_model(str(src.tokenizer_file("tokenizer.openvino.xml"))), encoder)


def connect_tokenizer(tokenizer_model, encoder_model):
    """One `openvino.Model`, strings in (input `text`), the encoder's outputs out: each tokenizer output feeds the
    encoder input of the same name. A tokenizer output the encoder does not take (token_type_ids for most sentence
    encoders) is left out of the joined model, never a dangling output. Both models are consumed (rewired in
    place): pass fresh ones."""
    import openvino as ov
    import openvino_tokenizers

    tok_outputs = {o.get_any_name(): o for o in tokenizer_model.outputs}
    enc_inputs = {i.get_any_name(): i for i in encoder_model.inputs}
    missing = [name for name in TOKEN_INPUTS if name not in enc_inputs]
    extra = [name for name in enc_inputs if name not in tok_outputs]
    if missing or extra:
        raise ValueError(
            f"the encoder takes {sorted(enc_inputs)}: it needs input_ids and attention_mask and nothing the "
            f"tokenizer does not give ({sorted(tok_outputs)})"
        )
    for name, port in enc_inputs.items():
        if port.get_element_type() != tok_outputs[name].get_element_type():
            raise ValueError(
                f"encoder input {name} is {port.get_element_type()}, the tokenizer gives "
                f"{tok_outputs[name].get_element_type()}"
            )
    tok_sinks, enc_sinks = list(tokenizer_model.get_sinks()), list(encoder_model.get_sinks())
    if len(enc_inputs) < len(tok_outputs):  # connect_models would crash logging the unused output (.name)
        results = zip(tokenizer_model.get_results(), tokenizer_model.outputs, strict=True)
        kept = [result for result, port in results if port.get_any_name() in enc_inputs]
        tokenizer_model = ov.Model(kept, tok_sinks, list(tokenizer_model.get_parameters()), "tokenizer")
    full = openvino_tokenizers.connect_models(tokenizer_model, encoder_model, name_map={n: n for n in enc_inputs})
    # connect_models builds the joined model from results and parameters only: the tokenizer's truncation
    # ReadValue/Assign pair hangs off no result, and without its sink the CPU plugin refuses the model
    # ("ReadValue node ... doesn't have sibling output")
    full.add_sinks(tok_sinks + enc_sinks)
    full.inputs[0].get_tensor().set_names({"text"})  # the manifest's input name, like `image` for frames
    return full


def _convert(src, extension: Path | None):
    """The source ONNX as an `openvino.Model`; a model OpenVINO cannot convert is one line naming the file."""
    import openvino as ov

    try:
        if not src.custom_ops:
            return ov.convert_model(str(src.path))
        # OpenVINO's ONNX frontend does not expand model-local functions: the fused ops come from the
        # extension, or the edgetl nodes are inlined into their standard-op decomposition first.
        from edgetl.ops.ov_reader import read_model

        core = ov.Core()
        if extension:
            core.add_extension(str(extension))
        return read_model(core, src.path, fused=extension is not None)
    except Exception as e:  # OpenVINO raises plain RuntimeError/OpConversionFailure with long text
        raise UserError(f"{src.path}: OpenVINO cannot convert it: {str(e).splitlines()[0]}") from None


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _fused_ops(model) -> list[str]:
    from edgetl.ops.ov_reader import fused_ops  # compile side only: it imports onnx

    return fused_ops(model)


def _static_shape(src, options: CompileOptions) -> list[int]:
    h, w = options.frame_size or src.preprocess.size
    return [1, h, w, 3] if src.input_format == UINT8_NHWC else [1, 3, *src.preprocess.size]


def example_feeds(input_spec: dict) -> dict[str, np.ndarray]:
    """A batch of one zero frame (or one short text) matching the input spec, for build-time smoke runs."""
    if input_spec["format"] == TEXT:
        return {input_spec["name"]: np.array(["edgetl"])}
    if input_spec["format"] == TOKEN_IDS:  # [CLS] x [SEP] for any BERT vocabulary: 3 ids, all attended
        return {"input_ids": np.array([[101, 1060, 102]], np.int64), "attention_mask": np.ones((1, 3), np.int64)}
    if input_spec["format"] == UINT8_NHWC:
        h, w = input_spec.get("frame_size") or (32, 32)
        return {input_spec["name"]: np.zeros((1, h, w, 3), np.uint8)}
    shape = [1] + [int(d) for d in input_spec["shape"][1:]]
    return {input_spec["name"]: np.zeros(shape, np.float32)}


TARGETS.add(OpenVINOTarget.name, OpenVINOTarget())
