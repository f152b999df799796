"""Images as every stage sees them: bytes -> uint8 RGB [H, W, 3], or a skip with a reason.

Only NumPy and Pillow are imported here, so the device side (predict, bench) decodes images exactly as
training did. A file that cannot be used is skipped with a reason (or stops the run with `--strict`); it is
never silently misread.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from edgetl.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
MAX_PIXELS = 64_000_000  # larger frames are refused as decompression bombs (a 64 MP photo still passes)
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file must fail, not decode into grey garbage


class BadImage(Exception):
    """A file that is not a usable image; the message is the reason shown to the user."""


def decode_image(data: bytes, min_size: tuple[int, int] | None = None) -> np.ndarray:
    """Bytes -> uint8 RGB [H, W, 3], EXIF orientation applied, 16-bit scaled (not clipped to white).

    `min_size` (h, w): a JPEG is decoded at the smallest DCT scale (1/1..1/8) that keeps it at least that big
    (`Preprocess.decode_min_size`; training and the device pass the same value, so they see the same pixels).
    """
    if not data:
        raise BadImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise BadImage(f"{w}x{h} pixels exceeds the {MAX_PIXELS:,}-pixel limit (decompression bomb?)")
                orientation = im.getexif().get(0x0112, 1)
                if min_size is not None and im.format == "JPEG":
                    h, w = min_size if orientation < 5 else min_size[::-1]  # 5..8 swap width and height
                    im.draft(None, (w, h))
                im.load()
                if orientation != 1:  # transpose (a full copy) only when EXIF asks for it
                    im = ImageOps.exif_transpose(im)
                return _to_rgb(im)
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage(f"decompression bomb refused ({e})") from None
    except UnidentifiedImageError:
        raise BadImage("not an image (unrecognized format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise BadImage(f"truncated or corrupt image ({e})") from None


def _to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode == "RGB":  # the common case (JPEG photos): one copy out of Pillow, no conversion
        return np.asarray(im, dtype=np.uint8)
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        a = np.clip(np.round(a * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        a = np.zeros_like(a) if hi <= lo else (a - lo) / (hi - lo) * 255.0
        return np.repeat(np.round(a).astype(np.uint8)[..., None], 3, axis=2)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))


class Skipper:
    """Collects skipped files; with strict=True the first one stops the run (exit 2)."""

    def __init__(self, strict: bool, warn) -> None:
        self.strict = strict
        self.warn = warn
        self.skipped: list[dict] = []

    def __call__(self, path: str, reason: str) -> None:
        if self.strict:
            raise UserError(f"{path}: {reason} (remove or fix the file, or drop --strict to skip it)")
        if any(s["path"] == path for s in self.skipped):  # seen by an earlier stage of the same run
            return
        self.warn(f"skipping {path}: {reason}")
        self.skipped.append({"path": path, "reason": reason})

    def decode(self, path: Path, decode, bad: type[Exception]):
        """`decode(file bytes)`, or None after skipping the file: unreadable, or `decode` raised `bad`."""
        try:
            return decode(Path(path).read_bytes())
        except bad as e:
            self(str(path), str(e))
        except OSError as e:
            self(str(path), f"unreadable ({e.strerror or e})")
        return None
