"""Backbones: the shipped Lite0 weights are real; timm:NAME loads user weights safely; registry errors help."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from edgetl.errors import UserError
from edgetl.preprocess import Preprocess
from edgetl.train.backbones import build_backbone, describe_backbone


def test_lite0_imagenet_classifier_labels_chelsea_and_coffee():
    """The mapped weights reproduce ImageNet: scikit-image's cat is 285 (Egyptian cat), the coffee is 967."""
    skimage_data = pytest.importorskip("skimage.data")
    from edgetl.train.backbones.lite0 import build_classifier_model

    model, _ = build_classifier_model()
    pre = Preprocess(size=(224, 224))  # the backbone's own spec: 224, mean = std = 0.5
    x = torch.from_numpy(pre([skimage_data.chelsea(), skimage_data.coffee()]))
    with torch.inference_mode():
        labels = model(x).argmax(1).tolist()
    assert labels == [285, 967]


def test_lite0_mapping_refuses_a_wrong_shape():
    from edgetl.train.backbones.lite0 import map_lukemelas_to_timm

    with pytest.raises(UserError, match="has shape"):
        map_lukemelas_to_timm({"_conv_stem.weight": torch.zeros(3, 3)}, [("conv_stem.weight", (32, 3, 3, 3))])


def test_lite0_description_matches_the_built_model():
    cfg = describe_backbone("efficientnet_lite0")
    assert cfg.num_features == 1280 and cfg.preprocess.mean == (0.5, 0.5, 0.5) and len(cfg.weights_sha256) == 64


def test_timm_backbone_from_safetensors_and_state_dict(tmp_path: Path):
    import timm
    from safetensors.torch import save_file

    ref = timm.create_model("test_efficientnet", pretrained=False).eval()
    save_file(ref.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save(ref.state_dict(), tmp_path / "w.pth")
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        expected = ref.forward_head(ref.forward_features(x), pre_logits=True)
    for name in ("w.safetensors", "w.pth"):
        b = build_backbone("timm:test_efficientnet", str(tmp_path / name))
        with torch.inference_mode():
            torch.testing.assert_close(b.forward_features(x), expected)
        assert b.cfg.name == "timm:test_efficientnet" and b.cfg.num_features == expected.shape[1]


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_that_needs_more_than_tensors_is_refused(tmp_path: Path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"conv_stem.weight": Evil()}, f)
    with pytest.raises(UserError, match=r"cannot be loaded safely.*weights_only=True.*safetensors"):
        build_backbone("timm:test_efficientnet", str(path))


def test_weights_for_another_architecture_are_refused(tmp_path: Path):
    from safetensors.torch import save_file

    save_file({"fc.weight": torch.zeros(2, 2)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(UserError, match="does not fit timm:test_efficientnet"):
        build_backbone("timm:test_efficientnet", str(tmp_path / "w.safetensors"))


def test_registry_suggests_close_names():
    with pytest.raises(UserError, match="did you mean 'efficientnet_lite0'"):
        build_backbone("efficientnet_lite")
    with pytest.raises(UserError, match="needs --weights"):
        build_backbone("timm:resnet18")
    with pytest.raises(UserError, match="timm has no model"):
        build_backbone("timm:resnet_does_not_exist", "w.pth")


def test_tiny_backbone_is_small_frozen_and_deterministic():
    a, b = build_backbone("test_tiny"), build_backbone("test_tiny")
    assert sum(p.numel() for p in a.parameters()) < 5000
    assert not any(p.requires_grad for p in a.parameters())
    a.train()
    assert not a.training  # a frozen backbone never leaves eval mode
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(3, 3, 32, 32)).astype(np.float32))
    torch.testing.assert_close(a.forward_features(x), b.forward_features(x), rtol=0, atol=0)
    assert a.cfg.weights_sha256 == b.cfg.weights_sha256
