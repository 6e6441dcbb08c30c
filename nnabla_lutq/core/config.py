# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The settings of one LUT-Q layer, validated once (numpy only, no nnabla).

Layout of ``d`` that every part of the package relies on (the k-means backends, the report, the
packed format):

* without pruning ``d`` is sorted ascending;
* with ``prune_ratio > 0``, ``d[0]`` is the fixed zero and ``d[1:]`` is sorted ascending.
"""
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from .checks import is_integer
from .pow2 import check_pow2_range, distinct_pow2_values

__all__ = ['LUTQConfig', 'make_config', 'pruned_count', 'bits_per_index']


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

    def settings(self):
        """The user-facing settings (what a layer was built with), comparable between layers.

        Returns:
            dict: ``n_values``, ``dictionary`` (``'free'``, ``'pow2'`` or the fixed values),
            ``prune_ratio`` and ``pow2_range``.
        """
        fixed = sorted(self.fixed_values) if self.kind == 'fixed' else None
        return {'n_values': self.n_values,
                'dictionary': fixed if fixed is not None else self.kind,
                'prune_ratio': self.prune_ratio,
                'pow2_range': list(self.pow2_range) if self.pow2_range else None}

    def describe(self):
        """str: the settings as a short text for messages, e.g. ``K=4 pow2 prune=0.5``."""
        s = self.settings()
        text = f"n_values={s['n_values']}, dictionary={s['dictionary']!r}"
        if self.prune_ratio:
            text += f", prune_ratio={self.prune_ratio}"
        if self.pow2_range:
            text += f", pow2_range={tuple(self.pow2_range)}"
        return text


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


def make_config(n_values, dictionary, prune_ratio, pow2_range, n_weights, layer='layer'):
    """Validate the LUT-Q arguments of a layer and return its :class:`LUTQConfig`.

    Args:
        n_values (int): K (ignored for a fixed dictionary, whose length is K).
        dictionary (str or array-like): ``'free'``, ``'pow2'`` or the fixed values, distinct and
            in ascending order.
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
        kind = 'fixed'
        fixed = _fixed_values(dictionary, layer)
        n_values = len(fixed)
    if not is_integer(n_values):
        raise ValueError(f"{layer}: n_values must be an integer >= 2, got {n_values!r}")
    n_values = int(n_values)
    if n_values < 2:
        raise ValueError(f"{layer}: n_values={n_values}; a dictionary needs at least 2 values")
    if n_values > n_weights:
        raise ValueError(
            f"{layer}: n_values={n_values} is larger than the layer's {n_weights} weights; "
            f"use n_values <= {n_weights}")
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
                f"{layer}: prune_ratio={p} leaves {n_weights - n_pruned} weights for the "
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
    return LUTQConfig(n_values, kind, fixed, p, pow2_range, int(n_weights), n_pruned)
