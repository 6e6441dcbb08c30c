# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Near-optimal look-up tables: exact 1-D k-means by dynamic programming, with LUT-Q's constraints.

A LUT-Q table ``d`` with its assignment ``A`` minimizes ``||W - d[A]||²`` (the sum of squared
errors, SSE) over the values allowed by the layer's constraint. In one dimension the clusters of
an optimal table are contiguous runs of the sorted weights, so the free problem has an exact
solution by dynamic programming over the sorted values (Bellman; Wang & Song, "Ckmeans.1d.dp").
This module computes it with numpy only:

* :func:`chain_min` -- the DP itself: the cheapest choice of one candidate per row under
  pairwise costs, one vectorized min-plus step per row;
* :func:`fit_free` -- free values: the exact optimum over cuts at :data:`DP_BINS` bin edges of
  the sorted weights (every weight when there are fewer; else cut by count and by value, so heavy
  tails keep their resolution) for K <= :data:`DENSE_MAX_K`; for larger K the high-resolution
  spacing refined by exact DPs over bands around each cut; then Lloyd iterations on the exact
  prefix sums to a fixed point;
* :func:`fit_pow2` -- power-of-two values: the exact optimum over every set of K distinct values
  ``±2^e`` (within ``pow2_range``, or the 2 x ``max(32, K)`` values below the largest weight), by
  a DP over the sorted candidates;
* :func:`fit_table` -- ``(d, A)`` for any :class:`~nnabla_lutq.core.config.LUTQConfig`: pruning
  ties exactly the ceil(p·N) smallest ``|W|`` to the fixed 0 and fits the other K-1 values
  optimally to the rest; fixed sets get the nearest-value assignment.

