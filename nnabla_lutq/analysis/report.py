# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Per-layer memory and multiplication report of a network's graph (``nnabla_lutq.report``)."""
from dataclasses import dataclass, asdict
from typing import Optional

import numpy as np
import nnabla as nn

from ..core.checks import check_indices
from ..core.config import bits_per_index, group_ids
from ..core.pow2 import is_pow2_array
from ..core.kinds import BY_FUNCTION
from ..nn.state import STATE, LUTQLayer, MLBNLayer, all_parameters

__all__ = ['report', 'LayerRecord', 'Report', 'tied_weights']


def tied_weights(d, a, out_axis, where='layer', hint=''):
    """The weights ``d[A]`` of a look-up table, each index read in its group's row.

    Args:
        d (numpy.ndarray): one table ``(K,)``, or one per group of output channels
            ``(n_groups, K)`` (group ``g``: channels ``g·s ... (g+1)·s - 1``, ``s`` the channels
            per group).
        a (numpy.ndarray): the indices, of the shape of the weight.
        out_axis (int): the output-channel axis of the weight (0, or -1 for affine).
        where (str): the layer, for the message.
        hint (str): what to do, appended to the message.

    Returns:
        numpy.ndarray: the tied weights, the shape of ``a``.

    Raises:
        ValueError: if the number of tables does not divide the output channels.
    """
    if d.ndim == 1:
        return d[a]
    axis = out_axis % a.ndim
    n_out, n_groups = a.shape[axis], d.shape[0]
    if n_groups < 1 or n_out % n_groups:
        raise ValueError(f"{where}: {n_groups} look-up tables for {n_out} output channels{hint}")
    return d[group_ids(a.shape, axis, n_out // n_groups), a]


def _products(d, n_out, values, fan):
    """The products of a LUT-Q layer for ``values`` output values: per output value one per
    distinct non-zero value of its table, at most the fan-in."""
    if d.ndim == 1:
        return values * min(np.unique(d[d != 0]).size, fan)
    per_table = sum(min(np.unique(row[row != 0]).size, fan) for row in d)
    return values // n_out * (n_out // d.shape[0]) * per_table


@dataclass
class LayerRecord:
    """One row of the report (per inference of one sample).

    Attributes:
        name (str): parameter prefix of the layer.
        type (str): ``conv``, ``depthwise_conv``, ``affine``, ``deconv`` or ``bn``.
        lutq (bool): whether the layer is LUT-Q (or multiplier-less BN).
        n_values (int or None): K, the values of each table.
        n_weights (int): N (for BN: channels).
        bits (int): bits per weight index, ceil(log2 K) (32 for float weights).
        sparsity (float): fraction of weights tied to a zero value.
        pow2 (bool): whether every dictionary value (or BN scale) is 0 or ±2^k.
        memory_bits (int): T·K·32 + N·ceil(log2 K) for LUT-Q with T tables, N·32 for float
            (BN: 2·C·32).
        float_memory_bits (int): N·32 (BN: 2·C·32).
        mults (int): multiplications of this layer (over all its calls).
        shifts (int): multiplications by ±2^k, i.e. shifts.
        float_mults (int): multiplications of the float layer.
        calls (int): how often the graph calls the layer; a layer whose parameters are shared by
            several calls is one row, its memory counted once and its multiplications per call.
        n_tables (int): T, the look-up tables of a LUT-Q layer (its groups of output channels;
            1 without ``group_size``), 0 for a layer without tables.
    """
    name: str
    type: str
    lutq: bool
    n_values: Optional[int]
    n_weights: int
    bits: int
    sparsity: float
    pow2: bool
    memory_bits: int
    float_memory_bits: int
    mults: int
    shifts: int
    float_mults: int
    calls: int = 1
    n_tables: int = 0

    def add_call(self, other):
        """Count one more call of this layer (``other``: the row that call alone would make)."""
        self.calls += 1
        self.mults += other.mults
        self.shifts += other.shifts
        self.float_mults += other.float_mults


class Report(list):
    """A list of :class:`LayerRecord` with totals and a printable table."""

    @property
    def totals(self):
        """dict: summed memory, multiplications and shifts, and the compression ratio."""
        t = {k: sum(getattr(r, k) for r in self) for k in
             ('memory_bits', 'float_memory_bits', 'mults', 'shifts', 'float_mults')}
        t['compression'] = t['float_memory_bits'] / max(1, t['memory_bits'])
        return t

    def records(self):
        """list: the rows as plain dicts (for JSON)."""
        return [asdict(r) for r in self]

    def table(self):
        """str: the report as a fixed-width table with a totals line."""
        head = (f"{'layer':<28} {'type':<8} {'K':>4} {'tables':>6} {'N':>9} {'bits':>4} "
                f"{'sparse':>6} {'pow2':>4} {'mem kbit':>9} {'float kbit':>10} {'mults':>11} "
                f"{'shifts':>11} {'float mults':>12}")
        lines = [head, '-' * len(head)]
        for r in self:
            name = r.name if r.calls == 1 else f"{r.name} x{r.calls}"
            lines.append(
                f"{name[-28:]:<28} {r.type[:8]:<8} {r.n_values or '-':>4} {r.n_tables or '-':>6} "
                f"{r.n_weights:>9} "
                f"{r.bits:>4} {r.sparsity:>6.1%} {'yes' if r.pow2 else 'no':>4} "
                f"{r.memory_bits / 1e3:>9.1f} {r.float_memory_bits / 1e3:>10.1f} {r.mults:>11,} "
                f"{r.shifts:>11,} {r.float_mults:>12,}")
        t = self.totals
        lines.append('-' * len(head))
        lines.append(
            f"{'total':<28} {'':<8} {'':>4} {'':>6} {'':>9} {'':>4} {'':>6} {'':>4} "
            f"{t['memory_bits'] / 1e3:>9.1f} {t['float_memory_bits'] / 1e3:>10.1f} "
            f"{t['mults']:>11,} {t['shifts']:>11,} {t['float_mults']:>12,}")
        lines.append(f"memory {t['float_memory_bits'] / 8e3:.1f} kB float -> "
                     f"{t['memory_bits'] / 8e3:.1f} kB ({t['compression']:.1f}x smaller); "
                     f"multiplications {t['float_mults']:,} -> {t['mults']:,} "
                     f"(+ {t['shifts']:,} shifts)")
        return '\n'.join(lines)

    def __str__(self):
        return self.table()


def _leaves(v):
    found = [v] if v.parent is None else []

    def cb(f):
        found.extend(i for i in f.inputs if i.parent is None)
    if v.parent is not None:
        v.visit(cb)
    return found


class _Facts:
    """What the report knows about parameters: the LUT-Q state, or a file's description."""

    def __init__(self, meta, names):
        self.names = names  # NdArray -> parameter name
        self.meta = meta
        self.by_param = {}
        if meta is not None:
            for layer, t in meta['tables'].items():
                for part in ('A', 'd', 'W'):
                    if t.get(part):
                        self.by_param[t[part]] = ('table', layer, t)
            for layer, b in meta['bn'].items():
                for p in b['params']:
                    self.by_param[p] = ('bn', layer, b)

    def table(self, w):
        """``(name, d Variable, A Variable, K)`` of the LUT-Q layer computing ``w``, or None."""
        for leaf in _leaves(w):
            if self.meta is None:
                rec, part = STATE.part_of(leaf)
                if isinstance(rec, LUTQLayer):
                    return rec.name, rec.d, rec.A, rec.config.n_values
            else:
                fact = self.by_param.get(self.names.get(leaf.data))
                if fact and fact[0] == 'table' and fact[2]['stored'] == 'tables':
                    t = fact[2]
                    leaves = {self.names.get(v.data): v for v in _leaves(w)}
                    return fact[1], leaves[t['d']], leaves[t['A']], t['n_values']
        return None

    def bn_of(self, v):
        """``(name, multiplier-less, a per-channel Variable)`` of the BN layer whose parameter
        ``v`` is, or None."""
        if self.meta is None:
            rec, _ = STATE.part_of(v)
            if isinstance(rec, MLBNLayer):
                return rec.name, True, rec.gamma
            return None
        fact = self.by_param.get(self.names.get(v.data))
        if fact and fact[0] == 'bn':
            return fact[1], fact[2]['multiplier_less'], v
        return None

    def bn(self, f):
        """The BN layer (see :meth:`bn_of`) one of whose parameters ``f`` reads, or None."""
        for v in f.inputs:
            if v.parent is None and self.bn_of(v) is not None:
                return self.bn_of(v)
        return None


def report(output, meta=None):
    """Report memory and multiplications per layer of the graph that computes ``output``.

    For a LUT-Q layer with T tables of K values (T groups of output channels, 1 without
    ``group_size``) the memory is T·K·32 + N·ceil(log2 K) bits (float: N·32). Per output value
    it sums its inputs per dictionary value and then needs one multiplication per distinct
    non-zero value of its table (at most the fan-in); with a power-of-two dictionary those are
    counted as shifts. A float layer needs one multiplication per input per output
    value (a deconvolution: one per input value and weight of its output channels). Batch
    normalization needs one multiplication per element at inference (a shift for ``mlbn``).
    Counts are per sample. A layer whose parameters several calls share (the same ``name=``
    twice) is one row: its memory counted once, its multiplications once per call (``calls``).

    Layers are recognised by facts, never by the shape of their arithmetic: in a graph built in
    this process through the LUT-Q state, in a graph loaded from an exported file through the
    file's description (``meta``, see :mod:`nnabla_lutq.io.metadata`).

    Args:
        output (~nnabla.Variable): the network output; the graph must be built (shapes known).
        meta (dict or None): the description of the file the graph was loaded from (the
            parameters are then named as registered in the current scope, as ``NnpLoader``
            registers them).

    Returns:
        Report: a list of :class:`LayerRecord`; ``print(report(y))`` prints the table.

    Raises:
        ValueError: if ``output`` is not an nnabla Variable, or a look-up table's ``A`` holds
            indices outside ``[0, K)``.
    """
    if not isinstance(output, nn.Variable):
        raise ValueError(f"report() takes the network's output Variable (e.g. report(y)), got "
                         f"{type(output).__name__} {output!r}")
    names = {p.data: k for k, p in all_parameters().items()}
    if meta is not None:  # a loaded file: its own names, as registered in the current scope
        names.update({p.data: k for k, p in nn.get_parameters(grad_only=False).items()})
    facts = _Facts(meta, names)

    def param_name(v):
        return names.get(v.data, '?')

    def visit(f):
        """``(layer key, row)`` of one call of a weight or float BN layer, or None."""
        t = f.info.type_name
        if t in BY_FUNCTION:
            w = f.inputs[1]
            n = int(np.prod(w.shape))
            # Deconvolution multiplies each input value by the weights of its output channels;
            # the others take each output value from fan-in products
            per = f.inputs[0] if t == 'Deconvolution' else f.outputs[0]
            values = int(np.prod(per.shape[f.info.args.get('base_axis', 1):]))
            fan = w.shape[0] if t == 'Affine' else n // w.shape[0]
            float_mults = values * fan
            found = facts.table(w)
            if found is None:
                leaf = w if w.parent is None else _leaves(w)[0]
                wd = w.data.get_data('r', np.float32)
                return leaf.data, LayerRecord(param_name(leaf).rsplit('/', 1)[0],
                                              BY_FUNCTION[t].kind, False, None, n, 32,
                                              float(np.mean(wd == 0)), False, 32 * n, 32 * n,
                                              float_mults, 0, float_mults)
            name, d_var, a_var, k = found
            d = d_var.data.get_data('r', np.float32)
            a = a_var.data.get_data('r').astype(np.int64)
            hint = (", not a valid look-up table; re-fit it with nnabla_lutq.initialize() and "
                    "export the model again")
            check_indices(a, d.shape[-1], name, hint)
            q = tied_weights(d, a, BY_FUNCTION[t].out_axis, name, hint)
            pow2 = is_pow2_array(d)
            products = _products(d, a.shape[BY_FUNCTION[t].out_axis], values, fan)
            bits = bits_per_index(k)
            tables = 1 if d.ndim == 1 else d.shape[0]
            return name, LayerRecord(name, BY_FUNCTION[t].kind, True, k, n, bits,
                                     float(np.mean(q == 0)), pow2,
                                     32 * k * tables + n * bits, 32 * n,
                                     0 if pow2 else products, products if pow2 else 0,
                                     float_mults, n_tables=tables)
        if t in ('BatchNormalization', 'FusedBatchNormalization') and facts.bn(f) is None:
            gamma = f.inputs[2]  # a float BN
            c = int(np.prod(gamma.shape))
            elements = int(np.prod(f.outputs[0].shape[1:]))
            return gamma.data, LayerRecord(param_name(gamma).rsplit('/', 1)[0], 'bn', False, None,
                                           c, 32, 0.0, False, 64 * c, 64 * c, elements, 0,
                                           elements)
        return None

    functions = []
    output.visit(functions.append)
    placed = []  # (position in the graph, row)
    layers = {}  # key -> row: one layer per set of parameters, however often it is called
    for pos, f in enumerate(functions):
        found = visit(f)
        if found is None:
            continue
        key, row = found
        if key in layers:
            layers[key].add_call(row)
        else:
            layers[key] = row
            placed.append((pos, row))
    placed.extend(_bn_rows(functions, facts, names))
    return Report(r for _, r in sorted(placed, key=lambda pr: pr[0]))


#: the function of one call of a BN layer: the normalization itself (a training graph), else
#: the product of the data with the folded scale ``x * a``
_BN_CALL = (('BatchNormalization', 'FusedBatchNormalization'), ('Mul2', 'Div2'))


def _bn_rows(functions, facts, names):
    """Rows of the BN layers known by their parameters (mlbn built in this process, or the file's
    description for a loaded graph), in graph order. Each call of a layer is a function that
    multiplies data by a value computed from the layer's parameters alone (``x * a`` of a folded
    one, or the normalization itself); a layer shared by two calls is one row, its memory
    counted once and its multiplications per call.

    Returns:
        list: ``(position of the first such function, LayerRecord)``.
    """
    param_only = set()
    found = {}  # name -> [first position, multiplier-less, channels, {call kind: [sizes]}]
    for pos, f in enumerate(functions):
        for v in f.inputs:
            if v.parent is None and v.data in names:
                param_only.add(v)
        if all(v in param_only for v in f.inputs):
            param_only.update(f.outputs)
            continue
        elements = int(np.prod(f.outputs[0].shape[1:]))
        layers = set()
        for v in f.inputs:
            if v in param_only:
                for leaf in _leaves(v):
                    fact = facts.bn_of(leaf)
                    if fact is not None:
                        layers.add(fact[0])
                        entry = found.setdefault(fact[0], [pos, fact[1], fact[2], {}])
                        entry[0] = min(entry[0], pos)
        kind = next((i for i, types in enumerate(_BN_CALL) if f.info.type_name in types), None)
        if kind is not None:
            for name in layers:
                found[name][3].setdefault(kind, []).append(elements)
    rows = []
    for name, (first, ml, chan, by_kind) in found.items():
        c = int(np.prod(chan.shape))
        calls = by_kind[min(by_kind)] if by_kind else [0]
        row = None
        for elements in calls:
            one = LayerRecord(name, 'bn', ml, None, c, 32, 0.0, ml, 64 * c, 64 * c,
                              0 if ml else elements, elements if ml else 0, elements)
            if row is None:
                row = one
            else:
                row.add_call(one)
        rows.append((first, row))
    return rows
