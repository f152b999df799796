"""The device side: what a Jetson or NUC runs, importable without torch, timm or onnx (tested).

`targets/` compiles a fused model.onnx for one runtime (OpenVINO, ONNX Runtime, TensorRT) and loads it back;
`bundle` packs and verifies the result as one tar.gz; `predictor` is `edgetl predict` (JPEG -> label);
`onnx_safety` refuses ONNX files that would make a runtime read outside their folder; `ort_session` is the one
way an ONNX Runtime session is opened.
"""
