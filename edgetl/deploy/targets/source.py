"""The exported ONNX model as a compiler sees it: the edgetl metadata contract, its input spec, its checks.

Used at compile time only (imports `onnx` lazily). Every target starts from `SourceModel.open`, so the
safety check (external data) and the contract check happen once, with the same messages, for all of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from edgetl.contract import ALL_FORMATS, INT8_OPS, TOKEN_IDS, TOKEN_INPUTS
from edgetl.contract import DOMAIN as CUSTOM_DOMAIN
from edgetl.deploy.onnx_safety import check_external_data
from edgetl.errors import UserError
from edgetl.fileio import sha256_file
from edgetl.preprocess import Preprocess
from edgetl.texts import TextPreprocess, read_preprocess


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

    @property
    def input_format(self) -> str:
        return self.meta["input_format"]

    @property
    def preprocess(self) -> Preprocess | TextPreprocess:
        return read_preprocess(self.meta["preprocess"], self.path.parent / "tokenizer.json")

    @property
    def is_text(self) -> bool:
        return self.input_format == TOKEN_IDS

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
        return cls(
            path=path,
            meta=meta,
            input_name=name,
            input_shape=dims,
            outputs=[o.name for o in model.graph.output],
            sha256=sha256_file(path),
            external_files=external,
            has_qdq=any(op in INT8_OPS for _, op in op_types),
            custom_ops=sorted(op for domain, op in op_types if domain == CUSTOM_DOMAIN),
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
