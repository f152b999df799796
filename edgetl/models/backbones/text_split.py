"""A sentence encoder cut in two for fine-tuning: the frozen prefix and its last N transformer layers.

Blocks are the encoder's transformer layers (MiniLM-L6 has 6: `encoder.layer.0` .. `encoder.layer.5`). The suffix is
the last N layers plus the pooling (masked mean, L2 normalisation: no weights), so it maps the hidden states at the
cut to the sentence embedding the head reads. `--unfreeze all` makes the suffix the whole encoder, embeddings
included: it then starts from the token ids, and no cut-point cache is possible.

What crosses the cut is packed in one float tensor, so the cut-point cache and the training loop treat texts like
images: [N, T, D + 1] = the hidden states and, as the last channel, the attention mask (0/1, exact in float16);
for `--unfreeze all`, [N, T, 2] = the token ids (exact in float32: ids < 2^24) and the mask. Padded positions
carry mask 0, so padding a cached row to a longer batch changes nothing (the attention and the pooling skip them).

Dropout stays off (the suffix trains in eval mode), so training is deterministic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import nn


def layers(backbone) -> list:
    """The encoder's transformer layers (BERT's layout: MiniLM), or one line for an encoder laid out otherwise."""
    try:
        return list(backbone.encoder.encoder.layer)
    except AttributeError:
        from edgetl.errors import UserError

        raise UserError(
            f"--unfreeze: {backbone.cfg.name}'s encoder is not laid out like BERT (encoder.layer); use --unfreeze 0"
        ) from None


def layer_names(backbone) -> list[str]:
    return [f"encoder.layer.{i}" for i in range(len(layers(backbone)))]


def _additive(mask):
    """The eager attention's additive mask [N, 1, 1, T] from a 0/1 mask [N, T]."""
    import torch

    return (1.0 - mask[:, None, None, :]) * torch.finfo(torch.float32).min


def _run_layers(blocks, hidden, mask):
    ext = _additive(mask)
    for layer in blocks:
        out = layer(hidden, attention_mask=ext)
        hidden = out[0] if isinstance(out, tuple) else out  # transformers < 5 returns a tuple
    return hidden


def pack_tokens(tokens) -> np.ndarray:
    """Tokens -> [N, T, 2] float32 (ids, mask): what `--unfreeze all` trains from."""
    return np.stack([tokens.input_ids, tokens.attention_mask], axis=-1).astype(np.float32)


class TextPrefix:
    """The frozen front: embeddings and the first layers. Tokens -> packed [N, T, D + 1] (call under inference_mode)."""

    def __init__(self, backbone, cut: int, whole: bool) -> None:
        self.backbone, self.cut, self.whole = backbone, cut, whole

    def __call__(self, tokens):
        import torch

        if self.whole:
            return torch.from_numpy(pack_tokens(tokens))
        ids, mask = torch.from_numpy(tokens.input_ids), torch.from_numpy(tokens.attention_mask).float()
        hidden = _run_layers(layers(self.backbone)[: self.cut], self.backbone.encoder.embeddings(input_ids=ids), mask)
        return torch.cat([hidden, mask[..., None]], dim=-1)


def suffix_module(backbone, cut: int, whole: bool) -> nn.Module:
    """The trainable back as one module: packed activations at the cut (or token ids) -> sentence embeddings [N, D]."""
    from torch import nn

    class TextSuffix(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            if whole:
                self.embeddings = backbone.encoder.embeddings
            self.layers = nn.ModuleList(layers(backbone)[cut:])

        def forward(self, x):
            width = max(int(x[..., -1].sum(1).max()), 1)  # right-padded rows: columns past the longest are padding
            x = x[:, :width]
            mask = x[..., -1]
            if whole:
                hidden = self.embeddings(input_ids=x[..., 0].long())
            else:
                hidden = x[..., :-1]
            hidden = _run_layers(self.layers, hidden, mask)
            m = mask[..., None]
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
            if backbone.cfg.preprocess.normalize == "l2":
                pooled = nn.functional.normalize(pooled, p=2.0, dim=1)
            return pooled

    return TextSuffix()


def split_text(backbone, n: int) -> tuple[TextPrefix, nn.Module, list[str]]:
    """(frozen prefix, trainable suffix sharing the encoder's modules, the state-dict prefixes it owns)."""
    total = len(layers(backbone))
    whole = n >= total
    cut = 0 if whole else total - n
    owned = [f"encoder.encoder.layer.{i}." for i in range(cut, total)]
    if whole:
        owned.append("encoder.embeddings.")
    return TextPrefix(backbone, cut, whole), suffix_module(backbone, cut, whole), owned


def stack_rows(rows: list[np.ndarray]) -> np.ndarray:
    """Packed rows of different lengths [T_i, C] -> [N, max T, C] in their dtype, zero padded (mask 0: ignored)."""
    width = max(r.shape[0] for r in rows)
    out = np.zeros((len(rows), width, rows[0].shape[1]), rows[0].dtype)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
    return out