Every table of the package starts here (layer creation, ``initialize()``, conversion,
post-training quantization, the LC solver's direct compression). The values keep the layout of
:mod:`nnabla_lutq.core.config`; ``A`` is :func:`~nnabla_lutq.core.kmeans.assign`'s nearest-value
assignment, so ``d[A]`` is exactly what the layer computes.
"""
import numpy as np

from .checks import all_finite, check_finite, is_integer
from .kmeans import assign, pruned_mask, midpoint_thresholds
from .pow2 import pow2_exponent, pow2_round

__all__ = ['SortedWeights', 'chain_min', 'fit_free', 'fit_pow2', 'lloyd_sorted', 'fit_table',
           'init_dictionary', 'lloyd_bound', 'table_sse']

#: Bin edges of the dense DP of a free table (exact below this many weights): O(K·bins²).
DP_BINS = 256
#: Largest K fitted by the dense DP; larger tables refine the cuts in bands.
DENSE_MAX_K = 32
#: The banded refinement of a large table, coarse to fine: (bins, half-width of a band in bins,
#: bound on the passes) per resolution.
BANDS = ((1024, 8, 30), (8192, 8, 10))


class SortedWeights:
    """Sorted values with prefix sums of their weights, weighted values and squares.

    ``sse(lo, hi, c)`` is the exact (up to float64 rounding) weighted SSE of the sorted values
    ``[lo, hi)`` at the value ``c``; the prefix sums are of the values minus their mean, which
    keeps the cancellation in ``sum x² - (sum x)²/n`` small.

    Args:
        w (numpy.ndarray): values (any shape; flattened to float32).
        weight (numpy.ndarray or None): non-negative importance of each value (same size), or
            None for 1 each.
    """

    def __init__(self, w, weight=None):
        w = np.ascontiguousarray(w, dtype=np.float32).ravel()
        order = np.argsort(w, kind='stable') if weight is not None else None
        self.s = w[order] if order is not None else np.sort(w)
        x = self.s.astype(np.float64)
        if weight is None:
            self.c = np.arange(x.size + 1, dtype=np.float64)
            self.shift = float(x.mean()) if x.size else 0.0
            x -= self.shift
            self.s1 = _prefix(x)
            self.s2 = _prefix(x * x)
        else:
            v = np.ascontiguousarray(weight, dtype=np.float64).ravel()[order]
            self.c = _prefix(v)
            total = self.c[-1]
            self.shift = float(np.dot(v, x) / total) if total > 0 else 0.0
            x -= self.shift
            vx = v * x
            self.s1 = _prefix(vx)
            self.s2 = _prefix(vx * x)

    @property
    def n(self):
        """int: the number of values."""
        return self.s.size

    def counts(self, positions):
        """Positions (indices into the sorted values) of the float32 thresholds ``b``: the
        number of values ``<= b``, i.e. the values that go to the lower of two neighbours."""
        return np.searchsorted(self.s, positions, side='right')

    def sse(self, lo, hi, c):
        """Weighted SSE of the sorted values ``[lo, hi)`` at the value(s) ``c`` (broadcast)."""
        c = np.asarray(c, np.float64) - self.shift
        n = self.c[hi] - self.c[lo]
        s1 = self.s1[hi] - self.s1[lo]
        s2 = self.s2[hi] - self.s2[lo]
        return np.maximum(s2 - 2.0 * c * s1 + c * c * n, 0.0)

    def means(self, lo, hi, empty):
        """Weighted means of ``[lo, hi)`` (float64; ``empty`` where a run has no weight)."""
        n = self.c[hi] - self.c[lo]
        s1 = self.s1[hi] - self.s1[lo]
        ok = n > 0
        out = np.where(ok, 0.0, empty).astype(np.float64)
        np.divide(s1, n, out=out, where=ok)
        out[ok] += self.shift
        return out


def _prefix(x):
    out = np.empty(x.size + 1, np.float64)
    out[0] = 0.0
    np.cumsum(x, out=out[1:])
    return out


def _bin_cost(c, s1, s2, j, i):
    """SSE of bins ``[j, i)`` at their mean, from prefix arrays (j < i elementwise)."""
    n = c[i] - c[j]
    t = s1[i] - s1[j]
    with np.errstate(divide='ignore', invalid='ignore'):
        v = (s2[i] - s2[j]) - np.where(n > 0, t * t / n, 0.0)
    return np.maximum(v, 0.0)


def chain_min(first, pair, last, rows):
    """The cheapest chain of one candidate per row: the dynamic program behind every fit.

    Each of ``rows`` rows offers ``w`` candidates; choosing ``x_0, ..., x_{rows-1}`` costs
    ``first[x_0] + sum_r pair[r][x_r, x_{r+1}] + last[x_{rows-1}]``. Solved exactly by one
    vectorized min-plus step per row, O(rows·w²); ties go to the lowest candidate.

    Args:
        first (numpy.ndarray): (w,) cost of each candidate of row 0 (inf: not allowed).
        pair (numpy.ndarray): (rows-1, w, w) transition costs, or (1, w, w) shared by all rows.
        last (numpy.ndarray): (w,) cost of each candidate of the last row.
        rows (int): the number of rows, >= 1.

    Returns:
        tuple: ``(pick, total)`` -- int64 (rows,) chosen candidate per row and the minimum cost.
    """
    f = np.asarray(first, np.float64)
    cols = np.arange(f.size)
    args = np.empty((max(rows - 1, 0), f.size), np.int64)
    for r in range(rows - 1):
        t = f[:, None] + pair[r if pair.shape[0] > 1 else 0]
        args[r] = np.argmin(t, axis=0)
        f = t[args[r], cols]
    tot = f + last
    pick = np.empty(rows, np.int64)
    pick[-1] = np.argmin(tot)
    for r in range(rows - 2, -1, -1):
        pick[r] = args[r, pick[r + 1]]
    return pick, float(tot[pick[-1]])


def _cuts_dp(c, s1, s2, cand, rows):
    """Best interior cuts of bins (prefix arrays ``c, s1, s2``) among candidate bin positions.

    Args:
        c, s1, s2 (numpy.ndarray): prefix sums at the bin edges (B + 1 each).
        cand (numpy.ndarray): (rows, w) candidate positions of each interior cut, or (1, w)
            shared by all; a cut ``x`` ends a group at bin ``x``; positions outside
            ``[1, B - 1]`` are not allowed.
        rows (int): the number of interior cuts, K - 1 >= 1.

    Returns:
        numpy.ndarray: int64 cuts ``0 < ... < B`` including both ends (K + 1).
    """
    b = c.size - 1
    ok = (cand >= 1) & (cand <= b - 1)
    x = np.where(ok, cand, 1)
    first = np.where(ok[0], _bin_cost(c, s1, s2, np.zeros_like(x[0]), x[0]), np.inf)
    last = np.where(ok[-1], _bin_cost(c, s1, s2, x[-1], np.full_like(x[-1], b)), np.inf)
    lo, hi = (x, x) if len(x) == 1 else (x[:-1], x[1:])
    oklo, okhi = (ok, ok) if len(x) == 1 else (ok[:-1], ok[1:])
    lo, hi = lo[:, :, None], hi[:, None, :]
    valid = oklo[:, :, None] & okhi[:, None, :] & (lo < hi)
    pair = np.where(valid, _bin_cost(c, s1, s2, np.minimum(lo, hi), hi), np.inf)
    pick, _ = chain_min(first, pair, last, rows)
    chosen = x[np.arange(rows) if len(x) > 1 else np.zeros(rows, np.int64), pick]
    return np.concatenate([[0], chosen, [b]])


def _bin_edges(sw, max_bins):
    """Positions cutting the sorted values into at most about ``max_bins`` runs: every value when
    they are few; else half the cuts at equal counts and half at equal value steps, so that
    sparse tails are resolved as finely as the dense centre."""
    n = sw.n
    if n <= max_bins:
        return np.arange(n + 1)
    half = max_bins // 2
    by_count = np.linspace(0, n, half + 1).round().astype(np.int64)
    grid = np.linspace(float(sw.s[0]), float(sw.s[-1]), half + 1)[1:-1]
    by_value = np.searchsorted(sw.s, grid.astype(np.float32), side='right')
    return np.unique(np.concatenate([by_count, by_value, [0, n]]))


def lloyd_sorted(sw, d, max_iters=1000, pow2_range=None, pow2=False):
    """Lloyd iterations on the sorted values to a fixed point, O(K log N) each.

    The clusters are the runs between the float32 midpoint thresholds of
    :func:`~nnabla_lutq.core.kmeans.assign` (ties to the lower value), their weighted means come
    from the prefix sums; an empty cluster keeps its value. With ``pow2`` the means are rounded to
    powers of two (a cycle of rounded means also ends the iterations).

    Args:
        sw (SortedWeights): the values the table is fitted to.
        d (numpy.ndarray): sorted float32 start values.
        max_iters (int): bound on the iterations.
        pow2_range (tuple or None): exponent clip of the pow-2 rounding.
        pow2 (bool): round the means to powers of two.

    Returns:
        numpy.ndarray: float32 sorted values.
    """
    d = np.asarray(d, np.float32).copy()
    seen = set()
    for _ in range(max_iters):
        pos = np.concatenate([[0], sw.counts(midpoint_thresholds(d[:-1], d[1:])), [sw.n]])
        new = sw.means(pos[:-1], pos[1:], d).astype(np.float32)
        if pow2:
            empty = sw.c[pos[1:]] - sw.c[pos[:-1]] <= 0
            new = np.where(empty, d, pow2_round(new, pow2_range)).astype(np.float32)
        if np.array_equal(new, d) or new.tobytes() in seen:
            return new
        seen.add(d.tobytes())
        d = new
    return d


def _compand_start(sw, k, edges):
    """K values spaced by the high-resolution optimum: point density ``p^(1/3)`` (Panter & Dite),
    from the bins ``edges`` of the sorted values."""
    lo = sw.s[edges[:-1]].astype(np.float64)
    hi = sw.s[np.minimum(edges[1:], sw.n - 1)].astype(np.float64)  # the next bin's first value
    width = np.maximum(hi - lo, 0.0)
    mass = np.cbrt(np.diff(sw.c[edges])) * np.cbrt(width) ** 2 + 1e-300
    cm = np.concatenate([[0.0], np.cumsum(mass)])
    t = (np.arange(k) + 0.5) / k * cm[-1]
    i = np.clip(np.searchsorted(cm, t, side='right') - 1, 0, width.size - 1)
    return (lo[i] + (t - cm[i]) / mass[i] * width[i]).astype(np.float32)


def _increasing(x, b):
    """Interior cut positions made strictly increasing within ``[1, b - 1]`` (one bin each)."""
    r = np.arange(x.size)
    y = np.clip(np.maximum.accumulate(np.asarray(x, np.int64) - r), 1, b - x.size)
    return y + r


def _value_cuts(sw, edges, d):
    """Bin positions nearest to where the sorted values of ``d``'s clusters end."""
    pos = sw.counts(midpoint_thresholds(d[:-1], d[1:]))
    return _increasing(np.searchsorted(edges, pos), edges.size - 1)


def fit_free(sw, k, lloyd_iters=1000):
    """Free values: an exact DP on bins, refined, then Lloyd iterations on the exact sums.

    * ``k <= DENSE_MAX_K``: the exact optimum over cuts at :data:`DP_BINS` bin edges (every value
      when there are fewer), one dense DP;
    * larger ``k``: the high-resolution spacing ``p^(1/3)``, then the exact optimum of every cut
      within a band of bins around its place, repeated until no cut moves, on coarse and then
      fine bins (:data:`BANDS`);
    * then Lloyd iterations on the sorted values (each cut moves to the exact midpoint).

    Args:
        sw (SortedWeights): the values the table is fitted to (at least ``k`` of them).
        k (int): the number of values.
        lloyd_iters (int): bound on the Lloyd iterations after the DP (0: none).

    Returns:
        numpy.ndarray: float32 sorted values (K,).
    """
    if k == 1:
        return sw.means(np.array([0]), np.array([sw.n]), 0.0).astype(np.float32)
    if k <= DENSE_MAX_K:
        e = _bin_edges(sw, max(DP_BINS, 8 * k))
        cand = np.arange(e.size)[None, :]
        cuts = e[_cuts_dp(sw.c[e], sw.s1[e], sw.s2[e], cand, k - 1)]
    else:
        for i, (bins, half, passes) in enumerate(BANDS):
            e = _bin_edges(sw, max(bins, 4 * k))
            if i == 0:
                x = _value_cuts(sw, e, _compand_start(sw, k, e))
            else:
                x = _increasing(np.searchsorted(e, cuts[1:-1]), e.size - 1)
            c, s1, s2 = sw.c[e], sw.s1[e], sw.s2[e]
            for _ in range(passes):
                new = _cuts_dp(c, s1, s2, x[:, None] + np.arange(-half, half + 1), k - 1)[1:-1]
                if np.array_equal(new, x):
                    break
                x = new
            cuts = e[np.concatenate([[0], x, [e.size - 1]])]
    d = sw.means(cuts[:-1], cuts[1:], 0.0).astype(np.float32)
    d = np.maximum.accumulate(d)  # float32 rounding of equal means must not unsort them
    return lloyd_sorted(sw, d, lloyd_iters) if lloyd_iters else d


def _pow2_candidates(sw, k, pow2_range):
    """Sorted candidate values ``±2^e``: every exponent of ``pow2_range``, or the ``max(32, k)``
    exponents up to the one nearest to the largest ``|w|`` (no weight is nearer a larger one)."""
    if pow2_range is not None:
        e = np.arange(pow2_range[0], pow2_range[1] + 1)
    else:
        big = max(abs(float(sw.s[0])), abs(float(sw.s[-1])))
        top = int(pow2_exponent(np.float32(big))) if big > 0 else 0
        e = np.arange(max(top - max(32, k) + 1, -149), top + 1)
    v = np.ldexp(1.0, e).astype(np.float32)
    return np.concatenate([-v[::-1], v])


def fit_pow2(sw, k, pow2_range=None):
    """The best set of ``k`` distinct values ``±2^e``: exact DP over the sorted candidates.

    With the chosen values ``g_1 < ... < g_k``, value ``g_t`` takes the weights between its
    midpoint thresholds. Splitting each cluster at ``g_t`` itself makes the cost a sum over
    consecutive pairs: ``P[a, b]`` is the SSE of the weights in ``[g_a, g_b]`` at the nearer of
    the two, plus the outer parts below the first and above the last value.

    Args:
        sw (SortedWeights): the values the table is fitted to.
        k (int): the number of values.
        pow2_range (tuple or None): ``(min_exp, max_exp)``.

    Returns:
        numpy.ndarray: float32 sorted values (K,).
    """
    g = _pow2_candidates(sw, k, pow2_range)
    m = g.size
    if m < k:
        raise ValueError(f"only {m} values ±2^e for {k} table values; widen pow2_range")
    q = np.searchsorted(sw.s, g, side='left')  # weights below each candidate
    a, b = np.triu_indices(m, 1)
    p = sw.counts(midpoint_thresholds(g[a], g[b]))
    pair = np.full((m, m), np.inf)
    pair[a, b] = sw.sse(q[a], p, g[a]) + sw.sse(p, q[b], g[b])
    below = sw.sse(np.zeros(m, np.int64), q, g)
    above = sw.sse(q, np.full(m, sw.n), g)
    pick, _ = chain_min(below, pair[None], above, k)
    return g[pick].astype(np.float32)


def fit_table(w, config, weight=None, lloyd_iters=1000):
    """The near-optimal table ``(d, A)`` of one layer for its weights.

    * free: :func:`fit_free` (a DP on bins, Lloyd iterations to a fixed point);
    * pow-2: the exact best set of distinct values ``±2^e``;
    * pruning: ``d[0] = 0`` takes exactly the ceil(p·N) smallest ``|W|`` (ties to the lower flat
      index), the other K-1 values are fitted as above to the remaining weights;
    * fixed: the configured values, nearest-value assignment.

    Args:
        w (numpy.ndarray): the layer's weights (any shape).
        config (LUTQConfig): the layer's settings.
        weight (numpy.ndarray or None): importance of each weight (shape of ``w``), e.g. a
            sensitivity; None weights all alike.
        lloyd_iters (int): bound on the Lloyd iterations of a free fit.

    Returns:
        tuple: ``(d, A)``, float32 of shape (K,) (``(n_groups, K)`` with grouped tables: each
        group's table fitted to its own weights) and int32 of the shape of ``w``.

    Raises:
        ValueError: if ``w`` (or ``weight``) has non-finite values.
    """
    shape = np.shape(w)
    w = np.ascontiguousarray(w, dtype=np.float32).ravel()
    check_finite(w, 'the weights', '; cannot fit a look-up table to them')
    if weight is not None:
        weight = np.ascontiguousarray(weight, dtype=np.float64).ravel()
        if weight.shape != w.shape or not all_finite(weight) or np.any(weight < 0):
            raise ValueError('the importance of the weights must be finite, >= 0 and have the '
                             'shape of the weights')
    if config.group_size is not None:
        return _fit_groups(w, config, weight, lloyd_iters, shape)
    if config.kind == 'fixed':
        d = np.asarray(config.fixed_values, dtype=np.float32)
        return d, assign(w, d, config).reshape(shape)
    first = config.first_free
    keep = ~pruned_mask(w, config.n_pruned) if first else None
    rest = w[keep] if first else w
    sw = SortedWeights(rest, None if weight is None else (weight[keep] if first else weight))
    k = config.n_values - first
    if config.kind == 'pow2':
        free = fit_pow2(sw, k, config.pow2_range)
    else:
        free = fit_free(sw, k, lloyd_iters)
    d = np.concatenate([np.zeros(first, np.float32), free]).astype(np.float32)
    return d, assign(w, d, config).reshape(shape)


def _fit_groups(w, config, weight, lloyd_iters, shape):
    """:func:`fit_table` of each group of a grouped layer, as a layer of its own."""
    one = config.one_group()
    rows = config.group_view(w)
    wrows = None if weight is None else config.group_view(weight)
    d = np.empty(config.table_shape, np.float32)
    a = np.empty(rows.shape, np.int32)
    for g in range(config.n_groups):  # a group without any importance: an unweighted fit
        weight_g = None if wrows is None or not np.any(wrows[g] > 0) else wrows[g]
        d[g], a[g] = fit_table(rows[g], one, weight_g, lloyd_iters)
    return d, config.layer_order(a).reshape(shape)


def init_dictionary(w, config, iters=None, weight=None):
    """Deterministic near-optimal initialization of ``(d, A)`` from the current weights.

    :func:`fit_table` with ``iters`` bounding the Lloyd iterations that polish a free table after
    the DP (None: to the fixed point, at most 1000; 0: the DP's table as it is).

    Args:
        w (numpy.ndarray): the layer's weights (any shape; flattened).
        config (LUTQConfig): the layer's configuration.
        iters (int or None): Lloyd iterations after the DP.
        weight (numpy.ndarray or None): importance of each weight (shape of ``w``).

    Returns:
        tuple: ``(d, A)``, float32 of shape (K,) and int32 of the shape of ``w``.

    Raises:
        ValueError: if ``w`` has non-finite values.
    """
    return fit_table(w, config, weight, lloyd_iters=lloyd_bound(iters))


def lloyd_bound(iters):
    """The Lloyd iterations of a fit from the user's ``iters`` (None: to the fixed point, at most
    1000).

    Raises:
        ValueError: if ``iters`` is neither None nor an integer >= 0.
    """
    if iters is None:
        return 1000
    if not is_integer(iters) or iters < 0:
        raise ValueError(f"iters must be None or an integer >= 0 (Lloyd iterations), got {iters!r}")
    return int(iters)


def table_sse(w, d, a, weight=None, config=None):
    """``sum weight·(w - d[a])²`` in float64: the error a table leaves.

    Args:
        w (numpy.ndarray): weights.
        d (numpy.ndarray): table values.
        a (numpy.ndarray): indices into ``d`` (shape of ``w``).
        weight (numpy.ndarray or None): importance of each weight.
        config (LUTQConfig or None): the layer's settings; needed for grouped tables (each index
            is read in its group's row).

    Returns:
        float: the (weighted) sum of squared errors.
    """
    if config is not None and config.group_size is not None:
        q = config.lookup(d, a).astype(np.float64)
    else:
        q = np.asarray(d, np.float64)[np.asarray(a)]
    e = np.asarray(w, np.float64).ravel() - q.ravel()
    e = e * e
    return float(e.sum() if weight is None else np.dot(np.asarray(weight, np.float64).ravel(), e))
