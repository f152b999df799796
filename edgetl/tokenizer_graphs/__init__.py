"""Tokenizers as graphs: `tokenizers` (the Hugging Face tokenizer, openvino-tokenizers conversion, shared
helpers), `ort_tokenizer` (the ONNX Runtime-extensions tokenizer graph), `bert_tables` (the tables of edgetl's
own OpenVINO BertTokenize op, measured from tokenizer.json). Below both export (which puts a tokenizer in a
text bundle) and deploy (whose OpenVINO compile wires the native op): no torch, no onnx at import."""
