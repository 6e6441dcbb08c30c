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
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ['Op', 'InputOp', 'LutConvOp', 'LutAffineOp', 'RequantShiftOp', 'RequantThresholdOp',
           'AlignAddOp', 'SumPoolOp', 'MaxPoolOp', 'COUNT_KEYS', 'is_pow2_int']

#: the operation kinds :meth:`Op.counts` reports
COUNT_KEYS = ('adds', 'shifts', 'compares', 'lookups', 'mults')

_EXACT_FLOAT = 2 ** 53


def is_pow2_int(v):
    """Whether the integer ``|v|`` is a power of two (1, 2, 4, ...)."""
    v = abs(int(v))
    return v > 0 and v & (v - 1) == 0


def _zero_counts():
    return dict.fromkeys(COUNT_KEYS, 0)


def _term_counts(m):
    """Counts of ``x * m`` for an integer constant m: nothing, a shift, or a multiplication."""
    m = abs(int(m))
    return {'shifts': int(m > 1 and is_pow2_int(m)), 'mults': int(m > 1 and not is_pow2_int(m))}


def _chan(v, ndim):
    """A per-channel vector shaped to broadcast against a (N, C, ...) array."""
    return np.asarray(v).reshape((1, -1) + (1,) * (ndim - 2))


def _exact_matmul(a, b, bound):
    """``a @ b`` of integer-valued arrays, exact while every partial sum is <= ``bound``."""
    if bound < _EXACT_FLOAT:
        return np.rint(np.matmul(a.astype(np.float64), b.astype(np.float64))).astype(np.int64)
    return np.matmul(a.astype(np.int64), b.astype(np.int64))


class Op:
    """One integer operation.

    Attributes:
        name (str): the layer it belongs to (parameter scope or function name).
        kind (str): short description of the operation.
        inputs (list): indices of the operations it reads.
        shape (tuple): output shape of one sample (channels first).
        lo, hi (numpy.ndarray): proven per-channel range of the output (int64).
        bound (int): proven magnitude bound of every intermediate value.
        exact (bool): whether it computes the exported network's arithmetic exactly (False where
            a value had to be rounded to fit the integer grid, see ``note``).
        note (str): what was rounded, if anything.
        var (str or None): the exported network's variable that ``alpha * X + beta`` equals.
        alpha, beta (list): per channel, the real value of the output is ``alpha * X + beta``
            (:class:`fractions.Fraction`).
    """
    kind = ''

    def __init__(self, name, inputs, shape, lo, hi):
        self.name = name
        self.inputs = list(inputs)
        self.shape = tuple(int(s) for s in shape)
        self.lo = np.asarray(lo, np.int64)
        self.hi = np.asarray(hi, np.int64)
        self.bound = int(max(np.abs(self.lo).max(initial=0), np.abs(self.hi).max(initial=0)))
        self.exact = True
        self.note = ''
        self.var = None
        self.alpha = None
        self.beta = None

    @property
    def bits(self):
        """Signed integer width that holds every intermediate value (sign bit included)."""
        return int(self.bound).bit_length() + 1

    @property
    def size(self):
        """Number of output values per sample."""
        return int(np.prod(self.shape))

    def run(self, xs, form='direct'):
        """Compute the output from the input arrays ``xs`` (int64, batch first)."""
        raise NotImplementedError

    def counts(self):
        """Operations per image, by kind (:data:`COUNT_KEYS`)."""
        return _zero_counts()

    def float_macs(self):
        """Multiply-accumulates of the float network's layer (0 for non-linear layers)."""
        return 0

    def check(self, y):
        """Raise if ``y`` leaves the proven range (a bug, never an input error)."""
        if y.size and (np.any(y < _chan(self.lo, y.ndim)) or np.any(y > _chan(self.hi, y.ndim))):
            raise RuntimeError(f"{self.name} ({self.kind}): a value left the proven range "
                               f"[{self.lo.min()}, {self.hi.max()}]; this is a bug")
        return y


class InputOp(Op):
    """``X = m * p + n`` of the uint8 pixels ``p`` (the graph's input preprocessing)."""
    kind = 'input'

    def __init__(self, name, shape, m=1, n=0):
        self.m, self.n = int(m), int(n)
        ends = sorted((self.n, self.m * 255 + self.n))
        super().__init__(name, [], shape, [ends[0]] * shape[0], [ends[1]] * shape[0])

    def run(self, xs, form='direct'):
        (p,) = xs
        return self.check(p.astype(np.int64) * self.m + self.n)

    def counts(self):
        c = _zero_counts()
        t = _term_counts(self.m)
        c['shifts'], c['mults'] = t['shifts'] * self.size, t['mults'] * self.size
        c['adds'] = self.size * int(self.n != 0)
        return c


