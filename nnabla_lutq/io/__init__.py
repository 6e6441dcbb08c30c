"""Files: .nnp read/write and rewrites, export, the packed .lutq format, post-training
quantization of an .nnp, ONNX."""
