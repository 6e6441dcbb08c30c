# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Analysis of LUT-Q networks: the per-layer memory and multiplication report, the footprint."""
from .report import report, Report, LayerRecord
from .footprint import footprint

__all__ = ['report', 'Report', 'LayerRecord', 'footprint']
