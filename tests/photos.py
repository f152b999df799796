"""Real-photo ImageFolders for tests and benchmarks, cut from the sample photographs scikit-image ships.

Noise images say nothing about a pretrained backbone: a head that fails on real photos can pass on them. These
folders are crops of real photographs (objects and textures), so an ImageNet backbone sees what it would see on
a user's small folder, and nothing is downloaded: every photo below is a file inside the scikit-image wheel
(`skimage.data` functions that need `pooch` downloads, e.g. `eagle`, `lily`, `skin`, are not used).

Two kinds of folder (KINDS):

- "distinct": 6 visually distinct classes (4 colour photos, 2 grey textures); crops of 35-80% of the photo's
  short side, 96 px. Easy: a linear probe on ImageNet features is at the ceiling from 10 images per class.
- "textures": 12 classes of similar-looking material, all grey (grey textures and surfaces, and regions of colour
  photos converted to grey); small crops (5-20% of the region's short side), 64 px. Harder: a linear probe on
  ImageNet EfficientNet-Lite0 features gets about 0.8 at 10 per class and 0.9 at 40, below the ceiling.

Each image is a random square crop (random position inside the class's region of its photo), sometimes mirrored,
with a slight brightness change, resized to `size` x `size` and saved as JPEG (quality 90) or PNG. Image i of
a class depends only on (seed, class, i), so a folder of 10 per class is the first 10 of a folder of 400.
"""

from __future__ import annotations

import functools
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

Region = tuple[float, float, float, float]  # (top, left, bottom, right) as fractions of the photo
WHOLE: Region = (0.0, 0.0, 1.0, 1.0)


@dataclass(frozen=True)
class Kind:
    photos: dict[str, tuple[str, Region]]  # class name -> (skimage.data function, region the crops come from)
    scale: tuple[float, float]  # crop side as a fraction of the region's short side
    size: int  # default stored image size (px)
    grey: bool = False  # convert colour photos to grey (no colour cue between classes)


KINDS = {
    "distinct": Kind(
        {
            "astronaut": ("astronaut", WHOLE),  # person in a space suit, flag (colour)
            "cat": ("chelsea", WHOLE),  # a cat's face and fur (colour)
            "coffee": ("coffee", WHOLE),  # a cup of coffee on a table (colour)
            "rocket": ("rocket", WHOLE),  # a rocket on its launch pad, sky (colour)
            "brick": ("brick", WHOLE),  # a brick wall (grey texture)
            "gravel": ("gravel", WHOLE),  # gravel (grey texture)
        },
        scale=(0.35, 0.80),
        size=96,
    ),
    "textures": Kind(
        {
            "brick": ("brick", WHOLE),  # brick wall
            "gravel": ("gravel", WHOLE),  # gravel
            "grass": ("grass", WHOLE),  # grass blades, close up
            "lawn": ("camera", (0.5, 0.62, 1.0, 1.0)),  # the lawn behind the cameraman's tripod, further away
            "moon": ("moon", WHOLE),  # lunar surface, small craters
            "coins": ("coins", WHOLE),  # coins on a dark cloth
            "text": ("text", WHOLE),  # hand-drawn strokes on paper
            "page": ("page", (0.25, 0.0, 0.8, 1.0)),  # printed text, the lines under the title
            "fur": ("chelsea", WHOLE),  # a cat's face and fur (colour photo)
            "suit": ("astronaut", (0.55, 0.0, 1.0, 0.6)),  # the space suit's fabric, folds and patch (colour photo)
            "coffee": ("coffee", WHOLE),  # cup, saucer, wooden table (colour photo)
            "tissue": ("immunohistochemistry", WHOLE),  # stained tissue under a microscope (colour photo)
        },
        scale=(0.05, 0.20),
        size=64,
        grey=True,
    ),
}
CLASSES = tuple(KINDS["distinct"].photos)  # the default kind's classes
BRIGHTNESS = (0.9, 1.1)
JPEG_QUALITY = 90


@functools.cache
def photo(fn: str, region: Region = WHOLE, grey: bool = False) -> np.ndarray:
    """`region` of the photograph `skimage.data.<fn>()` (uint8, [H, W] grey or [H, W, 3] RGB), from the wheel."""
    import skimage.data

    img = np.asarray(getattr(skimage.data, fn)())
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(f"skimage.data.{fn}: expected a uint8 photo, got {img.dtype} {img.shape}")
    h, w = img.shape[:2]
    top, left, bottom, right = region
    img = img[round(top * h) : round(bottom * h), round(left * w) : round(right * w)]
    return np.asarray(Image.fromarray(img).convert("L")) if grey and img.ndim == 3 else img


