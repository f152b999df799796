"""`edgetl export`: preprocessing + backbone (FP32 or the run's INT8) + head as one ONNX graph (`model`),
assembled by `graph`, and checked stage by stage against PyTorch by `parity`."""
