# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The checks every entry point shares: integer arguments, finite values, look-up-table indices.

One rule and one message each, so an argument or a damaged array is refused the same way by the
layers, the solvers, conversion, export, report, packing and the integer executor.
"""
import numpy as np

__all__ = ['is_integer', 'integer_at_least', 'positive_number', 'all_finite', 'check_finite',
           'index_problem', 'check_indices']


def is_integer(value):
    """bool: ``value`` is a Python or numpy integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def integer_at_least(value, low, name):
    """``value`` as an int if it is an integer (not a bool) ``>= low``.

    Args:
        value: the argument.
        low (int): the least value allowed.
        name (str): the argument's name (with its layer, if any), for the message.

    Returns:
        int: ``value``.

    Raises:
        ValueError: ``"<name> must be an integer >= <low>, got <value>"``.
    """
    if not is_integer(value) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def positive_number(value, name):
    """``value`` as a float if it is a finite number > 0 (not a bool).

    Raises:
        ValueError: ``"<name> must be a positive number, got <value>"``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def all_finite(a):
    """bool: every value of the array ``a`` is finite (no NaN, no infinity)."""
    return bool(np.all(np.isfinite(a)))


def check_finite(a, what, hint=''):
    """Refuse an array with NaN or infinite values.

    Args:
        a (numpy.ndarray): the values.
        what (str): what they are, e.g. ``'conv1/lutq_conv: W'``.
        hint (str): what to do, appended to the message.

    Raises:
        ValueError: ``"<what> has non-finite values (n of N)<hint>"``.
    """
    a = np.asarray(a)
    bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
    if bad:
        raise ValueError(f"{what} has non-finite values ({bad} of {a.size}){hint}")


def index_problem(a, k):
    """Why ``a`` is not a valid assignment into a table of ``k`` values, or None.

    Args:
        a (numpy.ndarray): indices (any integer dtype).
        k (int): the table's size K.

    Returns:
        str or None: e.g. ``"A holds indices outside [0, 4) (min 0, max 7)"``.
    """
    a = np.asarray(a)
    if a.size and (a.min() < 0 or a.max() >= k):
        return f"A holds indices outside [0, {k}) (min {a.min()}, max {a.max()})"
    return None


def check_indices(a, k, where, hint='', error=ValueError):
    """Refuse an assignment with an index outside ``[0, k)``.

    Args:
        a (numpy.ndarray): indices.
        k (int): the table's size.
        where (str): the layer, for the message.
        hint (str): what to do, appended to the message.
        error (type): the exception class (a format error for files).

    Raises:
        error: ``"<where>: A holds indices outside [0, k) (min, max)<hint>"``.
    """
    problem = index_problem(a, k)
    if problem:
        raise error(f"{where}: {problem}{hint}")
