"""Tiny random-weight backbones (a few thousand parameters) that keep most tests fast.

They look like a timm model (forward_features / forward_head / num_features), so everything downstream
treats them exactly like the real backbone. Weights are seeded: the same every run and machine.
"""

from __future__ import annotations

import torch
from torch import nn

from edgetl.models.backbones.base import Backbone, BackboneCfg, load_weights_file, registry, sha256_state_dict
from edgetl.preprocess import Preprocess


class TinyNet(nn.Module):
    def __init__(self, width: int = 16, num_features: int = 32) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.block = nn.Sequential(
            nn.Conv2d(width, width, 3, 1, 1, groups=width, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, num_features, 1, bias=False),
            nn.BatchNorm2d(num_features),
            nn.ReLU(),
        )
        self.num_features = num_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = True) -> torch.Tensor:
        return x.mean((2, 3))


def _seeded_tinynet(seed: int) -> TinyNet:
    gen = torch.Generator().manual_seed(seed)
    net = TinyNet()
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.5 if "weight" in name and p.ndim > 1 else 0.1))
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics so BN folding is really exercised
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return net.eval()


@registry.register("test_tiny")
def test_tiny(weights: str | None = None) -> Backbone:
    net = _seeded_tinynet(0)
    source = "random (seed 0)"
    if weights:
        net.load_state_dict(load_weights_file(weights), strict=True)
        source = str(weights)
    pre = Preprocess(size=(32, 32), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    cfg = BackboneCfg("test_tiny", net.num_features, pre, sha256_state_dict(net.state_dict()), source)
    return Backbone(net, cfg)


class SensitiveNet(TinyNet):
    """TinyNet whose `block.3` 1x1 conv has one output channel scaled 1000x (undone by the next layer's
    weights): per-tensor INT8 ranges on that tensor crush every other channel. The fallback search must find it.
    """

    OUTLIER = 1000.0

    def __init__(self) -> None:
        super().__init__()
        self.tail = nn.Conv2d(self.num_features, self.num_features, 1, bias=False)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.tail(self.block(self.stem(x))))


@registry.register("test_sensitive")
def test_sensitive(weights: str | None = None) -> Backbone:
    gen = torch.Generator().manual_seed(1)
    net = SensitiveNet()
    base = _seeded_tinynet(0)
    net.load_state_dict(base.state_dict(), strict=False)
    with torch.no_grad():
        net.tail.weight.copy_(torch.randn(net.tail.weight.shape, generator=gen) * 0.3)
        net.block[3].weight[0].mul_(SensitiveNet.OUTLIER)  # the outlier channel ...
        net.tail.weight[:, 0].div_(SensitiveNet.OUTLIER)  # ... undone in FP32 by the consumer
    net.eval()
    pre = Preprocess(size=(32, 32), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    cfg = BackboneCfg("test_sensitive", net.num_features, pre, sha256_state_dict(net.state_dict()), "random (seed 0/1)")
    return Backbone(net, cfg)