class _LutLayer(Op):
    """Shared part of LUT-Q convolution and affine: ``A`` (output channel first) and ``D``.

    The weight of tap ``t`` of output channel ``o`` is ``D[A[o, t]] * 2**E`` (``D`` integers):
    the LUT-Q form adds every input into the partial sum of its index, ``S_k = sum of the inputs
    x_t with A[o, t] = k``, then combines ``acc = sum_k D_k * S_k`` (a shift per sum for
    power-of-two ``D_k``).
    """

    def _setup_tables(self, a2, dvals):
        self.A2 = np.asarray(a2, np.int64)  # (O, T)
        self.D = [int(v) for v in dvals]
        self.Darr = np.array(self.D, np.int64)
        self.W2 = self.Darr[self.A2]  # integer weights (O, T)
        self.K = len(self.D)
        nz = self.Darr != 0
        self.nonzero = nz[self.A2]  # (O, T) taps that add
        used = np.zeros((self.A2.shape[0], self.K), bool)
        np.put_along_axis(used, self.A2, True, axis=1)
        self.terms = used & nz[None, :]  # (O, K) partial sums combined per output channel

    def _combine_counts(self, positions):
        c = _zero_counts()
        for o in range(self.A2.shape[0]):
            for k in np.flatnonzero(self.terms[o]):
                t = _term_counts(self.D[k])
                c['shifts'] += t['shifts'] * positions
                c['mults'] += t['mults'] * positions
                c['lookups'] += positions
                c['adds'] += positions
        return c

    def _lutq_combine(self, s):
        """``sum_k D_k * S_k`` from partial sums ``s`` (N, O, K, L); the shift form of pow-2 D."""
        acc = np.zeros(s.shape[:2] + s.shape[3:], np.int64)
        for k, dk in enumerate(self.D):
            if dk == 0:
                continue
            sk = s[:, :, k]
            if is_pow2_int(dk):
                term = np.left_shift(sk, abs(dk).bit_length() - 1)
                acc += term if dk > 0 else -term
            else:
                acc += sk * dk
        return acc


class LutConvOp(_LutLayer):
    """LUT-Q convolution of integer codes: K partial sums by weight index, then the dictionary.

    Args:
        name (str): layer name.
        inp (int): index of the input operation.
        in_shape (tuple): ``(C, H, W)`` of the input.
        a (numpy.ndarray): indices ``(O, C/group, kh, kw)``.
        dvals (list): integer dictionary ``D``.
        pad, stride, dilation (tuple): as nnabla's convolution.
        group (int): channel groups.
        x_lo, x_hi (numpy.ndarray): per input channel range of the input.
    """
    kind = 'LUT-Q conv'

    def __init__(self, name, inp, in_shape, a, dvals, pad, stride, dilation, group, x_lo, x_hi):
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
        self._setup_tables(a.reshape(o, -1), dvals)
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
                outs.append(self._lutq_combine(s.reshape(n, og, self.K, -1)))
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
        dvals (list): integer dictionary.
        x_lo, x_hi (numpy.ndarray): range of each of the I flattened inputs.
    """
    kind = 'LUT-Q affine'

    def __init__(self, name, inp, a, dvals, x_lo, x_hi):
        a = np.asarray(a)
        self._setup_tables(a.reshape(a.shape[0], -1).T, dvals)
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
        v = np.left_shift(x, _chan(self.left, nd)) * _chan(self.sign, nd) + \
            _chan(self.bias.astype(np.int64), nd)
        return self.check(np.clip(np.right_shift(v, _chan(self.right, nd)), 0, self.q_max))

    def counts(self):
        per = self.size // len(self.sign)
        c = _zero_counts()
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
        c = _zero_counts()
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
        y = np.zeros_like(xs[0]) + _chan(self.bias.astype(np.int64), nd)
        for m, x in zip(self.mult, xs):
            y = y + x * _chan(m.astype(np.int64), nd)
        return self.check(y)

    def counts(self):
        per = self.size // self.mult.shape[1]
        c = _zero_counts()
        n_branches = self.mult.shape[0]
        for ch in range(self.mult.shape[1]):
            for b in range(n_branches):
                t = _term_counts(self.mult[b, ch])
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
        c = _zero_counts()
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
