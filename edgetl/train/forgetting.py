"""What fine-tuning makes the backbone forget, measured on what it knew: its original ImageNet classifier.

The probe set is fixed and ships with a package, never the user's data: the colour photographs inside
scikit-image's wheel (a cat, coffee, an astronaut, a rocket, ...), each as the whole frame and four corner crops,
at the backbone's native 224 px. The backbone's original classifier (Lite0's ImageNet head, loaded from the same
weights file) labels them with the pretrained blocks and again with the fine-tuned ones:

- `agreement`: the share of probe images whose ImageNet top-1 label is unchanged (1.0: nothing forgotten that
  this probe can see);
- `mean_kl`: the mean KL divergence, pretrained || fine-tuned, of the 1000-class distributions (0: identical).

What it does not say: how a *new* head for another task would do on the fine-tuned features, or anything about
classes the probe photos do not show. It is a smoke alarm for a backbone shared by other heads on the device.

A sentence encoder (MiniLM) has no classifier: its probe is a fixed set of general English sentences that ships
with edgetl (edgetl.train.probe_texts), embedded by the pretrained layers and again by the fine-tuned ones:

- `mean_cosine` (and `min_cosine`): of each sentence's embedding before vs after (1.0: the same sentence space).

What it does not say: whether the similarities *between* sentences kept their order, or anything about topics the
probe does not cover.
"""

from __future__ import annotations

import numpy as np

PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "colorwheel",
)
SIZE = 224


def probe_frames() -> np.ndarray:
    """[M, 224, 224, 3] uint8: each photo whole and its four corner crops (half the frame), resized."""
    from PIL import Image
    from skimage import data

    frames = []
    for name in PHOTOS:
        img = np.asarray(getattr(data, name)())
        if img.ndim != 3 or img.shape[2] != 3:
            continue
        h, w = img.shape[:2]
        views = [img] + [img[y : y + h // 2, x : x + w // 2] for y in (0, h // 2) for x in (0, w // 2)]
        for v in views:
            frames.append(np.asarray(Image.fromarray(np.ascontiguousarray(v)).resize((SIZE, SIZE), Image.BILINEAR)))
    return np.stack(frames)


def probe_for(backbone, prefix, pre, backbone_name: str, weights: str | None):
    """The forgetting probe of this backbone (measured once against the pretrained suffix), or None without one."""
    if getattr(backbone.cfg, "modality", "image") == "text":
        return TextForgetting(prefix, pre)
    classifier = imagenet_classifier(backbone_name, weights)
    return Forgetting(backbone, prefix, classifier) if classifier is not None else None


def retained(measured: dict) -> float:
    """One number for "how much is kept" (higher is better): `--wise auto` breaks ties with it."""
    return measured.get("agreement", measured.get("mean_cosine", 0.0))


def imagenet_classifier(backbone_name: str, weights: str | None):
    """The backbone's original 1000-class classifier (nn.Linear), or None for a backbone that came without one."""
    if backbone_name != "efficientnet_lite0":
        return None
    from edgetl.models.backbones.lite0 import build_classifier_model

    model, _ = build_classifier_model(weights)
    return model.classifier.eval()


class Forgetting:
    """The pretrained network's ImageNet predictions on the probe set, and how far a fine-tuned one moves them."""

    def __init__(self, backbone, prefix, classifier) -> None:
        import torch

        from edgetl.preprocess import Preprocess

        pre = Preprocess(size=(SIZE, SIZE), mean=backbone.cfg.preprocess.mean, std=backbone.cfg.preprocess.std)
        with torch.inference_mode():
            self.cut = prefix(torch.from_numpy(pre(probe_frames())))
        self.classifier = classifier
        self.reference: np.ndarray | None = None

    def log_probs(self, suffix) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return torch.log_softmax(self.classifier(suffix(self.cut)), dim=1).double().numpy()

    def measure(self, suffix) -> dict:
        """{agreement, mean_kl} of `suffix` (its current weights) against the first suffix measured."""
        got = self.log_probs(suffix)
        if self.reference is None:
            self.reference = got
        ref = self.reference
        kl = float(np.mean(np.sum(np.exp(ref) * (ref - got), axis=1)))
        agree = float(np.mean(ref.argmax(1) == got.argmax(1)))
        return {"agreement": round(agree, 4), "mean_kl": round(max(kl, 0.0), 6), "images": len(ref)}


class TextForgetting:
    """The pretrained encoder's embeddings of the probe sentences, and how far a fine-tuned one moves them."""

    def __init__(self, prefix, pre) -> None:
        import torch

        from edgetl.train.probe_texts import SENTENCES

        with torch.inference_mode():
            self.cut = prefix(pre(list(SENTENCES)))
        self.reference: np.ndarray | None = None

    def measure(self, suffix) -> dict:
        """{mean_cosine, min_cosine} of `suffix` (its current weights) against the first suffix measured."""
        import torch

        with torch.inference_mode():
            got = torch.nn.functional.normalize(suffix(self.cut), dim=1).double().numpy()
        if self.reference is None:
            self.reference = got
        cos = np.sum(self.reference * got, axis=1)
        return {"mean_cosine": round(float(cos.mean()), 6), "min_cosine": round(float(cos.min()), 6),
                "sentences": len(cos)}  # fmt: skip
