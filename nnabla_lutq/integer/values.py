# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Exact values of the integer lowering: :class:`Val` (``alpha[c] * X + beta[c]`` with exact
rationals), rational helpers, requantization to codes (:func:`requant_op`) and the names of the
exported graph's functions."""
from dataclasses import dataclass
from fractions import Fraction
from typing import List

from ..core.kinds import LAYER_SCOPES
from . import ops as O

__all__ = ['Val', 'frac', 'snap', 'pow2_exponent', 'floor_frac', 'round_half_up', 'pow2_floor',
           'lsb_exponent', 'layer_of', 'describe', 'function_args', 'requant_op', 'thresholds',
           'MAX_FRACTION_BITS', 'NAME_SCOPES']

#: parameter-scope components of the layers that name a layer less well than their parent
NAME_SCOPES = LAYER_SCOPES | {'min_max_quantize'}

#: most fraction bits given to rounded multipliers / logit biases
MAX_FRACTION_BITS = 24


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


def frac(v):
    """The exact rational of a number (float32/float64/int)."""
    return Fraction(float(v)) if not isinstance(v, (int, Fraction)) else Fraction(v)


def snap(v):
    """A scalar argument as a rational: the simplest fraction (denominator <= 65536) that equals
    the stored double to its precision (so 1/127.5 is read as 2/255), else the double exactly."""
    exact = Fraction(float(v))
    simple = exact.limit_denominator(1 << 16)
    if abs(float(simple) - float(v)) <= abs(float(v)) * 2.0 ** -50:
        return simple
    return exact


def pow2_exponent(r):
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


def floor_frac(r):
    return r.numerator // r.denominator


def round_half_up(r):
    return floor_frac(r + Fraction(1, 2))


def pow2_floor(r):
    """The largest power of two <= r (r > 0), as a Fraction."""
    e = r.numerator.bit_length() - r.denominator.bit_length()
    p = Fraction(2) ** e
    if p > r:
        p /= 2
    elif 2 * p <= r:
        p *= 2
    return p


def lsb_exponent(v):
    """Exponent of the lowest set bit of a binary float ``v`` != 0."""
    f = Fraction(float(v))
    n, d = abs(f.numerator), f.denominator
    return ((n & -n).bit_length() - 1) - (d.bit_length() - 1)


def layer_of(name):
    parts = name.split('/')[:-1]
    if parts and parts[-1] in NAME_SCOPES:
        parts = parts[:-1]
    return '/'.join(parts) or name


def describe(f):
    return f"{f.name} ({f.type})"


def function_args(f):
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
    if all(r == 0 or pow2_exponent(r) is not None for r in ratios):
        sign, left, right, bias = [], [], [], []
        for r, b in zip(ratios, beta):
            j = pow2_exponent(r) if r != 0 else 0
            sign.append(0 if r == 0 else 1 if r > 0 else -1)
            left.append(max(j, 0))
            right.append(max(-j, 0))
            two_f = 1 << max(-j, 0)
            bias.append(floor_frac(Fraction(b) * two_f / q + Fraction(two_f, 2)))
        op = O.RequantShiftOp(name, inp, shape, sign, left, right, bias, q_max, lo, hi)
    else:
        tables = [thresholds(Fraction(alpha[c]), Fraction(beta[c]), q, q_max, int(lo[c]),
                              int(hi[c])) for c in range(ch)]
        direction = [0 if a == 0 else 1 if a > 0 else -1 for a in alpha]
        op = O.RequantThresholdOp(name, inp, tables, direction, q_max, shape)
    op.alpha, op.beta = [q] * ch, [Fraction(0)] * ch
    return op


def thresholds(alpha, beta, q, q_max, lo, hi):
    """Per code k = 1..Q the integer threshold of ``(alpha X + beta) / q >= k - 1/2``.

    Returns the table searched with ``X`` (alpha > 0: ``t_k = ceil(...)``, code =
    #{k: X >= t_k}) or with ``-X`` (alpha < 0: ``-u_k``, ``u_k = floor(...)``); values are
    clipped to ``[lo - 1, hi + 1]`` (resp. the negated range), which does not change any code
    of an X in ``[lo, hi]``. A zero alpha gives a constant code.
    """
    out = []
    if alpha == 0:
        code = min(max(round_half_up(beta / q), 0), q_max)
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
