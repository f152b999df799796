"""What a run learns from: `load_dataset` (here) picks the loader; `items` (Item, Dataset, the split),
`folders` (digits, image folders), `urls` (image folders at fsspec URLs: s3://, gs://, file://, ...),
`text` (CSV/JSONL/folders of texts), `audit` (label conflicts, copies, leakage, near-duplicates). No torch: read
by quant's calibration and by export's parity ladder as well as by train."""

from __future__ import annotations

from pathlib import Path

from edgetl.data.items import Dataset, is_url
from edgetl.errors import UserError


def load_dataset(data: str, seed: int, strict: bool, warn, modality: str = "image") -> Dataset:
    if modality == "text":
        if is_url(data):
            raise UserError(f"--data {data}: text data is read from local files (CSV, JSONL or a folder); copy it here")
        from edgetl.data.text import load_text_dataset

        return load_text_dataset(data, seed, strict, warn)
    if data == "digits":
        from edgetl.data.folders import load_digits

        return load_digits(seed)
    if is_url(data):
        from edgetl.data.urls import load_url_folder

        return load_url_folder(data, seed, strict, warn)
    path = Path(data).expanduser()
    if not path.exists():
        raise UserError(
            f"--data: {data} does not exist; give an image folder, a folder URL (s3://, gs://, ...) or 'digits'"
        )
    from edgetl.data.folders import load_image_folder

    return load_image_folder(path, seed, strict, warn)
