# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st, HealthCheck

from nnabla_lutq.core import (make_config, kmeans_step, init_dictionary, pruned_count,
                                    pow2_round, is_pow2_array, assign, bits_per_index)
from reference import ref_step, ref_assign

CASES = [
    dict(n_values=2), dict(n_values=3), dict(n_values=16), dict(n_values=7),
    dict(n_values=16, dictionary='pow2'), dict(n_values=4, dictionary='pow2', pow2_range=(-4, -2)),
    dict(dictionary=[-1, 1]), dict(dictionary=[-1, 0, 1]), dict(dictionary=[-0.25, 0.1, 0.5]),
    dict(n_values=4, prune_ratio=0.3), dict(n_values=16, prune_ratio=0.7),
    dict(n_values=4, dictionary='pow2', prune_ratio=0.5), dict(dictionary=[-1, 0, 1], prune_ratio=0.5),
]


def cfg_for(n, n_values=16, dictionary='free', prune_ratio=0.0, pow2_range=None):
    return make_config(n_values, dictionary, prune_ratio, pow2_range, n, 'test')


@pytest.mark.parametrize('case', CASES, ids=lambda c: str(c))
@pytest.mark.parametrize('n', [50, 3000])
def test_kmeans_step_matches_brute_force(case, n, rng):
    w = (rng.randn(n) * 0.1).astype(np.float32)
    cfg = cfg_for(n, **case)
    d, _ = init_dictionary(w, cfg, iters=0)
    for _ in range(5):  # several consecutive steps, each checked against the reference
        rd, ra = ref_step(w, d, cfg)
        nd, na = kmeans_step(w, d, cfg)
        np.testing.assert_array_equal(na, ra)
        np.testing.assert_array_max_ulp(nd, rd, maxulp=1)
        assert nd.dtype == np.float32 and na.dtype == np.int32
        d = nd
        w = (w + (rng.randn(n) * 0.01).astype(np.float32)).astype(np.float32)


def test_ties_go_to_the_lower_value():
    cfg = cfg_for(4, n_values=2)
    d = np.array([0.0, 1.0], np.float32)
    w = np.array([0.5, 0.49999997, 0.50000006, -3], np.float32)
    np.testing.assert_array_equal(assign(w, d, cfg), [0, 0, 1, 0])
    # a midpoint that float32 cannot represent: (0.1 + 0.3) / 2 in float64
    d = np.array([0.1, 0.3], np.float32)
    mid = (np.float64(d[0]) + np.float64(d[1])) / 2
    below, above = np.float32(mid), np.nextafter(np.float32(mid), np.float32(1))
    w = np.array([below, above], np.float32)
    np.testing.assert_array_equal(assign(w, d, cfg), ref_assign(w, d, cfg))


def test_empty_cluster_keeps_its_value():
    cfg = cfg_for(4, n_values=3)
    w = np.array([0.0, 0.1, 0.9, 1.0], np.float32)
    d = np.array([0.0, 0.5, 1.0], np.float32)  # nobody is nearest to 0.5
    w[:] = [0.0, 0.1, 0.9, 1.0]
    nd, a = kmeans_step(w, d, cfg)
    np.testing.assert_array_equal(a, [0, 0, 2, 2])
    np.testing.assert_allclose(nd, [0.05, 0.5, 0.95])


@given(st.lists(st.integers(-40, 40), min_size=8, max_size=200), st.integers(2, 8),
       st.sampled_from(['free', 'pow2']), st.sampled_from([0.0, 0.25, 0.5]))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_property_on_grids_with_ties(ints, k, kind, p):
    # weights on a coarse grid: many exact ties, duplicates and midpoint hits
    w = (np.array(ints, np.float32) / 8).astype(np.float32)
    # a valid layer: pruning leaves a weight for each non-zero value (make_config refuses the rest)
    assume(p == 0 or w.size - pruned_count(p, w.size) >= k - 1)
    cfg = cfg_for(w.size, n_values=k, dictionary=kind, prune_ratio=p)
    d, a0 = init_dictionary(w, cfg, iters=2)
    np.testing.assert_array_equal(a0, ref_assign(w, d, cfg))
    for _ in range(3):
        rd, ra = ref_step(w, d, cfg)
        nd, na = kmeans_step(w, d, cfg)
        np.testing.assert_array_equal(na, ra)
        np.testing.assert_array_max_ulp(nd, rd, maxulp=1)
        v = nd[cfg.first_free:]
        assert np.all(v[1:] >= v[:-1]), 'order of the values must be preserved'
        d = nd


@pytest.mark.parametrize('p,n,expected', [(0.1, 10, 1), (0.7, 10, 7), (0.25, 10, 3),
                                          (0.5, 7, 4), (0.3, 1000, 300), (0.9, 3, 3)])
def test_pruned_count_is_ceil(p, n, expected):
    assert pruned_count(p, n) == expected


