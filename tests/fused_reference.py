# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""A numpy model of the fused CUDA k-means step (nnabla_lutq/kmeans/cuda/kmeans.cu), bit for bit.

Written from the kernels' description, not from their code, and independent of the package
under test (it imports nothing from ``nnabla_lutq``): the assignment is the brute-force nearest
value of :mod:`reference` (ties to the lower value, the pruned weights the smallest ``|w|`` with
ties to the lower index), the power-of-two rule is decided here by squaring the mantissa, the
per-cluster sums are taken in fixed point (``q = rint(w * 2^S)`` with ``S = 62 - e`` and
``max|w| < 2^e``), summed exactly as Python integers, and the mean is formed with the kernels'
double operations. The kernels (emulated on the CPU, or on a GPU) must reproduce it exactly;
against the float64 host step, ``A`` is identical and ``d`` within one float32 ulp.
"""
import math

import numpy as np

from reference import ref_assign


def scale_exponent(w):
    """S for a layer's weights: the fixed-point exponent of the kernels."""
    bits = int((np.asarray(w, np.float32).view(np.uint32) & 0x7fffffff).max()) if w.size else 0
    e = bits >> 23
    e = -126 if e == 0 else e - 126
    return 62 - e


def cluster_mean(total, count, s):
    """The kernels' mean of an exact fixed-point sum ``total`` (a Python int) over ``count``."""
    hi, lo = total >> 32, total & 0xffffffff  # total = hi * 2^32 + lo, 0 <= lo < 2^32
    x = np.float64(hi) * np.float64(4294967296.0) + np.float64(lo)
    return np.float32(np.ldexp(x / np.float64(count), -s))


def pow2_nearest(m, pow2_range=None):
    """``sign(m) * 2^k`` with ``k`` the exponent nearest to ``log2|m|`` (0 stays 0).

    ``|m| = f * 2^e`` with ``f`` in [1, 2): ``k = e + 1`` exactly when ``f > sqrt(2)``, i.e.
    ``f * f > 2``; ``f`` has at most 24 significant bits, so ``f * f`` is exact in float64.
    """
    m = float(np.float32(m))
    if m == 0:
        return np.float32(0)
    f, e = math.frexp(abs(m))  # f in [0.5, 1)
    f, e = 2 * f, e - 1
    k = e + 1 if f * f > 2.0 else e
    if pow2_range is not None:
        k = min(max(k, pow2_range[0]), pow2_range[1])
    return np.float32(math.copysign(math.ldexp(1.0, k), m))


def fused_step(w, d, config):
    """One iteration of the fused step.

    Args:
        w (numpy.ndarray): flat float32 weights.
        d (numpy.ndarray): float32 dictionary.
        config (LUTQConfig): the layer's configuration (only its settings are read).

    Returns:
        tuple: ``(d_new, a)`` as :func:`nnabla_lutq.core.kmeans.kmeans_step` returns them.
    """
    w = np.asarray(w, np.float32).ravel()
    d = np.asarray(d, np.float32)
    a = ref_assign(w, d, config)
    if config.kind == 'fixed':
        return d.copy(), a
    s = scale_exponent(w)
    q = np.rint(w.astype(np.float64) * np.float64(2.0) ** s).astype(np.int64)
    new = d.copy()
    if config.pruned:
        new[0] = 0.0
    for j in range(config.first_free, config.n_values):
        sel = q[a == j]
        if sel.size == 0:
            continue  # an empty cluster keeps its value, unrounded
        m = cluster_mean(sum(sel.tolist()), sel.size, s)
        if config.kind == 'pow2':
            m = pow2_nearest(m, config.pow2_range)
        new[j] = m
    return new, a
