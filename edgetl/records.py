"""The run folder `edgetl train` writes, as one unit: run.json plus the files it names, each with its sha256.

A run folder is written as a whole: every file goes into a staging folder beside it, then one atomic switch puts
the staging folder in place (Linux renameat2 RENAME_EXCHANGE; elsewhere two renames). A killed `--overwrite`
run leaves the previous run intact, never a new head beside the old run.json. Later stages read the files through
`run_file`, which checks each against the sha256 run.json recorded for it, so a head that does not belong to the
run.json beside it (copied in by hand, or from an older edgetl's interrupted write) is refused, not exported.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from edgetl.contract import (
    EXPORT_JSON,
    FINETUNED_BLOCKS,
    HEAD_FILE,
    HEAD_FP32,
    INT8_BACKBONE,
    MODEL_FP32,
    MODEL_ONNX,
    PROBE_FILE,
    RUN_JSON,
    TOKENIZER_FILES,
)
from edgetl.errors import UserError
from edgetl.fileio import sha256_file
from edgetl.texts import is_text_spec
from edgetl.verdict import verdict_of

HEAD = HEAD_FILE
TRAIN_FILES = (RUN_JSON, HEAD, INT8_BACKBONE, FINETUNED_BLOCKS, HEAD_FP32)
LAYOUTS = "layouts"  # `train --target A,B`: RUN/layouts/B is the run folder of INT8 layout B


def layout_dirs(run_dir: Path) -> list[Path]:
    """The run folders of a run's other INT8 layouts (`train --target A,B`), in name order."""
    folder = Path(run_dir) / LAYOUTS
    return sorted(d for d in folder.iterdir() if (d / RUN_JSON).is_file()) if folder.is_dir() else []


# What `edgetl export` writes into a run folder: stale once the run is retrained (left out of the new folder).
EXPORT_FILES = (MODEL_ONNX, EXPORT_JSON, PROBE_FILE, MODEL_FP32, *TOKENIZER_FILES)


class RunRecord(Mapping):
    """run.json of one run folder, read once and checked: what every later stage reads of a run. Reads like the dict
    it holds (`record["metrics"]`); the answers more than one stage needs are properties, given once here."""

    def __init__(self, root: Path, data: dict) -> None:
        self.root, self.data = Path(root), data

    def __getitem__(self, key: str):
        return self.data[key]

    def __iter__(self):
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    @property
    def path(self) -> Path:
        return self.root / RUN_JSON

    @property
    def is_text(self) -> bool:
        """A sentence run (MiniLM): the tokenizer, not image preprocessing, goes in front of its graph."""
        return is_text_spec(self.data["preprocess"])

    def file(self, name: str) -> Path:
        """A file of the run, checked against the sha256 recorded for it."""
        return run_file(self.root, self.data, name)

    def head_file(self) -> Path:
        return self.file((self.data.get("head") or {}).get("file", HEAD))

    def int8_backbone(self) -> Path | None:
        """The run's INT8 QDQ backbone (checked), None for an FP32 run; refused when the INT8 verdict is collapsed:
        export applies the rule train applied, on the numbers train recorded."""
        if not self.data.get("quantize"):
            return None
        status, lines = verdict_of(self.data)
        if status == "collapsed":
            raise UserError(
                f"{self.path}: {lines[0]}; re-run `edgetl train --quantize int8` or train without --quantize"
            )
        return self.file(self.data["quantize"].get("onnx", INT8_BACKBONE))


def read_run(run_dir: Path) -> RunRecord:
    """run.json as a `RunRecord`, or one line saying what is wrong with it."""
    path = Path(run_dir) / RUN_JSON
    if not path.is_file():
        raise UserError(f"{run_dir}: no {RUN_JSON}; give a run folder written by `edgetl train`")
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict):
            raise ValueError("not an edgetl run record")
        for key in ("config", "backbone", "preprocess"):
            if not isinstance(record.get(key), dict):
                raise ValueError(f"no {key} section")
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: unreadable run record ({e}); re-run `edgetl train`") from None
    return RunRecord(Path(run_dir), record)


def run_file(run_dir: Path, record: dict, name: str) -> Path:
    """A file of the run, checked against the sha256 run.json holds for it (runs from before hashes: unchecked)."""
    path = Path(run_dir) / name
    if not path.is_file():
        raise UserError(f"{path}: missing from the run folder; re-run `edgetl train`")
    expected = (record.get("files") or {}).get(name)
    if expected and sha256_file(path) != expected:
        raise UserError(
            f"{path}: does not belong to the {RUN_JSON} beside it (sha256 differs from the one recorded at training: "
            "replaced by hand or left by an interrupted write); re-run `edgetl train` for this folder"
        )
    return path


def write_run_folder(out: Path, files: dict[str, bytes | Path], record: dict) -> None:
    """`files` (name -> bytes, or a file to copy) and run.json, with every file's sha256 in record["files"], as one
    unit. Other files the user keeps in `out` are carried over; what `edgetl export` wrote there is stale."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    try:
        _same_mode(out, stage)
        for name, data in files.items():
            if isinstance(data, Path):
                shutil.copyfile(data, stage / name)
            else:
                (stage / name).write_bytes(data)
        record["files"] = {name: sha256_file(stage / name) for name in files}
        (stage / RUN_JSON).write_bytes((json.dumps(record, indent=1) + "\n").encode())
        if out.is_dir():
            _carry_over(out, stage)
        _fsync_tree(stage)
        replace_folder(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _same_mode(out: Path, stage: Path) -> None:
    """mkdtemp makes a private folder: give the new run folder the old one's mode, or the umask's default."""
    if out.is_dir():
        shutil.copymode(out, stage)
        return
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(stage, 0o777 & ~umask)


def _carry_over(old: Path, stage: Path) -> None:
    for entry in old.iterdir():
        if entry.name in TRAIN_FILES or entry.name in EXPORT_FILES or (stage / entry.name).exists():
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, stage / entry.name, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, stage / entry.name)


def _link_or_copy(src, dst) -> None:
    if Path(src).is_symlink():
        os.symlink(os.readlink(src), dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as f:
                os.fsync(f.fileno())


def replace_folder(stage: Path, out: Path) -> None:
    """Put `stage` at `out` in one step where the OS allows it; the previous folder is removed afterwards."""
    if not out.exists():
        stage.rename(out)
        return
    if _exchange(stage, out):  # `stage` now holds the previous folder
        shutil.rmtree(stage, ignore_errors=True)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    out.rename(old / out.name)
    stage.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Linux renameat2(RENAME_EXCHANGE): swap two paths atomically. False where it is not available."""
    with contextlib.suppress(AttributeError, OSError):
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        at_fdcwd, rename_exchange = -100, 2
        return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0
    return False
