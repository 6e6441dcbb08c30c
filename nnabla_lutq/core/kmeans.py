# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The 1-D k-means step of LUT-Q on the host (numpy only), exact to the bit.

* :func:`assign` -- each weight to its nearest dictionary value (ties to the lower value; see
  :func:`assign` for equal values);
* :func:`kmeans_step` -- one iteration of the paper's step 4: assignment, then each value becomes
  the mean of its weights (float64 sums; an empty cluster keeps its value), then the constraint
  (power-of-two rounding by :mod:`nnabla_lutq.core.pow2`, the fixed zero, fixed sets).

The tables themselves start near-optimal: :mod:`nnabla_lutq.core.fit`.

With up to :data:`COUNT_MAX` thresholds (K <= 33) a weight's index is the number of thresholds
below it, counted by one comparison pass over the weights per threshold: exactly the binary
search's result (``searchsorted(..., side='left')``) at about a quarter of its time for K = 16,
which halves the whole step there (the sums and counts are the same ``bincount`` as before, so
the tables are bit-identical).

The k-means update keeps the layout of ``d`` (see :mod:`nnabla_lutq.core.config`): a cluster's
mean lies between its neighbours' boundaries, so ``A`` never needs re-labelling.

Grouped tables (``config.group_size``) run the same rules on every group in one pass, without a
loop over groups: the thresholds of all groups are searched at once (each float32 mapped to an
order-preserving integer and offset by its group), the sums and counts of all groups come from one
``bincount``, pruning selects each group's smallest ``|W|`` by one partition along the rows. The
results equal the one-table step run on each group's weights (:meth:`LUTQConfig.group_view`)
bit for bit.
"""
import numpy as np

from .pow2 import pow2_round
from .threads import cores, run_parts

__all__ = ['pruned_mask', 'pruned_rows', 'midpoint_thresholds', 'boundaries', 'assign',
           'kmeans_step']


def pruned_mask(w, n_pruned):
    """Mask of the ``n_pruned`` smallest-|w| weights (ties to the lower flat index).

    Args:
        w (numpy.ndarray): flat float32 weights.
        n_pruned (int): how many to select.

    Returns:
        numpy.ndarray: bool mask with exactly ``n_pruned`` True entries.
    """
    return pruned_rows(np.reshape(w, (1, -1)), n_pruned).reshape(np.shape(w))


def pruned_rows(w, n_pruned):
    """The ``n_pruned`` smallest-|w| weights of every row of a 2-D array at once (ties to the
    lower index).

    Args:
        w (numpy.ndarray): ``(G, m)`` float32 weights.
        n_pruned (int): how many to select in each row.

    Returns:
        numpy.ndarray: bool mask with exactly ``n_pruned`` True entries per row.
    """
    if n_pruned <= 0:
        return np.zeros(w.shape, dtype=bool)
    a = np.abs(w)
    t = np.partition(a, n_pruned - 1, axis=1)[:, n_pruned - 1:n_pruned]
    mask = a < t
    missing = n_pruned - mask.sum(axis=1)
    ties = np.flatnonzero(a == t)  # row-major: the ties of a row before those of the next
    rows = ties // a.shape[1]
    rank = np.arange(ties.size) - np.searchsorted(rows, rows, side='left')  # within the row
    mask.ravel()[ties[rank < missing[rows]]] = True  # the first ``missing`` ties of each row
    return mask


def _ordered_keys(x, rows, canonical_zero=False):
    """int64 keys ordering float32 ``x`` (2-D, finite) first by row, then by value, exactly.

    The float32 bits, read as int32, become an integer of the same order (the low 31 bits of a
    negative value flipped) and the row index is put above them, so one sorted search serves
    every row. -0 gets a key below +0; with ``canonical_zero`` (for the thresholds) -0 is made +0
    first, after which every comparison of a weight with a threshold equals the float one."""
    x = np.ascontiguousarray(x, np.float32)
    if canonical_zero:
        x = x + np.float32(0.0)  # -0 + 0 = +0
    u = x.view(np.int32)
    k = u >> 31
    k &= np.int32(0x7FFFFFFF)
    k ^= u
    out = k.astype(np.int64)
    out += (np.arange(rows, dtype=np.int64)[:, None] << 32) + (1 << 31)
    return out


#: up to this many thresholds a weight's index is counted by comparisons (one fast pass per
#: threshold), above it found by a binary search
COUNT_MAX = 32


def _count_below(w, b):
    """``searchsorted(b[g], w[g], side='left')`` of every row for few thresholds: the number of
    thresholds below each weight, ``nb`` minus those at or above it, counted by one comparison
    pass per threshold (about four times faster than the binary search at 15 thresholds, and
    equal to it exactly, NaN included: no threshold is at or above a NaN, which goes last).

    Args:
        w (numpy.ndarray): ``(G, m)`` float32 weights.
        b (numpy.ndarray): ``(G, nb)`` float32 thresholds, each row ascending (nb <= 255).

    Returns:
        numpy.ndarray: ``(G, m)`` uint8 counts.
    """
    c = np.empty(w.shape, np.uint8)
    # integer counts: the same result whatever the split
    run_parts(lambda s: _count_part(w[s], b[s[:1]], c[s]), _halves(w.shape))
    return c


def _count_part(w, b, c):
    """:func:`_count_below` of one part, written into ``c``."""
    c[...] = 0
    t = np.empty(w.shape, bool)
    for k in range(b.shape[1]):
        np.less_equal(w, b[:, k:k + 1], out=t)
        c += t.view(np.uint8)
    np.subtract(np.uint8(b.shape[1]), c, out=c)


#: from this many weights on, the comparison passes run on two threads (numpy releases the
#: interpreter lock in them; nnabla's CPU backend leaves the second core idle meanwhile)
PARALLEL_MIN = 1 << 18

def _halves(shape):
    """Index tuples splitting a ``(G, m)`` array in two (by rows when there are several, else by
    columns) for two threads, or one part for small arrays or one core."""
    g, m = shape
    if g * m < PARALLEL_MIN or cores() < 2:
        return [(slice(None), slice(None))]
    if g > 1:
        return [(slice(0, g // 2), slice(None)), (slice(g // 2, g), slice(None))]
    return [(slice(None), slice(0, m // 2)), (slice(None), slice(m // 2, m))]


def _search_rows(w, b):
    """``searchsorted(b[g], w[g], side='left')`` of every row ``g`` of ``w`` ``(G, m)`` against
    its thresholds ``b`` ``(G, nb)``, as native integers: counted by comparisons for few
    thresholds (float32 weights), one binary search for one row, else one search of all rows'
    order-preserving integer keys."""
    g, n_b = b.shape
    if n_b <= COUNT_MAX and w.dtype == np.float32:
        return _count_below(w, b).astype(np.intp)
    if g == 1:
        return np.searchsorted(b[0], w[0], side='left')[None]
    a = np.searchsorted(_ordered_keys(b, g, canonical_zero=True).ravel(), _ordered_keys(w, g),
                        side='left')
    a -= np.arange(g, dtype=a.dtype)[:, None] * n_b
    return a


def _assign_rows(w, d, config):
    """:func:`_assign` of every row (group) at once: ``w`` ``(G, m)``, ``d`` ``(G, K)``."""
    first = config.first_free
    a = _search_rows(w, midpoint_thresholds(d[:, first:-1], d[:, first + 1:]))
    if first:
        a += 1
        a[pruned_rows(w, config.n_pruned)] = 0
    return a


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
        w (numpy.ndarray): float32 weights (flat; with grouped tables flat in the layer's order
            or of the shape of ``W``).
        d (numpy.ndarray): the dictionary in the layout described in the module docstring
            (``(n_groups, K)`` with grouped tables).
        config (LUTQConfig): the layer's configuration.

    Returns:
        numpy.ndarray: int32 indices into ``d`` (into each group's row), shape of ``w``.
    """
    return _assign(w, d, config).astype(np.int32)


