"""Names and values shared by the training side, the exported graph and the device side: written once here.

Imports nothing: a bundle, a target and the exporter agree on these by importing them, never by retyping them.
"""

from __future__ import annotations

UINT8_NHWC = "uint8-nhwc"  # graph input: uint8 frames [N, H, W, 3], preprocessing inside the graph (default)
FLOAT_NCHW = "float-nchw"  # graph input: preprocessed float32 [N, 3, h, w]
FRAMES = "image"  # graph input name of the uint8-nhwc format
TENSOR = "input"  # graph input name of float-nchw, and the backbone's input in every graph
# input format -> (graph input name, dtype)
INPUT_FORMATS: dict[str, tuple[str, str]] = {UINT8_NHWC: (FRAMES, "uint8"), FLOAT_NCHW: (TENSOR, "float32")}
# Sentence models. `edgetl export` writes the token-ids graph (encoder + pooling + head); `edgetl compile` puts
# the tokenizer in front of it where the runtime has string ops (OpenVINO, ONNX Runtime): the text format.
TOKEN_IDS = "token-ids"  # graph inputs: int64 input_ids + attention_mask [N, T] (tokenized on the host)
TEXT = "text"  # graph input: a string tensor of texts [N]; the tokenizer runs inside the graph
TOKEN_INPUTS = ("input_ids", "attention_mask")
TOKENIZER_PLACES = ("auto", "graph", "host")  # `compile --tokenizer`: see edgetl.deploy.targets.base
TEXT_FORMATS: dict[str, tuple[str, str]] = {TOKEN_IDS: ("input_ids", "int64"), TEXT: ("text", "string")}
ALL_FORMATS: dict[str, tuple[str, str]] = {**INPUT_FORMATS, **TEXT_FORMATS}
# Output names of every exported graph; the device reads PROBS and LABEL. FEATURES (the backbone's pooled
# features), FMAP (its feature map, before pooling) and LOGITS (the head's) name the rungs the parity ladder compares.
PROBS, LABEL = "probs", "label"
FEATURES, FMAP, LOGITS = "features", "fmap", "logits"
OUTPUTS = (PROBS, LABEL)
# The run folder `edgetl train` writes (edgetl.records), and what `edgetl export` adds beside it.
RUN_JSON, HEAD_FILE, INT8_BACKBONE = "run.json", "head.safetensors", "backbone.int8.onnx"
FINETUNED_BLOCKS = "backbone.finetuned.safetensors"  # `--unfreeze N`: the fine-tuned blocks' weights
MODEL_ONNX, EXPORT_JSON = "model.onnx", "export.json"
# An INT8 image run also keeps its FP32 model: the head fitted on the FP32 backbone's features (run.json
# quantize.fp32_head), which `edgetl export` joins to the FP32 backbone as MODEL_FP32, its parity in export.json
# under FP32_EXPORT; `compile RUN --target auto` times it beside the INT8 graph (edgetl.bench.auto).
HEAD_FP32, MODEL_FP32, FP32_EXPORT = "head.fp32.safetensors", "model.fp32.onnx", "fp32_model"
# A compiled folder / bundle (edgetl.deploy.artifact, edgetl.deploy.bundle).
MANIFEST, BUNDLE_FORMAT = "manifest.json", "edgetl-bundle/1"
# Tokenizer files a sentence export writes beside its graph (checked by the sha256 the graph records).
TOKENIZER_JSON = "tokenizer.json"  # the Hugging Face tokenizer: host tokenization, and the native op's tables
OV_TOKENIZER_XML, OV_TOKENIZER_BIN = "tokenizer.openvino.xml", "tokenizer.openvino.bin"  # openvino-tokenizers
ORT_TOKENIZER = "tokenizer.onnx"  # onnxruntime-extensions
TOKENIZER_FILES = (TOKENIZER_JSON, OV_TOKENIZER_XML, OV_TOKENIZER_BIN, ORT_TOKENIZER)
DOMAIN = "ai.edgetl"  # ONNX domain of edgetl's fused ops (kernels/spec.json)
METADATA_KEY = "edgetl"  # ONNX metadata_props key holding the export record
PROBE_FILE = "probe.npz"  # an INT8 export's fidelity probe, carried into the bundle (edgetl.export.probe)
TARGETS = ("openvino", "onnxruntime", "tensorrt")  # the runtimes a model is laid out, compiled and bundled for
# ONNX ops that make a graph INT8: static QDQ, or ONNX Runtime's dynamic quantization (text encoders)
INT8_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger")
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")  # `--precision`; auto: the model's, run as the runtime prefers
# Size limits. The model's input and a camera frame are different things: the frame is resized inside the graph.
MIN_SIDE = 8  # pixels, for model inputs and frames alike
MAX_INPUT_SIDE = 4096  # `--img-size`: the backbone's input
MAX_FRAME_SIDE = 8192  # `--frame-size`: camera frames fed to a uint8-nhwc graph
MAX_BATCH = 1024  # `--max-batch` (TensorRT profile) and `edgetl bench --batch`
