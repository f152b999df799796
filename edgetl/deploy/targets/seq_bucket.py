"""Sequence-length buckets for text models on OpenVINO: token ids padded up to a multiple of `BUCKET` in-graph.

OpenVINO's CPU plugin re-plans every node (shape inference, memory) whenever an input shape differs from the
previous call's, and a sentence's token count differs almost every call. Measured on a 2-core AVX-512 machine
(MiniLM INT8, intents val sentences of 5-20 tokens, encoder alone): 1.8 ms per sentence at the exact length,
1.1-1.2 ms padded to 16. Padding is exact: padded positions have attention_mask 0, so attention gives them
zero weight and mean pooling leaves them out. At most BUCKET - 1 tokens are added, never past max_length
(longer input keeps its own length).

Why 16 (same machine, intents INT8 bundle with the tokenizer in the graph, interleaved rounds): a bucket of 8
was 0.80-0.88x as fast as 16 (sentences of 5-16 tokens straddle 8, so the shape changes call to call and the
plugin re-plans), buckets of 10 and 12 were 1.02-1.07x, within the run-to-run spread; 16 stays.

`with_static_bucket` goes one step further for the common case, one sentence of at most S tokens: an `If` runs a
copy of the encoder whose every shape after the inputs is static [1, S], else the padded dynamic encoder. Static
shapes let the CPU plugin fuse the element-wise ops and drop the shape arithmetic. Measured ad hoc on a 2-core Zen 4
EPYC (MiniLM INT8, encoder alone, interleaved): 0.96-1.04 ms vs 1.21-1.27 ms for 8-16 tokens (0.73-0.84x), no change
for 20-100 tokens. S fits the user's sentences (`static_size`: from the training texts' token counts, which export
records): on the intents set (95% of texts <= 12 tokens) the bundle with S = 12 took 0.86-0.89x the time of S = 16
in two interleaved probe runs (end to end, tokenizer in the graph). One static branch: several (8, 12 and 16) were
slower than one, the copies take turns in the caches. Compile time and memory grow (0.3 -> 0.6 s, +60 MB); the
weights are stored once.
"""

from __future__ import annotations

import numpy as np

from edgetl.contract import TOKEN_INPUTS
from edgetl.errors import UserError

BUCKET = 16


def pad_to_bucket(model, max_length: int, bucket: int = BUCKET):
    """Insert `Pad` after each token-ids parameter of `model` (in place): [N, L] -> [N, bucketed L]; returns it."""
    import openvino.opset13 as ops

    params = [p for p in model.get_parameters() if p.output(0).get_any_name() in TOKEN_INPUTS]
    if not params:
        return model
    consumers = {p.get_friendly_name(): list(p.output(0).get_target_inputs()) for p in params}  # before new nodes
    length = ops.gather(ops.shape_of(params[0]), ops.constant(np.int64(1)), ops.constant(np.int64(0)))
    b = ops.constant(np.int64(bucket))
    target = ops.multiply(ops.divide(ops.add(length, ops.constant(np.int64(bucket - 1))), b), b)  # floor div
    target = ops.maximum(ops.minimum(target, ops.constant(np.int64(max_length))), length)
    pads_end = ops.concat([ops.constant(np.zeros(1, np.int64)), ops.unsqueeze(ops.subtract(target, length), 0)], 0)
    pads_begin = ops.constant(np.zeros(2, np.int64))
    for param in params:
        zero = ops.constant(np.zeros((), param.get_element_type().to_dtype()))
        padded = ops.pad(param, pads_begin, pads_end, "constant", zero)
        for consumer in consumers[param.get_friendly_name()]:
            consumer.replace_source_output(padded.output(0))
    model.validate_nodes_and_infer_types()
    return model


def static_size(lengths: dict | None, max_length: int, requested: int | None = None) -> int:
    """The static branch's token count: `requested` (compile --static-tokens; 0 = none) if given, else the training
    texts' 95th percentile (export's `token_lengths`) rounded up to a multiple of 4, within [8, 32] and max_length;
    BUCKET for an export that did not record them."""
    if requested is not None:
        if requested > max_length:
            raise UserError(
                f"--static-tokens: {requested} is more than the model's max_length ({max_length}); "
                f"use 0..{max_length}, or auto"
            )
        return requested
    if not lengths or not isinstance(lengths.get("p95"), int):
        return min(BUCKET, max_length)
    return min(max(8, -(-lengths["p95"] // 4) * 4), 32, max_length)


def with_static_bucket(model, max_length: int, size: int = BUCKET):
    """`model` (token ids in) as one model with the same inputs and outputs: an If takes a copy whose shapes are
    static [1, size] when the batch is one text of at most `size` tokens, else `pad_to_bucket(model)` (alone when
    size is 0)."""
    import openvino as ov
    import openvino.opset13 as ops

    params = {p.output(0).get_any_name(): p for p in model.get_parameters()}
    if not size or set(params) != set(TOKEN_INPUTS):
        return pad_to_bucket(model, max_length)
    static, dynamic = model.clone(), pad_to_bucket(model.clone(), max_length)
    for param in static.get_parameters():  # pad with `size` zeros, keep the first `size`: exact for L <= size
        consumers = list(param.output(0).get_target_inputs())
        zeros = ops.constant(np.zeros((1, size), param.get_element_type().to_dtype()))
        joined = ops.concat([param, zeros], 1)
        cut = ops.slice(joined, np.array([0]), np.array([size]), np.array([1]), np.array([1]))
        fixed = ops.reshape(cut, ops.constant(np.array([1, size], np.int64)), False)  # static from here on
        for consumer in consumers:
            consumer.replace_source_output(fixed.output(0))
    static.validate_nodes_and_infer_types()

    outer = {name: ops.parameter([-1, -1], params[name].get_element_type(), name=name) for name in TOKEN_INPUTS}
    for name, param in outer.items():
        param.output(0).get_tensor().set_names({name})
    shape = ops.shape_of(outer[TOKEN_INPUTS[0]])
    one = ops.equal(ops.gather(shape, ops.constant(np.int64(0)), ops.constant(np.int64(0))), ops.constant(np.int64(1)))
    short = ops.less_equal(ops.gather(shape, ops.constant(np.int64(1)), ops.constant(np.int64(0))),
                           ops.constant(np.int64(size)))  # fmt: skip
    branch = ops.if_op(ops.logical_and(one, short).output(0))
    branch.set_then_body(static)
    branch.set_else_body(dynamic)
    then_params = {p.output(0).get_any_name(): p for p in static.get_parameters()}
    else_params = {p.output(0).get_any_name(): p for p in dynamic.get_parameters()}
    for name, param in outer.items():
        branch.set_input(param.output(0), then_params[name], else_params[name])
    results = []
    for then_result, else_result, port in zip(static.get_results(), dynamic.get_results(), model.outputs, strict=True):
        out = branch.set_output(then_result, else_result)
        out.get_tensor().set_names(port.get_names())
        results.append(ops.result(out))
    return ov.Model(results, [outer[name] for name in TOKEN_INPUTS], model.get_friendly_name())