def crop(img: np.ndarray, rng: np.random.Generator, size: int, scale: tuple[float, float]) -> Image.Image:
    """One random square crop of `img`, maybe mirrored, brightness-jittered, resized to size x size."""
    h, w = img.shape[:2]
    side = max(1, int(round(min(h, w) * rng.uniform(*scale))))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    flip, gain = rng.random() < 0.5, rng.uniform(*BRIGHTNESS)
    im = Image.fromarray(img[y : y + side, x : x + side]).resize(
        (size, size), Image.Resampling.BILINEAR, reducing_gap=2
    )
    a = np.clip(np.asarray(im, np.float32) * gain, 0, 255).round().astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(a[:, ::-1]) if flip else a)


def encode(im: Image.Image, jpeg: bool) -> bytes:
    buf = io.BytesIO()
    if jpeg:
        im.save(buf, "JPEG", quality=JPEG_QUALITY)
    else:
        im.save(buf, "PNG", compress_level=1)  # fast; still lossless and deterministic
    return buf.getvalue()


def make_photo_folder(
    root: Path, per_class: int, size: int | None = None, seed: int = 0, kind: str = "distinct"
) -> Path:
    """ImageFolder `root/<class>/<n>.jpg|png`: `per_class` distinct real-photo crops for each class of KINDS[kind].

    `size` defaults to the kind's (96 px distinct, 64 px textures). Deterministic (same bytes) for the same seed;
    roughly half the files are JPEG and half PNG.
    """
    spec = KINDS[kind]
    size = spec.size if size is None else size
    root = Path(root)
    for c, (name, (fn, region)) in enumerate(spec.photos.items()):
        img = photo(fn, region, spec.grey)
        rng = np.random.default_rng([seed, c])
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        seen: set[str] = set()
        n = 0
        while n < per_class:
            im = crop(img, rng, size, spec.scale)
            jpeg = bool(rng.random() < 0.5)
            data = encode(im, jpeg)
            digest = hashlib.sha256(data).hexdigest()
            if digest in seen:  # same content would count once in the feature cache: draw another crop
                continue
            seen.add(digest)
            (folder / f"{n:04d}.{'jpg' if jpeg else 'png'}").write_bytes(data)
            n += 1
    return root


def add_clutter(root: Path) -> dict[str, int]:
    """What real folders hold besides photos, added to an ImageFolder from `make_photo_folder`:

    hidden files and folders, an empty class, a folder symlink that leads back up to the data root (it would read
    every class again under this one), a symlink loop inside a class, a copy of one photo in two classes (a label
    conflict), a copy inside its own class, a photo re-saved as WebP and one as grey BMP at an odd size, a text
    file named .jpg and a zero-byte file. Returns what the audit should count."""
    root = Path(root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    first, second = root / classes[0], root / classes[1]
    (root / ".DS_Store").write_bytes(b"\0\1junk")
    (first / ".hidden.jpg").write_bytes(b"junk")
    (root / "__MACOSX").mkdir()
    (root / "__MACOSX" / "._0000.jpg").write_bytes(b"junk")
    (root / "empty_class").mkdir()
    (first / "loop").symlink_to("..")  # up to the data root
    (second / "nested").mkdir()
    (second / "nested" / "again").symlink_to(second)  # a loop inside the class
    photos = sorted(p for p in first.iterdir() if p.is_file() and not p.name.startswith("."))
    (second / "same_as_other_class.jpg").write_bytes(photos[0].read_bytes())  # a label conflict
    (first / "copy.jpg").write_bytes(photos[1].read_bytes())  # a duplicate inside its class
    im = Image.open(photos[2]).convert("RGB")
    im.save(first / "resaved.webp", "WEBP", quality=85)
    im.convert("L").resize((77, 53)).save(first / "odd_size_grey.bmp")
    (first / "notes.jpg").write_text("not a photo")
    (first / "empty.png").write_bytes(b"")
    return {"label_conflicts": 1, "duplicates_in_class": 1}
