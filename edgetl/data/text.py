"""Labelled texts for sentence backbones: a CSV/TSV or JSONL table (`text`, `label`), or a folder of
`<class>/*.txt` files; a folder holding `train` and `val` (tables or class folders) gives the split itself.

Every text is NFC-normalised and keyed by content (`edgetl.texts.text_key`). Rows that cannot be used (empty
text, missing or unknown label, bytes that are not UTF-8, unparsable JSON) are skipped and listed with their
file and line, like unreadable images, or stop the run with `--strict`.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from edgetl.data.audit import audit_items
from edgetl.data.items import IGNORED_DIRS, Dataset, Item, check_classes, stratified_split
from edgetl.errors import UserError
from edgetl.images import Skipper
from edgetl.texts import TABLE_EXTENSIONS, TEXT_EXTENSIONS, BadText, check_text, decode_text, text_key

FORMATS = "a CSV/TSV or JSONL file with text,label columns, or a folder of <class>/*.txt files"
Row = tuple[str, str, str]  # (where, text, label name)


def _read_table_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"--data {path}: unreadable ({e.strerror or e})") from None
    # Undecodable bytes survive as lone surrogates, so only the rows holding them are skipped (check_text).
    return data.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")


def _csv_rows(path: Path) -> list[Row]:
    text = _read_table_text(path)
    dialect = "excel-tab" if path.suffix.lower() == ".tsv" else "excel"
    reader = csv.reader(io.StringIO(text, newline=""), dialect)
    header = [h.strip().lower() for h in next(reader, [])]
    if "text" not in header or "label" not in header:
        raise UserError(f"--data {path}: the header must name a 'text' and a 'label' column (found {header[:6]})")
    ti, li = header.index("text"), header.index("label")
    rows = []
    for record in reader:
        if not any(cell.strip() for cell in record):
            continue  # blank line
        where = f"{path}:{reader.line_num}"
        rows.append((where, record[ti] if ti < len(record) else "", record[li] if li < len(record) else ""))
    return rows


def _jsonl_rows(path: Path, skip: Skipper) -> list[Row]:
    rows = []
    for n, line in enumerate(_read_table_text(path).splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except ValueError as e:
            skip(where, f"not a JSON object ({e.msg})")
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            skip(where, "no 'text' string in this JSON line")
            continue
        label = obj.get("label")
        rows.append((where, obj["text"], "" if label is None or isinstance(label, (dict, list)) else str(label)))
    return rows


def _folder_rows(root: Path, skip: Skipper) -> list[Row]:
    rows = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not _hidden(p.name)):
        for dirpath, dirs, files in os.walk(class_dir):
            dirs[:] = sorted(d for d in dirs if not _hidden(d))
            for name in sorted(files):
                if _hidden(name) or not name.lower().endswith(TEXT_EXTENSIONS):
                    continue
                path = Path(dirpath) / name
                text = skip.decode(path, decode_text, BadText)
                if text is not None:
                    rows.append((str(path), text, class_dir.name))
    return rows


def _hidden(name: str) -> bool:
    return name.startswith(".") or name in IGNORED_DIRS


def read_rows(path: Path, skip: Skipper) -> list[Row]:
    if path.is_dir():
        return _folder_rows(path, skip)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _jsonl_rows(path, skip)
    if suffix in (".csv", ".tsv"):
        return _csv_rows(path)
    raise UserError(f"--data {path}: unknown text format {suffix!r}; give {FORMATS}")


def to_items(rows: list[Row], classes: list[str], skip: Skipper) -> list[Item]:
    """Rows -> items; unusable rows are skipped with their reason."""
    index = {name: i for i, name in enumerate(classes)}
    items = []
    for where, raw, label in rows:
        label = label.strip()
        try:
            text = check_text(raw)
        except BadText as e:
            skip(where, str(e))
            continue
        if not label:
            skip(where, "no label")
        elif label not in index:
            skip(where, f"unknown label {label!r} (not one of the training classes)")
        else:
            items.append(Item(path=where, label=index[label], key=text_key(text), text=text))
    return items


def _split_sources(root: Path) -> tuple[Path, Path] | None:
    for ext in ("",) + TABLE_EXTENSIONS:
        train, val = root / f"train{ext}", root / f"val{ext}"
        if train.exists() and val.exists():
            return train, val
    return None


def _labels(rows: list[Row]) -> list[str]:
    return sorted({label.strip() for _, raw, label in rows if label.strip() and raw.strip()})


def load_text_dataset(data: str, seed: int, strict: bool, warn, val_fraction: float = 0.2) -> Dataset:
    if data == "digits":
        raise UserError(f"--data: a text backbone needs text data; give {FORMATS}")
    root = Path(data).expanduser()
    if not root.exists():
        raise UserError(f"--data: {data} does not exist; give {FORMATS}")
    skip = Skipper(strict, warn)
    pair = _split_sources(root) if root.is_dir() else None
    # as for images (edgetl.data.audit): a text under two labels is left out, a copy is used once, a val copy of
    # a train text is leakage
    if pair:
        train_rows = read_rows(pair[0], skip)
        classes = _labels(train_rows)
        train = to_items(train_rows, classes, skip)
        audit = audit_items(train, to_items(read_rows(pair[1], skip), classes, skip), classes, strict, warn, "text")
        train, val, split = audit.train, audit.val, f"{pair[0].name} + {pair[1].name}"
    else:
        rows = read_rows(root, skip)
        classes = _labels(rows)
        audit = audit_items(to_items(rows, classes, skip), [], classes, strict, warn, "text")
        train, val = stratified_split(audit.train, val_fraction, seed)
        split = f"stratified {1 - val_fraction:.0%}/{val_fraction:.0%}, seed {seed}"
    check_classes(classes, train, root)
    return Dataset(str(root), classes, train, val, skip.skipped, split, audit.summary())
