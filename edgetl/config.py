"""Frozen, validated configuration per stage. The CLI builds these; the library only reads them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from edgetl.contract import TARGETS
from edgetl.errors import UserError

HEADS = ("linear", "mlp")
SOLVERS = ("auto", "lbfgs", "adamw")  # lbfgs: linear head, converged convex fit; adamw: any head
FT_LR = 1e-3  # AdamW for the last N blocks; digits, --unfreeze 3: 0.9861 (3e-4: 0.9749)
FT_LR_ALL = 1e-4  # --unfreeze all; digits: 1e-3 diverged (the linear probe was kept), 1e-4 reached 0.9721
# a sentence encoder's layers, any N: stdlib docstrings, N=1/2/3 at 1e-3 0.833/0.833/0.840 with probe-sentence
# cosine 0.83/0.68/0.63; at 1e-4 0.847/0.847/0.854 with 0.99/0.96/0.96 (3e-4: 0.854/0.868/0.854, 0.96/0.87/0.87)
FT_LR_TEXT = 1e-4
PARITY_IMAGES = 256  # validation images the parity ladder of `edgetl export` runs on (--max-images)
MIN_CALIB = 16  # fewer images give ranges that do not generalize; refuse rather than ship a bad model
# Calibration methods each quantizer really offers; the first is the target's default ("auto").
CALIB_METHODS = {
    "openvino": ("mean_minmax", "minmax", "percentile", "histogram"),  # NNCF range estimators
    "onnxruntime": ("minmax", "percentile", "entropy", "distribution"),  # onnxruntime.quantization
    "tensorrt": ("mean_minmax", "minmax", "percentile", "histogram"),  # NNCF's, made signed (quant/nncf_recipe)
}


@dataclass(frozen=True)
class QuantizeCfg:
    """INT8 post-training quantization of the backbone (None in TrainCfg.quantize means FP32)."""

    target: str = "openvino"
    calib_size: int = 512
    calib_method: str = "auto"
    ignore: tuple[str, ...] = ()
    auto_fallback: bool = True  # when INT8 costs more than max_drop: keep the most sensitive layers in FP
    max_drop: float = 0.01  # accuracy drop (absolute) that counts as "INT8 hurt": fallback, then reported loudly
    # 7-bit weights in every layer (NNCF's overflow fix / ONNX Runtime's reduce_range): CPUs without a 32-bit INT8
    # dot product (AVX2 only) then cannot saturate their 16-bit pair sums (edgetl.quant.fidelity)
    overflow_fix: bool = False

    def __post_init__(self) -> None:
        if self.target not in TARGETS:  # every target has its own INT8 layout
            raise UserError(f"--target: {self.target!r} unknown; choose one of {', '.join(TARGETS)}")
        methods = CALIB_METHODS[self.target]
        if self.calib_method == "auto":
            object.__setattr__(self, "calib_method", methods[0])
        elif self.calib_method not in methods:
            raise UserError(
                f"--calib-method {self.calib_method}: not offered for --target {self.target}; "
                f"choose one of {', '.join(methods)}"
            )
        if self.calib_size < MIN_CALIB:
            raise UserError(f"--calib-size {self.calib_size}: too small to calibrate INT8; use at least {MIN_CALIB}")

    @classmethod
    def from_cli(cls, o: dict) -> QuantizeCfg:
        return cls(
            target=o["target"],
            calib_size=o["calib_size"],
            calib_method=o["calib_method"],
            ignore=tuple(o["quant_ignore"]),
            auto_fallback=o["quant_auto_fallback"],
            overflow_fix=o.get("quant_overflow_fix", False),
        )

    def for_target(self, target: str) -> QuantizeCfg:
        """The same settings laid out for another target (`--target A,B`); a calibration method that target does
        not offer becomes its default."""
        method = self.calib_method if self.calib_method in CALIB_METHODS[target] else "auto"
        return replace(self, target=target, calib_method=method)

    def key(self) -> dict:
        """What changes the quantized numerics (goes into the feature-cache key)."""
        key = {"target": self.target, "method": self.calib_method, "ignore": sorted(self.ignore)}
        return {**key, "overflow_fix": True} if self.overflow_fix else key  # older keys stay valid


@dataclass(frozen=True)
class TrainCfg:
    data: str = "digits"
    backbone: str = "efficientnet_lite0"
    weights: str | None = None
    img_size: int | None = None  # None: 64 for digits, else the backbone's own input size
    out: Path | None = None
    cache_features: bool = True
    cache_dir: Path | None = None
    head: str = "linear"
    solver: str = "auto"  # lbfgs (linear head, converged convex fit) | adamw (any head); auto picks per head
    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    patience: int = 10  # AdamW: early stopping on val accuracy (rounds); 0 disables it
    balanced: bool = True  # loss weighted by inverse class frequency (no effect on balanced data)
    seed: int = 0
    threads: int | None = None
    strict: bool = False
    overwrite: bool = False
    extract_batch: int | None = None  # None: by input size (edgetl.train.features.auto_batch)
    quantize: QuantizeCfg | None = None
    unfreeze: int = 0  # fine-tune the last N blocks (-1: all; 0: frozen, today's path)
    wise: str = "none"  # WiSE-FT interpolation: none (alpha 1), auto, or an alpha in [0, 1]
    ft_lr: float | None = None  # None: FT_LR, or FT_LR_ALL for --unfreeze all, FT_LR_TEXT for a text encoder
    ft_epochs: int = 12
    # where the cut activations come from with --quantize int8: "fp32" (the PyTorch prefix; the fine-tuned network is
    # then quantized whole) or "int8" (the INT8 prefix that ships). Measured, seed 0, OpenVINO INT8 val accuracy:
    # digits N=3 0.9861 vs 0.9721, textures N=2 0.9271 vs 0.9062 (there the int8 prefix never beat the linear probe)
    ft_prefix: str = "fp32"
    layouts: tuple[str, ...] = ()  # `--target A,B`: INT8 layouts besides quantize.target, one run folder each
    compare_fp32: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise UserError("--epochs must be at least 1")
        if self.batch_size < 1 or (self.extract_batch is not None and self.extract_batch < 1):
            raise UserError("--batch-size must be at least 1")
        if self.lr <= 0:
            raise UserError("--lr must be positive")
        if self.patience < 0:
            raise UserError("--patience must be 0 (off) or more epochs")
        if self.head not in HEADS:
            raise UserError(f"--head: {self.head!r} unknown; choose linear or mlp")
        if self.solver not in SOLVERS:
            raise UserError(f"--solver: {self.solver!r} unknown; choose auto, lbfgs or adamw")
        if self.unfreeze < -1:
            raise UserError(f"--unfreeze {self.unfreeze}: negative; give a block count, all, or 0 (frozen)")
        if self.unfreeze and (self.head != "linear" or not self.cache_features):
            raise UserError("--unfreeze starts from the L-BFGS linear head on cached features: drop --head mlp / "
                            "--no-cache-features")  # fmt: skip
        if self.wise not in ("none", "auto") and not _alpha(self.wise):
            raise UserError(f"--wise {self.wise}: give auto, none, or an alpha between 0 and 1")
        if self.wise != "none" and not self.unfreeze:
            raise UserError("--wise interpolates fine-tuned blocks: add --unfreeze N")
        if self.ft_prefix not in ("fp32", "int8"):
            raise UserError(f"--ft-prefix {self.ft_prefix}: choose fp32 or int8")
        if self.ft_prefix == "int8" and (self.quantize is None or not self.unfreeze):
            raise UserError(
                "--ft-prefix int8 trains the blocks on the INT8 prefix: add --unfreeze N and --quantize int8"
            )
        if (self.ft_lr is not None and self.ft_lr <= 0) or self.ft_epochs < 1:
            raise UserError("--ft-lr must be positive and --ft-epochs at least 1")
        if self.layouts and self.quantize is None:
            raise UserError("--target A,B lays out several INT8 backbones: add --quantize int8")
        if self.solver == "lbfgs" and self.head != "linear":
            raise UserError("--solver lbfgs fits a linear head only; use --solver adamw (or auto) with --head mlp")

    def finetune_lr(self, text: bool = False) -> float:
        """--ft-lr, else the default for what is unfrozen: the whole network and a transformer's layers need a
        smaller step."""
        if self.ft_lr is not None:
            return self.ft_lr
        return FT_LR_TEXT if text else FT_LR_ALL if self.unfreeze == -1 else FT_LR

    @classmethod
    def from_cli(cls, o: dict) -> TrainCfg:
        """`edgetl train`'s options (click's parameter names): every option named like a field is copied."""
        targets = parse_targets(o["target"])
        o = {**o, "target": targets[0], "layouts": targets[1:]}
        if o["quantize"] != "int8" and o["quant_ignore"]:
            raise UserError("--quant-ignore needs --quantize int8")
        if o["quantize"] != "int8" and o.get("quant_overflow_fix"):
            raise UserError("--quant-overflow-fix needs --quantize int8")
        quant = QuantizeCfg.from_cli(o) if o["quantize"] == "int8" else None
        data = o["data"]
        if data != "digits" and "://" not in data:  # URLs (s3://, gs://, file://) are read by fsspec as given
            data = str(Path(data).expanduser().resolve())
        same = {f.name for f in fields(cls)} - {"data", "quantize", "progress"}
        return cls(data=data, quantize=quant, progress=not o["no_progress"], **{k: o[k] for k in same if k in o})

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("out", "cache_dir"):
            d[k] = str(d[k]) if d[k] is not None else None
        return d


def parse_targets(text: str) -> tuple[str, ...]:
    """`--target openvino,onnxruntime` -> ("openvino", "onnxruntime"): each a known target, each once."""
    names = tuple(t.strip() for t in str(text).split(",") if t.strip())
    bad = [t for t in names if t not in TARGETS]
    if not names or bad or len(set(names)) != len(names):
        raise UserError(
            f"--target {text}: give one of {', '.join(TARGETS)}, or several separated by commas, each once "
            "(e.g. openvino,onnxruntime)"
        )
    return names


def _alpha(text: str) -> bool:
    try:
        return 0.0 <= float(text) <= 1.0
    except ValueError:
        return False
