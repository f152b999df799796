"""Torch modules shared by training and export: `backbones/` (timm images, MiniLM sentences, tiny test models,
BatchNorm folding) and `heads` (linear / MLP heads and their safetensors files). Layer 6 of the order in
`tests/test_layers.py`: below data, export, quant and train; above the device side."""
