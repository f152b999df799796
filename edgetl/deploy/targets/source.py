"""The exported ONNX model as a compiler sees it: the edgetl metadata contract, its input spec, its checks.

Used at compile time only (imports `onnx` lazily). Every target starts from `SourceModel.open`, so the
safety check (external data) and the contract check happen once, with the same messages, for all of them.
The parity verdict `edgetl export` wrote beside the model (export.json) is read here too: a failed export is
refused, a passed one is copied into the manifest (`export`), and a model without one compiles with a note.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from edgetl.contract import (
    ALL_FORMATS,
    EXPORT_JSON,
    FP32_EXPORT,
    INT8_OPS,
    PROBE_FILE,
    TOKEN_IDS,
    TOKEN_INPUTS,
    TOKENIZER_JSON,
)
from edgetl.contract import DOMAIN as CUSTOM_DOMAIN
from edgetl.deploy.onnx_safety import check_external_data
from edgetl.errors import UserError
from edgetl.fileio import sha256_file
from edgetl.preprocess import Preprocess
from edgetl.texts import TextPreprocess, is_text_spec, read_preprocess


@dataclass
class SourceModel:
    path: Path
    meta: dict  # the `edgetl` metadata_props JSON written by export
    input_name: str
    input_shape: list  # ints for static dims, strings for symbolic ones
    outputs: list[str]
    sha256: str
    external_files: list[Path] = field(default_factory=list)
    has_qdq: bool = False
    custom_ops: list[str] = field(default_factory=list)  # ai.edgetl op types used by the graph
    # The parity verdict of `edgetl export` for this very file ({passed, onnx_sha256, stages}), None when no
    # export.json beside it describes it (a hand-made model, or one exported elsewhere).
    export: dict | None = None

    @property
    def probe(self) -> Path | None:
        """The INT8 fidelity probe export wrote beside the model (checked against export.json), if any."""
        entry = (self.export or {}).get("probe")
        return self.path.parent / entry["file"] if entry else None

    @property
    def input_format(self) -> str:
        return self.meta["input_format"]

    @property
    def preprocess(self) -> Preprocess | TextPreprocess:
        return read_preprocess(self.meta["preprocess"], self.path.parent / TOKENIZER_JSON)

    @property
    def is_text(self) -> bool:
        return is_text_spec(self.meta["preprocess"])  # the one answer (edgetl.texts), as run.json's

    def tokenizer_file(self, name: str) -> Path:
        """A tokenizer file export wrote beside the graph, checked against the sha256 the graph records."""
        expected = (self.meta.get("tokenizer") or {}).get(name)
        path = self.path.parent / name
        if not expected or not path.is_file() or sha256_file(path) != expected:
            raise UserError(
                f"{path}: missing or not the tokenizer this graph was exported with; keep the files `edgetl export` "
                "wrote next to the model, or re-export"
            )
        return path

    @classmethod
    def open(cls, path: Path) -> SourceModel:
        import onnx

        path = Path(path)
        external = check_external_data(path)
        model = onnx.load(str(path), load_external_data=False)
        meta = _read_meta(model, path)
        graph_inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
        expected = list(TOKEN_INPUTS) if meta["input_format"] == TOKEN_IDS else None
        if [i.name for i in graph_inputs] != (expected or [i.name for i in graph_inputs[:1]]) or (
            not expected and len(graph_inputs) != 1
        ):
            raise UserError(f"{path}: unexpected graph inputs {[i.name for i in graph_inputs]}; re-export")
        name, dtype = ALL_FORMATS[meta["input_format"]]
        graph_input = graph_inputs[0]
        if graph_input.name != name:
            raise UserError(
                f"{path}: input {graph_input.name!r} does not match input_format {meta['input_format']} "
                f"(expected {name!r}); re-export with `edgetl export`"
            )
        dims = [
            d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in graph_input.type.tensor_type.shape.dim
        ]
        op_types = {(n.domain, n.op_type) for n in model.graph.node}
        sha256 = sha256_file(path)
        return cls(
            path=path,
            meta=meta,
            input_name=name,
            input_shape=dims,
            outputs=[o.name for o in model.graph.output],
            sha256=sha256,
            external_files=external,
            has_qdq=any(op in INT8_OPS for _, op in op_types),
            custom_ops=sorted(op for domain, op in op_types if domain == CUSTOM_DOMAIN),
            export=export_verdict(path, sha256),
        )

    def precision_for(self, requested: str, allowed: tuple[str, ...], target: str) -> str:
        """Check --precision against what the model and target can do; `auto` becomes the model's precision."""
        model_precision = "int8" if self.has_qdq else "fp32"
        if requested == "auto":
            return model_precision
        if requested == "int8" and not self.has_qdq:
            raise UserError(
                f"--precision int8: {self.path} has no INT8 nodes (QuantizeLinear/DequantizeLinear, or DynamicQuantizeLinear); "
                "export the INT8 model (edgetl export with quantization) or drop --precision"
            )
        if requested not in allowed:
            raise UserError(
                f"--precision {requested}: not supported by --target {target}; "
                f"choose one of {', '.join(('auto',) + allowed)}"
            )
        return requested

    def manifest_fields(self) -> dict:
        """The parts of the bundle manifest that come from the exported model."""
        _, dtype = ALL_FORMATS[self.input_format]
        return {
            "classes": list(self.meta["classes"]),
            "preprocess": self.preprocess.to_dict(),
            "input": {
                "name": self.input_name,
                "format": self.input_format,
                "dtype": dtype,
                "shape": self.input_shape,
                "frame_size": None,
            },
            "outputs": self.outputs,
            "export": self.export,
            "source": {
                "onnx_sha256": self.sha256,
                "run_id": self.meta.get("run_id"),
                "backbone": self.meta.get("backbone"),
                "precision": self.meta.get("precision"),
                "quantize": self.meta.get("quantize"),
                "exported_by": self.meta.get("version"),
            },
        }


