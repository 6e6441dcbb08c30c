# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The C step of learning-compression (LC) quantization, in numpy (exact).

Carreira-Perpiñán & Idelbayev, "Model compression as constrained optimization, with application
to neural nets. Part II: quantization" (arXiv:1707.04319): the C step finds, for one layer, the
table ``d`` and assignment ``A`` that minimize ``||v - d[A]||²`` under the layer's constraints,
where ``v = W - lambda/mu``. :class:`nnabla_lutq.LCSolver` runs it on every LUT-Q layer.
"""
import numpy as np

from .fit import SortedWeights, lloyd_sorted
from .kmeans import assign, kmeans_step, pruned_mask

__all__ = ['c_step']


def _scaled_fixed(v, d, config, max_iters):
    """``(a·c, A)`` minimizing ``||v - a·c[A]||²`` over the scale ``a > 0`` and ``A``.

    ``c`` are the configured fixed values. Exact closed forms for ``±c0`` (``a·c0 = mean |v|``)
    and ``{-c0, 0, c0}`` (the ``j`` largest ``|v|`` take ``±a``, ``j`` maximizing
    ``(sum of them)²/j``, ``a·c0`` their mean |v|), both from the paper; other sets alternate
    ``A`` and the least-squares ``a`` to a fixed point. Pruned weights stay at the fixed 0.
    """
    c = np.asarray(config.fixed_values, np.float64)
    first = config.first_free
    keep = ~pruned_mask(v, config.n_pruned) if first else np.ones(v.size, bool)
    r = np.abs(v[keep].astype(np.float64))
    free = c[first:]
    c0 = np.max(np.abs(free))
    sym = np.sort(free)
    current = np.asarray(d, np.float64)[np.argmax(np.abs(c))] / c[np.argmax(np.abs(c))]
    if np.array_equal(sym, [-c0, c0]):
        a = r.mean() / c0
    elif np.array_equal(sym, [-c0, 0.0, c0]):
        top = np.cumsum(np.sort(r)[::-1])
        j = int(np.argmax(top ** 2 / np.arange(1, top.size + 1)))
        a = top[j] / (j + 1) / c0
    else:
        a = current if current > 0 else 1.0
        prev = None
        for _ in range(max_iters):
            A = assign(v, (a * c).astype(np.float32), config)
            if prev is not None and np.array_equal(A, prev):
                break
            ca = c[A][keep]
            den = float(np.dot(ca, ca))
            a = float(np.dot(v[keep].astype(np.float64), ca)) / den if den > 0 else a
            prev = A
    if not (a > 0 and np.isfinite(a)):  # all weights 0 (or pruned): keep the current scale
        a = current if current > 0 else 1.0
    new = (a * c).astype(np.float32)
    return new, assign(v, new, config)


def c_step(v, d, config, learn_scale=False, max_iters=10000):
    """The C step of one layer: the best table and assignment for the float vector ``v``.

    * ``'free'`` / ``'pow2'`` dictionaries (with or without pruning): k-means to convergence,
      warm-started from ``d``: Lloyd iterations with the layer's constraints (the ceil(p·N)
      smallest ``|v|`` at the fixed 0, means rounded to powers of two) until the table no longer
      changes, i.e. every value is the (constrained) mean of its weights and every weight is at
      its nearest value. A fast phase on the sorted weights is followed by the exact step
      :func:`~nnabla_lutq.core.kmeans.kmeans_step`, so the fixed point is the exact one.
    * fixed dictionaries: the nearest value (:func:`~nnabla_lutq.core.kmeans.assign`); with
      ``learn_scale`` the values are ``a·c`` with the best scale ``a > 0`` (see the paper's
      scaled binarization and ternarization).

    With grouped tables (``config.group_size``) each group gets its own C step (a fixed set with
    ``learn_scale``: one scale per group).

    Args:
        v (numpy.ndarray): the layer's ``W - lambda/mu`` (any shape; flattened, float32).
        d (numpy.ndarray): the current table (K,) or ``(n_groups, K)``, the warm start.
        config (LUTQConfig): the layer's settings.
        learn_scale (bool): fit a scale of a fixed dictionary.
        max_iters (int): bound on the Lloyd iterations of each phase.

    Returns:
        tuple: ``(d, A, converged)`` -- float32 (K,), int32 of ``v``'s shape, and whether a fixed
        point was reached within ``max_iters`` (a cycle of the rounded pow-2 means also stops it).
    """
    shape = np.shape(v)
    v = np.ascontiguousarray(v, dtype=np.float32).ravel()
    d = np.asarray(d, np.float32)
    if config.group_size is not None:
        return _c_step_groups(v, d, config, learn_scale, max_iters, shape)
    if config.kind == 'fixed':
        if learn_scale:
            new, a = _scaled_fixed(v, d, config, max_iters)
        else:
            new = np.asarray(config.fixed_values, np.float32)
            a = assign(v, new, config)
        return new, a.reshape(shape), True
    first = config.first_free
    rest = v[~pruned_mask(v, config.n_pruned)] if first else v
    d = d.astype(np.float32).copy()
    d[first:] = lloyd_sorted(SortedWeights(rest), d[first:], max_iters, config.pow2_range,
                             config.kind == 'pow2')
    seen = {d.tobytes()}
    converged = False
    for _ in range(max_iters):
        new, _ = kmeans_step(v, d, config)
        if np.array_equal(new, d):
            converged = True
            break
        if new.tobytes() in seen:  # a cycle of rounded means: stop where it closes
            d = new
            break
        seen.add(new.tobytes())
        d = new
    return d, assign(v, d, config).reshape(shape), converged


def _c_step_groups(v, d, config, learn_scale, max_iters, shape):
    """:func:`c_step` of each group of a grouped layer, as a layer of its own."""
    one = config.one_group()
    rows = config.group_view(v)
    d = d.reshape(config.table_shape)
    new = np.empty(config.table_shape, np.float32)
    a = np.empty(rows.shape, np.int32)
    converged = True
    for g in range(config.n_groups):
        new[g], a[g], ok = c_step(rows[g], d[g], one, learn_scale, max_iters)
        converged = converged and ok
    return new, config.layer_order(a).reshape(shape), converged
