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

from edgetl.deploy.ort_session import session
from edgetl.deploy.targets.base import (
    TARGETS,
    Artifact,
    CompileOptions,
    RuntimeTarget,
    open_source,
    require,
    write_target_manifest,
)
from edgetl.errors import UserError

DEVICES = {"CPU": "CPUExecutionProvider", "CUDA": "CUDAExecutionProvider", "GPU": "CUDAExecutionProvider"}


def _provider(device: str) -> str:
    if device.upper() not in DEVICES:
        raise UserError(f"--device {device}: ONNX Runtime devices are {', '.join(DEVICES)}")
    return DEVICES[device.upper()]


def _session(path: Path, threads: int, level: str, provider: str, optimized_to: Path | None = None):
    return session(path, threads, level, provider, optimized_to, source=str(path))


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


class ORTTarget(RuntimeTarget):
    name = "onnxruntime"

    def devices(self) -> list[str]:
        if self.available():
            return []
        import onnxruntime as ort

        return [p for p in ort.get_available_providers() if p != "AzureExecutionProvider"]

    def compile(self, onnx: Path, out: Path, options: CompileOptions) -> Artifact:
        from edgetl.deploy.bundle import artifact_writer

        src, _ = open_source(self, onnx, options, ("fp32", "int8"))
        import onnxruntime as ort

        device = (options.device or "CPU").upper()
        provider = _provider(device)
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
            extra = {}
            if src.is_text:  # token ids in: the host tokenizer ships with the model (edgetl.texts.HostTokenizer)
                (stage / "tokenizer.json").write_bytes(src.tokenizer_file("tokenizer.json").read_bytes())
                extra["tokenizer"] = "tokenizer.json"
            _session(src.path, options.threads, "ORT_ENABLE_EXTENDED", provider, optimized_to=stage / "model.onnx")
            loaded = _session(stage / "model.onnx", options.threads, "ORT_ENABLE_ALL", provider)
            settings = {
                "offline_optimization": "ORT_ENABLE_EXTENDED",
                "load_optimization": "ORT_ENABLE_ALL",
                "intra_op_num_threads": options.threads,
                "inter_op_num_threads": 1,
                "execution_mode": "ORT_SEQUENTIAL",
                "providers": loaded.get_providers(),
            }
            manifest = write_target_manifest(
                stage,
                self.name,
                src,
                device,
                "model.onnx",
                {"requested": options.precision, "runtime": "int8" if src.has_qdq else "fp32"},
                settings=settings,
                runtime={"onnxruntime": ort.__version__},
                **extra,
            )
        return Artifact(Path(out), manifest)

    def load(self, artifact: Artifact, device: str | None = None) -> ORTRunner:
        from edgetl.deploy.onnx_safety import check_bundled_onnx

        require(self)
        # ORT opens external-data files named inside the model: only the bundle's own listed files may be read.
        check_bundled_onnx(artifact.model_path, artifact.root, artifact.manifest["files"], artifact.root)
        settings = artifact.manifest["settings"]
        provider = _provider(device or artifact.device)
        loaded = _session(
            artifact.model_path, settings["intra_op_num_threads"], settings["load_optimization"], provider
        )
        info = {
            "device": device or artifact.device,
            "providers": loaded.get_providers(),
            "precision": artifact.manifest["precision"]["runtime"],
            "intra_op_num_threads": settings["intra_op_num_threads"],
        }
        return ORTRunner(loaded, info)


TARGETS.add(ORTTarget.name, ORTTarget())
