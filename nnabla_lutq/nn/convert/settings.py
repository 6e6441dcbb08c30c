# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Conversion settings: :class:`LayerConfig` (one layer's LUT-Q arguments) and their checks."""
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import numpy as np
import nnabla as nn

from ...core.checks import integer_at_least, is_integer
from ...core.config import make_config

__all__ = ['LayerConfig', 'as_layer_config', 'normalize_overrides', 'check_settings',
           'layer_config_of', 'as_outputs', 'table_count']


@dataclass(frozen=True)
class LayerConfig:
    """The LUT-Q settings of one layer (the arguments of the LUT-Q parametric functions).

    Validated on creation with the rules and messages of the layers
    (:func:`nnabla_lutq.core.config.make_config`); the rules that depend on the layer's number of
    weights N (``n_values <= N``, enough weights left after pruning) and on its output channels
    (``group_size`` divides them) are checked when a layer is converted.

    Args:
        n_values (int): K, the number of dictionary values (ignored for a fixed dictionary).
        dictionary (str or list): ``'free'``, ``'pow2'`` or fixed values such as ``[-1, 0, 1]``.
        prune_ratio (float): p in [0, 1): the ceil(p·N) smallest-|W| weights are tied to 0.
        pow2_range (tuple of int): ``(min_exp, max_exp)`` of a ``'pow2'`` dictionary, or None.
        group_size (int or None): None: one table per layer; an integer g: one table per g
            consecutive output channels (g must divide the layer's output channels; the rules
            above then apply to each group's weights).

    Raises:
        ValueError: on settings no layer can use.

    Example:
        >>> LayerConfig(4, 'pow2', prune_ratio=0.5)
        >>> LayerConfig(16, group_size=8)  # one table per 8 output channels
    """
    n_values: int = 16
    dictionary: Union[str, Tuple[float, ...]] = 'free'
    prune_ratio: float = 0.0
    pow2_range: Optional[Tuple[int, int]] = None
    group_size: Optional[int] = None

    def __post_init__(self):
        if not isinstance(self.dictionary, str):
            try:
                object.__setattr__(self, 'dictionary', tuple(self.dictionary))
            except TypeError:
                pass  # make_config names the problem
        if self.pow2_range is not None and not isinstance(self.pow2_range, str):
            try:
                object.__setattr__(self, 'pow2_range', tuple(self.pow2_range))
            except TypeError:
                pass
        if self.group_size is not None:
            if not is_integer(self.group_size) or self.group_size < 1:
                raise ValueError(f"LayerConfig: group_size must be None (one table per layer) "
                                 f"or an integer >= 1, got {self.group_size!r}")
            object.__setattr__(self, 'group_size', int(self.group_size))
        self._make(2 ** 53, 'LayerConfig', None, None, 0)  # the rules of one table per layer

    def resolve(self, n_weights, layer='layer', shape=None, out_axis=0):
        """The validated :class:`~nnabla_lutq.core.config.LUTQConfig` for a layer of N weights.

        Args:
            n_weights (int): N.
            layer (str): the layer's name, for messages.
            shape (tuple or None): the shape of the layer's ``W`` (needed with ``group_size``).
            out_axis (int): the output-channel axis of ``W``
                (:attr:`nnabla_lutq.core.kinds.WeightLayer.out_axis`: 0, or -1 for affine).

        Returns:
            LUTQConfig: as the parametric function would build it.

        Raises:
            ValueError: naming the layer (e.g. ``n_values`` larger than N, a ``group_size`` that
                does not divide the output channels, with the sizes that do).
        """
        return self._make(n_weights, layer, self.group_size, shape, out_axis)

    def _make(self, n_weights, layer, group_size, shape, out_axis):
        return make_config(self.n_values, self._dictionary_arg(), self.prune_ratio,
                           self.pow2_range, int(n_weights), layer, group_size,
                           None if shape is None else tuple(shape), out_axis)

    def _dictionary_arg(self):
        return self.dictionary if isinstance(self.dictionary, str) else list(self.dictionary)

    def kwargs(self):
        """dict: the keyword arguments of the LUT-Q parametric functions for these settings."""
        return {'n_values': self.n_values, 'dictionary': self._dictionary_arg(),
                'prune_ratio': self.prune_ratio,
                'pow2_range': None if self.pow2_range is None else tuple(self.pow2_range),
                'group_size': self.group_size}


def table_count(group_size, shape, out_axis=0, layer='layer'):
    """T, the number of look-up tables of a layer with ``group_size`` output channels per table.

    Args:
        group_size (int or None): output channels per table; None: one table.
        shape (tuple): the shape of the layer's ``W``.
        out_axis (int): its output-channel axis (0, or -1 for affine).
        layer (str): the layer's name, for messages.

    Returns:
        int: ``shape[out_axis] // group_size`` (1 for None).

    Raises:
        ValueError: naming the layer and the group sizes that divide its output channels (or,
            for groups of a single weight, that no table of at least 2 values fits them).
    """
    if group_size is None:
        return 1
    shape = tuple(int(n) for n in shape)
    return make_config(2, 'free', 0.0, None, int(np.prod(shape)), layer, group_size, shape,
                       out_axis).n_groups


def as_layer_config(value, where):
    """A :class:`LayerConfig` (or None) from a LayerConfig, a dict of its arguments or None."""
    if value is None or isinstance(value, LayerConfig):
        return value
    if isinstance(value, dict):
        try:
            return LayerConfig(**value)
        except TypeError as e:
            raise ValueError(f"{where}: {e}; use the arguments of LayerConfig")
    raise ValueError(f"{where}: expected a LayerConfig, a dict of its arguments or None (keep "
                     f"the layer float), got {value!r}")


def normalize_overrides(overrides):
    """Overrides (a dict or ``(pattern, config)`` pairs) as a list of ``(pattern, LayerConfig or
    None)``."""
    if overrides is None:
        return []
    items = overrides.items() if isinstance(overrides, dict) else overrides
    out = []
    for item in items:
        try:
            pattern, value = item
        except (TypeError, ValueError):
            raise ValueError(f"overrides: expected a dict or (pattern, LayerConfig) pairs, got "
                             f"{item!r}")
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"overrides: a pattern must be a non-empty string, got {pattern!r}")
        out.append((pattern, as_layer_config(value, f"overrides[{pattern!r}]")))
    return out


def layer_config_of(cfg):
    """The :class:`LayerConfig` of a layer's :class:`~nnabla_lutq.core.config.LUTQConfig`."""
    s = cfg.settings()
    d = s['dictionary']
    return LayerConfig(s['n_values'], d if isinstance(d, str) else tuple(d), s['prune_ratio'],
                       None if s['pow2_range'] is None else tuple(s['pow2_range']),
                       s.get('group_size'))


def check_settings(config, overrides, min_weights, mlbn):
    """The validated ``(config, overrides, min_weights, mlbn)`` of a conversion.

    Raises:
        ValueError: naming the argument.
    """
    config = as_layer_config(config, 'config')
    overrides = normalize_overrides(overrides)
    min_weights = integer_at_least(min_weights, 0, 'min_weights')
    if not isinstance(mlbn, bool):
        raise ValueError(f"mlbn must be True or False, got {mlbn!r}")
    return config, overrides, int(min_weights), mlbn


def as_outputs(y):
    """``y`` (a Variable or a list/tuple of them) as a non-empty list of Variables."""
    outs = list(y) if isinstance(y, (list, tuple)) else [y]
    if not outs or not all(isinstance(o, nn.Variable) for o in outs):
        raise ValueError(f"expected an nnabla Variable or a list of them, got {y!r}")
    return outs
