"""Dictionaries, their constraints and the 1-D k-means step of LUT-Q (host/numpy side).

A LUT-Q layer owns full-precision weights ``W`` (N values), a dictionary ``d`` of K values and an
assignment ``A`` (int32, shape of ``W``); the network computes with ``d[A]``.  This module holds
everything that defines *what* ``d`` and ``A`` are:

* :class:`LUTQConfig` -- K, the dictionary kind (``'free'``, ``'pow2'`` or a fixed set), the
  pruning ratio and the power-of-two exponent range, validated with errors that name the layer.
* :func:`kmeans_step` -- one iteration of the paper's step 4 on the host, exact to the bit:
  assignment to the nearest value (ties to the lower value; see :func:`assign` for equal
  values), then each value becomes the mean of
  its weights (an empty cluster keeps its value), then the constraint is applied.
* :func:`init_dictionary` -- the deterministic initialization from the current weights.

Layout of ``d`` (relied on by the solver, the device graph and the report):

* without pruning ``d`` is sorted ascending;
* with ``prune_ratio > 0``, ``d[0]`` is the fixed zero and ``d[1:]`` is sorted ascending.

The k-means update keeps these orders (a cluster's mean lies between its neighbours'
boundaries), so ``A`` never needs re-labelling.
"""
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

__all__ = ['LUTQConfig', 'make_config', 'pow2_round', 'is_pow2_array', 'assign', 'kmeans_step',
           'init_dictionary', 'pruned_count', 'pruned_mask', 'bits_per_index']


@dataclass(frozen=True)
class LUTQConfig:
    """Validated settings of one LUT-Q layer.

    Attributes:
        n_values (int): K, the number of dictionary values.
        kind (str): ``'free'``, ``'pow2'`` or ``'fixed'``.
        fixed_values (tuple or None): the sorted values of a fixed dictionary.
        prune_ratio (float): fraction p of the weights tied to the fixed value 0.
        pow2_range (tuple or None): ``(min_exp, max_exp)`` clipping the exponents of a pow-2 dictionary.
        n_weights (int): N, the number of weights of the layer.
        n_pruned (int): ceil(p * N), the number of weights tied to 0.
    """
    n_values: int
    kind: str
    fixed_values: Optional[Tuple[float, ...]]
    prune_ratio: float
    pow2_range: Optional[Tuple[int, int]]
    n_weights: int
    n_pruned: int

    @property
    def pruned(self):
        """bool: whether ``d[0]`` is a fixed zero that takes the smallest-|W| weights."""
        return self.n_pruned > 0

    @property
    def first_free(self):
        """int: index of the first value that k-means fits (1 with pruning, else 0)."""
        return 1 if self.pruned else 0


def pruned_count(prune_ratio, n_weights):
    """Number of weights tied to zero: ceil(p * N).

    ``p * N`` within 1e-9 * N of an integer counts as that integer, so that ``p = 0.1`` of
    ``N = 10`` prunes 1 weight although the float 0.1 is slightly above one tenth.

    Args:
        prune_ratio (float): p in [0, 1).
        n_weights (int): N.

    Returns:
        int: the number of pruned weights.
    """
    x = prune_ratio * n_weights
    r = round(x)
    if abs(x - r) <= 1e-9 * max(1, n_weights):
        return int(r)
    return int(math.ceil(x))


