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

from edgetl.errors import UserError
from edgetl.targets.base import TARGETS, Artifact, CompileOptions, missing, require, require_output

DEVICES = {"CPU": "CPUExecutionProvider", "CUDA": "CUDAExecutionProvider", "GPU": "CUDAExecutionProvider"}


def _provider(device: str) -> str:
    if device.upper() not in DEVICES:
        raise UserError(f"--device {device}: ONNX Runtime devices are {', '.join(DEVICES)}")
    return DEVICES[device.upper()]


def _session_options(threads: int, level: str):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3  # warnings about unused initializers are noise to users
    return so


def _session(path: Path, threads: int, level: str, provider: str, optimized_to: Path | None = None):
    import onnxruntime as ort

    if provider not in ort.get_available_providers():
        raise UserError(
            f"--device: {provider} is not in this ONNX Runtime build "
            f"(has {', '.join(ort.get_available_providers())}); use --device CPU"
        )
    so = _session_options(threads, level)
    if optimized_to is not None:
        so.optimized_model_filepath = str(optimized_to)
    try:
        return ort.InferenceSession(str(path), sess_options=so, providers=[provider])
    except Exception as e:  # ORT raises its own Fail/InvalidGraph/NotImplemented classes
        raise UserError(f"{path}: ONNX Runtime cannot load it: {str(e).splitlines()[0]}") from None


class ORTRunner:
    def __init__(self, session, info: dict) -> None:
        self._session = session
        self._names = [o.name for o in session.get_outputs()]
        self.info = info

    def __enter__(self) -> ORTRunner:
        return self

    def __exit__(self, *exc) -> None:
        self._session = None

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._names, self._session.run(self._names, feeds), strict=True))


class ORTTarget:
    name = "onnxruntime"
    extra = "onnxruntime"

    def available(self) -> str | None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return missing("onnxruntime", self.extra)
        return None

    def devices(self) -> list[str]:
        if self.available():
            return []
        import onnxruntime as ort

        return [p for p in ort.get_available_providers() if p != "AzureExecutionProvider"]

    def compile(self, onnx: Path, out: Path, options: CompileOptions) -> Artifact:
        from edgetl.bundle import artifact_writer, write_manifest
        from edgetl.targets.source import SourceModel

        require(self)
        import onnxruntime as ort

        src = SourceModel.open(onnx)
        require_output(src.outputs, src.path)
        device = (options.device or "CPU").upper()
        provider = _provider(device)
        src.precision_for(options.precision, ("fp32", "int8"), self.name)
        if options.static or options.fused_kernels:  # ORT inlines the ai.edgetl function bodies itself
            raise UserError("--static/--fused-kernels: not used by --target onnxruntime; drop them")
        layout = (src.meta.get("quantize") or {}).get("target")
        if layout and layout != "onnxruntime":
            print(
                f"warning: {src.path} holds an INT8 backbone laid out for {layout}; ONNX Runtime runs that layout on "
                "a slow path: for an ONNX Runtime bundle train with --quantize int8 --target onnxruntime",
                file=sys.stderr,
            )
        with artifact_writer(out) as stage:
            _session(src.path, options.threads, "ORT_ENABLE_EXTENDED", provider, optimized_to=stage / "model.onnx")
            session = _session(stage / "model.onnx", options.threads, "ORT_ENABLE_ALL", provider)
            settings = {
                "offline_optimization": "ORT_ENABLE_EXTENDED",
                "load_optimization": "ORT_ENABLE_ALL",
                "intra_op_num_threads": options.threads,
                "inter_op_num_threads": 1,
                "execution_mode": "ORT_SEQUENTIAL",
                "providers": session.get_providers(),
            }
            manifest = write_manifest(
                stage,
                {
                    **src.manifest_fields(),
                    "target": self.name,
                    "device": device,
                    "model": "model.onnx",
                    "precision": {
                        "model": "int8" if src.has_qdq else "fp32",
                        "requested": options.precision,
                        "runtime": "int8" if src.has_qdq else "fp32",
                    },
                    "settings": settings,
                    "runtime": {"onnxruntime": ort.__version__},
                },
            )
        return Artifact(Path(out), manifest)

    def load(self, artifact: Artifact, device: str | None = None) -> ORTRunner:
        from edgetl.onnx_safety import check_bundled_onnx

        require(self)
        # ORT opens external-data files named inside the model: only the bundle's own listed files may be read.
        check_bundled_onnx(artifact.model_path, artifact.root, artifact.manifest["files"], artifact.root)
        settings = artifact.manifest["settings"]
        provider = _provider(device or artifact.device)
        session = _session(
            artifact.model_path, settings["intra_op_num_threads"], settings["load_optimization"], provider
        )
        info = {
            "device": device or artifact.device,
            "providers": session.get_providers(),
            "precision": artifact.manifest["precision"]["runtime"],
            "intra_op_num_threads": settings["intra_op_num_threads"],
        }
        return ORTRunner(session, info)


TARGETS.add(ORTTarget.name, ORTTarget())
