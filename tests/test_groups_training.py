# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Grouped look-up tables in every k-means backend and training component: the graph, fused and
data-parallel k-means steps, LCSolver, initialization, sensitivity-weighted fits and solver states,
each against the one-table numpy reference run group by group (tests/reference.py)."""
import numpy as np
import pytest
import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF
import nnabla.solvers as S

import nnabla_lutq
from nnabla_lutq.core import fit_table, c_step
from nnabla_lutq.kmeans import GraphKMeans, HostKMeans, SyncKMeans, FusedKMeans, fused
from nnabla_lutq.training.sensitivity import Fisher, fisher_diagonal, initialize_weighted
from nnabla_lutq.training.solver import SolverStateError
from reference import (ref_group_slices, ref_grouped_step, ref_step, ref_pruned,
                       assert_tables_fitted)
from test_sync import FakeComm, _Group
from test_lc import _step as lc_step
from test_kmeans_fused import fake_driver  # noqa: F401 (a fixture)
from fused_reference import fused_step

KINDS = {  # build(x, **opts) -> LUT-Q layer 'l' of 6 output channels
    'conv': lambda x, **kw: PF.lutq_convolution(x, 6, (3, 3), name='l', **kw),
    'affine': lambda x, **kw: PF.lutq_affine(x, 6, name='l', **kw),
    'affine2d': lambda x, **kw: PF.lutq_affine(x, (2, 6), name='l', **kw),
    'depthwise': lambda x, **kw: PF.lutq_depthwise_convolution(x, (3, 3), name='l', **kw),
}
OPTS = {'free': dict(n_values=4), 'pow2': dict(n_values=4, dictionary='pow2'),
        'pruned': dict(n_values=3, prune_ratio=0.4),
        'pow2_pruned': dict(n_values=3, dictionary='pow2', prune_ratio=0.3, pow2_range=(-8, 0)),
        'fixed': dict(dictionary=[-1.0, 0.0, 1.0]),
        'fixed_pruned': dict(dictionary=[-0.5, 0.0, 0.5], prune_ratio=0.3),
        'k2_pruned': dict(n_values=2, prune_ratio=0.5)}


def _slices(cfg):
    return ref_group_slices(cfg.shape, cfg.out_axis, cfg.group_size)


def ref_lookup(cfg, d, a):
    """``d[A]`` read group by group with plain numpy indexing (flat, the layer's order)."""
    a = np.asarray(a).ravel()
    if cfg.group_size is None:
        return np.asarray(d, np.float32)[a]
    q = np.empty(a.size, np.float32)
    for g, ix in enumerate(_slices(cfg)):
        q[ix] = np.asarray(d, np.float32)[g][a[ix]]
    return q


def ref_layer_step(w, d, cfg):
    """The one-table reference step, per group for a grouped layer."""
    if cfg.group_size is None:
        return ref_step(np.asarray(w, np.float32).ravel(), d, cfg)
    return ref_grouped_step(w, d, cfg)


def assert_means_close(got, want, w, err_msg=''):
    """Tables within float32 rounding of the float64 reference means: the graph backend sums in
    float32, so a mean near 0 of weights of both signs may be off by a few ulps of max|W|."""
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6 * float(np.abs(w).max()),
                               err_msg=err_msg)


def _move(layers, rng, scale=0.05):
    """Move W away from its tables (random, so no |W| ties at a pruning threshold)."""
    for s in layers:
        s.W.d = s.W.d + rng.randn(*s.W.shape).astype(np.float32) * scale


def _one_layer(kind, opts, group_size, rng):
    x = nn.Variable((2, 6, 6, 6) if kind != 'affine2d' else (2, 12))
    KINDS[kind](x, group_size=group_size, **opts)
    layers = nnabla_lutq.lutq_layers()
    _move(layers, rng)
    return layers


# --- the graph backend ------------------------------------------------------------------------

