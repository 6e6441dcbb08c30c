# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Near-optimal table fitting (nnabla_lutq.core.fit) against independent references.

References: exhaustive enumeration of every partition / every value set on small inputs (float64,
no prefix sums, no DP), the optional ``kmeans1d`` package (an exact O(kn) 1-D k-means in C++) on
larger ones, and the previous initialization (quantile start + 10 k-means steps) for comparison.
"""
import itertools

import numpy as np
import pytest

from nnabla_lutq.core import make_config, assign, kmeans_step, pow2_round
from nnabla_lutq.core.fit import (SortedWeights, chain_min, fit_free, fit_pow2, fit_table,
                                  init_dictionary, table_sse, DENSE_MAX_K, DP_BINS)
from reference import ref_pruned


def cfg_for(n, k=4, dictionary='free', prune_ratio=0.0, pow2_range=None):
    return make_config(k, dictionary, prune_ratio, pow2_range, n, 'test')


def brute_kmeans(x, k, weight=None):
    """Minimum weighted SSE over every split of the sorted values into k contiguous runs."""
    x = np.asarray(x, np.float64)
    v = np.ones_like(x) if weight is None else np.asarray(weight, np.float64)
    order = np.argsort(x, kind='stable')
    x, v = x[order], v[order]
    best = np.inf
    for cuts in itertools.combinations(range(1, x.size), k - 1):
        edges = (0,) + cuts + (x.size,)
        sse = 0.0
        for lo, hi in zip(edges[:-1], edges[1:]):
            xs, vs = x[lo:hi], v[lo:hi]
            m = np.dot(vs, xs) / vs.sum() if vs.sum() > 0 else 0.0
            sse += float(np.dot(vs, (xs - m) ** 2))
        best = min(best, sse)
    return best


def nearest_sse(x, values, weight=None):
    """SSE of each value to its nearest table value (float64, no thresholds)."""
    x = np.asarray(x, np.float64).ravel()
    e = np.min((x[:, None] - np.asarray(values, np.float64)[None, :]) ** 2, axis=1)
    return float(e.sum() if weight is None else np.dot(weight, e))


def heavy_tailed(rng, n, scale=0.05):
    """Trained-weight-like data: a Laplacian body with a few large outliers."""
    w = rng.laplace(0, scale, n)
    out = rng.rand(n) < 0.003
    w[out] *= rng.uniform(5, 30, out.sum())
    return w.astype(np.float32)


@pytest.mark.parametrize('seed', range(40))
def test_free_table_is_the_exact_optimum_on_small_inputs(seed):
    rng = np.random.RandomState(seed)
    n, k = rng.randint(4, 13), rng.randint(2, 5)
    k = min(k, n)
    w = heavy_tailed(rng, n)
    d, a = fit_table(w, cfg_for(n, k))
    opt = brute_kmeans(w, k)
    assert table_sse(w, d, a) <= opt * (1 + 1e-9) + 1e-15
    assert np.all(np.diff(d) >= 0)
    np.testing.assert_array_equal(a, assign(w, d, cfg_for(n, k)))


@pytest.mark.parametrize('seed', range(20))
def test_weighted_table_is_the_exact_weighted_optimum(seed):
    rng = np.random.RandomState(100 + seed)
    n, k = rng.randint(4, 11), rng.randint(2, 4)
    w = heavy_tailed(rng, n)
    imp = rng.exponential(1.0, n)
    sw = SortedWeights(w, imp)
    d = fit_free(sw, k)
    assert nearest_sse(w, d, imp) <= brute_kmeans(w, k, imp) * (1 + 1e-9) + 1e-15
    # all importances alike: the same table as unweighted
    np.testing.assert_array_equal(fit_free(SortedWeights(w, np.full(n, 3.0)), k),
                                  fit_free(SortedWeights(w), k))


def test_chain_min_is_the_cheapest_chain():
    rng = np.random.RandomState(0)
    for rows, w in [(1, 5), (2, 4), (3, 4), (4, 3)]:
        first, last = rng.rand(w), rng.rand(w)
        pair = rng.rand(max(rows - 1, 1), w, w)
        pair[rng.rand(*pair.shape) < 0.2] = np.inf
        pick, total = chain_min(first, pair, last, rows)
        best = np.inf
        for chain in itertools.product(range(w), repeat=rows):
            c = first[chain[0]] + last[chain[-1]]
            c += sum(pair[r][chain[r], chain[r + 1]] for r in range(rows - 1))
            best = min(best, c)
        assert total == pytest.approx(best)
        got = first[pick[0]] + last[pick[-1]] + sum(pair[r][pick[r], pick[r + 1]]
                                                    for r in range(rows - 1))
        assert got == pytest.approx(best)


def pow2_sets(pow2_range, k):
    e = np.arange(pow2_range[0], pow2_range[1] + 1)
    v = np.concatenate([-2.0 ** e[::-1], 2.0 ** e])
    return itertools.combinations(v, k)


@pytest.mark.parametrize('k', [2, 3, 4])
@pytest.mark.parametrize('seed', range(6))
def test_pow2_table_is_the_best_power_of_two_set(k, seed):
    rng = np.random.RandomState(seed)
    w = heavy_tailed(rng, 200, scale=0.1)
    rng_e = (-7, 1)
    d, a = fit_table(w, cfg_for(w.size, k, 'pow2', pow2_range=rng_e))
    best = min(nearest_sse(w, s) for s in pow2_sets(rng_e, k))
    assert table_sse(w, d, a) <= best * (1 + 1e-9)
    np.testing.assert_array_equal(pow2_round(d, rng_e), d)
    assert np.unique(d).size == k


def test_pow2_without_a_range_finds_the_set_of_a_wide_window():
    rng = np.random.RandomState(3)
    w = heavy_tailed(rng, 300, scale=0.02)
    d, a = fit_table(w, cfg_for(w.size, 4, 'pow2'))
    best = min(nearest_sse(w, s) for s in pow2_sets((-14, 2), 4))
    assert table_sse(w, d, a) <= best * (1 + 1e-9)


@pytest.mark.parametrize('dictionary', ['free', 'pow2'])
@pytest.mark.parametrize('seed', range(5))
def test_pruning_ties_the_smallest_to_zero_and_fits_the_rest_optimally(dictionary, seed):
    rng = np.random.RandomState(seed)
    n = 40
    w = heavy_tailed(rng, n)
    w[:4] = w[4]  # ties at the pruning threshold go to the lower flat index
    cfg = cfg_for(n, 4, dictionary, prune_ratio=0.5, pow2_range=(-9, 1) if dictionary == 'pow2'
                  else None)
    d, a = fit_table(w, cfg)
    pruned = ref_pruned(w, cfg.n_pruned)
    assert d[0] == 0 and np.all(np.diff(d[1:]) > 0)
    np.testing.assert_array_equal(a == 0, pruned)
    rest = w[~pruned]
    if dictionary == 'free':
        opt = brute_kmeans(rest, 3)
    else:
        opt = min(nearest_sse(rest, s) for s in pow2_sets((-9, 1), 3))
    assert nearest_sse(rest, d[1:]) <= opt * (1 + 1e-9)


def test_fixed_sets_are_unchanged():
    w = np.array([-2, -0.4, 0.1, 0.6, 3], np.float32)
    cfg = cfg_for(5, dictionary=[-1, 0, 1])
    d, a = fit_table(w, cfg)
    np.testing.assert_array_equal(d, [-1, 0, 1])
    np.testing.assert_array_equal(a, [0, 1, 1, 2, 2])


@pytest.mark.parametrize('n,k', [(3000, 2), (3000, 16), (20000, 16), (5000, DENSE_MAX_K),
                                 (4000, 64), (20000, 256)])
def test_against_the_reference_package(n, k):
    kmeans1d = pytest.importorskip('kmeans1d')
    rng = np.random.RandomState(n + k)
    w = heavy_tailed(rng, n)
    d, a = fit_table(w, cfg_for(n, k))
    labels, centroids = kmeans1d.cluster(w.astype(np.float64), k)
    opt = float(((w.astype(np.float64) - np.asarray(centroids)[labels]) ** 2).sum())
    # within 2 % of the optimum by the dense DP (K <= 32); the banded refinement of larger tables
    # is held to 15 % on one array (the 10 % target on whole real models: benchmarks/bench_fit.py)
    assert table_sse(w, d, a) <= opt * (1.02 if k <= DENSE_MAX_K else 1.15)
    if n <= DP_BINS:
        assert table_sse(w, d, a) == pytest.approx(opt, rel=1e-9)


def test_far_better_than_the_quantile_start_on_heavy_tails():
    """The previous start (quantiles + 10 k-means steps) left the tails without values."""
    rng = np.random.RandomState(7)
    w = heavy_tailed(rng, 30000)
    for k in (16, 256):
        cfg = cfg_for(w.size, k)
        s = np.sort(w)
        d = s[((np.arange(k) + 0.5) / k * s.size).astype(np.int64)]
        for _ in range(10):
            d, _ = kmeans_step(w, d, cfg)
        old = table_sse(w, d, assign(w, d, cfg))
        nd, na = fit_table(w, cfg)
        assert table_sse(w, nd, na) < 0.8 * old


def test_the_table_is_a_lloyd_fixed_point_and_deterministic():
    rng = np.random.RandomState(1)
    w = heavy_tailed(rng, 5000).reshape(50, 100)
    cfg = cfg_for(w.size, 16)
    d, a = init_dictionary(w, cfg)
    assert a.shape == w.shape and a.dtype == np.int32 and d.dtype == np.float32
    nd, na = kmeans_step(w.ravel(), d, cfg)
    np.testing.assert_array_equal(na.reshape(w.shape), a)
    np.testing.assert_array_max_ulp(nd, d, maxulp=2)
    d2, a2 = init_dictionary(w.copy(), cfg)
    np.testing.assert_array_equal(d2, d)
    np.testing.assert_array_equal(a2, a)


def test_errors():
    cfg = cfg_for(3, 2)
    with pytest.raises(ValueError, match='non-finite'):
        fit_table(np.array([0.0, np.nan, 1.0], np.float32), cfg)
    with pytest.raises(ValueError, match='importance'):
        fit_table(np.zeros(3, np.float32), cfg, weight=np.array([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match='iters'):
        init_dictionary(np.zeros(3, np.float32), cfg, iters=-1)


def test_every_table_starts_from_the_fit(tmp_path):
    """Layer creation, initialize(), convert(), quantize_nnp and the LC solver's direct
    compression all give the table of fit_table for the weights they start from."""
    import nnabla as nn
    import nnabla.parametric_functions as PF
    import nnabla.solvers as S
    from nnabla.initializer import NormalInitializer
    import nnabla_lutq
    from nnabla.utils.save import save

    def expect(w, k=16, kind='free'):
        return fit_table(w, make_config(k, kind, 0.0, None, w.size))

    rng = np.random.RandomState(0)
    init = NormalInitializer(0.1, rng)
    nn.clear_parameters()
    x = nn.Variable((2, 40))
    PF.lutq_affine(x, 30, n_values=16, w_init=init, name='fc')  # creation
    p = nn.get_parameters(grad_only=False)
    w = p['fc/lutq_affine/W'].d.copy()
    d, a = expect(w)
    np.testing.assert_array_equal(p['fc/lutq_affine/d'].d, d)
    np.testing.assert_array_equal(p['fc/lutq_affine/A'].d, a)
    p['fc/lutq_affine/W'].d = heavy_tailed(rng, w.size).reshape(w.shape)  # initialize()
    nnabla_lutq.initialize()
    d, a = expect(p['fc/lutq_affine/W'].d)
    np.testing.assert_array_equal(p['fc/lutq_affine/d'].d, d)
    solver = nnabla_lutq.LCSolver(S.Sgd(0.1), steps_per_lc=1)  # direct compression
    solver.set_parameters(nn.get_parameters())
    p['fc/lutq_affine/d'].d = np.linspace(-1, 1, 16)  # a stale table is not the start
    solver.direct_compression()
    np.testing.assert_array_equal(p['fc/lutq_affine/d'].d, d)

    nn.clear_parameters()  # convert() of a float graph
    y = PF.affine(x, 30, w_init=init, name='fc')
    wf = nn.get_parameters()['fc/affine/W'].d.copy()
    nnabla_lutq.convert(y, nnabla_lutq.LayerConfig(n_values=4, dictionary='pow2'))
    p = nn.get_parameters(grad_only=False)
    np.testing.assert_array_equal(p['fc/lutq_affine/d'].d, expect(wf, 4, 'pow2')[0])

    nn.clear_parameters()  # post-training quantization of a float .nnp
    x1 = nn.Variable((1, 40))
    y1 = PF.affine(x1, 30, w_init=init, name='fc')
    wf = nn.get_parameters()['fc/affine/W'].d.copy()
    src, dst = str(tmp_path / 'float.nnp'), str(tmp_path / 'q.nnp')
    save(src, {'networks': [{'name': 'net', 'batch_size': 1, 'outputs': {'y': y1},
                             'names': {'x': x1}}],
               'executors': [{'name': 'runtime', 'network': 'net', 'data': ['x'],
                              'output': ['y']}]})
    nnabla_lutq.quantize_nnp(src, dst, n_values=16)
    from nnabla_lutq.io.nnp import read_nnp
    params = read_nnp(dst).params
    np.testing.assert_array_equal(params['fc/lutq_affine/d'], expect(wf)[0])
    nn.clear_parameters()
