"""A backbone cut in two for fine-tuning: the frozen prefix and the last N blocks (the trainable suffix).

Blocks are the backbone's own stages: timm's block groups (`model.blocks`) for the EfficientNet / MobileNet family
(Lite0 has 7); a sentence encoder's transformer layers (edgetl.models.backbones.text_split; MiniLM has 6). The
suffix is the last N groups plus everything after them (`conv_head`, `bn2`, pooling), so it maps the activations
at the cut to the pooled features the head reads. `--unfreeze all` makes the prefix the stem alone
and the suffix everything, stem included: no cut-point cache is possible then.

BatchNorm stays frozen: the suffix is trained in eval mode (running statistics untouched, no dropout), so the
fine-tuned network's BatchNorm is the pretrained one, and training is deterministic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgetl.errors import UserError

if TYPE_CHECKING:
    from torch import nn

ALL = -1  # `--unfreeze all`
PARTS = ("conv_stem", "bn1", "blocks", "conv_head", "bn2")  # timm's EfficientNet / MobileNet layout


def is_text(backbone) -> bool:
    return getattr(backbone.cfg, "modality", "image") == "text"


def block_groups(backbone) -> list:
    """The backbone's blocks (timm block groups, transformer layers), or a one-line refusal for one that has none."""
    if is_text(backbone):
        from edgetl.models.backbones.text_split import layers

        return layers(backbone)
    model = getattr(backbone, "model", None)
    if model is None or not all(hasattr(model, part) for part in PARTS):
        raise UserError(
            f"--unfreeze: backbone {backbone.cfg.name} has no timm block groups (conv_stem, blocks, conv_head); "
            "fine-tuning supports the EfficientNet / MobileNet family and MiniLM: use --unfreeze 0"
        )
    return list(model.blocks)


def resolve(unfreeze: int, backbone) -> int:
    """The number of trainable block groups for `--unfreeze N` (ALL: every group, stem included)."""
    groups = len(block_groups(backbone))
    if unfreeze == ALL:
        return groups
    if not 1 <= unfreeze <= groups:
        raise UserError(
            f"--unfreeze {unfreeze}: {backbone.cfg.name} has {groups} blocks; use 1..{groups}, all, or 0 (frozen)"
        )
    return unfreeze


def block_names(backbone) -> list[str]:
    """What `--unfreeze N` trains, in order from the input: the names run.json records."""
    if is_text(backbone):
        from edgetl.models.backbones.text_split import layer_names

        return layer_names(backbone)
    return [f"blocks.{i}" for i in range(len(block_groups(backbone)))]


def trained_names(backbone, n: int) -> list[str]:
    """The blocks `--unfreeze n` trains and the weighted parts after (or, for all, before) them."""
    names = block_names(backbone)
    whole = n >= len(names)
    if is_text(backbone):
        return (["embeddings"] if whole else []) + names[len(names) - n :]  # the pooling has no weights
    return (["conv_stem", "bn1"] if whole else []) + names[len(names) - n :] + ["conv_head", "bn2"]


class Prefix:
    """The frozen front: stem and the first groups. Call it under torch.inference_mode."""

    def __init__(self, model, cut: int, whole: bool) -> None:
        self.model, self.cut, self.whole = model, cut, whole

    def __call__(self, x):
        if self.whole:
            return x  # --unfreeze all: the suffix starts at the image
        m = self.model
        return m.blocks[: self.cut](m.bn1(m.conv_stem(x)))


def suffix_module(model, cut: int, whole: bool) -> nn.Module:
    """The trainable back as one module: activations at the cut (or the image) -> pooled features [N, D]."""
    from torch import nn

    class Suffix(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            if whole:
                self.conv_stem, self.bn1 = model.conv_stem, model.bn1
            self.blocks = model.blocks[cut:]
            self.conv_head, self.bn2 = model.conv_head, model.bn2

        def forward(self, x):
            if whole:
                x = self.bn1(self.conv_stem(x))
            x = self.bn2(self.conv_head(self.blocks(x)))
            return model.forward_head(x, pre_logits=True)

    return Suffix()


def split(backbone, n: int) -> tuple[Prefix, nn.Module, list[str]]:
    """(frozen prefix, trainable suffix sharing the backbone's modules, the state-dict prefixes it owns)."""
    if is_text(backbone):
        from edgetl.models.backbones.text_split import split_text

        return split_text(backbone, n)
    groups = len(block_groups(backbone))
    whole = n >= groups
    cut = 0 if whole else groups - n
    owned = [f"model.blocks.{i}." for i in range(cut, groups)] + ["model.conv_head.", "model.bn2."]
    if whole:
        owned += ["model.conv_stem.", "model.bn1."]
    return Prefix(backbone.model, cut, whole), suffix_module(backbone.model, cut, whole), owned
