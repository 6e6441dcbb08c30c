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
their weight from a look-up table ``Embed(A, d)``: the dictionary ``d`` is written exactly as
integers ``D * 2**E``. Each operation's ranges are proven from the data (uint8 input, codes,
integer weights); an operation whose values could exceed the accumulator width is refused.
"""
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import List

import numpy as np

from ..core.checks import check_indices
from ..core.kinds import LAYER_SCOPES
from . import ops as O

__all__ = ['Val', 'Program', 'lower', 'requant_op', 'SUPPORTED']

#: the nnabla functions the lowering understands
SUPPORTED = ('Embed', 'Convolution', 'Affine', 'Mul2', 'Add2', 'BatchNormalization', 'ReLU',
             'MinMaxQuantize', 'FixedPointQuantize', 'AveragePooling', 'GlobalAveragePooling',
             'MaxPooling', 'MulScalar', 'AddScalar', 'Identity')

#: parameter-scope components of the layers that name a layer less well than their parent
_LAYER_SCOPES = LAYER_SCOPES | {'min_max_quantize'}

#: most fraction bits given to rounded multipliers / logit biases
_MAX_FRACTION_BITS = 24


@dataclass
class Val:
    """A value of the exported graph: ``alpha[c] * X + beta[c]`` with X the output of ``op``.

    Attributes:
        op (int): index of the operation that computes X.
        alpha, beta (list): per-channel rationals.
        relu (bool): a ReLU is still to be applied to that real value.
        tag (str): the layer it last went through (for names).
    """
    op: int
    alpha: List[Fraction]
    beta: List[Fraction]
    relu: bool = False
    tag: str = ''

    @property
    def is_codes(self):
        """Integer codes: one scale for every channel, no offset, nothing pending."""
        return (not self.relu and all(b == 0 for b in self.beta)
                and all(a == self.alpha[0] for a in self.alpha))


def _frac(v):
    """The exact rational of a number (float32/float64/int)."""
    return Fraction(float(v)) if not isinstance(v, (int, Fraction)) else Fraction(v)


def _snap(v):
    """A scalar argument as a rational: the simplest fraction (denominator <= 65536) that equals
    the stored double to its precision (so 1/127.5 is read as 2/255), else the double exactly."""
    exact = Fraction(float(v))
    simple = exact.limit_denominator(1 << 16)
    if abs(float(simple) - float(v)) <= abs(float(v)) * 2.0 ** -50:
        return simple
    return exact


def _pow2_exponent(r):
    """``j`` with ``|r| == 2**j``, or None."""
    r = abs(Fraction(r))
    if r == 0:
        return None
    n, d = r.numerator, r.denominator
    if n & (n - 1) == 0 and d == 1:
        return n.bit_length() - 1
    if n == 1 and d & (d - 1) == 0:
        return -(d.bit_length() - 1)
    return None


def _floor(r):
    return r.numerator // r.denominator


def _round_half_up(r):
    return _floor(r + Fraction(1, 2))


def _pow2_floor(r):
    """The largest power of two <= r (r > 0), as a Fraction."""
    e = r.numerator.bit_length() - r.denominator.bit_length()
    p = Fraction(2) ** e
    if p > r:
        p /= 2
    elif 2 * p <= r:
        p *= 2
    return p


def _lsb_exponent(v):
    """Exponent of the lowest set bit of a binary float ``v`` != 0."""
    f = Fraction(float(v))
    n, d = abs(f.numerator), f.denominator
    return ((n & -n).bit_length() - 1) - (d.bit_length() - 1)


def _scope(name):
    parts = name.split('/')[:-1]
    if parts and parts[-1] in _LAYER_SCOPES:
        parts = parts[:-1]
    return '/'.join(parts) or name


def _fn(f):
    return f"{f.name} ({f.type})"


def _args(f):
    for fd, val in f.ListFields():
        if fd.name.endswith('_param'):
            return val
    return None


def requant_op(name, inp, shape, lo, hi, alpha, beta, q, q_max):
    """The operation turning ``alpha[c] * X + beta[c]`` into codes ``0 ... q_max`` of step q.

    The code is ``clip(round_half_up((alpha X + beta) / q), 0, q_max)`` (ReLU included), computed
    exactly for every integer X in ``[lo[c], hi[c]]`` and every rational alpha, beta: by a shift
    (:class:`~.ops.RequantShiftOp`) when every ``alpha / q`` is 0 or a signed power of two, else
    by integer thresholds (:class:`~.ops.RequantThresholdOp`).

    Args:
        name (str): layer name.
        inp (int): index of the operation computing X.
        shape (tuple): shape of X (one sample).
        lo, hi (sequence): per-channel range of X.
        alpha, beta (sequence): per-channel rationals.
        q (Fraction): code step (> 0).
        q_max (int): largest code.

    Returns:
        ~.ops.Op: the operation, with ``alpha = q`` and ``beta = 0`` (its output is codes).
    """
    ch = len(alpha)
    ratios = [Fraction(a) / q for a in alpha]
    if all(r == 0 or _pow2_exponent(r) is not None for r in ratios):
        sign, left, right, bias = [], [], [], []
        for r, b in zip(ratios, beta):
            j = _pow2_exponent(r) if r != 0 else 0
            sign.append(0 if r == 0 else 1 if r > 0 else -1)
            left.append(max(j, 0))
            right.append(max(-j, 0))
            two_f = 1 << max(-j, 0)
            bias.append(_floor(Fraction(b) * two_f / q + Fraction(two_f, 2)))
        op = O.RequantShiftOp(name, inp, shape, sign, left, right, bias, q_max, lo, hi)
    else:
        tables = [_thresholds(Fraction(alpha[c]), Fraction(beta[c]), q, q_max, int(lo[c]),
                              int(hi[c])) for c in range(ch)]
        direction = [0 if a == 0 else 1 if a > 0 else -1 for a in alpha]
        op = O.RequantThresholdOp(name, inp, tables, direction, q_max, shape)
    op.alpha, op.beta = [q] * ch, [Fraction(0)] * ch
    return op


def _thresholds(alpha, beta, q, q_max, lo, hi):
    """Per code k = 1..Q the integer threshold of ``(alpha X + beta) / q >= k - 1/2``.

    Returns the table searched with ``X`` (alpha > 0: ``t_k = ceil(...)``, code =
    #{k: X >= t_k}) or with ``-X`` (alpha < 0: ``-u_k``, ``u_k = floor(...)``); values are
    clipped to ``[lo - 1, hi + 1]`` (resp. the negated range), which does not change any code
    of an X in ``[lo, hi]``. A zero alpha gives a constant code.
    """
    out = []
    if alpha == 0:
        code = min(max(_round_half_up(beta / q), 0), q_max)
        return [lo - 1] * code + [hi + 1] * (q_max - code)
    qn, qd = q.numerator, q.denominator
    bn, bd = beta.numerator, beta.denominator
    an, ad = alpha.numerator, alpha.denominator
    den = 2 * qd * bd * an
    for k in range(1, q_max + 1):
        num = ((2 * k - 1) * qn * bd - 2 * bn * qd) * ad
        n, d = (num, den) if den > 0 else (-num, -den)
        if alpha > 0:
            t = -((-n) // d)  # ceil
            out.append(min(max(t, lo - 1), hi + 1))
        else:
            u = n // d  # floor; code counts X <= u, searched as -X >= -u
            out.append(min(max(-u, -hi - 1), -lo + 1))
    return out


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


class _Lowering:
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
            raise ValueError(f"{_fn(f)}: reads the parameter {name} where data is expected; "
                             "the integer executor lowers only parameter-times-data functions "
                             "(export with fold=True so parameter-only subgraphs are stored)")
        raise ValueError(f"{_fn(f)}: its input {name} was not computed by a supported function")

    def split(self, f):
        """(data inputs, parameter inputs) of a function."""
        d = [i for i in f.input if i not in self.params or i in self.vals]
        p = [i for i in f.input if i in self.params and i not in self.vals]
        return d, p

    def per_channel(self, f, name, channels):
        v = np.asarray(self.params[name], np.float64)
        if v.size == 1:
            return [_frac(v.ravel()[0])] * channels
        shape = [s for s in v.shape]
        if len(shape) >= 2 and shape[1] == channels and v.size == channels:
            return [_frac(x) for x in v.ravel()]
        raise ValueError(f"{_fn(f)}: the parameter {name} of shape {tuple(v.shape)} is not one "
                         f"value per channel ({channels} channels); per-element parameters are "
                         "not supported")

    def not_relu(self, f, val, name):
        if val.relu:
            raise ValueError(f"{_fn(f)}: reads the ReLU output {name} before it is quantized; "
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
            f"{_fn(f)}: its input {name} is not quantized to integer codes (it carries a "
            "per-channel scale or an offset, e.g. a BN or bias output without an activation "
            "quantizer after it); the integer executor needs quantized activations in front of "
            "every convolution/affine layer (train with --act-bits 8)")

    def table(self, f, name):
        """(A, d, layer, A name, d name) of a convolution/affine weight."""
        if name in self.tables:
            return self.tables[name]
        if name in self.params:
            for layer, t in self.meta.get('tables', {}).items():
                if t.get('stored') == 'dense' and t.get('W') == name:
                    w = np.asarray(self.params[name])
                    d = np.unique(w.astype(np.float32))
                    return (np.searchsorted(d, w).astype(np.int64), d, _scope(layer + '/x'),
                            name, None)
            raise ValueError(
                f"{_fn(f)}: the weight {name} is a float parameter, not a LUT-Q look-up table "
                "Embed(A, d); the integer executor runs LUT-Q layers only (quantize every layer, "
                "also the first and the last: quantize_first_last=True, and export under "
                "nnabla_lutq.inference_mode())")
        raise ValueError(f"{_fn(f)}: the weight {name} is computed, not a LUT-Q look-up table "
                         "Embed(A, d)")

    def dictionary(self, d, a2, absx):
        """Integers D and exponent E with d == D * 2**E (exactly when the width allows).

        A power-of-two dictionary is always exact (the layer is refused if it does not fit); a
        free one is rounded to the coarsest multiples of 2**E that keep the layer's proven bound
        below a quarter of the accumulator range, if its exact form does not.
        """
        used = np.unique(a2)
        nz = [k for k in used if d[k] != 0]
        if not nz:
            return [0] * len(d), 0, True, True
        e_exact = min(_lsb_exponent(d[k]) for k in nz)
        pow2 = all(_pow2_exponent(_frac(d[k])) is not None for k in nz)
        e = e_exact
        while True:
            dv = [_round_half_up(_frac(v) / Fraction(2) ** e) if v != 0 else 0 for v in d]
            est = (np.abs(np.asarray(dv, np.float64))[a2] * absx).sum(1).max(initial=0)
            # a rounded (free) dictionary leaves 2 bits for what follows (biases, sums, logits)
            if est <= (self.limit >> 2) * 0.999 or (pow2 and e == e_exact):
                break
            e += 1
        return dv, e, e == e_exact, pow2

    # --- functions -------------------------------------------------------------------------

    def f_Embed(self, f):
        a, d = f.input
        if a in self.params and d in self.params:
            av, dv = np.asarray(self.params[a]), np.asarray(self.params[d])
            if np.issubdtype(av.dtype, np.integer) and dv.ndim == 1:
                layer = a[:-2] if a.endswith('/A') else a
                for name, t in self.meta.get('tables', {}).items():
                    if t.get('A') == a:
                        layer = name
                check_indices(av, dv.size, layer)
                self.tables[f.output[0]] = (av.astype(np.int64), dv.astype(np.float32),
                                            _scope(layer + '/x'), a, d)
                return
        raise ValueError(f"{_fn(f)}: only look-up tables Embed(A, d) of stored int A and 1-D d "
                         "are supported")

    def _lut(self, f):
        """The table of a convolution/affine layer and its input as codes."""
        a, d, layer, a_name, d_name = self.table(f, f.input[1])
        val = self.codes(f, self.data(f, f.input[0]), f.input[0])
        return a, d, layer, (a_name, d_name), val, self.ops[val.op]

    def _finish_lut(self, f, op_factory, a2, d, layer, names, val, xabs, channels):
        dv, e, exact, pow2 = self.dictionary(d, a2, xabs)
        while True:
            op = op_factory(dv)
            if op.bound <= self.limit:
                break
            if pow2:
                self.add(op, f" (dictionary exponents span {self._span(d, a2)} bits)")
            e += 1  # a free dictionary: drop its lowest bit
            exact = False
            dv = [_round_half_up(_frac(v) / Fraction(2) ** e) if v != 0 else 0 for v in d]
        if not exact:
            op.exact = False
            op.note = (f"dictionary rounded to multiples of 2^{e} "
                       f"({max(abs(v) for v in dv).bit_length()} significant bits) to fit")
        op.dict_exponent = e
        op.a_name, op.d_name = names
        op.var = f.output[0]
        scale = val.alpha[0] * Fraction(2) ** e
        beta = [Fraction(0)] * channels
        if len(f.input) > 2:
            beta = [_frac(v) for v in np.asarray(self.params[f.input[2]]).ravel()]
        op.alpha, op.beta = [scale] * channels, beta
        idx = self.add(op, f" (fan-in {a2.shape[1]}, dictionary exponents span "
                           f"{self._span(d, a2)} bits)")
        self.vals[f.output[0]] = Val(idx, [scale] * channels, beta, tag=layer)

    @staticmethod
    def _span(d, a2):
        ex = [_pow2_exponent(_frac(d[k])) for k in np.unique(a2) if d[k] != 0]
        ex = [v for v in ex if v is not None]
        return max(ex) - min(ex) if ex else 0

    def f_Convolution(self, f):
        p = _args(f)
        if p is not None and (p.base_axis not in (0, 1) or p.channel_last):
            raise ValueError(f"{_fn(f)}: only channel-first convolutions with base_axis=1 are "
                             "supported")
        a, d, layer, names, val, xop = self._lut(f)
        if a.ndim != 4 or len(xop.shape) != 3:
            raise ValueError(f"{_fn(f)}: only 2-D convolutions are supported")
        pad = tuple(p.pad.dim) if p and p.pad.dim else (0, 0)
        stride = tuple(p.stride.dim) if p and p.stride.dim else (1, 1)
        dilation = tuple(p.dilation.dim) if p and p.dilation.dim else (1, 1)
        group = p.group if p and p.group else 1
        o = a.shape[0]
        a2 = a.reshape(o, -1)
        cg = xop.shape[0] // group
        in_ch = (np.arange(o)[:, None] // (o // group)) * cg + \
            np.repeat(np.arange(cg), a.shape[2] * a.shape[3])[None, :]
        xabs = np.maximum(np.abs(xop.lo), np.abs(xop.hi)).astype(np.float64)[in_ch]

        def make(dv):
            return O.LutConvOp(layer, val.op, xop.shape, a, dv, pad, stride, dilation, group,
                               xop.lo, xop.hi)
        self._finish_lut(f, make, a2, d, layer, names, val, xabs, o)

    def f_Affine(self, f):
        p = _args(f)
        if p is not None and p.base_axis not in (0, 1):
            raise ValueError(f"{_fn(f)}: only base_axis=1 is supported")
        a, d, layer, names, val, xop = self._lut(f)
        a = a.reshape(a.shape[0], -1)
        if a.shape[0] != xop.size:
            raise ValueError(f"{_fn(f)}: weight rows {a.shape[0]} != inputs {xop.size}")
        per = xop.size // xop.shape[0]
        x_lo, x_hi = np.repeat(xop.lo, per), np.repeat(xop.hi, per)
        a2 = a.T
        xabs = np.maximum(np.abs(x_lo), np.abs(x_hi)).astype(np.float64)[None, :]

        def make(dv):
            return O.LutAffineOp(layer, val.op, a, dv, x_lo, x_hi)
        self._finish_lut(f, make, a2, d, layer, names, val, xabs, a.shape[1])

    def f_Mul2(self, f):
        dat, par = self.split(f)
        if len(dat) != 1:
            raise ValueError(f"{_fn(f)}: a product of two data values cannot be lowered "
                             "without multiplications of activations")
        val = self.data(f, dat[0])
        self.not_relu(f, val, dat[0])
        s = self.per_channel(f, par[0], len(val.alpha))
        self.vals[f.output[0]] = Val(val.op, [a * m for a, m in zip(val.alpha, s)],
                                     [b * m for b, m in zip(val.beta, s)], tag=_scope(par[0]))

    def f_Add2(self, f):
        dat, par = self.split(f)
        if len(dat) == 1:
            val = self.data(f, dat[0])
            self.not_relu(f, val, dat[0])
            s = self.per_channel(f, par[0], len(val.alpha))
            self.vals[f.output[0]] = Val(val.op, list(val.alpha),
                                         [b + m for b, m in zip(val.beta, s)], tag=val.tag)
            return
        v1, v2 = self.data(f, dat[0]), self.data(f, dat[1])
        for v, n in ((v1, dat[0]), (v2, dat[1])):
            self.not_relu(f, v, n)
        if self.ops[v1.op].shape != self.ops[v2.op].shape:
            raise ValueError(f"{_fn(f)}: adds values of shapes {self.ops[v1.op].shape} and "
                             f"{self.ops[v2.op].shape}; broadcasting is not supported")
        pending = [v.tag for v in (v1, v2) if not v.is_codes]
        if len(pending) == 1:
            name = _scope(pending[0] + '/x').rsplit('/', 1)[0] + '/add'
        else:
            common = []
            for a, b in zip(v1.tag.split('/'), v2.tag.split('/')):
                if a != b:
                    break
                common.append(a)
            name = '/'.join(common + ['add'])
        self.vals[f.output[0]] = self.align(f, name, [v1, v2], f.output[0])

    def align(self, f, name, vals, var):
        """Residual sum of ``vals`` on one integer grid per channel (AlignAddOp)."""
        channels = len(vals[0].alpha)
        mult = np.zeros((len(vals), channels), object)
        grid = []
        exact = True
        absx = [np.maximum(np.abs(self.ops[v.op].lo), np.abs(self.ops[v.op].hi)) for v in vals]
        for c in range(channels):
            al = [v.alpha[c] for v in vals]
            nz = [abs(a) for a in al if a != 0]
            # the grid: the finest branch scale (its multiplier is a power of two)
            g0 = min(nz) if nz else Fraction(1)
            ratios = [a / g0 for a in al]
            if all(r == 0 or (r.denominator == 1 and _pow2_exponent(r) is not None)
                   for r in ratios):
                m, g = [int(r) for r in ratios], g0
            else:
                exact = False
                for bits in range(_MAX_FRACTION_BITS, -1, -1):
                    m = [_round_half_up(r * 2 ** bits) for r in ratios]
                    if sum(abs(mi) * int(x[c]) for mi, x in zip(m, absx)) <= self.limit:
                        break
                g = g0 / 2 ** bits
            mult[:, c] = m
            grid.append(g)
        op = O.AlignAddOp(name, [v.op for v in vals], self.ops[vals[0].op].shape, mult,
                          [0] * channels, [self.ops[v.op].lo for v in vals],
                          [self.ops[v.op].hi for v in vals])
        if not exact:
            op.exact = False
            op.note = "branch scales are not powers of two of each other: rounded multipliers"
        beta = [sum((v.beta[c] for v in vals), Fraction(0)) for c in range(channels)]
        op.var, op.alpha, op.beta = var, grid, beta
        idx = self.add(op)
        return Val(idx, grid, beta, tag=name)

    def f_BatchNormalization(self, f):
        p = _args(f)
        if p is not None and (p.batch_stat or list(p.axes) not in ([1], []) or p.no_scale or
                              p.no_bias):
            raise ValueError(f"{_fn(f)}: only inference BN (batch_stat=False) over axis 1 with "
                             "scale and bias is supported")
        if len(f.input) != 5:
            raise ValueError(f"{_fn(f)}: expected inputs x, beta, gamma, mean, var")
        x, beta, gamma, mean, var = f.input
        val = self.data(f, x)
        self.not_relu(f, val, x)
        ch = len(val.alpha)
        eps = float(np.float32(p.eps if p is not None else 1e-5))
        g = [_frac(float(gm) / math.sqrt(float(vr) + eps)) for gm, vr in
             zip(self.per_channel(f, gamma, ch), self.per_channel(f, var, ch))]
        b = [bt - mn * gi for bt, mn, gi in zip(self.per_channel(f, beta, ch),
                                                 self.per_channel(f, mean, ch), g)]
        self.vals[f.output[0]] = Val(val.op, [a * gi for a, gi in zip(val.alpha, g)],
                                     [bb * gi + bi for bb, gi, bi in zip(val.beta, g, b)],
                                     tag=_scope(beta))

    def f_ReLU(self, f):
        val = self.data(f, f.input[0])
        op = self.ops[val.op]
        nonneg = all((a > 0 and b >= 0 and lo >= 0) or (a == 0 and b >= 0) for a, b, lo in
                     zip(val.alpha, val.beta, op.lo))
        self.vals[f.output[0]] = val if nonneg else Val(val.op, val.alpha, val.beta, True,
                                                        val.tag)

    def f_Identity(self, f):
        self.vals[f.output[0]] = self.data(f, f.input[0])

    def f_MulScalar(self, f):
        val = self.data(f, f.input[0])
        self.not_relu(f, val, f.input[0])
        s = _snap(_args(f).val)
        self.vals[f.output[0]] = Val(val.op, [a * s for a in val.alpha],
                                     [b * s for b in val.beta], tag=val.tag)

    def f_AddScalar(self, f):
        val = self.data(f, f.input[0])
        self.not_relu(f, val, f.input[0])
        s = _snap(_args(f).val)
        self.vals[f.output[0]] = Val(val.op, list(val.alpha), [b + s for b in val.beta],
                                     tag=val.tag)

    def f_MinMaxQuantize(self, f):
        p = _args(f)
        if p is not None and p.x_min_max:
            raise ValueError(f"{_fn(f)}: still tracks its range (x_min_max=True): build the "
                             "inference graph (test=True) before exporting")
        if len(f.input) != 5 or not all(i in self.params for i in f.input[1:]):
            raise ValueError(f"{_fn(f)}: expected stored qr_min, qr_max, ql_min, ql_max")
        vals = [np.asarray(self.params[i], np.float32) for i in f.input[1:]]
        if any(v.size != 1 for v in vals):
            raise ValueError(f"{_fn(f)}: per-channel quantization ranges are not supported (one "
                             "range per layer)")
        qr_min, qr_max, ql_min, ql_max = (np.float32(v.ravel()[0]) for v in vals)
        eps = np.float32(p.eps if p is not None else 0.01)
        if qr_max - qr_min < eps:  # nnabla's nudge_range
            qr_max = np.float32(qr_min + eps)
        scale = np.float32(np.float32(qr_max - qr_min) / np.float32(ql_max - ql_min))
        zp = np.float32(ql_min - qr_min / scale)
        zp = ql_min if zp <= ql_min else ql_max if zp >= ql_max else np.float32(np.round(zp))
        if zp != ql_min or ql_min != int(ql_min) or ql_max != int(ql_max):
            raise ValueError(f"{_fn(f)}: the quantization range [{qr_min}, {qr_max}] does not "
                             "start at 0 (zero point != ql_min); only ranges of ReLU outputs "
                             "(qr_min = 0) are supported")
        name = _scope(f.input[2])
        self.requant(f, name, _frac(scale), int(ql_max - ql_min))

    def f_FixedPointQuantize(self, f):
        p = _args(f)
        if p.sign:
            raise ValueError(f"{_fn(f)}: signed fixed-point codes are not supported (use "
                             "sign=False after a ReLU)")
        val = self.data(f, f.input[0])
        self.requant(f, val.tag + '/act', _frac(np.float32(p.delta)), (1 << p.n) - 1)

    def requant(self, f, name, q, q_max):
        val = self.data(f, f.input[0])
        xop = self.ops[val.op]
        op = requant_op(name, val.op, xop.shape, xop.lo, xop.hi, val.alpha, val.beta, q, q_max)
        op.var = f.output[0]
        idx = self.add(op)
        self.vals[f.output[0]] = Val(idx, op.alpha, op.beta, tag=name)

    def _pool(self, f, cls, kind):
        p = _args(f)
        val = self.data(f, f.input[0])
        xop = self.ops[val.op]
        if len(xop.shape) != 3:
            raise ValueError(f"{_fn(f)}: expects (C, H, W) values")
        if f.type == 'GlobalAveragePooling':
            kernel = stride = xop.shape[1:]
        else:
            if p.channel_last or (p.pad.dim and any(p.pad.dim)):
                raise ValueError(f"{_fn(f)}: padding and channel_last are not supported")
            kernel = tuple(p.kernel.dim)
            stride = tuple(p.stride.dim) if p.stride.dim else kernel
            if not p.ignore_border and any((n - k) % s for n, k, s in
                                           zip(xop.shape[1:], kernel, stride)):
                raise ValueError(f"{_fn(f)}: windows past the border (ignore_border=False) are "
                                 "not supported")
        op = cls(f.name.split('/')[-1] if not val.tag else val.tag + '/' + kind, val.op,
                 xop.shape, kernel, stride, xop.lo, xop.hi)
        return val, op

    def f_AveragePooling(self, f):
        val, op = self._pool(f, O.SumPoolOp, 'pool')
        self.not_relu(f, val, f.input[0])
        n = op.window
        op.var = f.output[0]
        op.alpha, op.beta = [a / n for a in val.alpha], list(val.beta)
        idx = self.add(op)
        self.vals[f.output[0]] = Val(idx, op.alpha, op.beta, tag=val.tag)

    f_GlobalAveragePooling = f_AveragePooling

    def f_MaxPooling(self, f):
        val, op = self._pool(f, O.MaxPoolOp, 'maxpool')
        if any(a <= 0 for a in val.alpha):
            raise ValueError(f"{_fn(f)}: max pooling of values with a non-positive scale (a "
                             "negative BN scale) is not supported; pool after the activation "
                             "quantizer")
        op.var = f.output[0]
        op.alpha, op.beta = list(val.alpha), list(val.beta)
        idx = self.add(op)
        self.vals[f.output[0]] = Val(idx, op.alpha, op.beta, val.relu, val.tag)

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
        g0 = abs(val.alpha[0]) if same else _pow2_floor(min(abs(a) for a in val.alpha if a)
                                                         if any(val.alpha) else Fraction(1))
        best = None
        for bits in range(0, 2 * _MAX_FRACTION_BITS + 1):
            g = g0 / 2 ** bits
            m = [a / g for a in val.alpha]
            b = [bb / g for bb in val.beta]
            mi = [_round_half_up(v) for v in m]
            bi = [_round_half_up(v) for v in b]
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
        s = _snap(input_scale)
        inp.alpha, inp.beta = [s] * shape[0], [Fraction(0)] * shape[0]
        self.add(inp)
        self.vals[input_name] = Val(0, [s] * shape[0], [Fraction(0)] * shape[0], tag='input')
        for f in self.net.function:
            handler = getattr(self, 'f_' + f.type, None)
            if handler is None:
                raise ValueError(
                    f"{_fn(f)}: the integer executor cannot lower this function; it supports "
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
    return _Lowering(model, net, input_scale, acc_bits).run(inputs[0], outputs[0], input_scale)
