"""edgetl: transfer learning for the edge (frozen INT8 backbone, cached features, fused ONNX, compiled targets)."""

__version__ = "0.1.0"
