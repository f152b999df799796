"""Content-defined chunks of a file: a re-deploy sends the chunks the device does not have, not whole files.

A bundle is one compiled model (an IR .bin, an .onnx), so a new head changes one file; sending whole changed
files would send the backbone again. Cutting each file where a rolling hash of the last 32 bytes has its top
bits zero (a gear hash, as in FastCDC) puts the cuts where the *content* says, so bytes that are equal in two
versions of a model give equal chunks even when something before them grew or shrank; only the chunks around
the head's weights and the changed metadata differ. NumPy computes the hash for every position at once.
Chunk identity is the sha256 of its bytes; the device checks every chunk and every assembled file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from edgetl.fileio import cached_json

WINDOW = 32  # bytes that decide a cut
AVG_BITS = 15  # a cut where the hash's top 15 bits are zero: 1 position in 32 KiB
MIN_SIZE, MAX_SIZE = 8 << 10, 256 << 10
BLOCK = 8 << 20  # hashed in blocks of this many bytes (bounded memory for large models)
VERSION = f"gear32-w{WINDOW}-b{AVG_BITS}-{MIN_SIZE}-{MAX_SIZE}"  # part of the recipe cache key
# A fixed table from sha256, so cuts never depend on a library's random stream.
GEAR = np.array(
    [int.from_bytes(hashlib.sha256(b"edgetl-gear-%d" % i).digest()[:4], "little") for i in range(256)], np.uint32
)


def candidates(data: np.ndarray) -> np.ndarray:
    """Positions i (the cut goes after byte i) where h_i = sum_j GEAR[b_{i-j}] << j (mod 2^32, j < WINDOW)
    has its top AVG_BITS bits zero. Positions before the first full window are not candidates."""
    g = GEAR[data]
    h = g.copy()
    for j in range(1, WINDOW):
        h[j:] += g[:-j] << np.uint32(j)
    hits = np.flatnonzero((h >> np.uint32(32 - AVG_BITS)) == 0)
    return hits[hits >= WINDOW - 1]


def cut_points(path: Path) -> list[int]:
    """Chunk ends (exclusive offsets), the last one the file size; every chunk within MIN_SIZE..MAX_SIZE but
    the last."""
    size = Path(path).stat().st_size
    found: list[np.ndarray] = []
    with open(path, "rb") as f:
        start, tail = 0, b""
        while start < size:
            block = f.read(BLOCK)
            data = np.frombuffer(tail + block, np.uint8)
            hits = candidates(data) - len(tail) + start  # positions in the file
            found.append(hits[hits >= start])
            tail = (tail + block)[-(WINDOW - 1) :]
            start += len(block)
    hits = np.concatenate(found) if found else np.zeros(0, np.int64)
    ends, last = [], 0
    for position in hits.tolist():
        end = position + 1
        while end - last > MAX_SIZE:
            last += MAX_SIZE
            ends.append(last)
        if end - last >= MIN_SIZE:
            ends.append(end)
            last = end
    while size - last > MAX_SIZE:
        last += MAX_SIZE
        ends.append(last)
    if size > last or not ends:
        ends.append(size)
    return ends


def recipe(path: Path) -> list[list]:
    """[[chunk sha256, length], ...] in file order."""
    out, last = [], 0
    with open(path, "rb") as f:
        for end in cut_points(path):
            data = f.read(end - last)
            out.append([hashlib.sha256(data).hexdigest(), len(data)])
            last = end
    return out


def cached_recipe(path: Path, sha256: str, cache: Path) -> list[list]:
    """recipe(path), kept in `cache` under the file's sha256 (chunking a large model takes seconds)."""
    entry = Path(cache) / f"{sha256}.{VERSION}.json"
    return cached_json(entry, lambda: recipe(path), lambda v: isinstance(v, list))
