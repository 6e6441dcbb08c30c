# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The shared checks (nnabla_lutq.core.checks): one rule and one message for every caller."""
import numpy as np
import pytest

from nnabla_lutq.core.checks import (all_finite, check_finite, check_indices, index_problem,
                                     integer_at_least, is_integer, positive_number)


def test_integers_and_positive_numbers():
    assert [is_integer(v) for v in (3, np.int64(3), True, 3.0, '3', None)] == \
        [True, True, False, False, False, False]
    assert integer_at_least(np.int32(5), 1, 'k') == 5 and type(integer_at_least(5, 1, 'k')) is int
    for bad in (0, True, 2.0, None):
        with pytest.raises(ValueError, match=r"^k must be an integer >= 1, got "):
            integer_at_least(bad, 1, 'k')
    assert positive_number(np.float32(0.5), 'mu') == 0.5
    for bad in (0, -1.0, float('nan'), float('inf'), True, '1'):
        with pytest.raises(ValueError, match=r"^mu must be a positive number, got "):
            positive_number(bad, 'mu')


def test_finite_values():
    a = np.array([1.0, np.nan, np.inf, -np.inf, 0.0], np.float32)
    assert not all_finite(a) and all_finite(a[[0, 4]])
    with pytest.raises(ValueError, match=r"^fc: W has non-finite values \(3 of 5\); lower it$"):
        check_finite(a, 'fc: W', '; lower it')
    check_finite(np.zeros(0), 'empty')


def test_indices():
    assert index_problem(np.array([0, 3, 1]), 4) is None and index_problem(np.zeros(0), 1) is None
    assert index_problem(np.array([[0, 7], [4, 2]]), 4) == \
        "A holds indices outside [0, 4) (min 0, max 7)"
    assert index_problem(np.array([-1, 0]), 4) == "A holds indices outside [0, 4) (min -1, max 0)"

    class FormatError(ValueError):
        pass
    with pytest.raises(FormatError, match=r"^fc: A holds indices outside \[0, 2\) \(min 0, "
                                          r"max 2\); re-fit$"):
        check_indices(np.array([0, 2]), 2, 'fc', '; re-fit', FormatError)
