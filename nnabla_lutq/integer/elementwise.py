# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The lowering of the functions that only rescale, add, clamp or pool values (a mixin of the
lowering in :mod:`.lowering`): ``Mul2``/``Add2`` (residual alignment), float and folded BN,
``ReLU``, scalar arithmetic, activation quantizers and pooling."""
import math
from fractions import Fraction

import numpy as np

from . import ops as O
from .values import (MAX_FRACTION_BITS, Val, describe, frac, function_args, layer_of,
                     pow2_exponent, requant_op, round_half_up, snap)

__all__ = ['ElementwiseLowering']


class ElementwiseLowering:
    """Handlers ``f_<Function>`` for the functions that do not multiply by weights; they use the
    state and helpers of :class:`~nnabla_lutq.integer.lowering.Lowering` (``self``)."""

    def f_Mul2(self, f):
        dat, par = self.split(f)
        if len(dat) != 1:
            raise ValueError(f"{describe(f)}: a product of two data values cannot be lowered "
                             "without multiplications of activations")
        val = self.data(f, dat[0])
        self.not_relu(f, val, dat[0])
        s = self.per_channel(f, par[0], len(val.alpha))
        self.vals[f.output[0]] = Val(val.op, [a * m for a, m in zip(val.alpha, s)],
                                     [b * m for b, m in zip(val.beta, s)], tag=layer_of(par[0]))

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
            raise ValueError(f"{describe(f)}: adds values of shapes {self.ops[v1.op].shape} and "
                             f"{self.ops[v2.op].shape}; broadcasting is not supported")
        pending = [v.tag for v in (v1, v2) if not v.is_codes]
        if len(pending) == 1:
            name = layer_of(pending[0] + '/x').rsplit('/', 1)[0] + '/add'
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
            if all(r == 0 or (r.denominator == 1 and pow2_exponent(r) is not None)
                   for r in ratios):
                m, g = [int(r) for r in ratios], g0
            else:
                exact = False
                for bits in range(MAX_FRACTION_BITS, -1, -1):
                    m = [round_half_up(r * 2 ** bits) for r in ratios]
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
        p = function_args(f)
        if p is not None and (p.batch_stat or list(p.axes) not in ([1], []) or p.no_scale or
                              p.no_bias):
            raise ValueError(f"{describe(f)}: only inference BN (batch_stat=False) over axis 1 with "
                             "scale and bias is supported")
        if len(f.input) != 5:
            raise ValueError(f"{describe(f)}: expected inputs x, beta, gamma, mean, var")
        x, beta, gamma, mean, var = f.input
        val = self.data(f, x)
        self.not_relu(f, val, x)
        ch = len(val.alpha)
        eps = float(np.float32(p.eps if p is not None else 1e-5))
        g = [frac(float(gm) / math.sqrt(float(vr) + eps)) for gm, vr in
             zip(self.per_channel(f, gamma, ch), self.per_channel(f, var, ch))]
        b = [bt - mn * gi for bt, mn, gi in zip(self.per_channel(f, beta, ch),
                                                 self.per_channel(f, mean, ch), g)]
        self.vals[f.output[0]] = Val(val.op, [a * gi for a, gi in zip(val.alpha, g)],
                                     [bb * gi + bi for bb, gi, bi in zip(val.beta, g, b)],
                                     tag=layer_of(beta))

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
        s = snap(function_args(f).val)
        self.vals[f.output[0]] = Val(val.op, [a * s for a in val.alpha],
                                     [b * s for b in val.beta], tag=val.tag)

    def f_AddScalar(self, f):
        val = self.data(f, f.input[0])
        self.not_relu(f, val, f.input[0])
        s = snap(function_args(f).val)
        self.vals[f.output[0]] = Val(val.op, list(val.alpha), [b + s for b in val.beta],
                                     tag=val.tag)

    def f_MinMaxQuantize(self, f):
        p = function_args(f)
        if p is not None and p.x_min_max:
            raise ValueError(f"{describe(f)}: still tracks its range (x_min_max=True): build the "
                             "inference graph (test=True) before exporting")
        if len(f.input) != 5 or not all(i in self.params for i in f.input[1:]):
            raise ValueError(f"{describe(f)}: expected stored qr_min, qr_max, ql_min, ql_max")
        vals = [np.asarray(self.params[i], np.float32) for i in f.input[1:]]
        if any(v.size != 1 for v in vals):
            raise ValueError(f"{describe(f)}: per-channel quantization ranges are not supported (one "
                             "range per layer)")
        qr_min, qr_max, ql_min, ql_max = (np.float32(v.ravel()[0]) for v in vals)
        eps = np.float32(p.eps if p is not None else 0.01)
        if qr_max - qr_min < eps:  # nnabla's nudge_range
            qr_max = np.float32(qr_min + eps)
        scale = np.float32(np.float32(qr_max - qr_min) / np.float32(ql_max - ql_min))
        zp = np.float32(ql_min - qr_min / scale)
        zp = ql_min if zp <= ql_min else ql_max if zp >= ql_max else np.float32(np.round(zp))
        if zp != ql_min or ql_min != int(ql_min) or ql_max != int(ql_max):
            raise ValueError(f"{describe(f)}: the quantization range [{qr_min}, {qr_max}] does not "
                             "start at 0 (zero point != ql_min); only ranges of ReLU outputs "
                             "(qr_min = 0) are supported")
        name = layer_of(f.input[2])
        self.requant(f, name, frac(scale), int(ql_max - ql_min))

    def f_FixedPointQuantize(self, f):
        p = function_args(f)
        if p.sign:
            raise ValueError(f"{describe(f)}: signed fixed-point codes are not supported (use "
                             "sign=False after a ReLU)")
        val = self.data(f, f.input[0])
        self.requant(f, val.tag + '/act', frac(np.float32(p.delta)), (1 << p.n) - 1)

    def requant(self, f, name, q, q_max):
        val = self.data(f, f.input[0])
        xop = self.ops[val.op]
        op = requant_op(name, val.op, xop.shape, xop.lo, xop.hi, val.alpha, val.beta, q, q_max)
        op.var = f.output[0]
        idx = self.add(op)
        self.vals[f.output[0]] = Val(idx, op.alpha, op.beta, tag=name)

    def _pool(self, f, cls, kind):
        p = function_args(f)
        val = self.data(f, f.input[0])
        xop = self.ops[val.op]
        if len(xop.shape) != 3:
            raise ValueError(f"{describe(f)}: expects (C, H, W) values")
        if f.type == 'GlobalAveragePooling':
            kernel = stride = xop.shape[1:]
        else:
            if p.channel_last or (p.pad.dim and any(p.pad.dim)):
                raise ValueError(f"{describe(f)}: padding and channel_last are not supported")
            kernel = tuple(p.kernel.dim)
            stride = tuple(p.stride.dim) if p.stride.dim else kernel
            if not p.ignore_border and any((n - k) % s for n, k, s in
                                           zip(xop.shape[1:], kernel, stride)):
                raise ValueError(f"{describe(f)}: windows past the border (ignore_border=False) are "
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
            raise ValueError(f"{describe(f)}: max pooling of values with a non-positive scale (a "
                             "negative BN scale) is not supported; pool after the activation "
                             "quantizer")
        op.var = f.output[0]
        op.alpha, op.beta = list(val.alpha), list(val.beta)
        idx = self.add(op)
        self.vals[f.output[0]] = Val(idx, op.alpha, op.beta, val.relu, val.tag)
