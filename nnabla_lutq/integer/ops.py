# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The integer operations of a lowered network: what each computes, how it is counted.

Every operation maps integer arrays to an integer array (numpy int64, batch first) and knows
a proven range ``[lo, hi]`` of its output per channel and ``bound``, the largest magnitude any
of its intermediate values can take (:attr:`Op.bits` = the signed width that holds them). The
lowering (:mod:`nnabla_lutq.integer.lowering`) derives the ranges from the data: uint8 input,
activation codes ``0 ... 2**n - 1``, the layers' integer weights.

Per image, :meth:`Op.counts` returns the operations the integer machine performs (the C file
written by :mod:`nnabla_lutq.integer.cgen` performs exactly these):

* ``adds``: integer additions and subtractions (one per non-zero, in-bounds tap into its partial
  sum; one per combined partial sum; bias, rounding and residual adds; window sums);
* ``shifts``: arithmetic shifts by a non-zero amount;
* ``compares``: comparisons (clamping to the code range, threshold search, max pooling);
* ``lookups``: reads of a table entry used in arithmetic (a dictionary value / shift of a
  partial sum, a threshold);
* ``mults``: integer multiplications (only where a value is not a power of two).

Address arithmetic and loop counters are not counted, as they are not in a float network's
multiply-accumulate count (``float_macs``).

The numpy forms of the convolutions evaluate integer dot products with float64 matrix products:
every operand and every partial sum is an integer of magnitude at most ``bound`` < 2**53, so each
float64 addition is exact and the result is the integer sum (checked: values are converted back to
int64 and asserted to lie in the proven range). Above 2**53 int64 products are used.

The LUT-Q convolution and affine operations are defined here; the base class and the input
(:mod:`.opbase`) and the operations that rescale, add and pool (:mod:`.rescale`) are re-exported,
so every operation is ``ops.<Name>``.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .opbase import COUNT_KEYS, InputOp, Op, is_pow2_int, term_counts, zero_counts
from .rescale import AlignAddOp, MaxPoolOp, RequantShiftOp, RequantThresholdOp, SumPoolOp

__all__ = ['Op', 'InputOp', 'LutConvOp', 'LutAffineOp', 'RequantShiftOp', 'RequantThresholdOp',
           'AlignAddOp', 'SumPoolOp', 'MaxPoolOp', 'COUNT_KEYS', 'is_pow2_int']

_EXACT_FLOAT = 2 ** 53


def _exact_matmul(a, b, bound):
    """``a @ b`` of integer-valued arrays, exact while every partial sum is <= ``bound``."""
    if bound < _EXACT_FLOAT:
        return np.rint(np.matmul(a.astype(np.float64), b.astype(np.float64))).astype(np.int64)
    return np.matmul(a.astype(np.int64), b.astype(np.int64))


class _LutLayer(Op):
    """Shared part of LUT-Q convolution and affine: ``A`` (output channel first) and ``D``.

    The weight of tap ``t`` of output channel ``o`` is ``D[A[o, t]] * 2**E`` (``D`` integers):
    the LUT-Q form adds every input into the partial sum of its index, ``S_k = sum of the inputs
    x_t with A[o, t] = k``, then combines ``acc = sum_k D_k * S_k`` (a shift per sum for
    power-of-two ``D_k``). With grouped tables ``D`` has one row per group and output channel
    ``o`` reads row ``rows[o]``; every row shares the exponent ``E``.

    Attributes:
        D (list): the integer dictionary, ``G·K`` values row by row (``K`` for one table).
        K (int): values per table.
        rows (numpy.ndarray): the table row of each output channel (all 0 for one table).
        grouped (bool): the layer has one table per group of output channels.
    """

    def _setup_tables(self, a2, dvals, rows=None):
        self.A2 = np.asarray(a2, np.int64)  # (O, T)
        table = np.asarray(dvals, object)
        self.grouped = table.ndim == 2
        table = table.reshape(-1, table.shape[-1])
        self.K = table.shape[1]
        self.D = [int(v) for v in table.ravel()]
        o = self.A2.shape[0]
        self.rows = np.zeros(o, np.int64) if rows is None else np.asarray(rows, np.int64)
        self.Drow = np.array(self.D, np.int64).reshape(-1, self.K)[self.rows]  # (O, K)
        self.W2 = np.take_along_axis(self.Drow, self.A2, axis=1)  # integer weights (O, T)
        nz = self.Drow != 0
        self.nonzero = np.take_along_axis(nz, self.A2, axis=1)  # (O, T) taps that add
        used = np.zeros((o, self.K), bool)
        np.put_along_axis(used, self.A2, True, axis=1)
        self.terms = used & nz  # (O, K) partial sums combined per output channel

    def _combine_counts(self, positions):
        c = zero_counts()
        for o in range(self.A2.shape[0]):
            for k in np.flatnonzero(self.terms[o]):
                t = term_counts(self.Drow[o, k])
                c['shifts'] += t['shifts'] * positions
                c['mults'] += t['mults'] * positions
                c['lookups'] += positions
                c['adds'] += positions
        return c

    def _lutq_combine(self, s, rows=slice(None)):
        """``sum_k D_k * S_k`` from partial sums ``s`` (N, O, K, L) of the output channels
        ``rows``; the shift form of pow-2 D."""
        acc = np.zeros(s.shape[:2] + s.shape[3:], np.int64)
        view = (1, -1) + (1,) * (acc.ndim - 2)
        for k in range(self.K):
            dk = self.Drow[rows, k]
            if not dk.any():
                continue
            sk = s[:, :, k]
            pow2 = np.array([is_pow2_int(v) for v in dk]).reshape(view)
            shift = np.array([abs(int(v)).bit_length() - 1 if is_pow2_int(v) else 0
                              for v in dk]).reshape(view)
            term = np.left_shift(sk, shift)
            term = np.where(dk.reshape(view) < 0, -term, term)
            acc += np.where(pow2, term, sk * dk.reshape(view))
        return acc


