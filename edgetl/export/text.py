"""`edgetl export` for a sentence-backbone run: encoder + pooling + head in one ONNX graph, plus its tokenizer.

The graph takes token ids (`input_ids`, `attention_mask` int64 [N, T], both dims symbolic) and gives `probs`
and `label`, like the image graph. Next to it export writes the run's tokenizer in the forms the targets
need, every file's sha256 in the graph's metadata (compile refuses a tokenizer that does not match):
`tokenizer.json` (host tokenization: TensorRT, and `--tokenizer host`), `tokenizer.openvino.xml/.bin` (OpenVINO
tokenizers) and `tokenizer.onnx` (ONNX Runtime-extensions ops): compile joins the last two in front of the
encoder, so OpenVINO and ONNX Runtime bundles take strings.
The parity ladder is the image one (`edgetl.export.parity`), on the run's validation sentences.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from edgetl.contract import (
    EXPORT_JSON,
    FEATURES,
    LABEL,
    MODEL_ONNX,
    ORT_TOKENIZER,
    OV_TOKENIZER_XML,
    PROBE_FILE,
    PROBS,
    TOKEN_IDS,
    TOKEN_INPUTS,
    TOKENIZER_FILES,
    TOKENIZER_JSON,
)
from edgetl.data import load_dataset
from edgetl.data.items import split_fingerprint
from edgetl.errors import UserError
from edgetl.export import graph as onnx_graph
from edgetl.export import parity
from edgetl.export.model import OPSET, apply_finetuned, check_eval, finish, load_backbone
from edgetl.export.probe import write_text_probe
from edgetl.fileio import atomic_write_bytes, sha256_file
from edgetl.models.heads import load_head
from edgetl.records import read_run
from edgetl.texts import TextPreprocess


def export_text_encoder(backbone) -> onnx.ModelProto:
    """The frozen encoder + pooling: (input_ids, attention_mask) [N, T] -> `features` [N, D], N and T symbolic.

    The one exporter for sentence encoders: `edgetl train --quantize int8` quantizes this graph too."""
    ids = torch.tensor([[101, 7592, 2088, 102, 0], [101, 7592, 2088, 999, 102]])
    mask = (ids != 0).long()
    dims = {0: torch.export.Dim("N"), 1: torch.export.Dim("T")}
    quiet = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            backbone,
            (ids, mask),
            input_names=list(TOKEN_INPUTS),
            output_names=[FEATURES],
            opset_version=OPSET,
            dynamo=True,
            dynamic_shapes={"input_ids": dims, "attention_mask": dims},
            verbose=False,
        )
    return onnx_graph.keep_name_scopes(program.model_proto)


class TextReference:
    """PyTorch FP32 on host-tokenized sentences: what every ONNX graph must reproduce (parity.Reference)."""

    def __init__(self, backbone, head, pre: TextPreprocess) -> None:
        self.backbone, self.head, self.pre = backbone, head, pre

    def run(self, texts: list[str]) -> parity.Outputs:
        with torch.inference_mode():
            feats = [
                self.backbone.forward_features(self.pre(texts[i : i + parity.BATCH]))
                for i in range(0, len(texts), parity.BATCH)
            ]
            return parity._outputs(torch.cat(feats), self.head)


def onnx_run(model: onnx.ModelProto, texts: list[str], pre: TextPreprocess, _format: str = TOKEN_IDS):
    """(probs, labels, features) of a token-ids graph in ONNX Runtime, batched like the reference."""
    sess = parity.session(model, (FEATURES,))
    got = [sess.run([PROBS, LABEL, FEATURES], pre(texts[i : i + parity.BATCH]).feeds()) for i in _starts(texts)]
    return tuple(np.concatenate([g[k] for g in got]) for k in range(3))


def int8_reference(ref: TextReference, backbone: onnx.ModelProto, texts: list[str]) -> parity.Outputs:
    """The run's INT8 encoder alone in ONNX Runtime + the PyTorch head: what training measured."""
    sess = parity.session(backbone)
    feats = [torch.from_numpy(sess.run(None, ref.pre(texts[i : i + parity.BATCH]).feeds())[0]) for i in _starts(texts)]
    with torch.inference_mode():
        return parity._outputs(torch.cat(feats), ref.head)


def _starts(texts: list[str]) -> range:
    return range(0, len(texts), parity.BATCH)


def val_texts(ds, limit: int) -> tuple[list[str], np.ndarray]:
    picks = np.unique(np.linspace(0, len(ds.val) - 1, min(limit, len(ds.val))).round().astype(int))
    return [ds.val[i].text for i in picks], np.array([ds.val[i].label for i in picks], np.int64)


def token_lengths(texts: list[str], pre: TextPreprocess) -> dict:
    """Token counts of the run's training texts ([CLS] and [SEP] included, truncated at max_length): OpenVINO's
    compile sizes its static branch from them (edgetl.deploy.targets.seq_bucket.static_size)."""
    counts = np.concatenate([pre(texts[i : i + 256]).attention_mask.sum(1) for i in range(0, len(texts), 256)])
    pct = {f"p{q}": int(np.ceil(np.percentile(counts, q))) for q in (50, 90, 95)}
    return {"texts": len(counts), **pct, "max": int(counts.max())}


