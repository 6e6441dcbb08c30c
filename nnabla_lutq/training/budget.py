# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Bit widths per layer under a memory budget, from the sensitivities of
:mod:`.sensitivity`.

For every layer and every candidate K the Fisher-weighted table is fitted and its error
``S(K) = Σ_i F_i (w_i - q_K(w_i))²`` measured; :func:`choose_bits` minimizes
``Σ_layers S(K_layer)`` subject to ``Σ_layers (T·K·32 + N·⌈log2 K⌉) <= budget``, exactly
(:func:`multiple_choice_knapsack`), T the layer's tables (one per ``group_size`` output channels,
1 without groups; a candidate may also be a ``(K, group_size)`` pair, the group size then chosen
too); :func:`allocate_bits` measures the sensitivities and chooses in one call. The result is
the ``overrides`` that :func:`nnabla_lutq.convert` takes, and a :class:`BitReport`.
"""
import fnmatch
import glob
import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Dict, Optional, Tuple

import numpy as np

from ..core.checks import is_integer
from ..core.config import bits_per_index
from ..core.fit import fit_table, lloyd_bound, table_sse
from ..nn.convert import LayerConfig
from ..nn.convert.plan import text_table
from ..nn.convert.settings import as_layer_config, normalize_overrides, table_count
from .sensitivity import Fisher, fisher_diagonal

__all__ = ['Budget', 'LayerBits', 'BitReport', 'choose_bits', 'allocate_bits',
           'multiple_choice_knapsack', 'layer_bits', 'DEFAULT_CANDIDATES', 'VALUE_BITS']

#: K tried per layer by default: 1 to 8 bits per index
DEFAULT_CANDIDATES = (2, 4, 8, 16, 32, 64, 128, 256)
#: bits of one table value (float32)
VALUE_BITS = 32


def layer_bits(n_values, n_weights, n_tables=1):
    """The memory of one LUT-Q layer in bits: ``T·K·32 + N·⌈log2 K⌉`` (the packed format's
    layout).

    Args:
        n_values (int): K.
        n_weights (int): N.
        n_tables (int): T, the layer's tables (its groups of output channels; 1 without
            ``group_size``).

    Returns:
        int: bits.
    """
    return (int(n_tables) * int(n_values) * VALUE_BITS
            + int(n_weights) * bits_per_index(int(n_values)))


# -- budget ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    """A memory budget for the weights of the quantized layers, tables included.

    Give exactly one of ``bits`` (total bits) and ``bits_per_weight`` (the average over the
    quantized layers' weights: total bits / total weights, the ``K·32`` table bits counted).
    Functions taking a budget also take a plain number: average bits per weight.

    Args:
        bits (int): total bits of all quantized layers.
        bits_per_weight (float): average bits per weight.

    Example:
        >>> Budget(bits_per_weight=2.5).total(10000)
        25000
    """
    bits: Optional[int] = None
    bits_per_weight: Optional[float] = None

    def __post_init__(self):
        if (self.bits is None) == (self.bits_per_weight is None):
            raise ValueError("a budget is either bits=<total bits> or bits_per_weight=<average "
                             "bits per weight>, not both nor neither")
        if self.bits is not None and (not is_integer(self.bits) or self.bits <= 0):
            raise ValueError(f"budget bits must be a positive integer, got {self.bits!r}")
        if self.bits_per_weight is not None:
            v = self.bits_per_weight
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                    or not math.isfinite(v) or v <= 0:
                raise ValueError(f"budget bits_per_weight must be a positive number, got {v!r}")

    @classmethod
    def of(cls, budget):
        """A :class:`Budget` from a Budget or a number (average bits per weight)."""
        if isinstance(budget, Budget):
            return budget
        if budget is None:
            raise ValueError("give a budget: a number (average bits per weight) or "
                             "Budget(bits=...) / Budget(bits_per_weight=...)")
        return cls(bits_per_weight=budget)

    def total(self, n_weights):
        """int: the budget in bits for ``n_weights`` quantized weights (an average is rounded
        down, exactly: ``floor(bits_per_weight · N)``)."""
        if self.bits is not None:
            return int(self.bits)
        return int(math.floor(Fraction(self.bits_per_weight) * int(n_weights)))

    def describe(self):
        """str: ``'25000 bits'`` or ``'2.5 bits per weight'``."""
        if self.bits is not None:
            return f"{int(self.bits)} bits"
        return f"{self.bits_per_weight:g} bits per weight"


# -- the exact selection -------------------------------------------------------------------------
def multiple_choice_knapsack(costs, errors, budget):
    """One option per group minimizing the summed error with the summed cost within a budget.

    Exact: a dynamic program over the groups that keeps the Pareto front of (cost, error) of the
    partial choices (a partial choice that costs more and errs no less than another is dropped;
    so is one whose cost plus the cheapest options of the remaining groups exceeds the budget).
    Costs are integers (exact, no rounding or scaling; below 2**62); of choices with equal
    error the cheaper one wins.

    Args:
        costs (list): per group, the integer cost of each option.
        errors (list): per group, the error (float) of each option.
        budget (int): the largest total cost.

    Returns:
        tuple: ``(choice, cost, error)``: the option index per group, the total cost, the total
        error.

    Raises:
        ValueError: if even the cheapest options exceed the budget (the message names the
            minimum), or for groups without options.
    """
    if len(costs) != len(errors) or not costs:
        raise ValueError("costs and errors need one entry per group, at least one group")
    cs = [np.asarray(c) for c in costs]
    es = [np.asarray(e, dtype=np.float64) for e in errors]
    for c, e in zip(cs, es):
        if c.ndim != 1 or c.shape != e.shape or not c.size or not np.issubdtype(c.dtype,
                                                                                np.integer):
            raise ValueError("every group needs at least one option, with an integer cost and "
                             "an error")
    if sum(int(c.max()) for c in cs) >= 2 ** 62 or int(budget) >= 2 ** 62:
        raise ValueError("costs and budget must stay below 2**62")
    cs = [c.astype(np.int64) for c in cs]
    budget = int(budget)
    cheapest = [int(c.min()) for c in cs]
    minimum = sum(cheapest)
    if minimum > budget:
        raise ValueError(f"the budget of {budget} bits is below the minimum possible "
                         f"{minimum} bits")
    rest = np.cumsum([0] + cheapest[::-1])[::-1][1:]  # cheapest cost of the groups after each
    front_c = np.zeros(1, np.int64)
    front_e = np.zeros(1, np.float64)
    back = []
    for g, (c, e) in enumerate(zip(cs, es)):
        tc = (front_c[:, None] + c[None, :]).ravel()
        te = (front_e[:, None] + e[None, :]).ravel()
        idx = np.nonzero(tc + rest[g] <= budget)[0]
        tc, te = tc[idx], te[idx]
        order = np.lexsort((idx, te, tc))  # cost, then error, then the earlier partial choice
        tc, te, idx = tc[order], te[order], idx[order]
        best_before = np.concatenate([[np.inf], np.minimum.accumulate(te)[:-1]])
        keep = te < best_before  # the Pareto front: each kept point errs less than all cheaper
        tc, te, idx = tc[keep], te[keep], idx[keep]
        back.append((idx // c.size, idx % c.size))
        front_c, front_e = tc, te
    # the front is cost-ascending with strictly falling error: its last point errs least
    at = len(front_e) - 1
    cost, error = int(front_c[at]), float(front_e[at])
    choice = [0] * len(cs)
    for g in range(len(cs) - 1, -1, -1):
        parent, option = back[g]
        choice[g] = int(option[at])
        at = int(parent[at])
    return choice, cost, error


# -- the Fisher diagonal ------------------------------------------------------------------------


@dataclass
class LayerBits:
    """One layer of a :class:`BitReport`.

    Attributes:
        name (str): layer name (as :func:`nnabla_lutq.convert` names it).
        n_weights (int): N.
        fisher (float): ``Σ_i F_i``, the layer's total sensitivity.
        n_values (int): the chosen K.
        bits (int): its memory, ``T·K·32 + N·⌈log2 K⌉``.
        error (float): ``S(K) = Σ_i F_i (w_i - q_K(w_i))²`` at the chosen K.
        options (dict): every candidate the layer can use (K, or a ``(K, group_size)`` pair) ->
            ``(bits, S)``.
        config (LayerConfig): the settings for :func:`nnabla_lutq.convert`.
        group_size (int or None): the chosen output channels per table (None: one table).
        n_tables (int): T, the chosen number of tables.
    """
    name: str
    n_weights: int
    fisher: float
    n_values: int
    bits: int
    error: float
    options: Dict[object, Tuple[int, float]] = field(default_factory=dict)
    config: Optional[LayerConfig] = None
    group_size: Optional[int] = None
    n_tables: int = 1


@dataclass
class BitReport:
    """The per-layer choice of K under a budget; ``str()`` is a table.

    Attributes:
        layers (list): :class:`LayerBits` per chosen layer, in graph order.
        budget (Budget): the budget asked for.
        budget_bits (int): the budget in bits.
        weighted (bool): whether the tables are Fisher-weighted fits.
        fisher (Fisher or None): the sensitivities (set by :func:`allocate_bits`).
    """
    layers: list
    budget: Budget
    budget_bits: int
    weighted: bool = True
    fisher: Optional[Fisher] = None

    @property
    def total_bits(self):
        """int: the chosen layers' memory."""
        return sum(r.bits for r in self.layers)

    @property
    def n_weights(self):
        """int: the chosen layers' weights."""
        return sum(r.n_weights for r in self.layers)

    @property
    def bits_per_weight(self):
        """float: ``total_bits / n_weights``."""
        return self.total_bits / max(self.n_weights, 1)

    @property
    def error(self):
        """float: ``Σ_layers S(K)``, the objective minimized."""
        return float(sum(r.error for r in self.layers))

    @property
    def overrides(self):
        """dict: layer name (as an exact ``fnmatch`` pattern) -> :class:`LayerConfig`."""
        return {glob.escape(r.name): r.config for r in self.layers}

    def records(self):
        """list: one dict per layer (name, n_weights, fisher, n_values, group_size, n_tables,
        bits, error)."""
        return [{'name': r.name, 'n_weights': r.n_weights, 'fisher': r.fisher,
                 'n_values': r.n_values, 'group_size': r.group_size, 'n_tables': r.n_tables,
                 'bits': r.bits, 'error': r.error} for r in self.layers]

    def table(self):
        """str: per layer the weights, the sensitivity ``Σ F``, K, the tables, bits per index,
        the memory and ``S(K)``; then the totals against the budget."""
        head = ('layer', 'weights', 'sum F', 'K', 'tables', 'bits/idx', 'memory bits', 'S(K)')
        rows = [head] + [(r.name, str(r.n_weights), f"{r.fisher:.3g}", str(r.n_values),
                          str(r.n_tables), str(bits_per_index(r.n_values)), str(r.bits),
                          f"{r.error:.3g}") for r in self.layers]
        rows.append(('total', str(self.n_weights), '', '', '', f"{self.bits_per_weight:.3f}",
                     str(self.total_bits), f"{self.error:.3g}"))
        lines = [text_table(rows, right=range(1, len(head)), rules=(1, len(rows) - 1))]
        lines.append(f"budget {self.budget.describe()} = {self.budget_bits} bits; used "
                     f"{self.total_bits} bits ({self.bits_per_weight:.3f} bits per weight); "
                     f"tables {'Fisher-weighted' if self.weighted else 'unweighted'}")
        return '\n'.join(lines)

    def __str__(self):
        return self.table()


def _candidate(c):
    """A candidate as K, or a ``(K, group_size)`` pair; None if it is neither."""
    if isinstance(c, (tuple, list)):
        if len(c) == 2 and is_integer(c[0]) and c[0] >= 2 and (
                c[1] is None or (is_integer(c[1]) and c[1] >= 1)):
            return int(c[0]), None if c[1] is None else int(c[1])
        return None
    return int(c) if is_integer(c) and c >= 2 else None


def _candidates(candidates):
    candidates = list(candidates)  # a generator is read once: the message shows what it gave
    ks = [_candidate(c) for c in candidates]
    if not ks or any(k is None for k in ks):
        raise ValueError(f"candidates must be integers K >= 2 or (K, group_size) pairs (group_size "
                         f"an integer >= 1 or None), got {list(candidates)!r}")
    return sorted(set(ks), key=lambda k: (k[0], k[1] or 0, 1) if isinstance(k, tuple)
                  else (k, 0, 0))


def _layer_options(ks, base):
    """``[(key, K, group_size)]``: the candidates of one layer (a fixed dictionary: its own K,
    once per group size)."""
    fixed = None if isinstance(base.dictionary, str) else len(base.dictionary)
    out = {}
    for key in ks:
        k, g = key if isinstance(key, tuple) else (key, base.group_size)
        k = fixed or k
        if fixed:
            key = (k, g) if isinstance(key, tuple) else k
        out.setdefault(key, (key, k, g))
    return list(out.values())


def _out_axis(axes, name):
    """The output-channel axis of a layer's W, from ``out_axes``."""
    if name not in axes:
        raise ValueError(f"{name}: grouped tables are cut along the output channels of W; give "
                         f"the axis with out_axes={{{name!r}: 0 (convolution) or -1 (affine)}}")
    return axes[name]


def _requested(name, n, config, overrides, min_weights):
    for pattern, value in overrides:
        if fnmatch.fnmatchcase(name, pattern):
            return value
    if config is None or n < min_weights:
        return None
    return config


def choose_bits(fisher, budget, candidates=DEFAULT_CANDIDATES, config=LayerConfig(),
                overrides=None, min_weights=0, weighted=True, iters=None, out_axes=None):
    """K per layer, from the sensitivities of :func:`fisher_diagonal`, under a memory budget.

    For every layer and candidate K the layer's table is fitted (with each weight counted by its
    ``F_i`` when ``weighted``) and ``S(K) = Σ_i F_i (w_i - q_K(w_i))²`` measured; the choice
    minimizes ``Σ S`` subject to ``Σ (T·K·32 + N·⌈log2 K⌉) <= budget`` over the chosen layers,
    exactly (:func:`multiple_choice_knapsack`); T is the layer's number of tables (one per
    ``group_size`` output channels of its settings, 1 without). A candidate ``(K, group_size)``
    tries that group size (None: one table) whatever the settings say, so that the group size is
    chosen with K.

    Which layers take part follows :func:`nnabla_lutq.convert`: an ``overrides`` pattern
    matching a layer gives its settings (the dictionary kind, pruning and ``pow2_range``; K is
    chosen; a fixed dictionary is its one option) or None (the layer stays float, outside the
    budget); the other layers take ``config``'s settings, unless ``config`` is None or they have
    fewer than ``min_weights`` weights (they stay float). Candidates a layer cannot use (K > N,
    too few weights left after pruning, a too narrow ``pow2_range``, a candidate's group size
    that does not divide its output channels) are skipped for it; a ``group_size`` of the
    settings that does not divide them is an error naming the sizes that do.

    Args:
        fisher (Fisher): the sensitivities and weights.
        budget (Budget or float): a :class:`Budget`, or average bits per weight.
        candidates (iterable): the K to choose from, or ``(K, group_size)`` pairs.
        config (LayerConfig or None): default settings (its ``n_values`` is not used).
        overrides (dict or None): layer-name pattern -> LayerConfig or None, as for ``convert``.
        min_weights (int): layers with fewer weights stay float.
        weighted (bool): fit Fisher-weighted tables (else plain ones; ``S`` is weighted either way).
        iters (int or None): bound on the Lloyd iterations of each fit (None: to the fixed point).
        out_axes (dict or None): layer name -> the output-channel axis of its ``W`` (0, or -1
            for affine), needed for grouped tables; added to (and overriding) the Fisher's
            ``out_axes``, which calibration records.

    Returns:
        tuple: ``(overrides, report)``: layer name -> :class:`LayerConfig` for every chosen layer
        (convert with ``nnabla_lutq.convert(y, config=None, overrides=overrides)``: the others
        stay float), and the :class:`BitReport`.

    Raises:
        ValueError: for an unmeetable budget (naming the minimum possible), an override that
            matches no layer, no layer to quantize, wrong arguments.
    """
    budget = Budget.of(budget)
    ks = _candidates(candidates)
    config = as_layer_config(config, 'config')
    overrides = normalize_overrides(overrides)
    lloyd = lloyd_bound(iters)
    unmatched = [p for p, _ in overrides if not any(fnmatch.fnmatchcase(n, p) for n in fisher)]
    if unmatched:
        raise ValueError(f"override pattern(s) {unmatched} match no layer; the layers are "
                         f"{list(fisher)}")
    axes = dict(getattr(fisher, 'out_axes', None) or {})  # what calibration recorded,
    axes.update(out_axes or {})                            # overridden where given
    rows, costs, errors = [], [], []
    for name in fisher:
        w, f = fisher.weights[name], fisher[name]
        base = _requested(name, w.size, config, overrides, min_weights)
        if base is None:
            continue
        weight = fisher.importance(name) if weighted else None
        layer_options = _layer_options(ks, base)
        if base.group_size is not None and any(not isinstance(o[0], tuple) for o in layer_options):
            # the settings' group size must fit the layer (a candidate's may skip it)
            table_count(base.group_size, w.shape, _out_axis(axes, name), name)
        options = {}
        for key, k, g in layer_options:
            axis = 0 if g is None else _out_axis(axes, name)
            try:
                lcfg = LayerConfig(k, base.dictionary, base.prune_ratio, base.pow2_range, g)
                cfg = lcfg.resolve(w.size, name, w.shape, axis)
            except ValueError:
                continue
            d, a = fit_table(w, cfg, weight, lloyd_iters=lloyd)
            options[key] = (layer_bits(k, w.size, cfg.n_groups),
                            table_sse(w, d, a, f, config=cfg), lcfg, cfg.n_groups)
        if not options:
            raise ValueError(f"{name}: none of the candidates K={ks} fits its {w.size} weights "
                             f"with {base.kwargs()}; keep it float with overrides={{{name!r}: "
                             "None} or min_weights")
        rows.append((name, w.size, fisher.trace(name), options))
        costs.append([o[0] for o in options.values()])
        errors.append([o[1] for o in options.values()])
    if not rows:
        raise ValueError("no layer to quantize: every layer stays float (config=None, overrides "
                         "or min_weights)")
    n_total = sum(r[1] for r in rows)
    total = budget.total(n_total)
    minimum = sum(min(c) for c in costs)
    if minimum > total:
        raise ValueError(
            f"the budget {budget.describe()} ({total} bits for {n_total} weights) is below the "
            f"minimum possible {minimum} bits ({minimum / n_total:.4f} bits per weight, the "
            "smallest candidate K in every layer)")
    choice, _, _ = multiple_choice_knapsack(costs, errors, total)
    layers = []
    for (name, n, trace, options), i in zip(rows, choice):
        bits, err, lcfg, tables = list(options.values())[i]
        layers.append(LayerBits(name, int(n), trace, lcfg.n_values, bits, float(err),
                                {kk: (o[0], float(o[1])) for kk, o in options.items()}, lcfg,
                                lcfg.group_size, tables))
    report = BitReport(layers, budget, total, bool(weighted))
    return report.overrides, report


def allocate_bits(loss, batches, budget, inputs=None, candidates=DEFAULT_CANDIDATES,
                  config=LayerConfig(), overrides=None, min_weights=0, weighted=True, iters=None,
                  out_axes=None):
    """One call: sensitivities from calibration data, then K per layer under a memory budget.

    :func:`fisher_diagonal` of ``loss`` on the calibration minibatches, then
    :func:`choose_bits`. The report's ``fisher`` attribute keeps the sensitivities for
    :func:`initialize_weighted`.

    Args:
        loss (~nnabla.Variable): a scalar loss on the network (float, or LUT-Q built under
            ``weight_mode('float')``).
        batches (iterable): calibration minibatches (see :func:`fisher_diagonal`).
        budget (Budget or float): a :class:`Budget`, or average bits per weight.
        inputs (list or None): input Variables of tuple minibatches.
        candidates, config, overrides, min_weights, weighted, iters, out_axes: as
            :func:`choose_bits`.

    Returns:
        tuple: ``(overrides, report)`` as :func:`choose_bits`; ``report.fisher`` is the
        :class:`Fisher`.

    Example:
        >>> overrides, report = nnabla_lutq.allocate_bits(loss, [(xb, tb)], 3.0, inputs=[x, t])
        >>> print(report)
        >>> y_q = nnabla_lutq.convert(y, config=None, overrides=overrides)
        >>> nnabla_lutq.initialize_weighted(report.fisher)
    """
    Budget.of(budget)  # wrong budgets and candidates are refused before the minibatches run
    candidates = list(candidates)
    _candidates(candidates)
    fisher = fisher_diagonal(loss, batches, inputs)
    out, report = choose_bits(fisher, budget, candidates, config, overrides, min_weights,
                              weighted, iters, out_axes)
    report.fisher = fisher
    return out, report


# -- sensitivity-weighted tables ------------------------------------------------------------------
