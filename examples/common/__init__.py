# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Code shared by the nnabla-lutq examples (configurations, image data, the training loop).

The examples put their parent folder on ``sys.path`` and import ``common``; an ImageNet example
uses the same configuration names, data helpers and training loop as the CIFAR-10 one.
"""