@pytest.mark.parametrize('p', [0.3, 0.5, 0.7, 0.9])
def test_pruning_ties_exactly_the_smallest_weights_to_zero(p, rng):
    n = 1000
    w = (rng.randn(n) * 0.1).astype(np.float32)
    w[:50] = 0.01  # ties at |W| around the threshold are possible
    cfg = cfg_for(n, n_values=4, prune_ratio=p)
    d, a = init_dictionary(w, cfg)
    assert d[0] == 0
    n_pruned = math.ceil(p * n - 1e-9)
    assert np.sum(a == 0) == n_pruned
    assert np.abs(w[a == 0]).max() <= np.abs(w[a != 0]).min()
    for _ in range(3):
        d, a = kmeans_step(w, d, cfg)
        assert d[0] == 0 and np.sum(a == 0) == n_pruned


def test_pow2_dictionary_invariants(rng):
    w = (rng.randn(5000) * 0.05).astype(np.float32)
    cfg = cfg_for(w.size, n_values=8, dictionary='pow2', pow2_range=(-6, -3))
    d, a = init_dictionary(w, cfg)
    for _ in range(4):
        d, a = kmeans_step(w, d, cfg)
        assert is_pow2_array(d)
        e = np.log2(np.abs(d[d != 0]))
        assert e.min() >= -6 and e.max() <= -3


def test_pow2_round_known_values():
    x = np.array([0.0, 0.75, -0.7, 3.0, 2.8, -1e-3, 1.5], np.float32)
    # log2(0.75) = -0.415 -> 2^0; log2(0.7) = -0.515 -> 2^-1; log2(3) = 1.585 -> 2^2;
    # log2(2.8) = 1.485 -> 2^1; log2(1.5) = 0.585 -> 2^1
    np.testing.assert_array_equal(pow2_round(x), [0, 1, -0.5, 4, 2, -2 ** -10, 2])
    np.testing.assert_array_equal(pow2_round(x, (-2, 1)), [0, 1, -0.5, 2, 2, -0.25, 2])
    assert is_pow2_array([0, 0.25, -8]) and not is_pow2_array([0.3])


def test_init_recovers_a_dictionary_that_fits_exactly(rng):
    values = np.array([-0.3, -0.1, 0.05, 0.2], np.float32)
    w = values[rng.randint(0, 4, 4000)]
    cfg = cfg_for(w.size, n_values=4)
    d, a = init_dictionary(w, cfg)
    np.testing.assert_array_equal(d, values)
    np.testing.assert_array_equal(d[a], w)


def test_init_is_deterministic_and_fixed_sets_keep_their_values(rng):
    w = (rng.randn(3, 4, 5) * 0.1).astype(np.float32)
    cfg = cfg_for(w.size, n_values=5, dictionary='pow2', prune_ratio=0.2)
    d1, a1 = init_dictionary(w, cfg)
    d2, a2 = init_dictionary(w.copy(), cfg)
    np.testing.assert_array_equal(d1, d2)
    np.testing.assert_array_equal(a1, a2)
    assert a1.shape == w.shape and a1.dtype == np.int32
    cfg = cfg_for(w.size, dictionary=[-1, 1])
    d, a = init_dictionary(w, cfg)
    np.testing.assert_array_equal(d, [-1, 1])
    np.testing.assert_array_equal(d[a], np.where(w > 0, 1, -1))


@pytest.mark.parametrize('kwargs,match', [
    (dict(n_values=1), 'at least 2'),
    (dict(n_values=101), 'larger than'),
    (dict(n_values=2.5), 'integer'),
    (dict(prune_ratio=1.0), r'outside \[0, 1\)'),
    (dict(prune_ratio=-0.1), r'outside \[0, 1\)'),
    (dict(n_values=16, prune_ratio=0.9), 'leaves 10 weights'),
    (dict(dictionary='kmeans'), 'unknown dictionary'),
    (dict(dictionary=[1]), 'at least 2 distinct'),
    (dict(dictionary=[1, 1]), 'distinct values in ascending order'),
    (dict(dictionary=[1, -1]), r'ascending order, got \[1.0, -1.0\]; use \[-1.0, 1.0\]'),
    (dict(n_values=4, dictionary='pow2', pow2_range=(-2, -2)), 'offers only 2 distinct values'),
    (dict(dictionary=[-1, 1], prune_ratio=0.5), 'has no 0'),
    (dict(pow2_range=(-3, 0)), "only used with dictionary='pow2'"),
    (dict(dictionary='pow2', pow2_range=(2, 1)), 'min_exp <= max_exp'),
])
def test_config_errors_name_the_layer(kwargs, match):
    args = dict(n_values=16, dictionary='free', prune_ratio=0.0, pow2_range=None)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match) as e:
        make_config(args['n_values'], args['dictionary'], args['prune_ratio'],
                    args['pow2_range'], 100, 'net/conv1/lutq_conv')
    assert 'net/conv1/lutq_conv' in str(e.value)


def test_bits_per_index():
    assert [bits_per_index(k) for k in (2, 3, 4, 5, 16, 17, 256)] == [1, 2, 2, 3, 4, 5, 8]
