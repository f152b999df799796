"""Claim (issue 29, MiniLM): fine-tuning the last transformer layers beats the frozen sentence encoder where the
task is far from its pretraining, the INT8 OpenVINO bundle keeps it, the cut-point cache makes an epoch cheap, and
the forgetting report (probe-sentence cosine) moves as it should.

Data: the first sentences of the standard library's docstrings, labelled by package (tests/text/docstrings.py:
6 packages x 120; 576 train / 144 val). `edgetl train --backbone minilm` frozen, `--unfreeze 1`, `2`, `3` and `all`
(default recipe: LP, then AdamW, 12 epochs, early stopping with the LP model as epoch 0), each in FP32 (val
accuracy, forgetting, seconds per epoch, cut-cache bytes per text); the frozen and the best fine-tuned run again
with `--quantize int8` (OpenVINO layout), and the best one exported, compiled for OpenVINO and run on the val texts
through the bundle (the tokenizer in the graph). Epoch time at `--unfreeze 2`: cached hidden states vs running the
frozen prefix (embeddings + 4 layers, no grad) on every batch, in one process, interleaved.
Run it alone on the machine (~15 min on 2 cores). Writes benchmarks/results/finetune_text.json.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import write_result
from finetune import compile_openvino, config_rows

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.text.docstrings import stdlib_docstrings  # noqa: E402


def dataset_rows(data: str, work: Path) -> dict:
    result = config_rows("text", data, work, ["--backbone", "minilm"])
    result["rows"]["frozen"]["forgetting"] = {"mean_cosine": 1.0, "min_cosine": 1.0}  # nothing fine-tuned
    return result


def bundle_check(run_dir: Path, work: Path) -> dict:
    """Export, compile for OpenVINO, and label the val texts through the bundle (its in-graph tokenizer)."""
    from edgetl.deploy.predictor import Predictor
    from edgetl.export.text import run_dataset

    build = compile_openvino(run_dir, work)
    record = json.loads((run_dir / "run.json").read_text())
    val = run_dataset(record).val
    with Predictor(build) as p:
        got = [p.predict_text(it.text).label for it in val]
    acc = float(np.mean(np.array(got) == np.array([it.label for it in val])))
    return {"bundle": "openvino", "texts": len(val), "val_acc_bundle": acc, "val_acc_run": record["metrics"]["val_acc"]}


def epoch_times(data: str, rounds: int = 3) -> dict:
    """One epoch of `--unfreeze 2` over the train texts: on cached hidden states vs the frozen prefix every batch."""
    import torch

    from edgetl.data import load_dataset
    from edgetl.models.backbones import build_backbone
    from edgetl.models.backbones.split import split
    from edgetl.models.backbones.text_split import stack_rows

    torch.manual_seed(0)
    backbone = build_backbone("minilm")
    prefix, suffix, _ = split(backbone, 2)
    train_items = load_dataset(data, 0, False, print, "text").train
    texts, y = [it.text for it in train_items], torch.tensor([it.label for it in train_items])
    batches = [backbone.cfg.preprocess(texts[i : i + 64]) for i in range(0, len(texts), 64)]
    with torch.inference_mode():
        cut = [prefix(b) for b in batches]
    rows = [r.half().float().numpy() for c in cut for r in c]
    cached = torch.from_numpy(stack_rows(rows))  # as training reads them: padded to the longest, trimmed per batch
    head = torch.nn.Linear(384, int(y.max()) + 1)
    params = list(suffix.parameters()) + list(head.parameters())
    for q in params:
        q.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=1e-4)

    def epoch(use_cache: bool) -> float:
        t = time.perf_counter()
        for i, b in enumerate(batches):
            if use_cache:
                a = cached[i * 64 : (i + 1) * 64].clone()
            else:
                with torch.inference_mode():
                    a = prefix(b)
                a = a.clone()
            loss = torch.nn.functional.cross_entropy(head(suffix(a)), y[i * 64 : (i + 1) * 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
        return time.perf_counter() - t

    times = [(epoch(True), epoch(False)) for _ in range(rounds)]
    return {"unfreeze": 2, "texts": len(texts), "cached_s": [a for a, _ in times], "prefix_s": [b for _, b in times],
            "speedup": float(np.median([b / a for a, b in times]))}  # fmt: skip


def main() -> dict:
    from edgetl.machine import cpu_info

    with tempfile.TemporaryDirectory(prefix="edgetl-finetune-text-") as tmp:
        work = Path(tmp)
        data = str(stdlib_docstrings(work / "stdlib-docstrings.csv"))
        result = {"machine": cpu_info(), "data": "stdlib-docstrings (tests/text/docstrings.py, 6 x 120)"}
        result["epoch_time"] = epoch_times(data)
        result.update(dataset_rows(data, work))
        write_result("finetune_text", result)
        best = result["best"]
        result["best_bundle"] = {"unfreeze": best, **bundle_check(work / f"text-{best}-int8", work)}
    write_result("finetune_text", result)
    print(json.dumps({k: result[k] for k in ("best_bundle", "epoch_time")}, indent=1, default=str))
    return result


if __name__ == "__main__":
    main()
