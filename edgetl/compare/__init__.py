"""Side-by-side comparisons with what a user would write by hand: `peers` (`bench --peers`: PyTorch eager,
ONNX Runtime, OpenVINO and NNCF pipelines of the same model). Above train: it rebuilds models with the
training stack, so the device-side `bench/` never imports it."""