def _assign(w, d, config):
    """:func:`assign` with native integer indices (what ``np.bincount`` takes without a copy)."""
    if config.group_size is not None:
        rows = _assign_rows(config.group_view(np.asarray(w, np.float32)),
                            np.asarray(d, np.float32).reshape(config.n_groups, -1), config)
        return config.layer_order(rows).reshape(np.shape(w))
    w = np.asarray(w)
    return _assign_rows(w.reshape(1, -1), np.asarray(d, np.float32).reshape(1, -1),
                        config).reshape(w.shape)


def _means(w, a, d, config):
    """New dictionary from an assignment: cluster means (float64 sums), constraint applied."""
    d = np.asarray(d, dtype=np.float32)
    if config.kind == 'fixed':
        return d.copy()
    k = config.n_values
    if config.group_size is not None:  # rows of groups: one bincount over every group's K bins
        g = config.n_groups
        a = a + np.arange(g, dtype=a.dtype)[:, None] * k
        k = g * k
    counts = np.bincount(a.ravel(), minlength=k).reshape(d.shape)
    sums = np.bincount(a.ravel(), weights=w.ravel(), minlength=k).reshape(d.shape)
    empty = counts == 0
    new = np.divide(sums, counts, out=d.astype(np.float64), where=~empty).astype(np.float32)
    if config.kind == 'pow2':
        new = pow2_round(new, config.pow2_range)
        new[empty] = d[empty]  # an empty cluster keeps its value, unrounded
    if config.pruned:
        new[..., 0] = 0.0
    return new


def kmeans_step(w, d, config):
    """One LUT-Q k-means iteration (the paper's step 4) on the host.

    Args:
        w (numpy.ndarray): flat float32 weights (with grouped tables: flat in the layer's order,
            or of the shape of ``W``).
        d (numpy.ndarray): current dictionary (K,), or ``(n_groups, K)``.
        config (LUTQConfig): the layer's configuration.

    Returns:
        tuple: ``(d_new, a)`` -- the new float32 dictionary and the int32 assignment that was made
        *before* the means were recomputed (shape of ``w``).
    """
    if config.group_size is not None:
        wg = config.group_view(np.asarray(w, np.float32))
        d = np.asarray(d, np.float32).reshape(config.n_groups, -1)
        a = _assign_rows(wg, d, config)
        return _means(wg, a, d, config), config.layer_order(a.astype(np.int32)).reshape(np.shape(w))
    a = _assign(w, d, config)
    return _means(w, a, d, config), a.astype(np.int32)