def _read_meta(model, path: Path) -> dict:
    props = {p.key: p.value for p in model.metadata_props}
    if "edgetl" not in props:
        raise UserError(
            f"{path}: no edgetl metadata (metadata_props 'edgetl'); compile models written by `edgetl export`"
        )
    try:
        meta = json.loads(props["edgetl"])
        read_preprocess(meta["preprocess"])
        if meta["input_format"] not in ALL_FORMATS or not meta["classes"]:
            raise ValueError(meta["input_format"])
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(
            f"{path}: edgetl metadata is malformed ({type(e).__name__}: {e}); re-run `edgetl export`"
        ) from None
    return meta


EXPORT_RECORD = EXPORT_JSON  # written by `edgetl export` beside model.onnx: the parity ladder and its verdict


def export_verdict(path: Path, sha256: str) -> dict | None:
    """The parity verdict `edgetl export` recorded for this model, for the manifest; refuses a failed one.

    export.json describes this model when its onnx_sha256 is the file's, or its `model` field names the file
    (a failed export is refused even if the file was edited since). Without such a record the model still
    compiles (hand-made, exported elsewhere), with one line on stderr saying its parity is unchecked.
    """
    record_path = path.parent / EXPORT_RECORD
    if not record_path.is_file():
        _note(
            f"no {EXPORT_RECORD} beside {path}: no parity record was found, so its agreement with the trained run "
            "is unchecked (models from `edgetl export` have one)"
        )
        return None
    try:
        record = json.loads(record_path.read_text())
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError, OSError) as e:
        raise UserError(
            f"{record_path}: unreadable parity record ({e}); re-run `edgetl export`, or remove it to compile "
            f"{path.name} without one"
        ) from None
    fp32 = record.get(FP32_EXPORT)  # an INT8 run's FP32 model (model.fp32.onnx) has its own entry
    if isinstance(fp32, dict) and fp32.get("model") == path.name and record.get("model") != path.name:
        record = fp32
    same_bytes = record.get("onnx_sha256") == sha256
    if not same_bytes and record.get("model") != path.name:
        _note(f"{record_path} describes another model (not {path.name}): no parity record was found for {path}")
        return None
    stages = record.get("stages") if isinstance(record.get("stages"), list) else []
    stages = [s for s in stages if isinstance(s, dict)]
    if record.get("passed") is False:
        failed = next((s for s in stages if s.get("passed") is False), {})
        what = f"stage {failed['name']}" if failed.get("name") else "a stage"
        check = f": {failed['check']}" if failed.get("check") else ""
        raise UserError(
            f"{record_path}: the export of {path.name} failed its parity check ({what}{check}); "
            "fix the run and re-export with `edgetl export` before compiling"
        )
    if not same_bytes:
        _note(
            f"{path} changed since `edgetl export` wrote it (sha256 differs from {record_path}): its parity is unchecked"
        )
        return None
    if record.get("passed") is not True:
        _note(f"{record_path} records no parity verdict for {path.name}: its parity is unchecked")
        return None
    verdict = {"passed": True, "onnx_sha256": sha256, "stages": [str(s.get("name")) for s in stages]}
    probe = record.get("probe")
    if isinstance(probe, dict) and probe.get("file") == PROBE_FILE:
        path_probe = path.parent / PROBE_FILE
        if path_probe.is_file() and sha256_file(path_probe) == probe.get("sha256"):
            verdict["probe"] = {k: probe.get(k) for k in ("file", "sha256", "images", "reference")}
        else:
            _note(f"{path_probe} is missing or changed since export: the bundle will carry no INT8 fidelity probe")
    return verdict


def _note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)
