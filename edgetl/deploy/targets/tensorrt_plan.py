"""TensorRT build settings: what an engine is built with, as data (pure Python, unit-tested everywhere).

An engine is only valid for one TensorRT version on one GPU architecture, so bundles carry the ONNX and
these settings, and the engine is (re)built on the device when needed. The same settings produce the
builder calls in `tensorrt.py` and the equivalent `trtexec` command line for people who prefer it.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import asdict, dataclass

from edgetl.contract import MODEL_ONNX, TOKEN_IDS, TOKEN_INPUTS, UINT8_NHWC
from edgetl.errors import UserError

PRECISIONS = ("fp32", "fp16", "int8")


# Built on the device by `make kernels` (TensorRT headers are needed); edgetl.ops.native finds it there.
PLUGIN_LIBRARY = "libedgetl_tensorrt.so"


@dataclass(frozen=True)
class BuildSettings:
    input_name: str
    input_format: str  # one of edgetl.contract.INPUT_FORMATS
    frame_size: tuple[int, int]  # (H, W): camera frames for uint8-nhwc, the network size for float-nchw
    precision: str = "fp16"
    max_batch: int = 1
    opt_batch: int = 1  # the profile is tuned for single-frame latency, valid up to max_batch
    workspace_mb: int = 1024
    plugins: bool = False  # the graph keeps ai.edgetl nodes: edgetl's TensorRT plugin library must be loaded
    max_length: int = 0  # token-ids models: the tokenizer's max_length, the profile's longest sequence

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision {self.precision}: TensorRT builds {', '.join(PRECISIONS)}")
        if not 1 <= self.opt_batch <= self.max_batch:
            raise UserError(f"--max-batch {self.max_batch}: must be at least 1 (and >= the optimization batch)")
        if self.input_format == TOKEN_IDS and self.max_length < 1:
            raise UserError("a token-ids model needs the tokenizer's max_length for its TensorRT profile")

    def shape(self, batch: int) -> tuple[int, ...]:
        h, w = self.frame_size
        return (batch, h, w, 3) if self.input_format == UINT8_NHWC else (batch, 3, h, w)

    def profile(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """min / opt / max shapes of the one optimization profile: batch 1..max_batch, fixed frame size."""
        return self.shape(1), self.shape(self.opt_batch), self.shape(self.max_batch)

    def profiles(self) -> dict[str, tuple[tuple[int, ...], ...]]:
        """{input name: (min, opt, max)} for every input. Token-ids models (host tokenizer) have two inputs
        [N, T] with T from 1 to max_length, tuned for a short sentence (T = 32)."""
        if self.input_format != TOKEN_IDS:
            return {self.input_name: self.profile()}
        t = self.max_length
        shapes = (1, 1), (self.opt_batch, min(32, t)), (self.max_batch, t)
        return {name: shapes for name in TOKEN_INPUTS}

    def flags(self) -> list[str]:
        """Builder flags. Explicit-QDQ INT8 models also get FP16 so layers left unquantized do not fall back to FP32."""
        return {"fp32": [], "fp16": ["FP16"], "int8": ["INT8", "FP16"]}[self.precision]

    def key(self) -> str:
        """Short hash of the settings: part of the on-device engine cache key."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["frame_size"] = list(self.frame_size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> BuildSettings:
        return cls(**{**d, "frame_size": tuple(d["frame_size"])})

    def trtexec(self, onnx: str = MODEL_ONNX, engine: str = "model.engine", cache: str = "timing.cache") -> str:
        """The trtexec command line that builds the same engine as `edgetl build-engine`."""
        profiles = self.profiles()

        def dims(i: int) -> str:
            return ",".join(f"{name}:{'x'.join(str(d) for d in p[i])}" for name, p in profiles.items())

        args = [
            "trtexec",
            f"--onnx={onnx}",
            f"--saveEngine={engine}",
            f"--minShapes={dims(0)}",
            f"--optShapes={dims(1)}",
            f"--maxShapes={dims(2)}",
            *[f"--{flag.lower()}" for flag in self.flags()],
            f"--memPoolSize=workspace:{self.workspace_mb}M",
            f"--timingCacheFile={cache}",
            *([f"--dynamicPlugins={PLUGIN_LIBRARY}"] if self.plugins else []),
        ]
        return shlex.join(args)


def on_device_steps(settings: BuildSettings, bundle_name: str = "BUNDLE.tar.gz") -> str:
    """The text shipped in the bundle as BUILD_ON_DEVICE.txt."""
    return (
        "This bundle holds the ONNX model and the TensorRT build settings, not an engine: engines only run on the\n"
        "TensorRT version and GPU they were built with. On the device (e.g. a Jetson with JetPack):\n\n"
        f"  edgetl build-engine {bundle_name}\n\n"
        "or, equivalently, with the trtexec shipped with TensorRT, in the unpacked bundle folder:\n\n"
        f"  {settings.trtexec()}\n\n"
        "`edgetl predict` also builds (and caches) the engine on first use when none matches the device.\n"
    )


def engine_mismatch(built: dict | None, here: dict) -> str | None:
    """Why an engine built on `built` (TensorRT version, GPU) cannot run `here`; None when it can."""
    if not built:
        return "the bundle has no engine"
    for key in ("tensorrt", "compute_capability", "gpu"):  # NVIDIA: engines are specific to the exact GPU model
        if built.get(key) != here.get(key):
            return f"engine built for {key} {built.get(key)}, this device has {here.get(key)}"
    return None
