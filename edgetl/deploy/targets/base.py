"""The Target and Runner protocols every runtime backend implements, and the options they share.

Polygraphy-style: one small module per runtime behind one interface. A target module imports its runtime
only inside functions, so `import edgetl.deploy.targets` works on a device that has just one runtime (or none)
and a missing runtime surfaces as one `RuntimeMissing` line that says how to install it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from edgetl.contract import LABEL, MAX_BATCH, PRECISIONS, PROBS, TOKENIZER_JSON, TOKENIZER_PLACES
from edgetl.deploy.artifact import Artifact
from edgetl.errors import RuntimeMissing, UserError
from edgetl.registry import Registry


@dataclass(frozen=True)
class CompileOptions:
    """What `edgetl compile` passes to a target. Each target validates the fields it uses."""

    device: str = ""  # empty: the target's default (CPU for OpenVINO and ONNX Runtime, GPU 0 for TensorRT)
    precision: str = "auto"  # auto = the model's precision, run the way the runtime prefers
    max_batch: int = 1  # TensorRT optimization profile upper bound; NPU static shapes use batch 1
    threads: int = 0  # 0 = the runtime's default
    static: bool = False  # fixed input shape (always on for NPU)
    frame_size: tuple[int, int] | None = None  # (H, W) of camera frames when shapes are static
    # Native kernels for ai.edgetl ops: None = where built and measured faster (OpenVINO CPU), True = required,
    # False = run their standard-op decomposition.
    fused_kernels: bool | None = None
    workspace_mb: int = 1024  # TensorRT builder workspace
    # Text models: "graph" = the tokenizer inside the compiled model (strings in; OpenVINO, ONNX Runtime),
    # "host" = token ids in, tokenizer.json run by the `tokenizers` library beside it; "auto" = graph where the
    # target can (TensorRT has no string tensors: host).
    tokenizer: str = "auto"
    # OpenVINO text models: one text of at most this many tokens runs a static-shape branch (seq_bucket); None = sized
    # from the training texts' token counts, 0 = no static branch.
    static_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision: unknown {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if not 1 <= self.max_batch <= MAX_BATCH:
            raise UserError(f"--max-batch: {self.max_batch} is out of range; use 1..{MAX_BATCH}")
        if self.tokenizer not in TOKENIZER_PLACES:
            raise UserError(f"--tokenizer: unknown {self.tokenizer!r}; choose one of {', '.join(TOKENIZER_PLACES)}")
        if self.static_tokens is not None and self.static_tokens < 0:
            raise UserError(f"--static-tokens: {self.static_tokens} is negative; use auto, 0 (off) or a token count")
        if self.threads < 0:
            raise UserError(f"--threads: {self.threads} is negative; use 0 for the runtime's default")


@runtime_checkable
class Runner(Protocol):
    """A loaded model. `infer` is what benchmarks time; `info` says what actually runs (device, precision)."""

    info: dict

    def __enter__(self) -> Runner: ...

    def __exit__(self, *exc) -> None: ...

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class Target(Protocol):
    name: str
    extra: str  # the pip extra that installs this runtime

    def available(self) -> str | None:
        """None when usable here, else a one-line how-to-fix message."""

    def devices(self) -> list[str]:
        """The devices this runtime sees here (empty when unavailable)."""

    def compile(self, onnx: Path, out: Path, options: CompileOptions) -> Artifact: ...

    def load(self, artifact: Artifact, device: str | None = None) -> Runner: ...


TARGETS: Registry[Target] = Registry("target", "--target")


class RuntimeTarget:
    """What every Target shares: `available()` is whether its runtime's Python modules import here. The pip
    extra and the module default to the target's name (`edgetl[openvino]` installs `openvino`)."""

    name: str
    modules: tuple[str, ...] = ()  # default: (name,)
    note: str = ""  # appended to the how-to-install line

    @property
    def extra(self) -> str:
        return self.name

    def available(self) -> str | None:
        return importable(*(self.modules or (self.name,)), extra=self.extra, note=self.note)


def missing(module: str, extra: str, note: str = "") -> str:
    """The one-line message for a runtime that cannot be imported."""
    tail = f" ({note})" if note else ""
    return f"the {module} Python package is not importable; install it with: pip install 'edgetl[{extra}]'{tail}"


def importable(*modules: str, extra: str, note: str = "") -> str | None:
    """A target's `available()`: None when every module imports, else the how-to-install line of the first
    that does not."""
    import importlib

    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            return missing(module.split(".")[0], extra, note)
    return None


def require(target: Target) -> None:
    """Raise RuntimeMissing with the target's how-to-fix line when its runtime is not usable here."""
    problem = target.available()
    if problem:
        raise RuntimeMissing(f"--target {target.name}: {problem}")


def require_output(outputs: list[str], model: Path) -> None:
    for name in (PROBS, LABEL):
        if name not in outputs:
            raise UserError(f"{model}: output {name!r} missing (has {outputs}); re-export with `edgetl export`")


def open_source(target: Target, onnx: Path, options: CompileOptions, precisions: tuple[str, ...], need_runtime=True):
    """The checks every `compile` starts with: the runtime is usable here (unless the model is only staged
    for the device, as TensorRT does), the model is edgetl's and safe to read, it has probs and label, and the
    precision asked for is one this target offers. Returns (SourceModel, the precision to build)."""
    from edgetl.deploy.targets.source import SourceModel

    if need_runtime:
        require(target)
    src = SourceModel.open(onnx)
    require_output(src.outputs, src.path)
    return src, src.precision_for(options.precision, precisions, target.name)


def tokenizer_place(src, target: str, options: CompileOptions, graph: bool = True) -> str | None:
    """Where a compile puts the tokenizer: None for image models, "graph" (inside the model: strings in) or
    "host" (tokenizer.json beside it). `graph` False: the target has no string tensors."""
    if not src.is_text:
        if options.tokenizer != "auto":
            raise UserError(f"--tokenizer {options.tokenizer}: {src.path} classifies images; drop the option")
        return None
    if options.tokenizer == "graph" and not graph:
        raise UserError(f"--tokenizer graph: {target} has no string tensors; use --tokenizer host (the default)")
    return "host" if options.tokenizer == "host" or not graph else "graph"


def copy_tokenizer_json(src, stage: Path) -> str:
    """Host tokenization: the hash-checked tokenizer.json goes into the bundle; returns its name there."""
    (stage / TOKENIZER_JSON).write_bytes(src.tokenizer_file(TOKENIZER_JSON).read_bytes())
    return TOKENIZER_JSON


def write_target_manifest(stage: Path, target: str, src, device: str, model: str, precision: dict, **fields) -> dict:
    """Writes manifest.json into `stage`: the source's input/preprocess/classes block, where it runs, `precision`
    as {requested, runtime} with the model's own precision added (int8 when it carries QDQ), then the target's
    own `fields` (settings, runtime, ...). Returns the manifest."""
    import shutil

    from edgetl.deploy.artifact import write_manifest

    if src.probe is not None:  # the INT8 fidelity probe travels with the model (edgetl.deploy.fidelity)
        shutil.copyfile(src.probe, stage / src.probe.name)
        fields.setdefault("probe", src.export["probe"])
    entry = {
        **src.manifest_fields(),
        "target": target,
        "device": device,
        "model": model,
        "precision": {"model": "int8" if src.has_qdq else "fp32", **precision},
        **fields,
    }
    return write_manifest(stage, entry)
