"""ONNX Runtime target: the graph optimized once, offline, and saved; runs anywhere ORT does.

The offline optimization uses ORT_ENABLE_EXTENDED (fusions that are valid on any machine); the
hardware-specific layout transforms of ORT_ENABLE_ALL are applied at load time on the device, because
a model saved after them only runs on CPUs like the build machine. Thread settings are recorded, since
they change latency more than anything else on small CPUs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from edgetl.contract import MODEL_ONNX, ORT_TOKENIZER, TEXT, TOKEN_INPUTS
from edgetl.deploy.ort_session import PRECISE_INT8, session
from edgetl.deploy.targets.base import (
    TARGETS,
    Artifact,
    CompileOptions,
    RuntimeTarget,
    copy_tokenizer_json,
    open_source,
    require,
    tokenizer_place,
    write_target_manifest,
)
from edgetl.errors import UserError

ORT_TOKENIZER = ORT_TOKENIZER  # written by `edgetl export` beside a text model (edgetl.tokenizer_graphs.tokenizers)
TEXT_INPUT = "text"
DEVICES = {"CPU": "CPUExecutionProvider", "CUDA": "CUDAExecutionProvider", "GPU": "CUDAExecutionProvider"}


def _provider(device: str) -> str:
    if device.upper() not in DEVICES:
        raise UserError(f"--device {device}: ONNX Runtime devices are {', '.join(DEVICES)}")
    return DEVICES[device.upper()]


def _session(path: Path, threads: int, level: str, provider: str, optimized_to: Path | None = None, text=False):
    return session(path, threads, level, provider, optimized_to, source=str(path), string_ops=text)


INLINE_LIMIT = (2 << 30) - (64 << 20)  # protobuf serializes at most 2 GiB: larger models keep external weights
EXTERNAL_MIN_BYTES = 1024  # tensors at least this big go to model.onnx.data when they must (shape constants stay)
EXTERNAL_DATA = "model.onnx.data"


def _with_external_data(src, stage: Path) -> tuple[Path | bytes, dict]:
    """What the offline optimization reads, and the session settings for saving its result into `stage`.

    ORT saves the optimized model in the staging folder, where the source's relative external-data paths
    (already checked to stay inside its folder) no longer resolve, and it cannot infer shapes from constants
    stored outside the graph. So a model with external data is loaded with it: as bytes when under 2 GiB (the
    bundle holds one self-contained model.onnx); else re-saved in `stage`/source/ with only its large tensors
    external, and ORT writes the optimized model's large initializers to model.onnx.data beside model.onnx."""
    if not src.external_files:
        return src.path, {}
    import onnx

    size = src.path.stat().st_size + sum(f.stat().st_size for f in src.external_files)
    model = onnx.load(str(src.path), load_external_data=True)
    if size < INLINE_LIMIT:
        return model.SerializeToString(), {}
    copy = stage / "source" / MODEL_ONNX
    copy.parent.mkdir()
    onnx.save_model(
        model,
        str(copy),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=EXTERNAL_DATA,
        size_threshold=EXTERNAL_MIN_BYTES + sys.getsizeof(b""),  # onnx compares sys.getsizeof(raw_data)
    )
    return copy, {
        "session.optimized_model_external_initializers_file_name": EXTERNAL_DATA,
        "session.optimized_model_external_initializers_min_size_in_bytes": str(EXTERNAL_MIN_BYTES),
    }


def with_tokenizer(src, stage: Path) -> Path:
    """The exported ONNX Runtime-extensions tokenizer (hash-checked) joined in front of the token-ids graph:
    one model, string in. Written to `stage`/joined.onnx (removed after the offline optimization)."""
    import onnx
    from onnx import compose

    # a tokenizer graph holds its tables inline: never follow an external-data path named inside it
    tokenizer = onnx.load(str(src.tokenizer_file(ORT_TOKENIZER)), load_external_data=False)
    encoder = onnx.load(str(src.path))
    tokenizer.ir_version = encoder.ir_version = max(tokenizer.ir_version, encoder.ir_version)
    joined = compose.merge_models(
        tokenizer,
        encoder,
        io_map=[(name, name) for name in TOKEN_INPUTS],
        outputs=[o.name for o in encoder.graph.output],
        prefix1="tokenizer/",
    )
    joined.graph.input[0].name = TEXT_INPUT  # undo the prefix on the one input: it is the manifest's name
    for node in joined.graph.node:
        node.input[:] = [TEXT_INPUT if i == f"tokenizer/{TEXT_INPUT}" else i for i in node.input]
    del joined.metadata_props[:]
    joined.metadata_props.extend(encoder.metadata_props)
    path = stage / "joined.onnx"
    onnx.save(joined, str(path))
    return path


class ORTRunner:
    def __init__(self, session, info: dict) -> None:
        self._session = session
        self._names = [o.name for o in session.get_outputs()]
        self.info = info
        first = session.get_inputs()[0]
        # The extensions' tokenizer takes one sentence per call (two strings are a sentence pair): loop a batch.
        self._one_text = first.name if first.type == "tensor(string)" else None

    def __enter__(self) -> ORTRunner:
        return self

    def __exit__(self, *exc) -> None:
        self._session = None

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._one_text is None:
            return dict(zip(self._names, self._session.run(self._names, feeds), strict=True))
        # object arrays: ORT reads a numpy str array's items as C strings, ending each at a NUL
        rows = [self._session.run(self._names, {self._one_text: np.array([t], object)}) for t in feeds[self._one_text]]
        return {name: np.concatenate([r[i] for r in rows]) for i, name in enumerate(self._names)}