@pytest.mark.parametrize('kind', list(KINDS))
@pytest.mark.parametrize('opts', list(OPTS))
@pytest.mark.parametrize('group_size', [None, 1, 2, 6])
def test_graph_step_equals_the_per_group_reference(kind, opts, group_size, rng):
    """The nnabla-function step (cudnn contexts), run here on the CPU: ``A`` identical to the
    one-table reference of each group, ``d`` within float32 rounding, of shape (n_groups, K).
    (None: one table, the one-row case of the same graph; K = 2 with pruning, one free value,
    included.)"""
    layers = _one_layer(kind, OPTS[opts], group_size, rng)
    s = layers[0]
    cfg = s.config
    assert cfg.table_shape == ((cfg.n_values,) if group_size is None
                               else (6 // group_size, cfg.n_values))
    w, d = s.W.d.copy(), s.d.d.copy()
    GraphKMeans(layers, 2).step()
    for _ in range(2):
        d, a = ref_layer_step(w, d, cfg)
    assert s.A.data.dtype == np.int32 and s.A.shape == s.W.shape
    np.testing.assert_array_equal(s.A.d.ravel(), a)
    assert s.d.shape == cfg.table_shape
    assert_means_close(s.d.d, d, w)
    if cfg.pruned:
        assert not s.d.d.reshape(cfg.n_groups, -1)[:, 0].any()
    start = (s.d.d.copy(), s.A.d.copy())  # and the exact host backend, from the same state
    GraphKMeans(layers, 1).step()
    dev = (s.d.d.copy(), s.A.d.copy())
    s.d.d = start[0]
    s.A.data.cast(np.int32)[...] = start[1]
    HostKMeans(layers, 1).step()
    np.testing.assert_array_equal(dev[1], s.A.d)
    assert_means_close(dev[0], s.d.d, w)


def _functions(sink):
    names = []
    sink.visit(lambda f: names.append(f.info.type_name))
    return sorted(names)


@pytest.mark.parametrize('kind', ['conv', 'affine'])
@pytest.mark.parametrize('opts', ['pow2_pruned', 'free'])
def test_graph_step_has_one_set_of_functions_whatever_the_groups(kind, opts, rng):
    """No loop over groups: 6, 3 or 2 tables build the same functions (one set per layer)."""
    built = []
    for group_size in (1, 2, 3):
        nn.clear_parameters()
        layers = _one_layer(kind, OPTS[opts], group_size, rng)
        g = GraphKMeans(layers, 1)
        g.step()
        built.append(_functions(g._sink))
    assert built[0] == built[1] == built[2]
    assert built[0].count('SearchSorted') == 1 and built[0].count('ScatterAdd') == 2


def test_graph_step_of_grouped_and_plain_layers_together(rng, ctx):
    """In every context (``cpu:half``: the step still computes in float32; ``--context cudnn``
    on a GPU)."""
    x = nn.Variable((2, 6, 6, 6))
    h = PF.lutq_convolution(x, 6, (3, 3), name='c1', n_values=4, group_size=2)
    PF.lutq_convolution(h, 4, (3, 3), name='c2', n_values=5, dictionary='pow2', prune_ratio=0.2)
    PF.lutq_affine(h, 8, name='fc', n_values=3, prune_ratio=0.3, group_size=4)
    layers = nnabla_lutq.lutq_layers()
    _move(layers, rng)
    start = [(s.W.d.copy(), s.d.d.copy()) for s in layers]
    g = GraphKMeans(layers, 1)
    with nn.context_scope(ctx):
        for _ in range(2):
            g.step()
    for s, (w, d) in zip(layers, start):
        for _ in range(2):
            d, a = ref_layer_step(w, d, s.config)
        np.testing.assert_array_equal(s.A.d.ravel(), a, err_msg=s.name)
        assert_means_close(s.d.d, d, w, s.name)
    # a refused step (non-finite weights) changes no table, grouped or not
    bad = layers[0].W.d.copy()
    bad.flat[4] = np.nan
    layers[0].W.d = bad
    before = [(s.d.d.copy(), s.A.d.copy()) for s in layers]
    with nn.context_scope(ctx), pytest.raises(ValueError, match='c1/lutq_conv: W has non-finite'):
        g.step()
    for s, (d, a) in zip(layers, before):
        np.testing.assert_array_equal(s.d.d, d)
        np.testing.assert_array_equal(s.A.d, a)


# --- the fused backend: grouped layers go to the graph backend ---------------------------------

def test_fused_backend_routes_grouped_layers_to_the_graph_backend(rng):
    x = nn.Variable((2, 6, 6, 6))
    PF.lutq_convolution(x, 6, (3, 3), name='c1', n_values=4)
    PF.lutq_convolution(x, 6, (3, 3), name='c2', n_values=4, group_size=3)
    PF.lutq_affine(x, 6, name='fc', n_values=4, dictionary='pow2', group_size=1)
    layers = nnabla_lutq.lutq_layers()
    cfgs = [s.config for s in layers]
    assert [fused.fused_supported(c) for c in cfgs] == [True, False, False]
    b = FusedKMeans(layers, 1)
    assert [s.name for s in b._fused] == ['c1/lutq_conv']
    assert isinstance(b._other, GraphKMeans)
    assert [s.name for s in b._other.layers] == ['c2/lutq_conv', 'fc/lutq_affine']


def test_fused_step_of_grouped_and_plain_layers(fake_driver, rng):  # noqa: F811
    """On the emulated driver: the plain layers are the kernels' model bit for bit, the grouped
    ones the per-group reference (stepped by the graph backend in the same call)."""
    x = nn.Variable((2, 6, 6, 6))
    PF.lutq_convolution(x, 6, (3, 3), name='c1', n_values=4, prune_ratio=0.3)
    PF.lutq_convolution(x, 6, (3, 3), name='c2', n_values=4, prune_ratio=0.3, group_size=2)
    PF.lutq_affine(x, 6, name='fc', n_values=4, dictionary='pow2', group_size=3)
    layers = nnabla_lutq.lutq_layers()
    _move(layers, rng)
    start = [(s.W.d.ravel().copy(), s.d.d.copy()) for s in layers]
    FusedKMeans(layers, 2).step()
    for s, (w, d) in zip(layers, start):
        grouped = s.config.group_size is not None
        for _ in range(2):
            d, a = (ref_grouped_step if grouped else fused_step)(w, d, s.config)
        np.testing.assert_array_equal(s.A.d.ravel(), a, err_msg=s.name)
        if grouped:
            assert_means_close(s.d.d, d, w, s.name)
        else:
            np.testing.assert_array_equal(s.d.d.view(np.int32), d.view(np.int32))
    c = fake_driver()
    assert c['assign'] == 2 and c['update'] == 2  # the kernels ran for the plain layer


# --- data-parallel k-means --------------------------------------------------------------------

class NoisyGroupedKMeans(HostKMeans):
    """A host step whose fitted values differ by ``rank`` ulps: what GPU atomics can do."""
    rank = 0

    def _run(self):
        super()._run()
        for s in self.layers:
            d = s.d.data.cast(np.float32)[..., s.config.first_free:]  # the fixed zeros stay
            for _ in range(NoisyGroupedKMeans.rank):
                d[...] = np.nextafter(d, np.float32(np.inf))


def _rank_layers(rank):
    rng = np.random.RandomState(3)  # the same weights on every rank
    with nn.parameter_scope(f'rank{rank}'):
        x = nn.Variable((2, 3, 6, 6))
        PF.lutq_convolution(x, 4, (3, 3), name='c1', n_values=4, dictionary='pow2', group_size=2)
        PF.lutq_affine(x, 6, name='fc', n_values=4, prune_ratio=0.3, group_size=3)
        PF.lutq_affine(x, 5, name='fc2', n_values=3)
    layers = [s for s in nnabla_lutq.lutq_layers() if s.name.startswith(f'rank{rank}/')]
    for s in layers:
        s.W.d = rng.randn(*s.W.shape).astype(np.float32)
    nnabla_lutq.initialize(layers)
    return layers


def _step_ranks(backends):
    """One k-means step on every rank, rank 0 first (as FakeComm needs), each with its noise."""
    for r, backend in enumerate(backends):
        NoisyGroupedKMeans.rank = r
        backend.step()


@pytest.mark.parametrize('inner,iters', [(NoisyGroupedKMeans, 1), (NoisyGroupedKMeans, 2),
                                         (GraphKMeans, 2)])
def test_sync_backend_agrees_grouped_tables_on_every_rank(inner, iters):
    """Every rank holds rank 0's tables after each step (an ``(n_groups, K)`` table is broadcast
    as it is); rank 0's are the plain step's: exactly those of the reference with the host step
    (its noise is zero on rank 0), within float32 rounding with the graph step."""
    group = _Group(3)
    ranks = [_rank_layers(r) for r in range(3)]
    for layers in ranks:
        _move(layers, np.random.RandomState(7))  # the same move on every rank
    start = [(s.W.d.copy(), s.d.d.copy()) for s in ranks[0]]
    backends = [SyncKMeans(layers, iters, comm=FakeComm(group, r), inner=inner)
                for r, layers in enumerate(ranks)]
    for step in range(2):
        _step_ranks(backends)
        assert len(group.sent) == (step + 1) * iters  # one bcast of all tables per iteration
        assert [v.shape for v in group.sent[-1]] == [(2, 4), (2, 4), (3,)]
        held = [[(s.d.d.tobytes(), s.A.d.tobytes()) for s in layers] for layers in ranks]
        assert held[1] == held[0] and held[2] == held[0]
    for (w, d), s in zip(start, ranks[0]):
        for _ in range(2 * iters):
            d, a = ref_layer_step(w, d, s.config)
        np.testing.assert_array_equal(s.A.d.ravel(), a)
        if inner is GraphKMeans:
            assert_means_close(s.d.d, d, w)
        else:
            np.testing.assert_array_max_ulp(s.d.d, d, maxulp=1)


# --- LCSolver -----------------------------------------------------------------------------------

def _mixed_net(rng, batch=8, float_mode=True, group_size=2):
    """Grouped layers of every kind of table and a plain one, on one network."""
    x = nn.Variable.from_numpy_array(rng.randn(batch, 3, 6, 6).astype(np.float32))
    t = nn.Variable.from_numpy_array(rng.randint(0, 6, (batch, 1)).astype(np.int32))
    with nnabla_lutq.weight_mode('float' if float_mode else 'tied'):
        h = F.relu(PF.lutq_convolution(x, 6, (3, 3), name='c1', n_values=4,
                                       group_size=group_size))
        h = F.relu(PF.lutq_depthwise_convolution(h, (3, 3), name='dw', n_values=3,
                                                 dictionary='pow2', prune_ratio=0.3,
                                                 group_size=3))
        h = F.relu(PF.lutq_affine(h, 8, name='fc1', n_values=4))
        y = PF.lutq_affine(h, 6, name='fc2', dictionary=[-1.0, 0.0, 1.0], group_size=2)
    return x, t, F.mean(F.softmax_cross_entropy(y, t))


def _step(solver, loss, x, t, seed):
    """One update on the minibatch drawn from ``seed`` (tests/test_lc.py's step)."""
    lc_step(solver, loss, x, t, np.random.RandomState(seed))


def _lc_snapshot(solver):
    out = {k: v.d.copy() for k, v in nn.get_parameters(grad_only=False).items()}
    out.update({'lambda:' + s.name: solver.multipliers(s) for s in solver.layers})
    return out


def ref_c_step(v, d, cfg, learn_scale):
    """The C step of each group as a layer of its own (the plain C step without groups)."""
    if cfg.group_size is None:
        new, a, _ = c_step(v, d, cfg, learn_scale)
        return new, a.ravel()
    one = cfg.one_group()
    v = np.asarray(v, np.float32).ravel()
    new = np.empty(cfg.table_shape, np.float32)
    a = np.empty(v.size, np.int32)
    for g, ix in enumerate(_slices(cfg)):
        new[g], a[ix], _ = c_step(v[ix], np.asarray(d)[g], one, learn_scale)
    return new, a


@pytest.mark.parametrize('learn_scale', [False, True])
def test_lc_steps_of_grouped_layers_are_per_group_c_steps(learn_scale, rng):
    x, t, loss = _mixed_net(rng)
    mu0, growth = 0.1, 1.25
    solver = nnabla_lutq.LCSolver(S.Momentum(0.05, 0.9), mu0=mu0, mu_growth=growth,
                                  steps_per_lc=3, learn_scale=learn_scale)
    solver.set_parameters(nn.get_parameters())
    assert [s.config.n_groups for s in solver.layers] == [3, 2, 1, 3]
    seed = 0
    for j in range(2):
        for _ in range(2):
            _step(solver, loss, x, t, seed)
            seed += 1
        before = _lc_snapshot(solver)
        mu = solver.mu
        _step(solver, loss, x, t, seed)  # the third update ends the L step
        seed += 1
        after = _lc_snapshot(solver)
        assert solver.lc_steps == j + 1
        for s in solver.layers:
            cfg = s.config
            w = after[s.name + '/W'].astype(np.float64)
            lam = before['lambda:' + s.name].astype(np.float64)
            v = (w - lam / mu).astype(np.float32)
            d, a = ref_c_step(v, before[s.name + '/d'], cfg, learn_scale)
            assert after[s.name + '/d'].shape == cfg.table_shape
            np.testing.assert_array_equal(after[s.name + '/d'], d, err_msg=s.name)
            np.testing.assert_array_equal(after[s.name + '/A'].ravel(), a, err_msg=s.name)
            assert after[s.name + '/A'].dtype == np.int32
            want = lam - mu * (w - ref_lookup(cfg, d, a).reshape(w.shape).astype(np.float64))
            np.testing.assert_array_max_ulp(after['lambda:' + s.name], want.astype(np.float32),
                                            maxulp=1)
            if cfg.pruned:
                for g, ix in enumerate(_slices(cfg)):
                    assert d[g][0] == 0
                    np.testing.assert_array_equal(a[ix] == 0, ref_pruned(v.ravel()[ix],
                                                                         cfg.n_pruned))
            if cfg.kind == 'fixed' and learn_scale and cfg.group_size is not None:
                scales = d[:, -1]  # one scale a per group: d[g] = a_g·(-1, 0, 1)
                np.testing.assert_array_equal(d, scales[:, None] * np.float32([-1, 0, 1]))
                assert np.unique(scales).size == cfg.n_groups


def test_lc_penalty_gradient_and_finalize_read_each_groups_table(rng):
    x, t, loss = _mixed_net(rng)
    solver = nnabla_lutq.LCSolver(S.Momentum(0.05, 0.9), mu0=0.3, mu_growth=1.5, steps_per_lc=2)
    solver.set_parameters(nn.get_parameters())
    for i in range(5):
        _step(solver, loss, x, t, i)
    mu = solver.mu
    loss.forward()
    solver.zero_grad()
    loss.backward()
    plain = {s.name: s.W.g.copy() for s in solver.layers}
    solver.add_penalty_gradient()
    penalty = 0.0
    for s in solver.layers:
        w = s.W.d.astype(np.float64)
        q = ref_lookup(s.config, s.d.d, s.A.d).reshape(w.shape).astype(np.float64)
        lam = solver.multipliers(s).astype(np.float64)
        assert np.abs(lam).max() > 0
        ref = plain[s.name] + mu * (w - q) - lam
        np.testing.assert_allclose(s.W.g, ref, atol=1e-5 * np.abs(ref).max(), err_msg=s.name)
        r = w - q - lam / mu
        penalty += 0.5 * mu * float(np.sum(r * r))
    assert solver.penalty() == pytest.approx(penalty, rel=1e-9)
    errors = solver.finalize()
    for s in solver.layers:
        q = ref_lookup(s.config, s.d.d, s.A.d).reshape(s.W.shape)
        np.testing.assert_array_equal(s.W.d, q, err_msg=s.name)
        assert errors[s.name] >= 0
    # every graph now computes with the tables: the float graph equals the tied one
    loss.forward()
    float_loss = float(loss.d)
    tied = _mixed_net(np.random.RandomState(0), float_mode=False)
    tied[0].d, tied[1].d = x.d, t.d
    tied[2].forward()
    assert float(tied[2].d) == pytest.approx(float_loss, rel=1e-6)


def test_lc_direct_compression_fits_each_group(rng):
    x, t, loss = _mixed_net(rng)
    solver = nnabla_lutq.LCSolver(S.Sgd(0.0), mu0=1.0, steps_per_lc=100)
    solver.set_parameters(nn.get_parameters())
    solver.direct_compression()
    for s in solver.layers:
        cfg = s.config
        one = cfg.one_group()
        w = s.W.d.ravel()
        for g, ix in enumerate(_slices(cfg) if cfg.group_size else [np.arange(w.size)]):
            d0 = fit_table(w[ix], one)[0]
            dg, ag, _ = c_step(w[ix], d0, one)
            np.testing.assert_array_equal(s.d.d.reshape(cfg.n_groups, -1)[g], dg)
            np.testing.assert_array_equal(s.A.d.ravel()[ix], ag)


# --- initialization and sensitivity-weighted tables ---------------------------------------------

def _per_group_fit(w, cfg, weight=None, lloyd_iters=1000):
    """``fit_table`` of each group's weights as a layer of its own, assembled in numpy."""
    w = np.asarray(w, np.float32).ravel()
    one = cfg.one_group()
    d = np.empty(cfg.table_shape, np.float32)
    a = np.empty(w.size, np.int32)
    for g, ix in enumerate(_slices(cfg)):
        d[g], a[ix] = fit_table(w[ix], one, None if weight is None else weight.ravel()[ix],
                                lloyd_iters)
    return d, a


@pytest.mark.parametrize('iters', [None, 0, 2])
def test_initialize_fits_each_groups_table(iters, rng):
    _mixed_net(rng)
    layers = nnabla_lutq.lutq_layers()
    _move(layers, rng, scale=0.3)
    assert sorted(nnabla_lutq.initialize(iters=iters)) == sorted(s.name for s in layers)
    for s in layers:
        lloyd = 1000 if iters is None else iters
        if s.config.group_size is None:
            d, a = fit_table(s.W.d, s.config, lloyd_iters=lloyd)
        else:
            d, a = _per_group_fit(s.W.d, s.config, lloyd_iters=lloyd)
        assert s.d.shape == s.config.table_shape and s.A.data.dtype == np.int32
        np.testing.assert_array_equal(s.d.d, d, err_msg=s.name)
        np.testing.assert_array_equal(s.A.d.ravel(), a.ravel(), err_msg=s.name)


def test_load_float_parameters_initializes_each_groups_table(rng, tmp_path):
    x = nn.Variable((2, 3, 6, 6))
    PF.convolution(x, 6, (3, 3), name='c1')
    nn.save_parameters(str(tmp_path / 'float.h5'))
    w = nn.get_parameters()['c1/conv/W'].d.copy()
    nn.clear_parameters()
    PF.lutq_convolution(x, 6, (3, 3), name='c1', n_values=4, prune_ratio=0.25, group_size=3)
    nnabla_lutq.load_float_parameters(str(tmp_path / 'float.h5'))
    s = nnabla_lutq.STATE.layer('c1')
    np.testing.assert_array_equal(s.W.d, w)
    d, a = _per_group_fit(w, s.config)
    np.testing.assert_array_equal(s.d.d, d)
    np.testing.assert_array_equal(s.A.d.ravel(), a)


def test_weighted_fit_of_a_grouped_layer_is_each_groups_weighted_fit(rng):
    x = nn.Variable((2, 3, 6, 6))
    PF.lutq_convolution(x, 6, (3, 3), name='c1', n_values=3, group_size=2)
    PF.lutq_affine(x, 8, name='fc', n_values=4, prune_ratio=0.25, group_size=4)
    PF.lutq_affine(x, 5, name='plain', n_values=4)
    fisher = {}
    for s in nnabla_lutq.lutq_layers():
        s.W.d = rng.randn(*s.W.shape).astype(np.float32)
        f = rng.rand(*s.W.shape) ** 3  # very unequal importances
        fisher[s.name.split('/')[0]] = (s.W.d, f)
    fisher = Fisher(fisher, 3)
    assert sorted(initialize_weighted(fisher)) == ['c1', 'fc', 'plain']
    for name in ('c1', 'fc', 'plain'):
        s = nnabla_lutq.STATE.layer(name)
        cfg, f = s.config, fisher[name]
        if cfg.group_size is None:
            d, a = fit_table(s.W.d, cfg, weight=f)
            a = a.ravel()
        else:
            d, a = _per_group_fit(s.W.d, cfg, weight=f)
            assert not np.array_equal(d, _per_group_fit(s.W.d, cfg)[0])  # the weights matter
        np.testing.assert_array_equal(s.d.d, d, err_msg=name)
        np.testing.assert_array_equal(s.A.d.ravel(), a, err_msg=name)
        # the fixed point, checked directly: each free value the F-weighted mean of its cluster
        w64, a = s.W.d.astype(np.float64).ravel(), s.A.d.ravel()
        rows = d.reshape(cfg.n_groups, -1)
        slices = _slices(cfg) if cfg.group_size else [np.arange(w64.size)]
        for g, ix in enumerate(slices):
            for k in range(cfg.first_free, cfg.n_values):
                m = ix[a[ix] == k]
                if f.ravel()[m].sum() > 0:
                    mean = np.dot(f.ravel()[m], w64[m]) / f.ravel()[m].sum()
                    assert rows[g, k] == pytest.approx(mean, rel=1e-5, abs=1e-7), (name, g, k)


def test_fisher_and_weighted_tables_of_a_grouped_lutq_network(rng):
    x, t, loss = _mixed_net(rng, batch=4)
    batches = [{x: rng.randn(*x.shape), t: rng.randint(0, 6, t.shape)} for _ in range(2)]
    fisher = fisher_diagonal(loss, batches)
    assert sorted(fisher) == ['c1', 'dw', 'fc1', 'fc2']
    initialize_weighted(fisher)
    for name in fisher:
        s = nnabla_lutq.STATE.layer(name)
        if s.config.group_size is None:
            d, a = fit_table(s.W.d, s.config, weight=fisher.importance(name))
        else:
            d, a = _per_group_fit(s.W.d, s.config, weight=fisher.importance(name))
        np.testing.assert_array_equal(s.d.d, d, err_msg=name)
        np.testing.assert_array_equal(s.A.d.ravel(), a.ravel(), err_msg=name)


# --- LUTQSolver and solver states ---------------------------------------------------------------

SOLVERS = {
    'LUTQSolver': lambda: nnabla_lutq.LUTQSolver(S.Momentum(0.05, 0.9), kmeans_iters=2),
    'LCSolver': lambda: nnabla_lutq.LCSolver(S.Momentum(0.05, 0.9), mu0=0.1, mu_growth=1.3,
                                             steps_per_lc=3, learn_scale=True),
}


def _build(kind, seed, group_size=2):
    nn.clear_parameters()
    nn.random.set_parameter_seed(seed)
    x, t, loss = _mixed_net(np.random.RandomState(seed), float_mode=kind == 'LCSolver',
                            group_size=group_size)
    solver = SOLVERS[kind]()
    solver.set_parameters(nn.get_parameters())
    return x, t, loss, solver


def _everything(solver):
    out = {k: v.d.copy() for k, v in nn.get_parameters(grad_only=False).items()}
    for k, st in solver.get_states().items():
        out.update({f'{k}/{n}': v.d.copy() for n, v in st.pstate.items()})
    if isinstance(solver, nnabla_lutq.LCSolver):
        out.update({'lambda:' + s.name: solver.multipliers(s) for s in solver.layers})
        out['counters'] = np.array([solver.updates, solver.lc_steps, solver.started])
    return out


@pytest.mark.parametrize('kind', list(SOLVERS))
@pytest.mark.parametrize('fmt', ['.h5', '.protobuf'])
def test_training_grouped_and_plain_layers_resumes_exactly(kind, fmt, tmp_path):
    x, t, loss, solver = _build(kind, 1)
    for i in range(8):
        _step(solver, loss, x, t, 100 + i)
    full = _everything(solver)
    if kind == 'LUTQSolver':
        assert_tables_fitted(solver.layers)
    x, t, loss, solver = _build(kind, 1)
    for i in range(4):  # stop inside an L step
        _step(solver, loss, x, t, 100 + i)
    nn.save_parameters(str(tmp_path / 'params.h5'))
    solver.save_states(str(tmp_path / ('states' + fmt)))
    x, t, loss, solver = _build(kind, 2)  # other weights: everything must come from the files
    nn.load_parameters(str(tmp_path / 'params.h5'))
    solver.set_parameters(nn.get_parameters())
    solver.load_states(str(tmp_path / ('states' + fmt)))
    assert [s.d.shape for s in solver.layers] == [(3, 4), (2, 3), (4,), (3, 3)]
    assert all(s.A.data.dtype == np.int32 for s in solver.layers)
    for i in range(4, 8):
        _step(solver, loss, x, t, 100 + i)
    resumed = _everything(solver)
    assert full.keys() == resumed.keys()
    for k in full:
        assert full[k].dtype == resumed[k].dtype and np.array_equal(full[k], resumed[k]), k


@pytest.mark.parametrize('kind', list(SOLVERS))
def test_states_of_other_group_sizes_are_refused(kind, tmp_path):
    x, t, loss, solver = _build(kind, 1)
    _step(solver, loss, x, t, 0)
    path = str(tmp_path / 'states.h5')
    solver.save_states(path)
    x, t, loss, other = _build(kind, 1, group_size=3)
    before = _everything(other)
    with pytest.raises(SolverStateError, match=r"c1/lutq_conv: saved .*'group_size': 2.*, now "
                                               r".*'group_size': 3"):
        other.load_states(path)
    after = _everything(other)
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])
