"""A numpy model of the fused CUDA k-means step (nnabla_lutq/kmeans/cuda/kmeans.cu), bit for bit.

Written from the kernels' description, not from their code: the same exact boundaries and
power-of-two rule as the host step (:mod:`nnabla_lutq.core`), per-cluster sums in fixed point
(``q = rint(w * 2^S)`` with ``S = 62 - e`` and ``max|w| < 2^e``), summed exactly as Python
integers, and the mean formed with the kernels' double operations. The kernels (emulated on the
CPU, or on a GPU) must reproduce it exactly; against the float64 host step, ``A`` is identical and
``d`` within one float32 ulp.
"""
import numpy as np

from nnabla_lutq.core.kmeans import assign, boundaries
from nnabla_lutq.core.pow2 import pow2_round


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


def fused_step(w, d, config):
    """One iteration of the fused step.

    Args:
        w (numpy.ndarray): flat float32 weights.
        d (numpy.ndarray): float32 dictionary.
        config (LUTQConfig): the layer's configuration.

    Returns:
        tuple: ``(d_new, a)`` as :func:`nnabla_lutq.core.kmeans.kmeans_step` returns them.
    """
    w = np.asarray(w, np.float32).ravel()
    d = np.asarray(d, np.float32)
    if config.pruned:  # the pruned set is the host's (smallest |w|, ties to the lower index)
        a = assign(w, d, config)
    else:
        a = np.searchsorted(boundaries(d), w, side='left').astype(np.int32)
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
            m = pow2_round(np.array([m]), config.pow2_range)[0]
        new[j] = m
    return new, a
