"""Text data: CSV/TSV/JSONL/folder-of-txt, bad rows skipped with their reason, NFC content keys."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from edgetl.data.text import load_text_dataset
from edgetl.errors import UserError
from edgetl.texts import Tokens, check_text, text_key

ROWS = [(f"turn on lamp number {i}", "lights") for i in range(6)] + [
    (f"play song number {i}", "music") for i in range(6)
]


def write_csv(path, rows, header=("text", "label")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def test_csv_bad_rows_are_skipped_with_file_and_line(tmp_path):
    path = tmp_path / "t.csv"
    write_csv(path, ROWS + [("", "music"), ("no label here", ""), ('a "quoted, comma" text', "music")])
    with open(path, "ab") as f:
        f.write(b'"bad \xff bytes",music\n')
    warned = []
    ds = load_text_dataset(str(path), 0, False, warned.append)
    assert ds.classes == ["lights", "music"]
    assert len(ds.train) + len(ds.val) == 13
    reasons = {s["path"].rsplit(":", 1)[1]: s["reason"] for s in ds.skipped}
    assert reasons == {"14": "empty text", "15": "no label", "17": "not valid UTF-8 (re-save the file as UTF-8)"}
    assert any("quoted, comma" in it.text for it in ds.train + ds.val)
    with pytest.raises(UserError, match="t.csv:14: empty text"):
        load_text_dataset(str(path), 0, True, warned.append)


def test_jsonl_folder_and_explicit_split_with_unknown_label(tmp_path):
    jl = tmp_path / "t.jsonl"
    lines = [json.dumps({"text": t, "label": y}) for t, y in ROWS] + ["{not json", json.dumps({"label": "x"})]
    jl.write_text("\n".join(lines) + "\n")
    ds = load_text_dataset(str(jl), 0, False, lambda m: None)
    assert len(ds.train) + len(ds.val) == 12 and len(ds.skipped) == 2

    root = tmp_path / "folder"
    for i, (text, label) in enumerate(ROWS):
        (root / label).mkdir(parents=True, exist_ok=True)
        (root / label / f"{i}.txt").write_text(text)
    (root / "music" / "empty.txt").write_text("  \n")
    ds = load_text_dataset(str(root), 0, False, lambda m: None)
    assert ds.classes == ["lights", "music"] and [s["reason"] for s in ds.skipped] == ["empty text"]

    split = tmp_path / "split"
    split.mkdir()
    write_csv(split / "train.csv", ROWS)
    write_csv(split / "val.csv", [("dim the lamp", "lights"), ("what is the weather", "weather")])
    ds = load_text_dataset(str(split), 0, False, lambda m: None)
    assert len(ds.val) == 1 and "unknown label 'weather'" in ds.skipped[0]["reason"]


def test_a_text_under_two_labels_is_left_out_and_copies_count_once(tmp_path):
    """The image audit (edgetl.data.audit) applies to texts: a label conflict is left out of train and val (or stops
    the run with --strict), a copy inside a class is used once, a val copy of a train text is leakage."""
    path = tmp_path / "t.csv"
    write_csv(path, ROWS + [("Turn on lamp number 0", "lights"), ("play song number 1", "lights")])
    warned = []
    ds = load_text_dataset(str(path), 0, False, warned.append)
    texts = [it.text for it in ds.train + ds.val]
    assert "play song number 1" not in texts and len(texts) == 12  # 12 rows + 2, minus the conflict's two
    assert ds.audit["label_conflicts"] == 1 and ds.audit["duplicates_in_class"] == 0  # case differs: not a copy
    assert any("label conflict: the same text is in 'lights' and 'music'" in w for w in warned)
    write_csv(path, ROWS + [ROWS[0]])
    ds = load_text_dataset(str(path), 0, False, warned.append)
    assert len(ds.train) + len(ds.val) == 12 and ds.audit["duplicates_in_class"] == 1
    with pytest.raises(UserError, match="label conflict: the same text is 'lights'"):
        write_csv(path, ROWS + [("play song number 1", "lights")])
        load_text_dataset(str(path), 0, True, warned.append)
    split = tmp_path / "split"
    split.mkdir()
    write_csv(split / "train.csv", ROWS)
    write_csv(split / "val.csv", [ROWS[0], ("dim the lamp", "lights")])
    ds = load_text_dataset(str(split), 0, False, warned.append)
    assert ds.audit["exact_leakage"] == 1 and any("LEAKAGE: 1 val text(s)" in w for w in warned)


def test_bad_table_and_digits_are_one_line_errors(tmp_path):
    path = tmp_path / "t.csv"
    write_csv(path, ROWS, header=("sentence", "y"))
    with pytest.raises(UserError, match="must name a 'text' and a 'label' column"):
        load_text_dataset(str(path), 0, False, print)
    with pytest.raises(UserError, match="text backbone needs text data"):
        load_text_dataset("digits", 0, False, print)


def test_nfc_makes_one_key_and_tokens_slice_to_their_width():
    composed, decomposed = "caf\u00e9 cr\u00e8me", "cafe\u0301 cre\u0300me"
    assert composed != decomposed and text_key(composed) == text_key(decomposed)
    assert check_text(decomposed) == composed
    import numpy as np

    t = Tokens(np.array([[101, 5, 102, 0], [101, 102, 0, 0]]), np.array([[1, 1, 1, 0], [1, 1, 0, 0]]))
    assert t[1:].input_ids.tolist() == [[101, 102]] and len(t[:1].attention_mask[0]) == 3


@pytest.mark.parametrize("method", ["percentile", "entropy", "distribution"])
def test_ort_calibration_method_refused_for_text(tmp_path, method):
    """ONNX Runtime quantizes a text encoder dynamically: a calibration method is refused in one line (the
    histogram calibrators had crashed on sentences of different lengths: 'inhomogeneous shape')."""
    from edgetl.config import QuantizeCfg
    from edgetl.quant.ort_recipe import quantize_ort

    calib = Tokens(np.ones((2, 3), np.int64), np.ones((2, 3), np.int64))
    out = tmp_path / "int8.onnx"
    with pytest.raises(UserError, match=f"--calib-method {method}:.*dynamically"):
        quantize_ort(tmp_path / "fp32.onnx", out, QuantizeCfg(target="onnxruntime", calib_method=method), calib)
    assert not out.exists()
