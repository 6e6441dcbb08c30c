# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Lowering an exported LUT-Q network (.nnp) to integer operations (:mod:`.ops`).

Every value of the exported graph is tracked as ``alpha[c] * X + beta[c]`` per channel ``c``:
``X`` is an integer array computed by an operation, ``alpha`` and ``beta`` are exact rationals
(:class:`fractions.Fraction`; float parameters are read exactly). Scaling functions (folded
multiplier-less BN ``x * a + b``, float BN, ``MulScalar``/``AddScalar``, average pooling's
division) change only ``alpha``/``beta``; they cost nothing until a value has to become integer
codes again:

* an activation quantizer (``MinMaxQuantize``, ``FixedPointQuantize``) turns it into codes
  ``0 ... Q`` with step ``q`` by a shift (``alpha / q`` a power of two: exact for every real
  ``beta``) or by comparisons with exact integer thresholds (any other ratio);
* a residual ``Add2`` of two branches puts both on one integer grid per channel (shifts when the
  ratios of the scales are powers of two, else rounded integer multipliers);
* the network output becomes integer logits on one grid (its scale is returned).

Convolution and affine layers must read codes (one scale for all channels, no offset) and take
their weight from a look-up table (``Embed(A, d)``, or grouped tables read by ``Gather``, as
:mod:`nnabla_lutq.io.lookup` recognizes them; or a table the file's description says is stored
dense): the dictionary ``d`` is written exactly as integers ``D * 2**E``, grouped tables as one
integer row per group with one exponent ``E`` for all rows (the layer's output keeps one
scale). Each operation's ranges are proven from the data (uint8 input, codes, integer weights);
an operation whose values could exceed the accumulator width is refused.
"""
from collections import namedtuple
from fractions import Fraction

import numpy as np

from ..core.checks import check_indices
from ..io.lookup import find_lookups, group_ids, proto_facts
from . import ops as O
from .elementwise import ElementwiseLowering
from .values import (MAX_FRACTION_BITS, Val, describe, frac, function_args, layer_of,
                     lsb_exponent, pow2_exponent, pow2_floor, requant_op, round_half_up, snap)

__all__ = ['Val', 'Program', 'lower', 'requant_op', 'SUPPORTED']

#: the nnabla functions the lowering understands (besides the functions of a look-up table, the
#: ``Reshape``/``Broadcast``/``Transpose``/``Gather`` of grouped tables)
SUPPORTED = ('Embed', 'Convolution', 'Affine', 'Mul2', 'Add2', 'BatchNormalization', 'ReLU',
             'MinMaxQuantize', 'FixedPointQuantize', 'AveragePooling', 'GlobalAveragePooling',
             'MaxPooling', 'MulScalar', 'AddScalar', 'Identity')

#: a layer's look-up table: indices ``a`` (int64, shape of W), table ``d`` (``(K,)`` or, grouped,
#: ``(G, K)``), layer name, the names of A and d, and the group of every weight (None: one table)
Table = namedtuple('Table', 'a d layer a_name d_name groups')

class Program:
    """The lowered network: operations in order, the output and its scale.

    Attributes:
        ops (list): :class:`~nnabla_lutq.integer.ops.Op` in execution order.
        output (int): index of the operation that computes the integer logits.
        logit_scale (Fraction): the real value of a logit is ``logit_scale * L``.
        input_shape (tuple): shape of one input sample.
        acc_bits (int): the accumulator width every operation was proven to fit.
    """

    def __init__(self, ops, output, logit_scale, input_shape, acc_bits):
        self.ops = ops
        self.output = output
        self.logit_scale = logit_scale
        self.input_shape = tuple(input_shape)
        self.acc_bits = acc_bits


class Lowering(ElementwiseLowering):
    def __init__(self, model, net, input_scale, acc_bits):
        self.model = model
        self.params = model.params
        self.meta = model.meta or {}
        self.acc_bits = acc_bits
        self.limit = (1 << (acc_bits - 1)) - 1
        self.shapes = {v.name: tuple(int(d) for d in v.shape.dim)[1:] for v in net.variable}
        self.ops = []
        self.vals = {}
        self.tables = {}
        self.net = net
        facts = proto_facts(net)
        found = find_lookups(facts, lambda n: (self.params[n].dtype, self.params[n].shape)
                             if n in self.params else None)
        #: function index -> the look-up it completes; the indices of the functions before it
        self.lookup_at = {lk.functions[-1]: lk for lk in found}
        self.inside = {i for lk in found for i in lk.functions[:-1]}

    # --- helpers ---------------------------------------------------------------------------

    def add(self, op, what=''):
        if op.bound > self.limit:
            raise ValueError(
                f"{op.name} ({op.kind}): integer values can reach {op.bound:,} ({op.bits} bits, "
                f"proven from the layer's integer weights and the ranges of its inputs), more "
                f"than {self.acc_bits}-bit accumulators hold{what}. Train with a bounded "
                "power-of-two exponent span (pow2_range=(lo, hi): int32 needs "
                "fan_in * 255 * 2**(hi - lo) < 2**31) or use acc_bits=64")
        self.ops.append(op)
        return len(self.ops) - 1

    def data(self, f, name):
        if name in self.vals:
            return self.vals[name]
        if name in self.params:
            raise ValueError(f"{describe(f)}: reads the parameter {name} where data is expected; "
                             "the integer executor lowers only parameter-times-data functions "
                             "(export with fold=True so parameter-only subgraphs are stored)")
        raise ValueError(f"{describe(f)}: its input {name} was not computed by a supported function")

    def split(self, f):
        """(data inputs, parameter inputs) of a function."""
        d = [i for i in f.input if i not in self.params or i in self.vals]
        p = [i for i in f.input if i in self.params and i not in self.vals]
        return d, p

    def per_channel(self, f, name, channels):
        v = np.asarray(self.params[name], np.float64)
        if v.size == 1:
            return [frac(v.ravel()[0])] * channels
        shape = [s for s in v.shape]
        if len(shape) >= 2 and shape[1] == channels and v.size == channels:
            return [frac(x) for x in v.ravel()]
        raise ValueError(f"{describe(f)}: the parameter {name} of shape {tuple(v.shape)} is not one "
                         f"value per channel ({channels} channels); per-element parameters are "
                         "not supported")

    def not_relu(self, f, val, name):
        if val.relu:
            raise ValueError(f"{describe(f)}: reads the ReLU output {name} before it is quantized; "
                             "the integer executor needs an activation quantizer after every "
                             "ReLU (train with --act-bits 8, examples.common.models.Layers("
                             "act_bits=8))")

    def codes(self, f, val, name):
        """``val`` as integer codes with one scale, materializing the input preprocessing."""
        if val.is_codes:
            return val
        op = self.ops[val.op]
        same = all(a == val.alpha[0] for a in val.alpha) and all(b == val.beta[0]
                                                                 for b in val.beta)
        if isinstance(op, O.InputOp) and not val.relu and same and val.alpha[0] != 0:
            # real = alpha * (m p + n) + beta = (alpha / k) * (k m p + k n + k beta / alpha)
            ratio = val.beta[0] / val.alpha[0]
            k = ratio.denominator
            if k <= (1 << 16):
                new = O.InputOp('input', op.shape, op.m * k, op.n * k + int(ratio * k))
                new.alpha, new.beta = [val.alpha[0] / k] * op.shape[0], [Fraction(0)] * \
                    op.shape[0]
                idx = self.add(new)
                return Val(idx, new.alpha, new.beta, tag='input')
        if val.relu:
            self.not_relu(f, val, name)
        raise ValueError(
            f"{describe(f)}: its input {name} is not quantized to integer codes (it carries a "
            "per-channel scale or an offset, e.g. a BN or bias output without an activation "
            "quantizer after it); the integer executor needs quantized activations in front of "
            "every convolution/affine layer (train with --act-bits 8)")

    def table(self, f, name):
        """The :class:`Table` of a convolution/affine weight."""
        if name in self.tables:
            return self.tables[name]
        if name in self.params:
            for layer, t in self.meta.get('tables', {}).items():
                if t.get('stored') == 'dense' and t.get('W') == name:
                    return _dense_table(np.asarray(self.params[name]), t, layer)
            raise ValueError(
                f"{describe(f)}: the weight {name} is a float parameter, not a LUT-Q look-up table "
                "Embed(A, d); the integer executor runs LUT-Q layers only (quantize every layer, "
                "also the first and the last: quantize_first_last=True, and export under "
                "nnabla_lutq.inference_mode())")
        raise ValueError(f"{describe(f)}: the weight {name} is computed, not a LUT-Q look-up table "
                         "Embed(A, d)")

    def lookup(self, lk):
        """Record the :class:`Table` of a look-up the graph computes
        (:class:`~nnabla_lutq.io.lookup.TableLookup`)."""
        av, dv = np.asarray(self.params[lk.a]), np.asarray(self.params[lk.d])
        layer = lk.a[:-2] if lk.a.endswith('/A') else lk.a
        for name, t in self.meta.get('tables', {}).items():
            if t.get('A') == lk.a:
                layer = name
        check_indices(av, lk.n_values, layer)
        self.tables[lk.output] = Table(av.astype(np.int64), dv.astype(np.float32),
                                       layer_of(layer + '/x'), lk.a, lk.d,
                                       lk.group_ids() if lk.grouped else None)

    def dictionary(self, d, a2, absx, rows):
        """Integers D and exponent E with d == D * 2**E (exactly when the width allows).

        A power-of-two dictionary is always exact (the layer is refused if it does not fit); a
        free one is rounded to the coarsest multiples of 2**E that keep the layer's proven bound
        below a quarter of the accumulator range, if its exact form does not. Grouped tables
        (``d`` of shape ``(G, K)``, output channel ``o`` reading row ``rows[o]``) share one E:
        the values the layer uses decide it, whichever row holds them.
        """
        table = d.reshape(-1, d.shape[-1])
        used = [(int(g), int(k)) for g, k in np.argwhere(_used(table, a2, rows))
                if table[g, k] != 0]
        if not used:
            return _scaled(d, None), 0, True, True
        e_exact = min(lsb_exponent(table[g, k]) for g, k in used)
        pow2 = all(pow2_exponent(frac(table[g, k])) is not None for g, k in used)
        e = e_exact
        while True:
            dv = _scaled(d, e)
            mags = np.abs(np.asarray(dv, np.float64)).reshape(table.shape)
            est = (mags[rows[:, None], a2] * absx).sum(1).max(initial=0)
            # a rounded (free) dictionary leaves 2 bits for what follows (biases, sums, logits)
            if est <= (self.limit >> 2) * 0.999 or (pow2 and e == e_exact):
                break
            e += 1
        return dv, e, e == e_exact, pow2

    # --- functions -------------------------------------------------------------------------

    def f_Embed(self, f):
        raise ValueError(f"{describe(f)}: only look-up tables Embed(A, d) of stored int A and 1-D d "
                         "are supported")

    def _lut(self, f):
        """The table of a convolution/affine layer and its input as codes."""
        t = self.table(f, f.input[1])
        val = self.codes(f, self.data(f, f.input[0]), f.input[0])
        return t, val, self.ops[val.op]

    def _finish_lut(self, f, op_factory, a2, t, val, xabs, rows):
        d, channels = t.d, a2.shape[0]
        dv, e, exact, pow2 = self.dictionary(d, a2, xabs, rows)
        while True:
            op = op_factory(dv)
            if op.bound <= self.limit:
                break
            if pow2:
                self.add(op, f" (dictionary exponents span {_span(d, a2, rows)} bits)")
            e += 1  # a free dictionary: drop its lowest bit
            exact = False
            dv = _scaled(d, e)
        if not exact:
            op.exact = False
            op.note = (f"dictionary rounded to multiples of 2^{e} "
                       f"({max(abs(v) for v in op.D).bit_length()} significant bits) to fit")
        op.dict_exponent = e
        op.a_name, op.d_name = t.a_name, t.d_name
        op.var = f.output[0]
        scale = val.alpha[0] * Fraction(2) ** e
        beta = [Fraction(0)] * channels
        if len(f.input) > 2:
            beta = [frac(v) for v in np.asarray(self.params[f.input[2]]).ravel()]
        op.alpha, op.beta = [scale] * channels, beta
        idx = self.add(op, f" (fan-in {a2.shape[1]}, dictionary exponents span "
                           f"{_span(d, a2, rows)} bits)")
        self.vals[f.output[0]] = Val(idx, [scale] * channels, beta, tag=t.layer)

    def f_Convolution(self, f):
        p = function_args(f)
        if p is not None and (p.base_axis not in (0, 1) or p.channel_last):
            raise ValueError(f"{describe(f)}: only channel-first convolutions with base_axis=1 are "
                             "supported")
        t, val, xop = self._lut(f)
        a = t.a
        if a.ndim != 4 or len(xop.shape) != 3:
            raise ValueError(f"{describe(f)}: only 2-D convolutions are supported")
        pad = tuple(p.pad.dim) if p and p.pad.dim else (0, 0)
        stride = tuple(p.stride.dim) if p and p.stride.dim else (1, 1)
        dilation = tuple(p.dilation.dim) if p and p.dilation.dim else (1, 1)
        group = p.group if p and p.group else 1
        o = a.shape[0]
        a2 = a.reshape(o, -1)
        rows = _rows(f, t, lambda x: x.reshape(o, -1))
        cg = xop.shape[0] // group
        in_ch = (np.arange(o)[:, None] // (o // group)) * cg + \
            np.repeat(np.arange(cg), a.shape[2] * a.shape[3])[None, :]
        xabs = np.maximum(np.abs(xop.lo), np.abs(xop.hi)).astype(np.float64)[in_ch]

        def make(dv):
            return O.LutConvOp(t.layer, val.op, xop.shape, a, dv, pad, stride, dilation, group,
                               xop.lo, xop.hi, rows if t.groups is not None else None)
        self._finish_lut(f, make, a2, t, val, xabs, rows)

    def f_Affine(self, f):
        p = function_args(f)
        if p is not None and p.base_axis not in (0, 1):
            raise ValueError(f"{describe(f)}: only base_axis=1 is supported")
        t, val, xop = self._lut(f)
        a = t.a.reshape(t.a.shape[0], -1)
        if a.shape[0] != xop.size:
            raise ValueError(f"{describe(f)}: weight rows {a.shape[0]} != inputs {xop.size}")
        per = xop.size // xop.shape[0]
        x_lo, x_hi = np.repeat(xop.lo, per), np.repeat(xop.hi, per)
        a2 = a.T
        rows = _rows(f, t, lambda x: x.reshape(a.shape[0], -1).T)
        xabs = np.maximum(np.abs(x_lo), np.abs(x_hi)).astype(np.float64)[None, :]

        def make(dv):
            return O.LutAffineOp(t.layer, val.op, a, dv, x_lo, x_hi,
                                 rows if t.groups is not None else None)
        self._finish_lut(f, make, a2, t, val, xabs, rows)

    def output(self, name):
        """Integer logits of the output value: (op index, scale)."""
        val = self.vals[name]
        if val.relu:
            raise ValueError(f"the output {name} is a ReLU output without a quantizer")
        if val.is_codes:
            return val.op, val.alpha[0]
        xop = self.ops[val.op]
        ch = len(val.alpha)
        absx = np.maximum(np.abs(xop.lo), np.abs(xop.hi))
        same = all(a == val.alpha[0] for a in val.alpha)
        g0 = abs(val.alpha[0]) if same else pow2_floor(min(abs(a) for a in val.alpha if a)
                                                         if any(val.alpha) else Fraction(1))
        best = None
        for bits in range(0, 2 * MAX_FRACTION_BITS + 1):
            g = g0 / 2 ** bits
            m = [a / g for a in val.alpha]
            b = [bb / g for bb in val.beta]
            mi = [round_half_up(v) for v in m]
            bi = [round_half_up(v) for v in b]
            if sum(abs(v) * int(x) for v, x in zip(mi, absx)) + max(abs(v) for v in bi) > \
                    self.limit:
                break
            exact = all(v.denominator == 1 for v in m + b)
            best = (mi, bi, g, exact, bits)
            if exact:
                break
        if best is None:
            raise ValueError(f"logits: the integer logits of {name} (the last layer's "
                             f"accumulator plus its bias on that grid) could exceed "
                             f"{self.acc_bits}-bit accumulators; use acc_bits=64")
        mi, bi, g, exact, bits = best
        op = O.AlignAddOp('logits', [val.op], xop.shape, np.array([mi], object), bi,
                          [xop.lo], [xop.hi])
        if not exact:
            op.exact = False
            op.note = f"logit bias rounded to the logit grid (error <= scale/2, {bits} bits)"
        op.var, op.alpha, op.beta = name, [g] * ch, [Fraction(0)] * ch
        return self.add(op), g

    def run(self, input_name, output_name, input_scale):
        shape = self.shapes[input_name]
        inp = O.InputOp('input', shape)
        s = snap(input_scale)
        inp.alpha, inp.beta = [s] * shape[0], [Fraction(0)] * shape[0]
        self.add(inp)
        self.vals[input_name] = Val(0, [s] * shape[0], [Fraction(0)] * shape[0], tag='input')
        for i, f in enumerate(self.net.function):
            if i in self.inside:  # a step of a look-up, recorded at its last function
                continue
            if i in self.lookup_at:
                self.lookup(self.lookup_at[i])
                continue
            handler = getattr(self, 'f_' + f.type, None)
            if handler is None:
                raise ValueError(
                    f"{describe(f)}: the integer executor cannot lower this function; it supports "
                    f"{', '.join(SUPPORTED)} (LUT-Q layers with quantized activations)")
            handler(f)
        if output_name not in self.vals:
            raise ValueError(f"the output {output_name} was not computed")
        out, scale = self.output(output_name)
        # keep the operations the output depends on (an input op replaced by its
        # preprocessed form, for example, is dropped)
        keep, todo = set(), [out]
        while todo:
            i = todo.pop()
            if i not in keep:
                keep.add(i)
                todo.extend(self.ops[i].inputs)
        order = sorted(keep)
        index = {old: new for new, old in enumerate(order)}
        ops = [self.ops[i] for i in order]
        for op in ops:
            op.inputs = [index[i] for i in op.inputs]
        return Program(ops, index[out], scale, shape, self.acc_bits)


def _used(table, a2, rows):
    """``(G, K)`` mask of the table entries some output channel's weights read."""
    used = np.zeros(table.shape, bool)
    used[rows[:, None], a2] = True
    return used