def make_config(n_values, dictionary, prune_ratio, pow2_range, n_weights, layer='layer'):
    """Validate the LUT-Q arguments of a layer and return its :class:`LUTQConfig`.

    Args:
        n_values (int): K (ignored for a fixed dictionary, whose length is K).
        dictionary (str or array-like): ``'free'``, ``'pow2'`` or the fixed values.
        prune_ratio (float): p in [0, 1).
        pow2_range (tuple or None): ``(min_exp, max_exp)``, only with ``'pow2'``.
        n_weights (int): N.
        layer (str): the layer's name, used in error messages.

    Returns:
        LUTQConfig: the validated configuration.

    Raises:
        ValueError: on any argument that cannot work, with what to do instead.
    """
    fixed = None
    if isinstance(dictionary, str):
        if dictionary not in ('free', 'pow2'):
            raise ValueError(
                f"{layer}: unknown dictionary {dictionary!r}; use 'free', 'pow2' or a list of "
                "fixed values such as [-1, 1] or [-1, 0, 1]")
        kind = dictionary
    else:
        try:
            vals = np.asarray(dictionary, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            raise ValueError(
                f"{layer}: dictionary must be 'free', 'pow2' or a list of numbers, got {dictionary!r}")
        if vals.size < 2 or not np.all(np.isfinite(vals)) or np.unique(vals).size != vals.size:
            raise ValueError(
                f"{layer}: a fixed dictionary needs at least 2 distinct finite values, got {list(vals)}")
        kind = 'fixed'
        fixed = tuple(float(v) for v in np.sort(vals.astype(np.float32)))
        n_values = len(fixed)
    if isinstance(n_values, bool) or not isinstance(n_values, (int, np.integer)):
        raise ValueError(f"{layer}: n_values must be an integer >= 2, got {n_values!r}")
    n_values = int(n_values)
    if n_values < 2:
        raise ValueError(f"{layer}: n_values={n_values}; a dictionary needs at least 2 values")
    if n_values > n_weights:
        raise ValueError(
            f"{layer}: n_values={n_values} is larger than the layer's {n_weights} weights; "
            f"use n_values <= {n_weights}")
    try:
        p = float(prune_ratio)
    except (TypeError, ValueError):
        raise ValueError(f"{layer}: prune_ratio must be a number in [0, 1), got {prune_ratio!r}")
    if not (0.0 <= p < 1.0):
        raise ValueError(f"{layer}: prune_ratio={prune_ratio} is outside [0, 1)")
    n_pruned = pruned_count(p, n_weights) if p > 0 else 0
    if n_pruned > 0:
        if n_weights - n_pruned < n_values - 1:
            raise ValueError(
                f"{layer}: prune_ratio={p} leaves {n_weights - n_pruned} weights for the "
                f"{n_values - 1} non-zero values; lower prune_ratio or n_values")
        if kind == 'fixed':
            if 0.0 not in fixed:
                raise ValueError(
                    f"{layer}: pruning ties weights to 0, but the fixed dictionary {list(fixed)} "
                    "has no 0; add 0 to it or set prune_ratio=0")
            rest = [v for v in fixed if v != 0.0]
            fixed = (0.0,) + tuple(rest)
    if pow2_range is not None:
        if kind != 'pow2':
            raise ValueError(f"{layer}: pow2_range is only used with dictionary='pow2'")
        try:
            lo, hi = pow2_range
            ok = float(lo).is_integer() and float(hi).is_integer() and lo <= hi
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(
                f"{layer}: pow2_range must be (min_exp, max_exp) integers with min_exp <= max_exp, "
                f"got {pow2_range!r}")
        pow2_range = (int(lo), int(hi))
    return LUTQConfig(n_values, kind, fixed, p, pow2_range, int(n_weights), n_pruned)


def bits_per_index(n_values):
    """Bits to store one index into a dictionary of K values: ceil(log2 K).

    Args:
        n_values (int): K.

    Returns:
        int: ceil(log2 K).
    """
    return int(math.ceil(math.log2(n_values))) if n_values > 1 else 0


def pow2_round(x, pow2_range=None):
    """Round to sign(x) * 2^round(log2|x|) (rounding in the log domain); 0 stays 0.

    Args:
        x (numpy.ndarray): values.
        pow2_range (tuple or None): ``(min_exp, max_exp)`` clipping the exponent.

    Returns:
        numpy.ndarray: float32 powers of two with the signs of ``x``.
    """
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros_like(x)
    nz = x != 0
    e = np.round(np.log2(np.abs(x[nz])))
    if pow2_range is not None:
        e = np.clip(e, pow2_range[0], pow2_range[1])
    out[nz] = np.sign(x[nz]) * np.exp2(e)
    return out.astype(np.float32)


def is_pow2_array(x):
    """Whether every value is 0 or exactly +-2^k.

    Args:
        x (numpy.ndarray): values.

    Returns:
        bool: True when all values are 0 or powers of two.
    """
    a = np.abs(np.asarray(x, dtype=np.float64))
    a = a[a != 0]
    return bool(np.all(np.isfinite(a)) and np.all(np.log2(a) == np.round(np.log2(a))))


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


def _boundaries(values):
    """float32 thresholds b with ``w > b_k  <=>  w > (v_k + v_{k+1}) / 2`` exactly for float32 w."""
    v = values.astype(np.float64)
    mid = (v[:-1] + v[1:]) * 0.5  # exact: the sum of two float32 values fits a float64
    b = mid.astype(np.float32)
    up = b.astype(np.float64) > mid
    b[up] = np.nextafter(b[up], np.float32(-np.inf))
    return b


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
    b = _boundaries(np.asarray(d, dtype=np.float32)[first:])
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


def init_dictionary(w, config, iters=10):
    """Deterministic initialization of ``(d, A)`` from the current weights.

    The free values start at the sample quantiles ``(j + 0.5) / K'`` of the weights they will be
    fitted to (all weights, or the non-pruned ones), are rounded to powers of two for ``'pow2'``,
    and then take ``iters`` k-means iterations. ``A`` is finally the nearest-value assignment to
    the resulting ``d``, so ``d[A]`` is the quantization of the current ``W``. A fixed dictionary
    only gets the assignment.

    Args:
        w (numpy.ndarray): the layer's weights (any shape; flattened).
        config (LUTQConfig): the layer's configuration.
        iters (int): k-means iterations after the quantile start.

    Returns:
        tuple: ``(d, A)``, float32 of shape (K,) and int32 of the shape of ``w``.

    Raises:
        ValueError: if ``w`` has non-finite values.
    """
    shape = np.shape(w)
    w = np.ascontiguousarray(w, dtype=np.float32).ravel()
    if not np.all(np.isfinite(w)):
        raise ValueError('cannot initialize a dictionary from non-finite weights')
    if config.kind == 'fixed':
        d = np.asarray(config.fixed_values, dtype=np.float32)
    else:
        first = config.first_free
        rest = w[~pruned_mask(w, config.n_pruned)] if first else w
        s = np.sort(rest)
        kk = config.n_values - first
        q = s[((np.arange(kk) + 0.5) / kk * s.size).astype(np.int64)]
        if config.kind == 'pow2':
            q = np.sort(pow2_round(q, config.pow2_range))
        d = np.concatenate([np.zeros(first, np.float32), q]).astype(np.float32)
        for _ in range(iters):
            d, _ = kmeans_step(w, d, config)
    return d, assign(w, d, config).reshape(shape)