class ORTTarget(RuntimeTarget):
    name = "onnxruntime"

    def devices(self) -> list[str]:
        if self.available():
            return []
        import onnxruntime as ort

        return [p for p in ort.get_available_providers() if p != "AzureExecutionProvider"]

    def compile(self, onnx: Path, out: Path, options: CompileOptions) -> Artifact:
        from edgetl.deploy.artifact import artifact_writer

        src, _ = open_source(self, onnx, options, ("fp32", "int8"))
        device = (options.device or "CPU").upper()
        provider = _provider(device)
        if options.static or options.fused_kernels:  # ORT inlines the ai.edgetl function bodies itself
            raise UserError("--static/--fused-kernels: not used by --target onnxruntime; drop them")
        _warn_layout(src)
        tokenizer = tokenizer_place(src, self.name, options)
        with artifact_writer(out) as stage:
            extra = self._optimize(src, stage, options, provider, tokenizer)
            manifest = self._write_manifest(src, stage, options, device, provider, tokenizer == "graph", extra)
        return Artifact(Path(out), manifest)

    def _optimize(self, src, stage: Path, options: CompileOptions, provider: str, tokenizer: str | None) -> dict:
        """The offline-optimized model.onnx in `stage` (tokenizer joined in front when it goes in the graph);
        returns the manifest fields this changes."""
        text = tokenizer == "graph"
        extra = {}
        if tokenizer == "host":  # token ids in: tokenizer.json ships with the model (edgetl.texts.HostTokenizer)
            extra["tokenizer"] = copy_tokenizer_json(src, stage)
        if text:  # the joined graph is saved with its weights inline
            model, config = with_tokenizer(src, stage), {}
        else:
            model, config = _with_external_data(src, stage)
        session(
            model,
            options.threads,
            "ORT_ENABLE_EXTENDED",
            provider,
            stage / MODEL_ONNX,
            source=str(src.path),
            string_ops=text,
            config=config,
        )
        import shutil  # compile only: a predict imports this module too

        shutil.rmtree(stage / "source", ignore_errors=True)  # the re-saved source of a model over 2 GiB
        if text:
            model.unlink()
            input_spec = {"name": TEXT_INPUT, "format": TEXT, "dtype": "string", "shape": [1]}
            extra["input"] = {**src.manifest_fields()["input"], **input_spec}
        return extra

    def _write_manifest(self, src, stage: Path, options, device: str, provider: str, text: bool, extra: dict) -> dict:
        import onnxruntime as ort

        loaded = _session(stage / MODEL_ONNX, options.threads, "ORT_ENABLE_ALL", provider, text=text)
        settings = {
            "offline_optimization": "ORT_ENABLE_EXTENDED",
            "load_optimization": "ORT_ENABLE_ALL",
            "intra_op_num_threads": options.threads,
            "inter_op_num_threads": 1,
            "execution_mode": "ORT_SEQUENTIAL",
            "providers": loaded.get_providers(),
            "string_ops": "onnxruntime-extensions" if text else None,
        }
        return write_target_manifest(
            stage,
            self.name,
            src,
            device,
            MODEL_ONNX,
            {"requested": options.precision, "runtime": "int8" if src.has_qdq else "fp32"},
            settings=settings,
            runtime={"onnxruntime": ort.__version__, **_extensions_version(text)},
            **extra,
        )

    def load(self, artifact: Artifact, device: str | None = None, precise: bool = False) -> ORTRunner:
        """`precise`: u8u8 INT8 kernels (session.x64quantprecision), for CPUs whose u8s8 kernels saturate
        (edgetl.deploy.fidelity decides, on the bundle's probe)."""
        from edgetl.deploy.onnx_safety import check_bundled_onnx

        require(self)
        # ORT opens external-data files named inside the model: only the bundle's own listed files may be read.
        check_bundled_onnx(artifact.model_path, artifact.root, artifact.manifest["files"], artifact.root)
        settings = artifact.manifest["settings"]
        provider = _provider(device or artifact.device)
        text = settings.get("string_ops") == "onnxruntime-extensions"
        threads = settings["intra_op_num_threads"]
        config = PRECISE_INT8 if precise else None
        loaded = session(
            artifact.model_path,
            threads,
            settings["load_optimization"],
            provider,
            source=str(artifact.model_path),
            string_ops=text,
            config=config,
        )
        info = {
            "device": device or artifact.device,
            "providers": loaded.get_providers(),
            "precision": artifact.manifest["precision"]["runtime"],
            "intra_op_num_threads": settings["intra_op_num_threads"],
            **({"int8_kernels": "u8u8 (session.x64quantprecision)"} if precise else {}),
        }
        return ORTRunner(loaded, info)


def _extensions_version(text: bool) -> dict:
    if not text:
        return {}
    import onnxruntime_extensions

    return {"onnxruntime_extensions": onnxruntime_extensions.__version__}


TARGETS.add(ORTTarget.name, ORTTarget())


def _warn_layout(src) -> None:
    layout = (src.meta.get("quantize") or {}).get("target")
    if layout and layout != "onnxruntime":
        print(
            f"warning: {src.path} holds an INT8 backbone laid out for {layout}; ONNX Runtime runs that layout on "
            "a slow path: for an ONNX Runtime bundle train with --quantize int8 --target onnxruntime",
            file=sys.stderr,
        )