def _scaled(d, e):
    """The table as integers ``round(d / 2**e)`` (0 stays 0; all 0 for ``e`` None), a list of K
    for one table, of G lists of K for grouped tables."""
    rows = [[0 if e is None or v == 0 else round_half_up(frac(v) / Fraction(2) ** e)
             for v in row] for row in np.asarray(d).reshape(-1, d.shape[-1])]
    return rows[0] if d.ndim == 1 else rows


def _span(d, a2, rows):
    """The span of the exponents of the power-of-two values the layer uses (0 if none)."""
    table = d.reshape(-1, d.shape[-1])
    ex = [pow2_exponent(frac(table[g, k])) for g, k in np.argwhere(_used(table, a2, rows))
          if table[g, k] != 0]
    ex = [v for v in ex if v is not None]
    return max(ex) - min(ex) if ex else 0


def _rows(f, t, layout):
    """The table row of each output channel (``layout`` lays a weight-shaped array out as the
    layer's ``(O, T)`` indices); zeros for one table."""
    if t.groups is None:
        return np.zeros(layout(t.a).shape[0], np.int64)
    g2 = layout(t.groups)
    if not np.all(g2 == g2[:, :1]):
        raise ValueError(f"{describe(f)}: the grouped tables of {t.layer} are not cut along the "
                         "layer's output channels")
    return g2[:, 0].copy()


