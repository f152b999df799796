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
"""

from __future__ import annotations

import numpy as np

from edgetl.contract import TOKEN_INPUTS

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
