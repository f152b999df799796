"""Which tokenizer an OpenVINO text bundle carries in its graph (compile side).

edgetl's own `BertTokenize` op (kernels/tokenizer/, in the native extension) where it applies: one op on tables
measured from the run's tokenizer.json (edgetl.export.bert_tables), in place of openvino-tokenizers' subgraph of
reference ops, which took 0.41 ms of a 2.3 ms sentence on a 2-core EPYC (an ad hoc probe; benchmarks/text.py times
both bundles end to end). It applies to BERT WordPiece tokenizers when the extension is built; otherwise the bundle
gets openvino-tokenizers, as before. `--fused-kernels` requires the native op, `--no-fused-kernels` refuses it.
"""

from __future__ import annotations

from pathlib import Path

from edgetl.errors import UserError

NATIVE, OPENVINO_TOKENIZERS = "edgetl", "openvino_tokenizers"  # manifest settings.tokenizer_ops
_FACTORIES: dict = {}


def choose(src, fused_kernels: bool | None) -> tuple[str, Path | None, object | None]:
    """(tokenizer_ops, the extension to ship, the native op's tables) for a text source."""
    if fused_kernels is False:
        return OPENVINO_TOKENIZERS, None, None
    from edgetl.deploy.targets.openvino import native_extension

    why = None
    try:
        extension = native_extension()
        from edgetl.export.bert_tables import Unsupported, bert_tables
    except UserError as e:
        why, extension = str(e), None
    except ImportError as e:  # `tokenizers` measures the tables: the text extra
        why, extension = f"--fused-kernels: the native tokenizer needs the tokenizers package ({e.name})", None
    if extension is not None:
        try:
            return NATIVE, extension, bert_tables(src.tokenizer_file("tokenizer.json"))
        except Unsupported as e:
            why = f"--fused-kernels: {src.path}: the native tokenizer does not apply ({e}); drop --fused-kernels"
    if fused_kernels:
        raise UserError(why)
    return OPENVINO_TOKENIZERS, None, None


def native_tokenizer(tables, max_length: int, extension: Path):
    """An `openvino.Model`: string tensor [N] (input `text`) -> int64 input_ids, token_type_ids, attention_mask
    [N, T], truncated at max_length, padded to the longest text: what `hf_encode` gives, id for id."""
    import numpy as np
    import openvino as ov
    import openvino.opset15 as ops
    from openvino._pyopenvino import NodeFactory as _Factory
    from openvino.utils.node_factory import NodeFactory

    # the factory holds the loaded extension: nodes it made must not outlive it (measured: segfault), so one per
    # extension for the process
    factory = _FACTORIES.get(str(extension))
    if factory is None:
        factory = _FACTORIES[str(extension)] = NodeFactory()
        factory.add_extension(str(extension))
    text = ops.parameter([-1], ov.Type.string, name="text")
    # core StringTensorUnpack from the plain opset15 factory: once openvino_tokenizers has converted a tokenizer in
    # this process, `ops.string_tensor_unpack` makes its legacy "extension" op, which a device without
    # openvino-tokenizers cannot read (measured)
    unpacked = _Factory("opset15").create("StringTensorUnpack", [text.output(0)], {})
    names = ("vocab_bytes", "vocab_offsets", "norm", "pool", "classes", "added")
    consts = [ops.constant(np.ascontiguousarray(getattr(tables, name)), name=name).output(0) for name in names]
    attrs = {
        "max_length": int(max_length),
        "unk_id": tables.unk_id,
        "cls_id": tables.cls_id,
        "sep_id": tables.sep_id,
        "pad_id": tables.pad_id,
        "max_chars_per_word": tables.max_chars_per_word,
        "prefix": tables.prefix,
    }
    node = factory.create("BertTokenize", [*unpacked.outputs(), *consts], attrs)
    results = []
    for port, name in zip(node.outputs(), ("input_ids", "token_type_ids", "attention_mask"), strict=True):
        port.get_tensor().set_names({name})
        results.append(ops.result(port))
    return ov.Model(results, [text], "edgetl_bert_tokenizer")
