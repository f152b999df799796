"""The tokenizer in an OpenVINO text bundle: which one it carries (compile side), how it joins the encoder, and
the string ops it needs at load.

edgetl's own `BertTokenize` op (kernels/tokenizer/, in the native extension) where it applies: one op on tables
measured from the run's tokenizer.json (edgetl.tokenizer_graphs.bert_tables), in place of openvino-tokenizers' subgraph of
reference ops, which took 0.41 ms of a 2.3 ms sentence on a 2-core EPYC (an ad hoc probe; benchmarks/text.py times
both bundles end to end). It applies to BERT WordPiece tokenizers when the extension is built; otherwise the bundle
gets openvino-tokenizers, as before. `--fused-kernels` requires the native op, `--no-fused-kernels` refuses it.
"""

from __future__ import annotations

from pathlib import Path

from edgetl.contract import OV_TOKENIZER_BIN, OV_TOKENIZER_XML, TOKEN_INPUTS, TOKENIZER_JSON
from edgetl.deploy.targets.ov_runner import native_extension
from edgetl.errors import UserError

NATIVE, OPENVINO_TOKENIZERS = "edgetl", "openvino_tokenizers"  # manifest settings.tokenizer_ops
_FACTORIES: dict = {}


def choose(src, fused_kernels: bool | None) -> tuple[str, Path | None, object | None]:
    """(tokenizer_ops, the extension to ship, the native op's tables) for a text source."""
    if fused_kernels is False:
        return OPENVINO_TOKENIZERS, None, None
    why = None
    try:
        extension = native_extension()
        from edgetl.tokenizer_graphs.bert_tables import Unsupported, bert_tables
    except UserError as e:
        why, extension = str(e), None
    except ImportError as e:  # `tokenizers` measures the tables: the text extra
        why, extension = f"--fused-kernels: the native tokenizer needs the tokenizers package ({e.name})", None
    if extension is not None:
        try:
            return NATIVE, extension, bert_tables(src.tokenizer_file(TOKENIZER_JSON))
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


def load_tokenizer_ops() -> None:
    """Importing openvino_tokenizers registers its string ops with OpenVINO (text models need them)."""
    try:
        import openvino_tokenizers  # noqa: F401
    except ImportError:
        raise UserError(
            "this text model tokenizes inside the graph: pip install openvino-tokenizers (the version of openvino)"
        ) from None


_TOKENIZER_CORE = None


def with_tokenizer(src, encoder, tables=None, extension: Path | None = None):
    """The tokenizer connected in front of the token-ids graph: strings in. edgetl's native op when `tables` are
    given (`choose`), else the exported openvino-tokenizers model (hash-checked)."""
    import openvino as ov

    if tables is not None:
        return connect_tokenizer(native_tokenizer(tables, src.preprocess.max_length, extension), encoder)
    load_tokenizer_ops()
    src.tokenizer_file(OV_TOKENIZER_BIN)
    # one Core for the process: a read model must not outlive the Core that loaded its ops (measured: segfault)
    global _TOKENIZER_CORE
    _TOKENIZER_CORE = _TOKENIZER_CORE or ov.Core()
    return connect_tokenizer(_TOKENIZER_CORE.read_model(str(src.tokenizer_file(OV_TOKENIZER_XML))), encoder)


def connect_tokenizer(tokenizer_model, encoder_model):
    """One `openvino.Model`, strings in (input `text`), the encoder's outputs out: each tokenizer output feeds the
    encoder input of the same name. A tokenizer output the encoder does not take (token_type_ids for most sentence
    encoders) is left out of the joined model, never a dangling output. Both models are consumed (rewired in
    place): pass fresh ones."""
    import openvino as ov
    import openvino_tokenizers

    tok_outputs = {o.get_any_name(): o for o in tokenizer_model.outputs}
    enc_inputs = {i.get_any_name(): i for i in encoder_model.inputs}
    missing = [name for name in TOKEN_INPUTS if name not in enc_inputs]
    extra = [name for name in enc_inputs if name not in tok_outputs]
    if missing or extra:
        raise ValueError(
            f"the encoder takes {sorted(enc_inputs)}: it needs input_ids and attention_mask and nothing the "
            f"tokenizer does not give ({sorted(tok_outputs)})"
        )
    for name, port in enc_inputs.items():
        if port.get_element_type() != tok_outputs[name].get_element_type():
            raise ValueError(
                f"encoder input {name} is {port.get_element_type()}, the tokenizer gives "
                f"{tok_outputs[name].get_element_type()}"
            )
    tok_sinks, enc_sinks = list(tokenizer_model.get_sinks()), list(encoder_model.get_sinks())
    if len(enc_inputs) < len(tok_outputs):  # connect_models would crash logging the unused output (.name)
        results = zip(tokenizer_model.get_results(), tokenizer_model.outputs, strict=True)
        kept = [result for result, port in results if port.get_any_name() in enc_inputs]
        tokenizer_model = ov.Model(kept, tok_sinks, list(tokenizer_model.get_parameters()), "tokenizer")
    full = openvino_tokenizers.connect_models(tokenizer_model, encoder_model, name_map={n: n for n in enc_inputs})
    # connect_models builds the joined model from results and parameters only: the tokenizer's truncation
    # ReadValue/Assign pair hangs off no result, and without its sink the CPU plugin refuses the model
    # ("ReadValue node ... doesn't have sibling output")
    full.add_sinks(tok_sinks + enc_sinks)
    full.inputs[0].get_tensor().set_names({"text"})  # the manifest's input name, like `image` for frames
    return full
