# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The settings of one LUT-Q layer, validated once (numpy only, no nnabla).

Layout of ``d`` that every part of the package relies on (the k-means backends, the report, the
packed format):

* without pruning ``d`` is sorted ascending;
* with ``prune_ratio > 0``, ``d[0]`` is the fixed zero and ``d[1:]`` is sorted ascending.

Grouped tables (``group_size = g``): one table per ``g`` consecutive output channels. ``d`` then
has shape ``(n_groups, K)``, each row in the layout above, and ``A`` (shape of ``W``) holds
indices into its group's row. The output axis is 0 for convolutions and the last axis for affine
layers (:mod:`nnabla_lutq.core.kinds`). Every rule applies per group, to the group's weights in
the order :meth:`LUTQConfig.group_view` gives (the output axis first, then the layer's order):
the k-means means, the power-of-two rounding, pruning (``ceil(p·N_g)`` weights of each group),
ties to the lower index. ``group_size=None`` is one table of shape ``(K,)`` for the whole layer.
"""
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from .checks import is_integer
from .pow2 import check_pow2_range, distinct_pow2_values

__all__ = ['LUTQConfig', 'make_config', 'pruned_count', 'bits_per_index', 'group_ids']


@dataclass(frozen=True)
class LUTQConfig:
    """Validated settings of one LUT-Q layer.

    Attributes:
        n_values (int): K, the number of dictionary values.
        kind (str): ``'free'``, ``'pow2'`` or ``'fixed'``.
        fixed_values (tuple or None): the values of a fixed dictionary, in the layout of ``d``.
        prune_ratio (float): fraction p of the weights tied to the fixed value 0.
        pow2_range (tuple or None): ``(min_exp, max_exp)`` clipping the exponents of a pow-2
            dictionary.
        n_weights (int): N, the number of weights of the layer.
        n_pruned (int): ceil(p * N_g), the number of weights of each group tied to 0 (N_g = N
            without groups).
        group_size (int or None): output channels per table; None: one table for the layer.
        shape (tuple or None): the shape of ``W`` (set with ``group_size``).
        out_axis (int): the output-channel axis of ``W`` (non-negative).
    """
    n_values: int
    kind: str
    fixed_values: Optional[Tuple[float, ...]]
    prune_ratio: float
    pow2_range: Optional[Tuple[int, int]]
    n_weights: int
    n_pruned: int
    group_size: Optional[int] = None
    shape: Optional[Tuple[int, ...]] = None
    out_axis: int = 0

    @property
    def pruned(self):
        """bool: whether ``d[0]`` is a fixed zero that takes the smallest-|W| weights."""
        return self.n_pruned > 0

    @property
    def first_free(self):
        """int: index of the first value that k-means fits (1 with pruning, else 0)."""
        return 1 if self.pruned else 0

    @property
    def n_groups(self):
        """int: the number of tables (1 without ``group_size``)."""
        return 1 if self.group_size is None else self.shape[self.out_axis] // self.group_size

    @property
    def group_weights(self):
        """int: N_g, the number of weights of each table's group (N without groups)."""
        return self.n_weights // self.n_groups

    @property
    def table_shape(self):
        """tuple: the shape of ``d``: ``(K,)``, or ``(n_groups, K)`` with ``group_size``."""
        k = self.n_values
        return (k,) if self.group_size is None else (self.n_groups, k)

    @property
    def moved_axes(self):
        """``(perm, back)``: the transposition of ``W`` putting the output axis first (the order
        of :meth:`group_view`) and its inverse, for graph forms of the rows; None when the rows
        are a plain reshape (no groups, or the output axis is already the first)."""
        if self.group_size is None or self.out_axis == 0:
            return None
        perm = (self.out_axis,) + tuple(i for i in range(len(self.shape)) if i != self.out_axis)
        return perm, tuple(int(i) for i in np.argsort(perm))

    def group_view(self, x):
        """The weights (or indices) of each group as the rows of a 2-D array.

        Args:
            x (numpy.ndarray): ``N`` values in the layer's order (flat or of the shape of ``W``).

        Returns:
            numpy.ndarray: ``(n_groups, N_g)``: row ``g`` holds the values of output channels
            ``g·group_size ... (g+1)·group_size - 1``, output axis first, then the layer's order
            (C-contiguous: a view where the layout allows, else a copy). Without groups:
            ``(1, N)``.
        """
        x = np.asarray(x)
        if self.group_size is None:
            return x.reshape(1, -1)
        rows = np.moveaxis(x.reshape(self.shape), self.out_axis, 0).reshape(self.n_groups, -1)
        return np.ascontiguousarray(rows)  # row-wise passes run several times faster on it

    def layer_order(self, x):
        """The inverse of :meth:`group_view`: rows of groups back to the shape of ``W``.

        Args:
            x (numpy.ndarray): ``(n_groups, N_g)`` values.

        Returns:
            numpy.ndarray: the values in the layer's shape (flat ``(N,)`` without groups).
        """
        x = np.asarray(x)
        if self.group_size is None:
            return x.reshape(-1)
        moved = (self.shape[self.out_axis],) + tuple(
            n for i, n in enumerate(self.shape) if i != self.out_axis)
        return np.ascontiguousarray(np.moveaxis(x.reshape(moved), 0, self.out_axis))

    def one_group(self):
        """The settings of one group's table, as a layer of its own (``N_g`` weights, no groups).

        Returns:
            LUTQConfig: the per-group configuration (``self`` without groups).
        """
        if self.group_size is None:
            return self
        return LUTQConfig(self.n_values, self.kind, self.fixed_values, self.prune_ratio,
                          self.pow2_range, self.group_weights, self.n_pruned)

    def lookup(self, d, a):
        """The tied weights ``Q = d[A]`` (each index read in its group's table), on the host.

        Args:
            d (numpy.ndarray): the table(s), shape :attr:`table_shape`.
            a (numpy.ndarray): the indices, shape of ``W`` (or flat).

        Returns:
            numpy.ndarray: float32 values of the shape of ``a``.
        """
        d = np.asarray(d, np.float32)
        a = np.asarray(a)
        if self.group_size is None:
            return d.reshape(-1)[a]
        rows = group_ids(self.shape, self.out_axis, self.group_size).reshape(a.shape)
        return d.reshape(self.n_groups, -1)[rows, a]

    def settings(self):
        """The user-facing settings (what a layer was built with), comparable between layers.

        Returns:
            dict: ``n_values``, ``dictionary`` (``'free'``, ``'pow2'`` or the fixed values),
            ``prune_ratio`` and ``pow2_range``; ``group_size`` when the layer has grouped tables.
        """
        fixed = sorted(self.fixed_values) if self.kind == 'fixed' else None
        out = {'n_values': self.n_values,
               'dictionary': fixed if fixed is not None else self.kind,
               'prune_ratio': self.prune_ratio,
               'pow2_range': list(self.pow2_range) if self.pow2_range else None}
        if self.group_size is not None:
            out['group_size'] = self.group_size
        return out

    def describe(self):
        """str: the settings as a short text for messages, e.g. ``K=4 pow2 prune=0.5``."""
        s = self.settings()
        text = f"n_values={s['n_values']}, dictionary={s['dictionary']!r}"
        if self.prune_ratio:
            text += f", prune_ratio={self.prune_ratio}"
        if self.pow2_range:
            text += f", pow2_range={tuple(self.pow2_range)}"
        if self.group_size is not None:
            text += f", group_size={self.group_size}"
        return text


def group_ids(shape, out_axis, group_size):
    """The group (table row) of every weight of a layer with grouped tables.

    Args:
        shape (tuple): the shape of ``W``/``A``.
        out_axis (int): the output-channel axis.
        group_size (int or None): output channels per table (None: one table, all 0).

    Returns:
        numpy.ndarray: int64 of ``shape``: ``index along out_axis // group_size``.
    """
    shape = tuple(int(n) for n in shape)
    if group_size is None:
        return np.zeros(shape, np.int64)
    idx = np.arange(shape[out_axis], dtype=np.int64) // int(group_size)
    view = [1] * len(shape)
    view[out_axis] = -1
    return np.ascontiguousarray(np.broadcast_to(idx.reshape(view), shape))


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


def bits_per_index(n_values):
    """Bits to store one index into a dictionary of K values: ceil(log2 K).

    Args:
        n_values (int): K.

    Returns:
        int: ceil(log2 K).
    """
    return int(math.ceil(math.log2(n_values))) if n_values > 1 else 0


def _fixed_values(dictionary, layer):
    try:
        vals = np.asarray(dictionary, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise ValueError(
            f"{layer}: dictionary must be 'free', 'pow2' or a list of numbers, got {dictionary!r}")
    if vals.size < 2 or not np.all(np.isfinite(vals)):
        raise ValueError(
            f"{layer}: a fixed dictionary needs at least 2 distinct finite values, got {list(vals)}")
    v32 = vals.astype(np.float32)  # the values the layer computes with
    if np.any(np.diff(v32) <= 0):
        raise ValueError(
            f"{layer}: a fixed dictionary must list distinct values in ascending order, got "
            f"{list(vals)}; use {sorted(set(vals.tolist()))}")
    return tuple(float(v) for v in v32)


def _groups(group_size, shape, out_axis, n_weights, layer):
    """Validated ``(group_size, shape, out_axis, n_groups)`` of a layer's grouped tables."""
    if group_size is None:
        return None, None, 0, 1
    if shape is None:
        raise ValueError(f"{layer}: group_size needs the shape of the weights")
    shape = tuple(int(n) for n in shape)
    if int(np.prod(shape)) != n_weights:
        raise ValueError(f"{layer}: the shape {shape} does not hold {n_weights} weights")
    axis = int(out_axis) % len(shape)
    n_out = shape[axis]
    if not is_integer(group_size) or not 1 <= group_size <= n_out or n_out % group_size:
        divisors = [g for g in range(1, n_out + 1) if n_out % g == 0]
        raise ValueError(
            f"{layer}: group_size={group_size!r} must divide the {n_out} output channels; use one "
            f"of {divisors} (or None for one table per layer)")
    return int(group_size), shape, axis, n_out // int(group_size)


def make_config(n_values, dictionary, prune_ratio, pow2_range, n_weights, layer='layer',
                group_size=None, shape=None, out_axis=0):
    """Validate the LUT-Q arguments of a layer and return its :class:`LUTQConfig`.

    Args:
        n_values (int): K (ignored for a fixed dictionary, whose length is K).
        dictionary (str or array-like): ``'free'``, ``'pow2'`` or the fixed values, distinct and
            in ascending order.
        prune_ratio (float): p in [0, 1).
        pow2_range (tuple or None): ``(min_exp, max_exp)``, only with ``'pow2'``.
        n_weights (int): N.
        layer (str): the layer's name, used in error messages.
        group_size (int or None): output channels per table (must divide their number); None
            for one table per layer.
        shape (tuple or None): the shape of ``W`` (needed with ``group_size``).
        out_axis (int): the output-channel axis of ``W`` (0 for convolutions, -1 for affine).

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
        kind = 'fixed'
        fixed = _fixed_values(dictionary, layer)
        n_values = len(fixed)
    group_size, shape, out_axis, n_groups = _groups(group_size, shape, out_axis, n_weights, layer)
    n_total = int(n_weights)
    n_weights = n_total // n_groups  # the rules below apply to each group's weights
    per = " in each group" if n_groups > 1 else ""
    if not is_integer(n_values):
        raise ValueError(f"{layer}: n_values must be an integer >= 2, got {n_values!r}")
    n_values = int(n_values)
    if n_values < 2:
        raise ValueError(f"{layer}: n_values={n_values}; a dictionary needs at least 2 values")
    if n_values > n_weights:
        raise ValueError(
            f"{layer}: n_values={n_values} is larger than the "
            + (f"{n_weights} weights in each group" if per else f"layer's {n_weights} weights")
            + f"; use n_values <= {n_weights}" + (" or a larger group_size" if per else ""))
    if isinstance(prune_ratio, bool):
        raise ValueError(f"{layer}: prune_ratio must be a number in [0, 1), got {prune_ratio!r}")
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
                f"{layer}: prune_ratio={p} leaves {n_weights - n_pruned} weights{per} for the "
                f"{n_values - 1} non-zero values; lower prune_ratio or n_values")
        if kind == 'fixed':
            if 0.0 not in fixed:
                raise ValueError(
                    f"{layer}: pruning ties weights to 0, but the fixed dictionary {list(fixed)} "
                    "has no 0; add 0 to it or set prune_ratio=0")
            fixed = (0.0,) + tuple(v for v in fixed if v != 0.0)
    if pow2_range is not None:
        if kind != 'pow2':
            raise ValueError(f"{layer}: pow2_range is only used with dictionary='pow2'")
        pow2_range = check_pow2_range(pow2_range, layer)
        free = n_values - (1 if n_pruned else 0)
        if free > distinct_pow2_values(pow2_range):
            raise ValueError(
                f"{layer}: pow2_range={pow2_range} offers only {distinct_pow2_values(pow2_range)} "
                f"distinct values ±2^k for the {free} fitted values of n_values={n_values}; "
                "widen pow2_range or lower n_values")
    return LUTQConfig(n_values, kind, fixed, p, pow2_range, n_total, n_pruned, group_size, shape,
                      out_axis)
