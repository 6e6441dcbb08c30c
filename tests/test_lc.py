# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""LCSolver (learning-compression) against independent references.

* the C step: an optimal 1-D k-means by dynamic programming, and the fixed-point conditions of
  Lloyd's algorithm (every weight at its nearest value, every value the mean of its weights);
* the penalty gradient: a graph that adds ``(mu/2)·||W - (d[A] + lambda/mu)||²`` to the loss;
* the multiplier and ``mu`` updates, exact resume, fixed codebooks (with a brute-force scale),
  power-of-two and pruning constraints.
"""
import numpy as np
import pytest
import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF
import nnabla.solvers as S

import nnabla_lutq
from nnabla_lutq.core.config import make_config
from nnabla_lutq.core import init_dictionary
from nnabla_lutq.core.pow2 import is_pow2_array
from nnabla_lutq.training.lc import c_step, lc_schedule, TOOLKIT_SCHEDULE
from reference import ref_pow2, ref_pruned


# -- independent references -------------------------------------------------------------------

def dp_kmeans(x, k):
    """Globally optimal 1-D k-means (dynamic programming over the sorted values, float64).

    Returns:
        tuple: ``(centers, labels, cost)``; centers ascending, labels per input value.
    """
    x = np.asarray(x, np.float64).ravel()
    order = np.argsort(x, kind='stable')
    xs = x[order]
    n = xs.size
    cost = np.full((n + 1, n + 1), np.inf)  # cost[i, j]: one cluster of xs[i:j]
    for i in range(n):
        for j in range(i + 1, n + 1):
            seg = xs[i:j]
            cost[i, j] = np.sum((seg - seg.mean()) ** 2)
    best = np.full((k + 1, n + 1), np.inf)
    arg = np.zeros((k + 1, n + 1), int)
    best[0, 0] = 0.0
    for c in range(1, k + 1):
        for j in range(c, n + 1):
            cand = best[c - 1, c - 1:j] + cost[c - 1:j, j]
            i = int(np.argmin(cand))
            best[c, j], arg[c, j] = cand[i], i + c - 1
    cuts, j = [n], n
    for c in range(k, 0, -1):
        j = arg[c, j]
        cuts.append(j)
    cuts = cuts[::-1]
    centers = np.array([xs[cuts[c]:cuts[c + 1]].mean() for c in range(k)])
    labels = np.empty(n, int)
    for c in range(k):
        labels[order[cuts[c]:cuts[c + 1]]] = c
    return centers, labels, best[k, n]


def assert_lloyd_fixed_point(v, d, a, cfg):
    """No weight is closer to another value; every value is the (constrained) mean of its weights."""
    v64 = np.asarray(v, np.float64).ravel()
    a = np.asarray(a).ravel()
    d64 = np.asarray(d, np.float64)
    first = cfg.first_free
    if cfg.pruned:
        assert d[0] == 0
        np.testing.assert_array_equal(a == 0, ref_pruned(np.asarray(v, np.float32).ravel(),
                                                         cfg.n_pruned))
    keep = a >= first
    dist = np.abs(v64[keep, None] - d64[None, first:])
    assert np.all(dist[np.arange(keep.sum()), a[keep] - first] <= dist.min(1))
    for k in range(first, d.size):
        members = v64[a == k]
        if members.size:
            m = np.float32(members.mean())
            want = ref_pow2(float(m), cfg.pow2_range) if cfg.kind == 'pow2' else m
            assert d[k] == np.float32(want), (k, d[k], want)


def clustered(rng, n, k, spread=0.02):
    """n values around k separated centers."""
    centers = np.sort(rng.uniform(-1, 1, k)) + np.arange(k) * 0.5
    return (centers[rng.randint(0, k, n)] + rng.randn(n) * spread).astype(np.float32)


# -- C step -----------------------------------------------------------------------------------

@pytest.mark.parametrize('n,k', [(37, 2), (60, 3), (90, 4)])
def test_c_step_is_optimal_kmeans_on_small_layers(n, k, rng):
    v = clustered(rng, n, k)
    cfg = make_config(k, 'free', 0.0, None, n)
    d0, _ = init_dictionary(v, cfg, iters=0)  # quantile start only: Lloyd has to do the work
    d, a, ok = c_step(v, d0, cfg)
    assert ok and a.dtype == np.int32
    assert_lloyd_fixed_point(v, d, a, cfg)
    centers, labels, best = dp_kmeans(v, k)
    np.testing.assert_allclose(d, centers, rtol=1e-6)
    np.testing.assert_array_equal(a, labels)
    assert np.sum((v.astype(np.float64) - d[a]) ** 2) == pytest.approx(best, rel=1e-5)


@pytest.mark.parametrize('opts', [dict(n_values=4), dict(n_values=8),
                                  dict(n_values=4, dictionary='pow2'),
                                  dict(n_values=6, dictionary='pow2', pow2_range=(-6, -1)),
                                  dict(n_values=4, prune_ratio=0.5),
                                  dict(n_values=5, dictionary='pow2', prune_ratio=0.3)])
def test_c_step_reaches_a_fixed_point_never_worse_than_its_warm_start(opts, rng):
    v = (rng.randn(3000) * 0.1).astype(np.float32)
    cfg = make_config(opts['n_values'], opts.get('dictionary', 'free'),
                      opts.get('prune_ratio', 0.0), opts.get('pow2_range'), v.size)
    d0, a0 = init_dictionary(v, cfg, iters=1)
    d, a, ok = c_step(v, d0, cfg)
    assert ok
    assert_lloyd_fixed_point(v, d, a, cfg)
    if cfg.kind == 'pow2':
        assert is_pow2_array(d)
    v64 = v.astype(np.float64)
    assert np.sum((v64 - d[a]) ** 2) <= np.sum((v64 - d0[a0]) ** 2) * (1 + 1e-12)
    if not cfg.pruned and cfg.kind == 'free':  # unclustered weights: still the global optimum
        centers, labels, best = dp_kmeans(v[:150], cfg.n_values)
        dd, aa, ok = c_step(v[:150], init_dictionary(v[:150], cfg, 0)[0], cfg)
        assert ok
        np.testing.assert_allclose(dd, centers, rtol=1e-6)
        np.testing.assert_array_equal(aa, labels)
        assert np.sum((v64[:150] - dd[aa]) ** 2) == pytest.approx(best, rel=1e-9)


def test_pruned_c_step_is_optimal_kmeans_of_the_rest(rng):
    v = clustered(rng, 80, 3, spread=0.03)
    cfg = make_config(4, 'free', 0.25, None, v.size)
    d, a, ok = c_step(v, init_dictionary(v, cfg, 0)[0], cfg)
    assert ok and d[0] == 0 and np.sum(a == 0) == cfg.n_pruned
    rest = ~ref_pruned(v, cfg.n_pruned)
    centers, labels, _ = dp_kmeans(v[rest], 3)
    np.testing.assert_allclose(d[1:], centers, rtol=1e-6)
    np.testing.assert_array_equal(a[rest], labels + 1)


def _scaled_cost(v, values):
    v = np.asarray(v, np.float64)[:, None]
    return np.min((v - np.asarray(values, np.float64)[None]) ** 2, axis=1).sum()


@pytest.mark.parametrize('values', [[-1, 1], [-1, 0, 1], [-0.5, 0, 0.5], [-2, -1, 1, 2]])
def test_fixed_codebooks_with_and_without_a_learned_scale(values, rng):
    v = (rng.randn(500) * 0.07).astype(np.float32)
    cfg = make_config(len(values), values, 0.0, None, v.size)
    c = np.asarray(values, np.float32)
    d, a, _ = c_step(v, c, cfg)  # no scale: the nearest of the given values
    np.testing.assert_array_equal(d, c)
    np.testing.assert_array_equal(a, np.argmin(np.abs(v[:, None].astype(np.float64) - c[None]), 1))
    d, a, _ = c_step(v, c, cfg, learn_scale=True)
    scale = d[-1] / c[-1]
    np.testing.assert_allclose(d, scale * c, rtol=1e-6)
    cost = np.sum((v.astype(np.float64) - d[a]) ** 2)
    assert cost == pytest.approx(_scaled_cost(v, d), rel=1e-9)  # A is the nearest assignment
    grid = np.linspace(1e-3, 2 * np.abs(v).max() / np.abs(c).max(), 4001)
    brute = min(_scaled_cost(v, s * c) for s in grid)  # brute force over the scale
    if len(values) <= 3:  # closed forms: the global optimum
        assert cost <= brute * (1 + 1e-7)
        r = np.sort(np.abs(v.astype(np.float64)))[::-1]  # every "top j are ±a" candidate
        best = min(_scaled_cost(v, r[:j].mean() / np.abs(c).max() * c) for j in range(1, r.size + 1)) \
            if 0 in values else _scaled_cost(v, np.abs(v).mean() / np.abs(c).max() * c)
        assert cost == pytest.approx(best, rel=1e-7)
    else:  # alternation: a fixed point (least-squares scale for its assignment)
        ca = c[a].astype(np.float64)
        assert scale == pytest.approx(np.dot(v, ca) / np.dot(ca, ca), rel=1e-6)
        assert cost <= brute * 1.05


def test_scaled_ternary_with_pruning_is_scaled_binary_on_the_rest(rng):
    v = (rng.randn(400) * 0.1).astype(np.float32)
    cfg = make_config(3, [-1, 0, 1], 0.3, None, v.size)
    d, a, _ = c_step(v, np.asarray(cfg.fixed_values, np.float32), cfg, learn_scale=True)
    rest = ~ref_pruned(v, cfg.n_pruned)
    np.testing.assert_array_equal(a == 0, ~rest)
    assert d[0] == 0
    np.testing.assert_allclose(d[2], np.abs(v[rest].astype(np.float64)).mean(), rtol=1e-6)


# -- the solver -------------------------------------------------------------------------------

OPTS = {'free': dict(n_values=4), 'pow2': dict(n_values=4, dictionary='pow2'),
        'prune': dict(n_values=4, prune_ratio=0.5),
        'pow2_prune': dict(n_values=5, dictionary='pow2', prune_ratio=0.3, pow2_range=(-8, 0)),
        'ternary': dict(dictionary=[-1, 0, 1])}


def _net(rng, opts, batch=16):
    x = nn.Variable.from_numpy_array(rng.randn(batch, 3, 8, 8).astype(np.float32))
    t = nn.Variable.from_numpy_array(rng.randint(0, 5, (batch, 1)).astype(np.int32))
    with nnabla_lutq.weight_mode('float'):
        h = F.relu(PF.lutq_convolution(x, 6, (3, 3), name='c1', **opts))
        h = F.relu(PF.lutq_convolution(h, 6, (3, 3), name='c2', **opts))
        y = PF.lutq_affine(h, 5, name='fc', **opts)
    return x, t, F.mean(F.softmax_cross_entropy(y, t))


def _step(solver, loss, x=None, t=None, rng=None):
    if rng is not None:
        x.d = rng.randn(*x.shape)
        t.d = rng.randint(0, 5, t.shape)
    loss.forward()
    solver.zero_grad()
    loss.backward()
    solver.update()


def _snapshot(solver=None):
    out = {k: v.d.copy() for k, v in nn.get_parameters(grad_only=False).items()}
    if solver is not None:
        out.update({'lambda:' + s.name: solver.multipliers(s) for s in solver.layers})
    return out


@pytest.mark.parametrize('augmented', [True, False])
def test_penalty_gradient_equals_an_explicit_penalty_graph(augmented, rng, ctx):
    with nn.context_scope(ctx):
        x, t, loss = _net(rng, OPTS['free'])
        solver = nnabla_lutq.LCSolver(S.Momentum(0.05, 0.9), mu0=0.3, mu_growth=1.5,
                                      steps_per_lc=2, augmented_lagrangian=augmented)
        solver.set_parameters(nn.get_parameters())
        for _ in range(5):  # lambda != 0, mu = 0.3 * 1.5^2
            _step(solver, loss)
        assert solver.lc_steps == 2 and solver.mu == pytest.approx(0.3 * 1.5 ** 2)
        mu = solver.mu
        # explicit: loss + sum (mu/2)·||W - (d[A] + lambda/mu)||²
        pen = loss
        for s in solver.layers:
            lam = solver.multipliers(s) if augmented else np.zeros(s.W.shape, np.float32)
            if augmented:
                assert np.abs(lam).max() > 0
            target = F.embed(s.A.get_unlinked_variable(need_grad=False),
                             s.d.get_unlinked_variable(need_grad=False)) \
                + nn.Variable.from_numpy_array(lam / np.float32(mu))
            pen = pen + (mu / 2) * F.sum(F.squared_error(s.W, target))
        pen.forward()
        solver.zero_grad()
        pen.backward()
        explicit = {s.name: s.W.g.copy() for s in solver.layers}
        loss.forward()
        solver.zero_grad()
        loss.backward()
        plain = {s.name: s.W.g.copy() for s in solver.layers}
        solver.add_penalty_gradient()
        half = 'half' in str(ctx)
        for s in solver.layers:
            w = s.W.d.astype(np.float64)
            q = s.d.d.astype(np.float64)[s.A.d]
            lam = solver.multipliers(s).astype(np.float64) if augmented else 0
            ref = plain[s.name] + mu * (w - q - lam / mu)
            scale = np.abs(ref).max()
            tol = 2e-2 * scale if half else 1e-5 * scale
            np.testing.assert_allclose(s.W.g, ref, atol=tol)
            np.testing.assert_allclose(s.W.g, explicit[s.name], atol=tol)


def test_update_is_penalty_gradient_then_inner_update(rng):
    x, t, loss = _net(rng, OPTS['pow2'])
    solver = nnabla_lutq.LCSolver(S.Momentum(0.05, 0.9), mu0=0.2, mu_growth=1.2, steps_per_lc=3)
    solver.set_parameters(nn.get_parameters())
    twin = S.Momentum(0.05, 0.9)
    copies = {k: nn.Variable.from_numpy_array(v.d.copy(), need_grad=True)
              for k, v in nn.get_parameters().items()}
    twin.set_parameters(copies)
    solver.direct_compression()
    for step in range(2):  # no C step yet: d and A stay
        loss.forward()
        solver.zero_grad()
        loss.backward()
        grads = {k: v.g.copy() for k, v in nn.get_parameters().items()}
        for s in solver.layers:  # lambda = 0 before the first LC step
            k = s.name + '/W'
            grads[k] = (grads[k] + np.float32(solver.mu)
                        * (s.W.d - s.d.d[s.A.d])).astype(np.float32)
        for k, v in copies.items():
            v.g = grads[k]
        solver.update()
        twin.update()
        for k, v in copies.items():
            np.testing.assert_allclose(nn.get_parameters()[k].d, v.d, rtol=0, atol=1e-7)


@pytest.mark.parametrize('kind', list(OPTS))
@pytest.mark.parametrize('augmented', [True, False])
def test_lc_step_multipliers_and_mu(kind, augmented, rng):
    x, t, loss = _net(rng, OPTS[kind])
    mu0, a = 0.1, 1.25
    solver = nnabla_lutq.LCSolver(S.Momentum(0.05, 0.9), mu0=mu0, mu_growth=a, steps_per_lc=3,
                                  augmented_lagrangian=augmented)
    solver.set_parameters(nn.get_parameters())
    for j in range(3):
        for i in range(2):
            _step(solver, loss, x, t, rng)
        assert solver.lc_steps == j and solver.updates == 3 * j + 2
        before = _snapshot(solver)
        mu = solver.mu
        assert mu == mu0 * a ** j
        _step(solver, loss, x, t, rng)  # the third update ends the L step
        after = _snapshot(solver)
        assert solver.lc_steps == j + 1 and solver.mu == pytest.approx(mu0 * a ** (j + 1))
        for s in solver.layers:
            w = after[s.name + '/W']
            lam = before['lambda:' + s.name].astype(np.float64)
            if not augmented:
                assert not lam.any()
            v = (w.astype(np.float64) - lam / mu).astype(np.float32) if augmented else w
            d, A, _ = c_step(v, before[s.name + '/d'], s.config)
            np.testing.assert_array_equal(after[s.name + '/d'], d)
            np.testing.assert_array_equal(after[s.name + '/A'], A)
            assert after[s.name + '/A'].dtype == np.int32
            want = lam - mu * (w.astype(np.float64) - d.astype(np.float64)[A]) if augmented \
                else np.zeros(w.shape)
            np.testing.assert_array_max_ulp(after['lambda:' + s.name], want.astype(np.float32),
                                            maxulp=1)
            if s.config.kind == 'pow2':
                assert is_pow2_array(d)
            if s.config.pruned:
                assert d[0] == 0 and np.sum(A == 0) == s.config.n_pruned
                np.testing.assert_array_equal(A.ravel() == 0, ref_pruned(v.ravel(), s.config.n_pruned))


def test_direct_compression_starts_the_run(rng):
    x, t, loss = _net(rng, OPTS['free'])
    solver = nnabla_lutq.LCSolver(S.Sgd(0.0), mu0=1.0, steps_per_lc=100)
    solver.set_parameters(nn.get_parameters())
    assert not solver.started
    _step(solver, loss)  # lr 0: W unchanged, the tables are W's exact k-means
    assert solver.started
    for s in solver.layers:
        d, a, _ = c_step(s.W.d, nnabla_lutq.init_dictionary(s.W.d, s.config)[0], s.config)
        assert_lloyd_fixed_point(s.W.d, s.d.d, s.A.d, s.config)
        np.testing.assert_allclose(s.d.d, d, rtol=1e-6)


@pytest.mark.parametrize('fmt', ['.h5', '.protobuf'])
def test_resume_is_bit_exact(fmt, tmp_path):
    def build(seed):
        nn.clear_parameters()
        nn.random.set_parameter_seed(seed)
        x, t, loss = _net(np.random.RandomState(seed), OPTS['pow2_prune'])
        solver = nnabla_lutq.LCSolver(S.Momentum(0.05, 0.9), mu0=0.1, mu_growth=1.3,
                                      steps_per_lc=4)
        solver.set_parameters(nn.get_parameters())
        return x, t, loss, solver

    def run(solver, loss, x, t, steps):
        for i in steps:
            _step(solver, loss, x, t, np.random.RandomState(1000 + i))
            solver.weight_decay(1e-4)

    x, t, loss, solver = build(1)
    run(solver, loss, x, t, range(14))
    full = _snapshot(solver)
    x, t, loss, solver = build(1)
    run(solver, loss, x, t, range(6))  # stop inside the second L step
    nn.save_parameters(str(tmp_path / 'params.h5'))
    solver.save_states(str(tmp_path / ('states' + fmt)))
    x, t, loss, solver = build(2)  # other initial weights: everything must come from the files
    nn.load_parameters(str(tmp_path / 'params.h5'))
    solver.set_parameters(nn.get_parameters())
    solver.load_states(str(tmp_path / ('states' + fmt)))
    assert (solver.updates, solver.lc_steps, solver.started) == (6, 1, True)
    run(solver, loss, x, t, range(6, 14))
    resumed = _snapshot(solver)
    assert full.keys() == resumed.keys()
    for k in full:
        assert full[k].dtype == resumed[k].dtype and np.array_equal(full[k], resumed[k]), k


def test_load_states_refuses_other_settings(rng, tmp_path):
    x, t, loss = _net(rng, OPTS['free'])
    solver = nnabla_lutq.LCSolver(S.Momentum(0.05, 0.9), mu0=0.1, steps_per_lc=4)
    solver.set_parameters(nn.get_parameters())
    _step(solver, loss)
    solver.save_states(str(tmp_path / 's.h5'))
    other = nnabla_lutq.LCSolver(S.Momentum(0.05, 0.9), mu0=0.2, steps_per_lc=4)
    other.set_parameters(nn.get_parameters())
    with pytest.raises(ValueError, match='saved for other LUT-Q layers or settings .*mu0'):
        other.load_states(str(tmp_path / 's.h5'))
    plain = S.Momentum(0.05, 0.9)  # a plain nnabla solver state file still loads
    plain.set_parameters(nn.get_parameters())
    plain.save_states(str(tmp_path / 'plain.h5'))
    solver.load_states(str(tmp_path / 'plain.h5'))


@pytest.mark.parametrize('kind', ['free', 'ternary'])
def test_finalize_leaves_every_graph_computing_with_the_tables(kind, rng):
    x, t, loss = _net(rng, OPTS[kind])
    solver = nnabla_lutq.LCSolver(S.Momentum(0.05, 0.9), mu0=0.5, mu_growth=1.5, steps_per_lc=3,
                                  learn_scale=True)
    solver.set_parameters(nn.get_parameters())
    for _ in range(7):  # ends inside an L step: finalize runs the last C step
        _step(solver, loss, x, t, rng)
    before = _snapshot(solver)
    gaps = solver.finalize()
    assert set(gaps) == {s.name for s in solver.layers}
    final = _snapshot(solver)
    assert all(v == 0 for v in solver.finalize().values())  # again: nothing changes
    for k, v in _snapshot(solver).items():
        np.testing.assert_array_equal(v, final[k])
    outs = {}
    for mode in ('float', 'tied', 'tables'):
        with nnabla_lutq.weight_mode(mode):
            h = F.relu(PF.lutq_convolution(x, 6, (3, 3), name='c1', **OPTS[kind]))
            h = F.relu(PF.lutq_convolution(h, 6, (3, 3), name='c2', **OPTS[kind]))
            y = PF.lutq_affine(h, 5, name='fc', **OPTS[kind])
        y.forward()
        outs[mode] = y.d.copy()
    np.testing.assert_array_equal(outs['float'], outs['tables'])
    np.testing.assert_array_equal(outs['tied'], outs['tables'])
    for s in solver.layers:
        lam = before['lambda:' + s.name].astype(np.float64)
        v = (before[s.name + '/W'] - lam / solver.mu).astype(np.float32)
        d, a, _ = c_step(v, before[s.name + '/d'], s.config, learn_scale=True)
        np.testing.assert_array_equal(s.d.d, d)
        np.testing.assert_array_equal(s.A.d, a)
        if kind == 'ternary':
            assert d[0] < 0 and d[1] == 0 and d[2] == -d[0] and d[2] != 1  # a learned ±a


def test_arguments_schedule_and_delegation(rng):
    with pytest.raises(ValueError, match='steps_per_lc'):
        nnabla_lutq.LCSolver(S.Sgd(0.1))
    with pytest.raises(ValueError, match='mu0'):
        nnabla_lutq.LCSolver(S.Sgd(0.1), mu0=0, steps_per_lc=1)
    with pytest.raises(ValueError, match='mu_growth'):
        nnabla_lutq.LCSolver(S.Sgd(0.1), mu_growth=0.5, steps_per_lc=1)
    kw = lc_schedule(1000)
    assert kw == {'mu0': TOOLKIT_SCHEDULE['mu0'], 'mu_growth': 1.1, 'steps_per_lc': 25}
    _net(rng, OPTS['free'])
    inner = S.Momentum(0.1, 0.9)
    solver = nnabla_lutq.LCSolver(inner, **kw)
    assert isinstance(solver, nn.solver.Solver) and solver.name == 'Momentum'
    solver.set_parameters(nn.get_parameters())
    assert [s.name for s in solver.layers] == ['c1/lutq_conv', 'c2/lutq_conv', 'fc/lutq_affine']
    solver.set_learning_rate(0.02)
    assert inner.learning_rate() == pytest.approx(0.02)
    assert solver.mu_at(3) == pytest.approx(9e-5 * 1.1 ** 3)
    solver.remove_parameters(['fc/lutq_affine/W'])
    assert [s.name for s in solver.layers] == ['c1/lutq_conv', 'c2/lutq_conv']


@pytest.mark.parametrize('kind', ['pow2_prune', 'ternary'])
def test_lc_model_exports_packs_and_reloads_like_a_lutq_model(kind, rng, tmp_path):
    from nnabla_lutq.io.nnp import loaded_network
    x, t, loss = _net(rng, OPTS[kind])
    solver = nnabla_lutq.LCSolver(S.Momentum(0.05, 0.9), mu0=0.5, mu_growth=1.5, steps_per_lc=2,
                                  learn_scale=True)
    solver.set_parameters(nn.get_parameters())
    for _ in range(4):
        _step(solver, loss, x, t, rng)
    solver.finalize()
    xe = nn.Variable(x.shape)
    with nnabla_lutq.inference_mode():
        h = F.relu(PF.lutq_convolution(xe, 6, (3, 3), name='c1', **OPTS[kind]))
        h = F.relu(PF.lutq_convolution(h, 6, (3, 3), name='c2', **OPTS[kind]))
        y = PF.lutq_affine(h, 5, name='fc', **OPTS[kind])
    xe.d = rng.randn(*x.shape)
    y.forward()
    rep = nnabla_lutq.report(y)
    assert [r['name'] for r in rep.records()] == [s.name for s in solver.layers]
    path, packed, back = (str(tmp_path / n) for n in ('m.nnp', 'm.lutq', 'back.nnp'))
    nnabla_lutq.export_nnp(path, {'x': xe}, {'y': y})
    nnabla_lutq.pack(path, packed)
    nnabla_lutq.unpack(packed, back)
    for f in (path, back):
        with loaded_network(f, 'lutq', batch_size=x.shape[0]) as net:
            xi, yo = list(net.inputs.values())[0], list(net.outputs.values())[0]
            xi.d = xe.d
            yo.forward()
            np.testing.assert_array_equal(yo.d, y.d)
