# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Files: .nnp read/write and rewrites, export, the packed .lutq format, post-training
quantization of an .nnp, ONNX."""
