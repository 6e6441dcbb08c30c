# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""ImageNet ResNet-18/34/50 with LUT-Q (Table 2 of the paper)."""
