# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The integer operations that rescale, add and pool values (re-exported by :mod:`.ops`):
requantization to codes by shift or by thresholds, sums of branches on one grid, pooling."""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .opbase import Op, chan, term_counts, zero_counts

__all__ = ['RequantShiftOp', 'RequantThresholdOp', 'AlignAddOp', 'SumPoolOp', 'MaxPoolOp']


class RequantShiftOp(Op):
    """Requantization by shift: ``code = clip((sign * X << L) + B >> F, 0, Q)`` per channel.

    With ``alpha / q = sign * 2**j`` (the accumulator's scale over the code step), ``L = max(j,
    0)``, ``F = max(-j, 0)`` and ``B = floor(beta / q * 2**F + 2**F / 2)``, this equals
    ``clip(round_half_up((alpha * X + beta) / q), 0, Q)`` exactly for every integer X and every
    real beta: ``floor((N + f) / 2**F) = floor(N / 2**F)`` for integer N and ``0 <= f < 1``. The
    lower clamp is the ReLU.
    """
    kind = 'requant (shift)'

    def __init__(self, name, inp, shape, sign, left, right, bias, q_max, x_lo, x_hi):
        self.sign = np.asarray(sign, np.int64)
        self.left = np.asarray(left, np.int64)
        self.right = np.asarray(right, np.int64)
        self.bias = np.asarray(bias, object)
        self.q_max = int(q_max)
        xl, xh = np.asarray(x_lo, object), np.asarray(x_hi, object)
        s = self.sign.astype(object)
        sh = np.array([1 << int(v) for v in self.left], object)
        v1, v2 = s * xl * sh + self.bias, s * xh * sh + self.bias
        vmax = np.maximum(np.abs(v1), np.abs(v2))
        codes = [np.clip([int(a) >> int(f), int(b) >> int(f)], 0, self.q_max) for a, b, f in
                 zip(v1, v2, self.right)]
        lo = [min(c) for c in codes]
        hi = [max(c) for c in codes]
        super().__init__(name, [inp], shape, lo, hi)
        self.bound = max(int(vmax.max(initial=0)), self.q_max)

    def run(self, xs, form='direct'):
        (x,) = xs
        nd = x.ndim
        v = np.left_shift(x, chan(self.left, nd)) * chan(self.sign, nd) + \
            chan(self.bias.astype(np.int64), nd)
        return self.check(np.clip(np.right_shift(v, chan(self.right, nd)), 0, self.q_max))

    def counts(self):
        per = self.size // len(self.sign)
        c = zero_counts()
        for s, lf, r, b in zip(self.sign, self.left, self.right, self.bias):
            if s == 0:  # a constant channel: the code is stored
                continue
            c['shifts'] += per * (int(lf > 0) + int(r > 0))
            c['adds'] += per * int(b != 0 or s < 0)
            c['compares'] += per * 2
        return c


class RequantThresholdOp(Op):
    """Requantization by comparisons: ``code = #{k : X >= t_k}`` (or ``X <= u_k``) per channel.

    For a scale ratio that is not a power of two (an EMA activation step, float BN, an input
    scale such as 1/255) the code of ``clip(round_half_up((alpha * X + beta) / q), 0, Q)`` is
    decided by Q integer thresholds computed exactly (rational arithmetic) when the network is
    lowered; a binary search takes ``log2(Q + 1)`` comparisons and look-ups per value.
    """
    kind = 'requant (thresholds)'

    def __init__(self, name, inp, tables, direction, q_max, shape):
        self.tables = np.asarray(tables, np.int64)  # (C, Q): nondecreasing for +1, else -u
        self.direction = np.asarray(direction, np.int64)  # +1: X >= t, -1: X <= u, 0: constant
        self.q_max = int(q_max)
        self.steps = int(self.q_max).bit_length()
        super().__init__(name, [inp], shape, [0] * len(direction), [self.q_max] * len(direction))
        self.bound = max(int(np.abs(self.tables).max(initial=0)), self.q_max)

    def run(self, xs, form='direct'):
        (x,) = xs
        y = np.empty_like(x)
        for c in range(x.shape[1]):
            xc = x[:, c] if self.direction[c] >= 0 else -x[:, c]
            y[:, c] = np.searchsorted(self.tables[c], xc, side='right')
        return self.check(y)

    def counts(self):
        per = self.size // len(self.direction)
        c = zero_counts()
        live = int(np.count_nonzero(self.direction))
        c['compares'] = c['lookups'] = per * live * self.steps
        c['adds'] = per * int(np.count_nonzero(self.direction < 0))  # the negation of X
        return c


class AlignAddOp(Op):
    """Sum of branches on one integer grid per channel: ``X = sum_b M[b, c] * X_b + B_c``.

    ``M`` are integers, powers of two (shifts) where the branches' scales allow; otherwise they
    are the branch scale over the grid, rounded (``exact`` is False then, and each is a
    multiplication). Used for residual additions and for the integer logits.
    """
    kind = 'align + add'

    def __init__(self, name, inputs, shape, mult, bias, branch_lo, branch_hi):
        self.mult = np.asarray(mult, object)  # (B, C)
        self.bias = np.asarray(bias, object)  # (C,)
        lo = np.array(self.bias, object)
        hi = np.array(self.bias, object)
        vmax = np.abs(self.bias)
        for m, bl, bh in zip(self.mult, branch_lo, branch_hi):
            p1, p2 = m * np.asarray(bl, object), m * np.asarray(bh, object)
            lo = lo + np.minimum(p1, p2)
            hi = hi + np.maximum(p1, p2)
            vmax = vmax + np.maximum(np.abs(p1), np.abs(p2))
        super().__init__(name, inputs, shape, lo, hi)
        self.bound = int(vmax.max(initial=0))

    def run(self, xs, form='direct'):
        nd = xs[0].ndim
        y = np.zeros_like(xs[0]) + chan(self.bias.astype(np.int64), nd)
        for m, x in zip(self.mult, xs):
            y = y + x * chan(m.astype(np.int64), nd)
        return self.check(y)

    def counts(self):
        per = self.size // self.mult.shape[1]
        c = zero_counts()
        n_branches = self.mult.shape[0]
        for ch in range(self.mult.shape[1]):
            for b in range(n_branches):
                t = term_counts(self.mult[b, ch])
                c['shifts'] += per * t['shifts']
                c['mults'] += per * t['mults']
            neg_only = n_branches == 1 and self.mult[0, ch] < 0
            c['adds'] += per * (n_branches - 1 + int(self.bias[ch] != 0) + int(neg_only))
        return c


class _PoolOp(Op):
    """Window reduction without padding; subclasses set the reduction and what it costs."""
    reduce = None
    cost = ''
    sums = False

    def __init__(self, name, inp, in_shape, kernel, stride, x_lo, x_hi):
        self.kernel, self.stride = tuple(kernel), tuple(stride)
        c, h, w = in_shape
        self.out_hw = tuple((n - k) // s + 1 for n, k, s in zip((h, w), self.kernel, self.stride))
        self.window = self.kernel[0] * self.kernel[1]
        scale = self.window if self.sums else 1
        super().__init__(name, [inp], (c,) + self.out_hw, np.asarray(x_lo) * scale,
                         np.asarray(x_hi) * scale)

    def run(self, xs, form='direct'):
        win = sliding_window_view(xs[0], self.kernel, axis=(2, 3))[:, :, ::self.stride[0],
                                                                    ::self.stride[1]]
        win = win[:, :, :self.out_hw[0], :self.out_hw[1]]
        return self.check(type(self).reduce(win, axis=(-2, -1)))

    def counts(self):
        c = zero_counts()
        c[self.cost] = self.size * (self.window - 1)
        return c


class SumPoolOp(_PoolOp):
    """Average pooling as a window sum (the division by the window size goes into the scale)."""
    kind = 'sum pool'
    reduce, cost, sums = np.sum, 'adds', True


class MaxPoolOp(_PoolOp):
    """Max pooling of codes (comparisons only)."""
    kind = 'max pool'
    reduce, cost = np.max, 'compares'