def _dense_table(w, entry, layer):
    """The :class:`Table` of a LUT-Q layer the file stores dense (``d[A]`` as ``W``): the distinct
    values of the layer, or of each group of a grouped layer (rows padded with 0, never read)."""
    if entry.get('group_size') is None:
        d = np.unique(w.astype(np.float32))
        return Table(np.searchsorted(d, w).astype(np.int64), d, layer_of(layer + '/x'),
                     entry['W'], None, None)
    groups = group_ids(w.shape, int(entry['out_axis']), int(entry['group_size']))
    values = [np.unique(w[groups == g].astype(np.float32)) for g in range(groups.max() + 1)]
    d = np.zeros((len(values), max(len(v) for v in values)), np.float32)
    a = np.zeros(w.shape, np.int64)
    for g, v in enumerate(values):
        d[g, :len(v)] = v
        a[groups == g] = np.searchsorted(v, w[groups == g])
    return Table(a, d, layer_of(layer + '/x'), entry['W'], None, groups)


def lower(model, input_scale=1.0, acc_bits=32, network=None):
    """Lower an exported network to integer operations.

    Args:
        model (~nnabla_lutq.io.nnp.Nnp): the file's contents.
        input_scale (float): the graph's input is ``input_scale * p`` for uint8 pixels ``p``.
        acc_bits (int): width of the integer accumulators (every operation is proven to fit).
        network (str): network name (default: the first executor's).

    Returns:
        Program: the operations, the output and the logit scale.

    Raises:
        ValueError: naming the function or layer, for a graph that is not a LUT-Q network with
            quantized activations or values that could exceed ``acc_bits``.
    """
    from ..io.nnp import default_network, proto_network
    if acc_bits not in (16, 32, 64):
        raise ValueError(f"acc_bits must be 16, 32 or 64 (got {acc_bits!r})")
    name = network or default_network(model)
    net = proto_network(model, name)
    ex = [e for e in model.proto.executor if e.network_name == name]
    if ex:
        inputs = [v.variable_name for v in ex[0].data_variable]
        outputs = [v.variable_name for v in ex[0].output_variable]
    else:
        produced = {o for f in net.function for o in f.output}
        read = {i for f in net.function for i in f.input}
        inputs = [v.name for v in net.variable if v.type == 'Buffer' and v.name not in produced]
        outputs = [v.name for v in net.variable if v.name in produced and v.name not in read]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(f"network {name}: the integer executor needs exactly one input and one "
                         f"output (found {inputs} and {outputs})")
    if input_scale is None or not float(input_scale) > 0:
        raise ValueError(f"input_scale must be positive (got {input_scale!r})")
    return Lowering(model, net, input_scale, acc_bits).run(inputs[0], outputs[0], input_scale)
