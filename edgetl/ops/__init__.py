"""edgetl's fused ops (`Preprocess`, `PoolHead`): NumPy references, ONNX functions, native kernel loading.

Each op is defined once under `kernels/<op>/` (spec.json, CPU/CUDA kernels, OpenVINO op, TensorRT plugin).
Here: `reference` (the semantics, NumPy), `onnx_functions` (custom-domain nodes that carry their decomposition
into standard ONNX ops, so any runtime runs them), `native` (paths to the built libraries; import never fails),
`build` (`python -m edgetl.ops.build`, what `make kernels` runs).
"""
