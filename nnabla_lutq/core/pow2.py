# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The power-of-two rounding rule, written once.

LUT-Q rounds a value to ``sign(x) * 2**k`` with ``k`` the exponent nearest to ``log2|x|`` (rounding
in the log domain). The boundary between ``2**k`` and ``2**(k+1)`` is the irrational
``2**(k + 1/2)``, which no float32 value equals, so the rule is exact and has no ties:

    ``k = e`` when ``|x| = f * 2**e`` with ``f`` in ``[1, 2)`` and ``f < sqrt(2)``;
    ``k = e + 1`` when ``f > sqrt(2)``.

For float32 ``f``, ``f > sqrt(2)`` is the same as ``f >= SQRT2_ABOVE``, the smallest float32 above
``sqrt(2)``, so the rule needs only a comparison, never a logarithm. ``round(log2|x|)`` computed in
float64 agrees with it for every float32 ``x`` (the nearest float32 is about 1e-8 from the
boundary ``k + 1/2`` in the log domain, far above float64's rounding error; checked on all
float32 within 64 ulps of every boundary and on 10^7 random ones: no mismatch). In float32 it
does not: ``round(log2|x|)`` or ``round(log|x| / log 2)`` give the other exponent for values
within a few ulps of ``2**(k + 1/2)`` (thousands of the values checked), which is why the device
graph corrects its float32 estimate with the same comparison.

Everything that rounds to powers of two uses this rule: the host k-means step (:func:`pow2_round`),
its device graph and multiplier-less batch normalization
(:func:`nnabla_lutq.nn.functions.pow2_round_graph`, which applies the same comparison with nnabla
functions), the folded export and the report (:func:`is_pow2_array`).
"""
import numpy as np

__all__ = ['SQRT2_ABOVE', 'pow2_exponent', 'pow2_round', 'is_pow2_array', 'check_pow2_range',
           'distinct_pow2_values']

#: The smallest float32 larger than sqrt(2): ``f >= SQRT2_ABOVE`` <=> ``f > sqrt(2)`` for float32 f.
SQRT2_ABOVE = np.nextafter(np.float32(np.sqrt(2.0)), np.float32(np.inf))
if not SQRT2_ABOVE.astype(np.float64) ** 2 > 2.0 > np.float64(np.float32(np.sqrt(2.0))) ** 2:
    raise AssertionError('float32 neighbours of sqrt(2) are not what the rule assumes')


def pow2_exponent(x):
    """The exponent ``k`` of the power of two nearest to ``|x|`` in the log domain.

    Args:
        x (numpy.ndarray): non-zero finite values (converted to float32).

    Returns:
        numpy.ndarray: int64 exponents, shape of ``x``.
    """
    a = np.abs(np.asarray(x, dtype=np.float32))
    m, e = np.frexp(a)  # a = m * 2**e with m in [0.5, 1): exact
    return e.astype(np.int64) - 1 + (m * np.float32(2) >= SQRT2_ABOVE)


def pow2_round(x, pow2_range=None):
    """Round to ``sign(x) * 2**k`` by the rule of this module; 0 stays 0.

    Args:
        x (numpy.ndarray): finite values (converted to float32 first).
        pow2_range (tuple or None): ``(min_exp, max_exp)`` clipping the exponent.

    Returns:
        numpy.ndarray: float32 powers of two with the signs of ``x``.
    """
    x = np.asarray(x, dtype=np.float32)
    out = np.zeros(x.shape, np.float32)
    nz = x != 0
    e = pow2_exponent(x[nz])
    if pow2_range is not None:
        e = np.clip(e, pow2_range[0], pow2_range[1])
    out[nz] = np.sign(x[nz]) * np.ldexp(np.float32(1), e.astype(np.int32))
    return out


def is_pow2_array(x):
    """Whether every value is 0 or exactly ``±2**k``.

    Args:
        x (numpy.ndarray): values.

    Returns:
        bool: True when all values are 0 or powers of two.
    """
    a = np.abs(np.asarray(x, dtype=np.float64)).ravel()
    a = a[a != 0]
    if not np.all(np.isfinite(a)):
        return False
    m, _ = np.frexp(a)
    return bool(np.all(m == 0.5))


def distinct_pow2_values(pow2_range):
    """How many distinct non-zero values ``±2**k`` a clipped exponent range offers.

    Args:
        pow2_range (tuple or None): ``(min_exp, max_exp)``; None means unbounded.

    Returns:
        float: ``2 * (max_exp - min_exp + 1)``, or infinity without a range.
    """
    if pow2_range is None:
        return float('inf')
    return 2 * (pow2_range[1] - pow2_range[0] + 1)


def check_pow2_range(pow2_range, layer='layer'):
    """Validate ``(min_exp, max_exp)``.

    Args:
        pow2_range: the user's value.
        layer (str): the layer's name for the message.

    Returns:
        tuple: ``(int, int)``.

    Raises:
        ValueError: if it is not two integers with ``min_exp <= max_exp``.
    """
    try:
        lo, hi = pow2_range
        ok = float(lo).is_integer() and float(hi).is_integer() and lo <= hi
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(
            f"{layer}: pow2_range must be (min_exp, max_exp) integers with min_exp <= max_exp, "
            f"got {pow2_range!r}")
    return int(lo), int(hi)
