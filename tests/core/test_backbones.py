"""Backbones: the shipped Lite0 weights are real; timm:NAME loads user weights safely; registry errors help."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from edgetl.errors import UserError
from edgetl.models.backbones import build_backbone, describe_backbone
from edgetl.preprocess import Preprocess
from tests.conftest import run_cli


def test_lite0_imagenet_classifier_labels_chelsea_and_coffee():
    """The mapped weights reproduce ImageNet: scikit-image's cat is 285 (Egyptian cat), the coffee is 967."""
    skimage_data = pytest.importorskip("skimage.data")
    from edgetl.models.backbones.lite0 import build_classifier_model

    model, _ = build_classifier_model()
    pre = Preprocess(size=(224, 224))  # the backbone's own spec: 224, mean = std = 0.5
    x = torch.from_numpy(pre([skimage_data.chelsea(), skimage_data.coffee()]))
    with torch.inference_mode():
        labels = model(x).argmax(1).tolist()
    assert labels == [285, 967]


def test_lite0_mapping_refuses_a_wrong_shape():
    from edgetl.models.backbones.lite0 import map_lukemelas_to_timm

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


class Checkpoint:
    """A custom class, as in a checkpoint saved with torch.save(model) or an optimizer wrapper."""

    def __init__(self) -> None:
        self.weight = torch.zeros(2)


def test_pickle_that_needs_more_than_tensors_is_refused(tmp_path: Path, capfd):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"conv_stem.weight": Evil()}, f)
    with pytest.raises(UserError, match=r"evil.pth holds Python objects beyond tensors.*could run code.*safetensors"):
        build_backbone("timm:test_efficientnet", str(path))
    assert "pwned" not in capfd.readouterr().out


def _save_custom_pickle(path: Path, how: str) -> None:
    if how == "torch.save":
        torch.save({"stem.0.weight": Checkpoint()}, path)
    else:  # plain pickle (protocol 5): torch warns about the protocol and names no global
        with open(path, "wb") as f:
            pickle.dump({"stem.0.weight": Checkpoint()}, f, protocol=pickle.HIGHEST_PROTOCOL)


@pytest.mark.parametrize(
    ("how", "detail"),
    [("torch.save", "it needs tests.core.test_backbones.Checkpoint"), ("pickle.dump", "torch reports 'Unsupported")],
)
def test_full_pickle_refusal_is_one_clean_line(capsys, image_folder: Path, tmp_path: Path, how: str, detail: str):
    """`edgetl train --weights` on a full pickle: one line naming the file and the fix, no torch warning, nothing
    of torch's long message cut off mid-word."""
    path = tmp_path / f"{how}.pth"
    _save_custom_pickle(path, how)
    argv = ("train", "--data", image_folder, "--backbone", "test_tiny", "--weights", path, "--out", tmp_path / "run")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = run_cli(capsys, *argv)
    assert code == 2 and not caught, [str(w.message) for w in caught]
    (line,) = err.strip().splitlines()
    assert f"--weights: {path} holds Python objects beyond tensors (a full pickle: {detail}" in line
    assert "will not unpickle because that could run code" in line
    assert line.endswith("re-save it with torch.save(model.state_dict()) or as .safetensors")
    assert "Warning" not in out + err and "Traceback" not in err
    assert "Re-running" not in line and "weights_only" not in line and "`torch.)" not in line


def test_damaged_torch_file_is_not_called_a_pickle(tmp_path: Path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"\x00not a pickle at all")
    with pytest.raises(UserError, match=r"junk.pth is not a readable torch file \(damaged, or another format\)"):
        build_backbone("test_tiny", str(path))


def _tiny_weights(bad_key: str, bad_value: float) -> dict[str, torch.Tensor]:
    sd = {k: v.clone() for k, v in build_backbone("test_tiny").model.state_dict().items()}
    sd[bad_key].view(-1)[1] = bad_value
    return sd


def test_non_finite_safetensors_weights_are_refused(tmp_path: Path):
    from safetensors.torch import save_file

    path = tmp_path / "nan.safetensors"
    save_file(_tiny_weights("block.0.weight", float("nan")), str(path))
    with pytest.raises(UserError, match=r"nan.safetensors: tensor 'block.0.weight' holds 1 NaN/Inf value"):
        build_backbone("test_tiny", str(path))


def test_non_finite_pth_weights_are_one_line_through_the_cli(capsys, image_folder: Path, tmp_path: Path):
    """Before: the L-BFGS head fit crashed on the Inf features with a traceback, far from the file."""
    path = tmp_path / "inf.pth"
    sd = _tiny_weights("block.3.weight", float("inf"))
    sd["block.4.running_var"].view(-1)[0] = float("-inf")  # a later key: the first bad one is named
    torch.save(sd, path)
    argv = ("train", "--data", image_folder, "--backbone", "test_tiny", "--weights", path, "--out", tmp_path / "run")
    code, _, err = run_cli(capsys, *argv)
    (line,) = err.strip().splitlines()
    assert code == 2 and f"--weights: {path}: tensor 'block.3.weight' holds 1 NaN/Inf value(s)" in line
    assert "Traceback" not in err


def test_finite_weights_with_integer_buffers_load(tmp_path: Path):
    """num_batches_tracked is an integer tensor: only floating tensors are checked."""
    path = tmp_path / "ok.pth"
    sd = build_backbone("test_tiny").model.state_dict()
    assert any(not v.is_floating_point() for v in sd.values())
    torch.save(sd, path)
    assert build_backbone("test_tiny", str(path)).cfg.weights_source == str(path)


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


def test_lite0_preprocessing_written_down_is_timms():
    """describe() does not import timm (start-up time): the constants it uses are timm's pretrained cfg."""
    import timm

    from edgetl.models.backbones.describe import PRETRAINED
    from edgetl.models.backbones.lite0 import ARCH

    pcfg = timm.get_pretrained_cfg(ARCH).to_dict()
    assert {k: tuple(pcfg[k]) for k in PRETRAINED} == PRETRAINED
