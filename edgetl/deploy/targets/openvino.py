"""OpenVINO target: IR (.xml/.bin) for Intel CPUs, iGPUs and NPUs. Compile is plan → convert → write.

Preprocessing stays inside the model (the exported graph already holds Cast/Transpose/Resize/Mul/Add, which
OpenVINO fuses; the float-nchw form gets NumPy preprocessing on the device). Compiled with a latency hint;
the precision the plugin actually picks is recorded (`ov_runner`), because on AMX CPUs an FP32 model runs in
bf16 unless `--precision fp32` forces f32. NPUs need static shapes, so for them the IR is reshaped to batch 1
and a fixed frame size. Text models carry their tokenizer in the graph (`ov_tokenizer`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgetl.contract import TEXT, TOKEN_IDS, UINT8_NHWC
from edgetl.deploy.targets import base, ov_tokenizer
from edgetl.deploy.targets.base import TARGETS, Artifact, CompileOptions, RuntimeTarget, open_source, require
from edgetl.deploy.targets.ov_runner import (
    HINTS,
    OpenVINORunner,
    compile_config,
    first_line,
    has_device,
    if_branches,
    import_openvino,
    native_extension,
    open_runner,
    runtime_info,
    version,
)
from edgetl.deploy.targets.seq_bucket import BUCKET, static_size, with_static_bucket
from edgetl.errors import UserError


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


@dataclass
class Plan:
    """What a compile will build, decided before any conversion: device, shapes, extension, tokenizer."""

    device: str
    static: bool
    extension: Path | None
    tokenizer: str | None  # "graph", "host" or None (an image model)
    static_tokens: int | None = None
    tokenizer_ops: str | None = None  # edgetl (native BertTokenize), openvino_tokenizers; None: not in graph
    tables: object | None = None  # the native tokenizer op's tables
    tokenizer_extension: Path | None = None


def plan(src, options: CompileOptions, target: str) -> Plan:
    device = options.device or "CPU"
    p = Plan(device, options.static or device.startswith("NPU"), _extension_for(src, options.fused_kernels), None)
    p.tokenizer = base.tokenizer_place(src, target, options)
    if p.tokenizer and p.static:
        raise UserError("--static / NPU: a text model has a variable sequence length; use --device CPU or GPU")
    if options.static_tokens is not None and not p.tokenizer:
        raise UserError(f"--static-tokens: {src.path} classifies images; drop the option")
    if p.tokenizer:  # fewer distinct shapes, static ones for a short sentence: faster on the CPU plugin (seq_bucket)
        p.static_tokens = static_size(src.meta.get("token_lengths"), src.preprocess.max_length, options.static_tokens)
    if p.tokenizer == "graph":
        p.tokenizer_ops, p.tokenizer_extension, p.tables = ov_tokenizer.choose(src, options.fused_kernels)
        p.extension = p.extension or p.tokenizer_extension
    return p


def convert(src, p: Plan, options: CompileOptions, fields: dict):
    """The `openvino.Model` the plan asks for; updates the manifest's input block in `fields`."""
    model = _convert(src, p.extension)
    if p.tokenizer:
        model = with_static_bucket(model, src.preprocess.max_length, p.static_tokens)
    if p.tokenizer == "graph":
        model = ov_tokenizer.with_tokenizer(src, model, p.tables, p.tokenizer_extension)
        fields["input"] = {"name": "text", "format": TEXT, "dtype": "string", "shape": ["N"], "frame_size": None}
    if p.static:
        frame = _static_shape(src, options)
        model.reshape({src.input_name: frame})
        fields["input"].update(shape=frame, frame_size=frame[1:3] if src.input_format == UINT8_NHWC else None)
    return model


def settings_of(p: Plan, model, precision: str) -> dict:
    return {
        "performance_hint": "LATENCY",
        "inference_precision_hint": HINTS.get(precision),
        "static": p.static,
        "compress_to_fp16": False,
        "extension": f"extensions/{p.extension.name}" if p.extension else None,
        "fused_ops": _fused_ops(model),  # which edgetl ops run as native kernels (empty: decomposition)
        "seq_bucket": BUCKET if p.tokenizer else None,  # token ids padded in-graph to a multiple of this
        "static_tokens": p.static_tokens,  # one text of at most this many tokens runs a static-shape branch
        "tokenizer_ops": p.tokenizer_ops,
    }


class OpenVINOTarget(RuntimeTarget):
    name = "openvino"

    def available(self) -> str | None:
        try:
            import_openvino()  # the first import in a process, without the converter (ov_runner)
        except ImportError:
            pass  # the check below names the fix
        return super().available()

    def devices(self) -> list[str]:
        if self.available():
            return []
        import openvino as ov

        core = ov.Core()
        return [f"{d} ({core.get_property(d, 'FULL_DEVICE_NAME')})" for d in core.available_devices]

    def compile(self, onnx: Path, out: Path, options: CompileOptions) -> Artifact:
        src, _ = open_source(self, onnx, options, ("fp32", "fp16", "bf16", "int8"))
        p = plan(src, options, self.name)
        fields = src.manifest_fields()
        model = convert(src, p, options, fields)
        return self._write(src, model, p, options, fields, out)

    def _write(self, src, model, p: Plan, options: CompileOptions, fields: dict, out: Path) -> Artifact:
        import openvino as ov

        from edgetl.deploy.artifact import artifact_writer

        settings = settings_of(p, model, options.precision)
        with artifact_writer(out) as stage:
            extra = {"tokenizer": base.copy_tokenizer_json(src, stage)} if p.tokenizer == "host" else {}
            ov.save_model(model, str(stage / "model.xml"), compress_to_fp16=False)
            if p.extension:
                (stage / "extensions").mkdir()
                import shutil  # compile only: a predict imports this module too

                shutil.copy2(p.extension, stage / settings["extension"])
            info = self._check_compiles(model, p.device, settings, fields["input"], p.extension)
            manifest = base.write_target_manifest(
                stage,
                self.name,
                src,
                p.device,
                "model.xml",
                {"requested": options.precision, "runtime": info.get("precision")},
                input=fields["input"],  # with the static shape, when --static
                settings=settings,
                runtime={"openvino": version()},
                build=info,
                **extra,
            )
        return Artifact(Path(out), manifest)

    def _check_compiles(self, model, device: str, settings: dict, input_spec: dict, extension: Path | None) -> dict:
        """Compile and run one frame here when this machine has the device, to record what really runs."""
        import openvino as ov

        core = ov.Core()
        if not has_device(core, device):
            return {"checked": False, "note": f"{device} is not present on the build machine; checked on first load"}
        try:
            if extension:
                core.add_extension(str(extension))
            config = compile_config(settings, device)
            compiled = core.compile_model(model, device, config)
            request = compiled.create_infer_request()
            request.infer(example_feeds(input_spec))
            branches = if_branches(core, model, device, config)
        except Exception as e:  # OpenVINO raises plain RuntimeError with many lines of plugin text
            raise UserError(
                f"--device {device}: OpenVINO cannot compile or run the model here ({first_line(e)}); "
                "try --precision fp32, or another --device"
            ) from None
        return {"checked": True, **runtime_info(compiled, device, branches)}

    def load(self, artifact: Artifact, device: str | None = None) -> OpenVINORunner:
        require(self)
        settings = artifact.manifest["settings"]
        if artifact.manifest["input"]["format"] == TEXT and settings.get("tokenizer_ops") != ov_tokenizer.NATIVE:
            ov_tokenizer.load_tokenizer_ops()  # before the Core exists: openvino_tokenizers adds its ops to later Cores
        return open_runner(artifact, device or artifact.device)


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