def run_dataset(record: dict):
    """The run's text data set, checked to split into the validation texts it was trained with."""
    cfg = record["config"]
    try:
        ds = load_dataset(cfg["data"], int(cfg.get("seed", 0)), False, lambda message: None, "text")
    except UserError as e:
        raise UserError(f"the run's training data is needed for the parity check: {e}") from None
    expected = record.get("data", {}).get("val_sha256")
    if not ds.val or (expected and split_fingerprint(ds.val) != expected):
        raise UserError(
            f"{cfg['data']}: the validation texts differ from the ones this run was trained with; restore the "
            "data file, or re-run edgetl train before exporting"
        )
    return ds


def load_text_parts(run_dir: Path):
    record = read_run(run_dir)
    head, _ = load_head(record.head_file())
    backbone = load_backbone(record)
    apply_finetuned(backbone, record)
    return record, backbone, head, record.int8_backbone()


def build_text_graph(encoder: onnx.ModelProto, head, record: dict, precision: str) -> onnx.ModelProto:
    model = onnx_graph.slim(encoder)
    onnx_graph.add_head(model, FEATURES, head, pooled=True, fused_ops=False)
    model.graph.name = "edgetl"
    meta = {
        "version": record.get("edgetl_version"),
        "run_id": record.get("run_id"),
        "classes": record["classes"],
        "preprocess": record["preprocess"],
        "input_format": TOKEN_IDS,
        "backbone": {"name": record["backbone"]["name"], "weights_sha256": record["backbone"]["weights_sha256"]},
        "precision": precision,
        "quantize": record.get("quantize"),
    }
    return finish(model, meta)


def write_tokenizers(folder: Path, pre: TextPreprocess, out: Path) -> dict[str, str]:
    """The tokenizer files beside the graph; returns {file name: sha256}."""
    import openvino as ov

    from edgetl.tokenizer_graphs.ort_tokenizer import ort_tokenizer
    from edgetl.tokenizer_graphs.tokenizers import openvino_tokenizer

    shutil.copyfile(pre.tokenizer_file, out / TOKENIZER_JSON)
    ov.save_model(openvino_tokenizer(folder, pre.max_length), str(out / OV_TOKENIZER_XML))
    atomic_write_bytes(out / ORT_TOKENIZER, ort_tokenizer(folder, pre.max_length).SerializeToString())
    return {name: sha256_file(out / name) for name in TOKENIZER_FILES}


def export_text_run(run_dir: Path, out: Path | None, max_images: int, echo) -> dict:
    record, backbone, head, int8_path = load_text_parts(run_dir)
    check_eval(backbone=backbone, head=head)
    pre = backbone.cfg.preprocess
    out = Path(out) if out else Path(run_dir) / MODEL_ONNX
    out.parent.mkdir(parents=True, exist_ok=True)
    tokenizers = write_tokenizers(backbone.model_dir, pre, out.parent)
    fp32 = build_text_graph(export_text_encoder(backbone), head, record, "fp32")
    int8 = int8_encoder = None
    if int8_path is not None:
        int8_encoder = onnx.load(str(int8_path))
        int8 = build_text_graph(onnx.ModelProto.FromString(int8_encoder.SerializeToString()), head, record, "int8")
    shipped = int8 if int8 is not None else fp32
    ds = run_dataset(record)
    lengths = token_lengths([item.text for item in ds.train], pre)
    meta = {**onnx_graph.read_metadata(shipped), "tokenizer": tokenizers, "token_lengths": lengths}
    onnx_graph.set_metadata(shipped, meta)
    data = shipped.SerializeToString()
    atomic_write_bytes(out, data)

    texts, labels = val_texts(ds, max_images)
    ref = TextReference(backbone, head, pre)
    runners = {"onnx_runner": onnx_run, "int8_runner": int8_reference}
    stages = parity.ladder(ref, texts, labels, TOKEN_IDS, fp32, int8, int8_encoder, **runners)
    token_input = {"format": TOKEN_IDS, "names": list(TOKEN_INPUTS), "dtype": "int64", "shape": ["N", "T"]}
    report = parity.export_report(
        out, data, shipped, int8 is not None, stages, input=token_input,
        outputs=onnx_graph.io_description(shipped)[1], tokenizer=tokenizers, token_lengths=lengths, texts=len(texts),
    )  # fmt: skip
    if int8 is not None:  # the device checks its INT8 kernels against these (edgetl.deploy.fidelity)
        report["probe"] = write_text_probe(shipped, texts, pre, out.parent / PROBE_FILE)
    atomic_write_bytes(out.parent / EXPORT_JSON, (json.dumps(report, indent=1) + "\n").encode())
    echo(f"wrote {out} ({report['precision']}, {report['nodes']} nodes), its tokenizer files and export.json")
    for line in parity.stage_lines(stages, len(texts)):
        echo(line.replace("validation images", "validation texts"))
    parity.raise_on_failure(stages, run_dir, True)
    return report
