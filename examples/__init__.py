# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Examples of nnabla-lutq (importable by package path: ``examples.cifar10.train``)."""
