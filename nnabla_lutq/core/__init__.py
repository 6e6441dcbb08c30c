# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Numpy-only rules of LUT-Q: layer settings, the power-of-two rule, the host k-means step,
near-optimal table fitting, the C step of learning-compression."""
from .config import LUTQConfig, make_config, pruned_count, bits_per_index
from .pow2 import pow2_round, pow2_exponent, is_pow2_array, SQRT2_ABOVE
from .kmeans import assign, kmeans_step, pruned_mask, boundaries
from .fit import init_dictionary, fit_table, table_sse
from .lc import c_step

__all__ = ['LUTQConfig', 'make_config', 'pruned_count', 'bits_per_index', 'pow2_round',
           'pow2_exponent', 'is_pow2_array', 'SQRT2_ABOVE', 'assign', 'kmeans_step',
           'init_dictionary', 'fit_table', 'table_sse', 'pruned_mask', 'boundaries', 'c_step']
