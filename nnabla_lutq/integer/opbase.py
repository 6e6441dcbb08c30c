# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The base of the integer operations (:mod:`.ops`): :class:`Op` (output ranges, proven bound,
operation counts), the input operation and the counting helpers."""
import numpy as np

__all__ = ['Op', 'InputOp', 'COUNT_KEYS', 'is_pow2_int', 'zero_counts', 'term_counts', 'chan']

#: the operation kinds :meth:`Op.counts` reports
COUNT_KEYS = ('adds', 'shifts', 'compares', 'lookups', 'mults')


def is_pow2_int(v):
    """Whether the integer ``|v|`` is a power of two (1, 2, 4, ...)."""
    v = abs(int(v))
    return v > 0 and v & (v - 1) == 0


def zero_counts():
    """dict: every kind of :data:`COUNT_KEYS` at 0."""
    return dict.fromkeys(COUNT_KEYS, 0)


def term_counts(m):
    """Counts of ``x * m`` for an integer constant m: nothing, a shift, or a multiplication."""
    m = abs(int(m))
    return {'shifts': int(m > 1 and is_pow2_int(m)), 'mults': int(m > 1 and not is_pow2_int(m))}


def chan(v, ndim):
    """A per-channel vector shaped to broadcast against a (N, C, ...) array."""
    return np.asarray(v).reshape((1, -1) + (1,) * (ndim - 2))


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
        return zero_counts()

    def float_macs(self):
        """Multiply-accumulates of the float network's layer (0 for non-linear layers)."""
        return 0

    def check(self, y):
        """Raise if ``y`` leaves the proven range (a bug, never an input error)."""
        if y.size and (np.any(y < chan(self.lo, y.ndim)) or np.any(y > chan(self.hi, y.ndim))):
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
        c = zero_counts()
        t = term_counts(self.m)
        c['shifts'], c['mults'] = t['shifts'] * self.size, t['mults'] * self.size
        c['adds'] = self.size * int(self.n != 0)
        return c
