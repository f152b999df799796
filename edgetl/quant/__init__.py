"""INT8 post-training quantization of the frozen backbone into a QDQ ONNX graph, laid out per target.

| target      | quantizer                    | layout                                                          |
|-------------|------------------------------|-----------------------------------------------------------------|
| openvino    | NNCF (ONNX backend)          | NNCF's: symmetric per-channel weights, per-tensor activations   |
| onnxruntime | onnxruntime.quantize_static  | per-channel symmetric int8 weights, uint8 activations (ORT's    |
|             |                              | fast U8S8 path), activations fused with their Conv              |
| tensorrt    | NNCF (ONNX backend), signed  | NNCF's, every activation quantizer made int8 (zero point 0):    |
|             |                              | what TensorRT's explicit quantization takes                     |

The INT8 backbone is then run by a real runtime (OpenVINO for `openvino`; ONNX Runtime for the others, the
only place the TensorRT layout's numerics can be checked on a machine without a GPU) to extract the features
the head is trained on.

Files: `backbone_onnx` (the FP32 backbone graph that is quantized), `calibration` (which training images,
their hash and checks, the ORT reader), `nncf_recipe` and `ort_recipe` (one per quantizer; `to_signed_int8` makes NNCF's graph TensorRT's), `quantize` (picks
the recipe; its source is part of the INT8 cache key), `runtime` (runs the INT8 backbone for features),
`sensitivity` (ranks layers for the FP fallback).
"""
