# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""What a conversion does with each layer: :class:`LayerDecision`, :class:`ConversionPlan`."""
from dataclasses import dataclass, field
from typing import Dict, Optional

from ...core.config import LUTQConfig

__all__ = ['LayerDecision', 'ConversionPlan', 'text_table']


def text_table(rows, right=(), rules=(1,)):
    """Rows of strings as a text table: columns as wide as their widest cell, two spaces apart.

    Args:
        rows (list): tuples of strings, the header first.
        right (collection): indices of the columns aligned right (the others: left).
        rules (collection): before which rows (indices into ``rows``) a dashed line goes.

    Returns:
        str: the table.
    """
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    rule = '  '.join('-' * w for w in widths)
    lines = []
    for i, r in enumerate(rows):
        if i in rules:
            lines.append(rule)
        lines.append('  '.join(c.rjust(w) if j in right else c.ljust(w)
                               for j, (c, w) in enumerate(zip(r, widths))).rstrip())
    return '\n'.join(lines)


@dataclass
class LayerDecision:
    """What the conversion does with one layer.

    Attributes:
        name (str): the layer's scope from the root without the function's own scope, e.g.
            ``'res1/conv1'`` (for a layer without parameters: the function type and its index).
        function (str): the nnabla function type, e.g. ``'Convolution'``.
        action (str): ``'lutq'`` (a LUT-Q layer), ``'mlbn'`` (multiplier-less BN) or
            ``'float'`` (unchanged).
        reason (str): why, e.g. ``'override fc'`` or ``'432 weights < min_weights=1000'``.
        config (LUTQConfig or None): the settings of a LUT-Q layer.
        n_weights (int): number of weights (of ``W``; of ``gamma`` for BN).
        n_functions (int): functions of the graph that compute with this layer (2 for a weight
            shared by two functions, or the training and the test graph converted together).
        parameters (dict): parameter name before -> after the conversion.
        unexpected (bool): the layer has weights but cannot be converted (listed in the warning).
    """
    name: str
    function: str
    action: str
    reason: str
    config: Optional[LUTQConfig] = None
    n_weights: int = 0
    n_functions: int = 0
    parameters: Dict[str, str] = field(default_factory=dict)
    unexpected: bool = False

    def row(self):
        """tuple: the columns of :meth:`ConversionPlan.table`."""
        settings = self.config.describe() if self.config is not None else ''
        if self.config is not None and self.config.group_size is not None:
            settings += f" ({self.config.n_groups} tables)"
        return (self.name, self.function, self.action, str(self.n_weights), settings, self.reason)


class ConversionPlan(list):
    """The :class:`LayerDecision` of every layer of a graph, in graph order (a list).

    ``str(plan)`` is a table; :attr:`converted` and :attr:`kept_float` filter it.
    """

    @property
    def converted(self):
        """list: decisions of layers that are LUT-Q or multiplier-less BN after conversion."""
        return [d for d in self if d.action != 'float']

    @property
    def kept_float(self):
        """list: decisions of layers that stay float."""
        return [d for d in self if d.action == 'float']

    def get(self, name):
        """The decision of the layer called ``name``, or None."""
        for d in self:
            if d.name == name:
                return d
        return None

    def table(self):
        """str: one row per layer: name, function, action, weights, settings, reason."""
        head = ('layer', 'function', 'action', 'weights', 'settings', 'reason')
        return text_table([head] + [d.row() for d in self])

    def __str__(self):
        return self.table()
