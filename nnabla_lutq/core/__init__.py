"""Numpy-only rules of LUT-Q: layer settings, the power-of-two rule, the host k-means step."""
from .config import LUTQConfig, make_config, pruned_count, bits_per_index
from .pow2 import pow2_round, pow2_exponent, is_pow2_array, SQRT2_ABOVE
from .kmeans import assign, kmeans_step, init_dictionary, pruned_mask, boundaries

__all__ = ['LUTQConfig', 'make_config', 'pruned_count', 'bits_per_index', 'pow2_round',
           'pow2_exponent', 'is_pow2_array', 'SQRT2_ABOVE', 'assign', 'kmeans_step',
           'init_dictionary', 'pruned_mask', 'boundaries']
