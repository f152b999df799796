"""BatchNorm folding for eager extraction: same features as the original network, original untouched, and a
network whose module order is not its data flow is left unfolded."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgetl.models.backbones import build_backbone
from edgetl.models.backbones.fold import fold_batchnorm
from edgetl.train.features import TorchExtractor


def _batchnorms(m: nn.Module) -> int:
    return sum(isinstance(x, nn.BatchNorm2d) for x in m.modules())


def _probe(size=(64, 64)) -> torch.Tensor:
    return torch.randn((2, 3, *size), generator=torch.Generator().manual_seed(0))


def test_lite0_folds_every_batchnorm_and_computes_the_same_features():
    lite0 = build_backbone("efficientnet_lite0")
    before = {k: v.clone() for k, v in lite0.state_dict().items()}
    folded = fold_batchnorm(lite0, _probe())
    assert folded is not None
    assert _batchnorms(lite0) == 49 and _batchnorms(folded) == 0
    x = torch.from_numpy(np.random.default_rng(3).standard_normal((16, 3, 64, 64)).astype(np.float32))
    with torch.inference_mode():
        want, got = lite0.forward_features(x), folded.forward_features(x)
    assert (want - got).abs().max() <= 1e-5 * want.abs().max()  # float rounding, not another network
    assert all(torch.equal(before[k], v) for k, v in lite0.state_dict().items())  # the caller's module as it was


class _NormFirst(nn.Module):
    """conv registered before bn, but bn runs on the input first: folding by module order would be wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1, bias=False)  # channels match: only the order is wrong
        self.bn = nn.BatchNorm2d(3)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2)
            self.bn.weight.uniform_(0.5, 2)
        self.eval()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.bn(x)).mean((2, 3))


def test_a_fold_that_changes_the_features_is_refused():
    torch.manual_seed(0)
    assert fold_batchnorm(_NormFirst(), _probe((16, 16))) is None


def test_nothing_to_fold_gives_none():
    net = nn.Conv2d(3, 4, 1)
    net.forward_features = lambda x: net(x)
    assert fold_batchnorm(net, _probe((8, 8))) is None


def test_the_extractor_runs_the_folded_network_and_says_so():
    lite0 = build_backbone("efficientnet_lite0")
    ext = TorchExtractor(lambda: lite0)
    assert ext.context()["batchnorm"] == "folded where verified"
    x = np.random.default_rng(4).standard_normal((16, 3, 64, 64)).astype(np.float32)
    ext(x)
    assert _batchnorms(ext.backbone) == 0 and _batchnorms(lite0) == 49