class LutConvOp(_LutLayer):
    """LUT-Q convolution of integer codes: K partial sums by weight index, then the dictionary.

    Args:
        name (str): layer name.
        inp (int): index of the input operation.
        in_shape (tuple): ``(C, H, W)`` of the input.
        a (numpy.ndarray): indices ``(O, C/group, kh, kw)``.
        dvals (list): integer dictionary ``D`` (K values, or G rows of K for grouped tables).
        pad, stride, dilation (tuple): as nnabla's convolution.
        group (int): channel groups.
        x_lo, x_hi (numpy.ndarray): per input channel range of the input.
        rows (numpy.ndarray or None): grouped tables: the row of ``dvals`` of each output
            channel.
    """
    kind = 'LUT-Q conv'

    def __init__(self, name, inp, in_shape, a, dvals, pad, stride, dilation, group, x_lo, x_hi,
                 rows=None):
        a = np.asarray(a)
        self.in_shape = tuple(in_shape)
        self.kernel = tuple(a.shape[2:])
        self.pad, self.stride, self.dilation = tuple(pad), tuple(stride), tuple(dilation)
        self.group = int(group)
        c, h, w = self.in_shape
        out_hw = [(n + 2 * p - (k - 1) * d - 1) // s + 1 for n, p, k, d, s in
                  zip((h, w), self.pad, self.kernel, self.dilation, self.stride)]
        if min(out_hw) < 1:
            raise ValueError(f"{name}: the kernel does not fit the {h}x{w} input")
        self.out_hw = tuple(out_hw)
        o = a.shape[0]
        self._setup_tables(a.reshape(o, -1), dvals, rows)
        cg = c // self.group
        in_ch = (np.arange(o)[:, None] // (o // self.group)) * cg + \
            np.repeat(np.arange(cg), self.kernel[0] * self.kernel[1])[None, :]  # (O, T)
        xl, xh = np.asarray(x_lo, object)[in_ch], np.asarray(x_hi, object)[in_ch]
        w2 = self.W2.astype(object)
        p1, p2 = w2 * xl, w2 * xh
        hi = np.maximum(np.maximum(p1, p2), 0).sum(1)
        lo = np.minimum(np.minimum(p1, p2), 0).sum(1)
        absx = np.maximum(np.abs(xl), np.abs(xh))
        super().__init__(name, [inp], (o,) + self.out_hw, lo, hi)
        # partial sums and every prefix of the combination stay below sum |w| |x|
        self.bound = max(self.bound, int((np.abs(w2) * absx).sum(1).max(initial=0)),
                         int((absx * self.nonzero).sum(1).max(initial=0)))
        self.valid = self._valid_taps()

    def _valid_taps(self):
        """Number of output positions at which each kernel tap reads inside the input."""
        ones = np.ones((1, 1) + self.in_shape[1:], np.int64)
        cols = self._im2col(ones, 1)  # (1, kh*kw, L)
        return cols[0].sum(1)  # (kh*kw,)

    def _im2col(self, x, channels):
        n = x.shape[0]
        (ph, pw), (sh, sw), (dh, dw) = self.pad, self.stride, self.dilation
        kh, kw = self.kernel
        xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        win = sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
        ho, wo = self.out_hw
        win = win[:, :, ::sh, ::sw][:, :, :ho, :wo, ::dh, ::dw]
        return win.transpose(0, 1, 4, 5, 2, 3).reshape(n, channels * kh * kw, ho * wo)

    def run(self, xs, form='direct'):
        (x,) = xs
        n = x.shape[0]
        o = self.A2.shape[0]
        og, cg = o // self.group, self.in_shape[0] // self.group
        outs = []
        for g in range(self.group):
            cols = self._im2col(x[:, g * cg:(g + 1) * cg], cg)  # (N, T, L)
            rows = slice(g * og, (g + 1) * og)
            if form == 'lutq':
                a2 = self.A2[rows]
                masks = (a2[:, None, :] == np.arange(self.K)[None, :, None]) & \
                    self.nonzero[rows][:, None, :]  # (Og, K, T)
                s = _exact_matmul(masks.reshape(og * self.K, -1), cols, self.bound)
                outs.append(self._lutq_combine(s.reshape(n, og, self.K, -1), rows))
            else:
                outs.append(_exact_matmul(self.W2[rows], cols, self.bound))
        y = np.concatenate(outs, axis=1).reshape((n,) + self.shape)
        return self.check(y)

    def counts(self):
        # one add per non-zero weight per output position where its tap is in bounds
        kk = self.kernel[0] * self.kernel[1]
        per_tap = np.tile(self.valid, self.A2.shape[1] // kk)  # (T,)
        c = self._combine_counts(self.out_hw[0] * self.out_hw[1])
        c['adds'] += int((self.nonzero * per_tap[None, :]).sum())
        return c

    def float_macs(self):
        return int(self.A2.size * self.out_hw[0] * self.out_hw[1])


class LutAffineOp(_LutLayer):
    """LUT-Q affine layer of integer codes (input flattened), same form as :class:`LutConvOp`.

    Args:
        name (str): layer name.
        inp (int): index of the input operation.
        a (numpy.ndarray): indices ``(I, O)`` as nnabla stores affine weights.
        dvals (list): integer dictionary (K values, or G rows of K for grouped tables).
        x_lo, x_hi (numpy.ndarray): range of each of the I flattened inputs.
        rows (numpy.ndarray or None): grouped tables: the row of ``dvals`` of each output.
    """
    kind = 'LUT-Q affine'

    def __init__(self, name, inp, a, dvals, x_lo, x_hi, rows=None):
        a = np.asarray(a)
        self._setup_tables(a.reshape(a.shape[0], -1).T, dvals, rows)
        w2 = self.W2.astype(object)
        xl, xh = np.asarray(x_lo, object)[None, :], np.asarray(x_hi, object)[None, :]
        p1, p2 = w2 * xl, w2 * xh
        hi = np.maximum(np.maximum(p1, p2), 0).sum(1)
        lo = np.minimum(np.minimum(p1, p2), 0).sum(1)
        absx = np.maximum(np.abs(xl), np.abs(xh))
        super().__init__(name, [inp], (self.A2.shape[0],), lo, hi)
        self.bound = max(self.bound, int((np.abs(w2) * absx).sum(1).max(initial=0)),
                         int((absx * self.nonzero).sum(1).max(initial=0)))

    def run(self, xs, form='direct'):
        (x,) = xs
        x2 = x.reshape(x.shape[0], -1)
        if form == 'lutq':
            masks = (self.A2[:, None, :] == np.arange(self.K)[None, :, None]) & \
                self.nonzero[:, None, :]
            o = self.A2.shape[0]
            s = _exact_matmul(masks.reshape(o * self.K, -1), x2.T, self.bound)  # (O*K, N)
            s = s.reshape(o, self.K, -1).transpose(2, 0, 1)[..., None]  # (N, O, K, 1)
            return self.check(self._lutq_combine(s)[..., 0])
        return self.check(_exact_matmul(x2, self.W2.T, self.bound))

    def counts(self):
        c = self._combine_counts(1)
        c['adds'] += int(self.nonzero.sum())
        return c

    def float_macs(self):
        return int(self.A2.size)
