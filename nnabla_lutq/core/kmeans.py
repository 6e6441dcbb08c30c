# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The 1-D k-means step of LUT-Q on the host (numpy only), exact to the bit.

* :func:`assign` -- each weight to its nearest dictionary value (ties to the lower value; see
  :func:`assign` for equal values);
* :func:`kmeans_step` -- one iteration of the paper's step 4: assignment, then each value becomes
  the mean of its weights (float64 sums; an empty cluster keeps its value), then the constraint
  (power-of-two rounding by :mod:`nnabla_lutq.core.pow2`, the fixed zero, fixed sets).

The tables themselves start near-optimal: :mod:`nnabla_lutq.core.fit`.

The k-means update keeps the layout of ``d`` (see :mod:`nnabla_lutq.core.config`): a cluster's
mean lies between its neighbours' boundaries, so ``A`` never needs re-labelling.
"""
import numpy as np

from .pow2 import pow2_round

__all__ = ['pruned_mask', 'midpoint_thresholds', 'boundaries', 'assign', 'kmeans_step']


def pruned_mask(w, n_pruned):
    """Mask of the ``n_pruned`` smallest-|w| weights (ties to the lower flat index).

    Args:
        w (numpy.ndarray): flat float32 weights.
        n_pruned (int): how many to select.

    Returns:
        numpy.ndarray: bool mask with exactly ``n_pruned`` True entries.
    """
    mask = np.zeros(w.shape, dtype=bool)
    if n_pruned <= 0:
        return mask
    a = np.abs(w)
    t = np.partition(a, n_pruned - 1)[n_pruned - 1]
    mask = a < t
    missing = n_pruned - int(mask.sum())
    if missing:
        mask[np.flatnonzero(a == t)[:missing]] = True
    return mask


def midpoint_thresholds(lo, hi):
    """float32 thresholds b with ``w > b  <=>  w > (lo + hi) / 2`` exactly for float32 w.

    Args:
        lo, hi (numpy.ndarray): float32 values (broadcast), elementwise ``lo <= hi``.

    Returns:
        numpy.ndarray: float32 thresholds.
    """
    mid = (np.asarray(lo, np.float32).astype(np.float64)
           + np.asarray(hi, np.float32).astype(np.float64)) * 0.5  # exact in float64
    b = np.atleast_1d(mid.astype(np.float32))
    up = b.astype(np.float64) > mid
    b[up] = np.nextafter(b[up], np.float32(-np.inf))
    return b


def boundaries(values):
    """float32 thresholds b with ``w > b_k  <=>  w > (v_k + v_{k+1}) / 2`` exactly for float32 w."""
    v = np.asarray(values, np.float32)
    return midpoint_thresholds(v[:-1], v[1:])


def assign(w, d, config):
    """Assign each weight to its nearest dictionary value (ties to the lower value).

    A weight exactly halfway between two different values goes to the lower one. Among equal
    values (two means rounded to the same power of two, say) a weight at or below them goes to
    the first of the run and a weight above them to the last, which keeps ``d`` sorted after the
    means are recomputed and lets duplicated values separate again.

    Args:
        w (numpy.ndarray): flat float32 weights.
        d (numpy.ndarray): the dictionary in the layout described in the module docstring.
        config (LUTQConfig): the layer's configuration.

    Returns:
        numpy.ndarray: int32 indices into ``d``, shape of ``w``.
    """
    return _assign(w, d, config).astype(np.int32)


def _assign(w, d, config):
    """:func:`assign` with native integer indices (what ``np.bincount`` takes without a copy)."""
    first = config.first_free
    b = boundaries(np.asarray(d, dtype=np.float32)[first:])
    a = np.searchsorted(b, w, side='left')
    if first:
        a += 1
        a[pruned_mask(w, config.n_pruned)] = 0
    return a


def _means(w, a, d, config):
    """New dictionary from an assignment: cluster means (float64 sums), constraint applied."""
    d = np.asarray(d, dtype=np.float32)
    if config.kind == 'fixed':
        return d.copy()
    k = config.n_values
    counts = np.bincount(a, minlength=k)
    sums = np.bincount(a, weights=w, minlength=k)
    empty = counts == 0
    new = np.divide(sums, counts, out=d.astype(np.float64), where=~empty).astype(np.float32)
    if config.kind == 'pow2':
        new = pow2_round(new, config.pow2_range)
        new[empty] = d[empty]  # an empty cluster keeps its value, unrounded
    if config.pruned:
        new[0] = 0.0
    return new


def kmeans_step(w, d, config):
    """One LUT-Q k-means iteration (the paper's step 4) on the host.

    Args:
        w (numpy.ndarray): flat float32 weights.
        d (numpy.ndarray): current dictionary (K,).
        config (LUTQConfig): the layer's configuration.

    Returns:
        tuple: ``(d_new, a)`` -- the new float32 dictionary and the int32 assignment that was made
        *before* the means were recomputed.
    """
    a = _assign(w, d, config)
    return _means(w, a, d, config), a.astype(np.int32)
