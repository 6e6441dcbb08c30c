# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Grouped look-up tables (one table per ``group_size`` output channels): the numpy rules against
the one-table reference run on each group (tests/reference.py)."""
import numpy as np
import pytest

from nnabla_lutq.core import make_config, kmeans_step, assign, fit_table, table_sse, c_step
from nnabla_lutq.core.kmeans import pruned_rows
from reference import ref_group_slices, ref_grouped_step, ref_pruned

CASES = [  # shape, out_axis, group_size
    ((8, 3, 3, 3), 0, 2),     # convolution, groups of 2 output channels
    ((8, 3, 3, 3), 0, 1),     # per channel
    ((20, 6), 1, 3),          # affine (inmaps, outmaps): the output axis is the last
    ((5, 4, 6), 2, 6),        # affine with 2-D outmaps, one group
    ((6, 3, 3), 0, 3),        # depthwise convolution
]
KINDS = [  # n_values, dictionary, prune_ratio
    (4, 'free', 0.0), (4, 'pow2', 0.0), (3, 'free', 0.4), (3, 'pow2', 0.3),
    (3, [-1.0, 0.0, 1.0], 0.0), (2, [-0.5, 0.5], 0.0), (3, [-1.0, 0.0, 1.0], 0.5),
]


def _cfg(case, kind):
    shape, axis, g = case
    k, dic, p = kind
    return make_config(k, dic, p, None, int(np.prod(shape)), 'layer', g, shape, axis)


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('kind', KINDS)
def test_grouped_step_equals_reference_per_group(case, kind, rng):
    cfg = _cfg(case, kind)
    w = (rng.randn(*case[0]) * rng.choice([0.1, 1.0, 3.0], size=case[0])).astype(np.float32)
    w.ravel()[::7] = 0.0  # ties at zero for pruning
    d, a = fit_table(w, cfg)
    assert d.shape == cfg.table_shape and a.shape == w.shape and a.dtype == np.int32
    for _ in range(3):
        ref_d, ref_a = ref_grouped_step(w, d, cfg)
        new, got = kmeans_step(w.ravel(), d, cfg)
        np.testing.assert_array_equal(got.ravel(), ref_a)
        np.testing.assert_array_equal(new, ref_d)
        np.testing.assert_array_equal(assign(w, d, cfg).ravel(), ref_a)
        d = new
        w = (w + 0.05 * rng.randn(*w.shape)).astype(np.float32)


def test_a_group_without_importance_gets_the_unweighted_fit(rng):
    """Channels that got no gradient in calibration (all-zero importance) keep a plain fit
    instead of a degenerate weighted one."""
    w = (rng.randn(4, 8) * 5).astype(np.float32)
    f = rng.rand(4, 8)
    f[2:] = 0.0
    cfg = make_config(4, 'pow2', 0.0, None, 32, 'x', 2, (4, 8), 0)
    d, a = fit_table(w, cfg, f)
    one = cfg.one_group()
    np.testing.assert_array_equal(d[0], fit_table(w[:2], one, f[:2])[0])
    np.testing.assert_array_equal(d[1], fit_table(w[2:], one)[0])


@pytest.mark.parametrize('case', CASES)
def test_grouped_fit_is_each_groups_own_fit(case, rng):
    cfg = _cfg(case, (4, 'free', 0.25))
    w = rng.randn(*case[0]).astype(np.float32)
    d, a = fit_table(w, cfg)
    one = cfg.one_group()
    for g, ix in enumerate(ref_group_slices(case[0], case[1], case[2])):
        dg, ag = fit_table(w.ravel()[ix], one)
        np.testing.assert_array_equal(d[g], dg)
        np.testing.assert_array_equal(a.ravel()[ix], ag)
        assert d[g][0] == 0 and (a.ravel()[ix] == 0).sum() == one.n_pruned
    q = cfg.lookup(d, a)
    expect = np.empty(w.size, np.float32)
    for g, ix in enumerate(ref_group_slices(case[0], case[1], case[2])):
        expect[ix] = d[g][a.ravel()[ix]]
    np.testing.assert_array_equal(q.ravel(), expect)
    sse = float(((w.ravel().astype(np.float64) - expect) ** 2).sum())
    assert table_sse(w, d, a, config=cfg) == pytest.approx(sse, rel=1e-12)


def test_group_view_round_trip_and_order(rng):
    cfg = _cfg(((20, 6), 1, 3), (4, 'free', 0.0))
    w = rng.randn(20, 6).astype(np.float32)
    rows = cfg.group_view(w)
    assert rows.shape == (2, 60)
    np.testing.assert_array_equal(rows[1], w[:, 3:6].T.ravel())
    np.testing.assert_array_equal(cfg.layer_order(rows), w)


def test_grouped_table_is_better_than_one_table(rng):
    # channels of very different scales: per-channel tables must fit them far better
    w = (rng.randn(16, 4, 3, 3) * np.logspace(-2, 0, 16)[:, None, None, None]).astype(np.float32)
    one = make_config(4, 'free', 0.0, None, w.size)
    per = make_config(4, 'free', 0.0, None, w.size, 'l', 1, w.shape, 0)
    e1 = table_sse(w, *fit_table(w, one))
    e2 = table_sse(w, *fit_table(w, per), config=per)
    assert e2 < 0.5 * e1


def test_pruned_rows_matches_flat_rule(rng):
    a = np.round(rng.randn(5, 40), 1).astype(np.float32)  # many ties
    m = pruned_rows(a, 13)
    for r in range(5):
        np.testing.assert_array_equal(m[r], ref_pruned(a[r], 13))


def test_group_size_errors():
    with pytest.raises(ValueError, match=r"group_size=3 must divide the 8 output channels; use one of \[1, 2, 4, 8\]"):
        make_config(4, 'free', 0.0, None, 72, 'conv1', 3, (8, 1, 3, 3), 0)
    with pytest.raises(ValueError, match="must divide"):
        make_config(4, 'free', 0.0, None, 72, 'conv1', 0, (8, 1, 3, 3), 0)
    with pytest.raises(ValueError, match="must divide"):
        make_config(4, 'free', 0.0, None, 72, 'conv1', True, (8, 1, 3, 3), 0)
    with pytest.raises(ValueError, match="larger than the 9 weights in each group"):
        make_config(16, 'free', 0.0, None, 72, 'conv1', 1, (8, 1, 3, 3), 0)
    with pytest.raises(ValueError, match="needs the shape"):
        make_config(4, 'free', 0.0, None, 72, 'conv1', 2)


def test_ungrouped_config_is_unchanged():
    cfg = make_config(4, 'free', 0.5, None, 100)
    assert cfg.table_shape == (4,) and cfg.n_groups == 1 and cfg.n_pruned == 50
    assert 'group_size' not in cfg.settings()
    g = make_config(4, 'free', 0.5, None, 100, 'l', 2, (4, 25), 0)
    assert g.table_shape == (2, 4) and g.n_pruned == 25 and g.settings()['group_size'] == 2


@pytest.mark.parametrize('dictionary', ['free', [-1.0, 0.0, 1.0]])
def test_grouped_c_step_per_group(dictionary, rng):
    cfg = make_config(4, dictionary, 0.0, None, 96, 'l', 2, (8, 12), 0)
    v = (rng.randn(8, 12) * np.arange(1, 9)[:, None]).astype(np.float32)
    d0, _ = fit_table(v, cfg)
    d, a, ok = c_step(v, d0, cfg, learn_scale=True)
    one = cfg.one_group()
    for g, ix in enumerate(ref_group_slices((8, 12), 0, 2)):
        dg, ag, okg = c_step(v.ravel()[ix], d0[g], one, learn_scale=True)
        np.testing.assert_array_equal(d[g], dg)
        np.testing.assert_array_equal(a.ravel()[ix], ag)
    if dictionary != 'free':  # one learned scale per group: the groups' scales differ
        assert len({float(np.max(np.abs(r))) for r in d}) == 4


# --- layers and the solver ------------------------------------------------------------------
import nnabla as nn  # noqa: E402
import nnabla.functions as F  # noqa: E402
import nnabla.parametric_functions as PF  # noqa: E402
import nnabla.solvers as S  # noqa: E402

import nnabla_lutq  # noqa: E402
from reference import assert_tables_fitted  # noqa: E402

LAYERS = {  # build, input shape, reference function, W shape, out axis
    'conv': (lambda x, **kw: PF.lutq_convolution(x, 6, (3, 3), pad=(1, 1), name='l', **kw),
             (2, 3, 6, 6), lambda x, q, b: F.convolution(x, q, b, pad=(1, 1)), (6, 3, 3, 3), 0),
    'affine': (lambda x, **kw: PF.lutq_affine(x, 6, name='l', **kw), (2, 3, 4, 4),
               lambda x, q, b: F.affine(x, q, b), (48, 6), 1),
    'affine2d': (lambda x, **kw: PF.lutq_affine(x, (2, 6), name='l', **kw), (2, 12),
                 lambda x, q, b: F.affine(x, q, b), (12, 2, 6), 2),
    'depthwise': (lambda x, **kw: PF.lutq_depthwise_convolution(x, (3, 3), name='l', **kw),
                  (2, 6, 5, 5), lambda x, q, b: F.depthwise_convolution(x, q, b), (6, 3, 3), 0),
}


@pytest.mark.parametrize('kind', list(LAYERS))
@pytest.mark.parametrize('group_size', [1, 2, 3])
@pytest.mark.parametrize('opts', [dict(n_values=4), dict(n_values=3, dictionary='pow2',
                                                          prune_ratio=0.3)], ids=str)
def test_grouped_layer_computes_with_its_groups_tables(kind, group_size, opts, rng, ctx):
    build, xshape, ref, wshape, axis = LAYERS[kind]
    with nn.context_scope(ctx):
        x = nn.Variable.from_numpy_array(rng.randn(*xshape).astype(np.float32), need_grad=True)
        y = build(x, group_size=group_size, **opts)
        rec = nnabla_lutq.lutq_layers()[0]
        assert rec.W.shape == wshape and rec.A.shape == wshape
        assert rec.d.shape == (wshape[axis] // group_size, opts['n_values'])
        # reference: d[A] read group by group with numpy indexing
        w, d, a = rec.W.d, rec.d.d, rec.A.d
        q_ref = np.empty(w.size, np.float32)
        for g, ix in enumerate(ref_group_slices(wshape, axis, group_size)):
            q_ref[ix] = d[g][a.ravel()[ix]]
            assert np.array_equal(a.ravel()[ix], fit_table(w.ravel()[ix], rec.config.one_group())[1])
        q = nn.Variable.from_numpy_array(q_ref.reshape(wshape), need_grad=True)
        b = nn.Variable.from_numpy_array(nn.get_parameters()['l/' + rec.name.split('/')[-1] + '/b'].d)
        y2 = ref(x, q, b)
        y.forward()
        y2.forward()
        np.testing.assert_array_equal(y.d, y2.d)
        dy = rng.randn(*y.shape).astype(np.float32)
        rec.W.grad.zero()
        q.grad.zero()
        y.backward(dy)
        y2.backward(dy)
        np.testing.assert_array_equal(rec.W.g, q.g)  # straight through
        assert rec.A.d.dtype == np.int32


def test_grouped_layer_refuses_a_table_of_another_shape(rng):
    x = nn.Variable.from_numpy_array(rng.randn(2, 3, 6, 6).astype(np.float32))
    PF.lutq_convolution(x, 6, (3, 3), name='c', n_values=4, group_size=2)
    with pytest.raises(ValueError, match=r"'d' has shape \(3, 4\) but the layer asks for \(4,\)"):
        PF.lutq_convolution(x, 6, (3, 3), name='c', n_values=4)
    with pytest.raises(ValueError, match="group_size=4 must divide the 6 output channels"):
        PF.lutq_convolution(x, 6, (3, 3), name='c2', n_values=4, group_size=4)
    assert 'c2/lutq_conv/W' not in nn.get_parameters(grad_only=False)


@pytest.mark.parametrize('prune', [0.0, 0.5])
def test_solver_keeps_every_groups_table_fitted(prune, rng):
    x = nn.Variable.from_numpy_array(rng.randn(8, 3, 6, 6).astype(np.float32))
    t = nn.Variable.from_numpy_array(rng.randint(0, 4, size=(8, 1)))
    h = F.relu(PF.lutq_convolution(x, 8, (3, 3), name='c', n_values=4, prune_ratio=prune,
                                   group_size=2))
    y = PF.lutq_affine(h, 4, name='fc', n_values=4, dictionary='pow2', group_size=1)
    loss = F.mean(F.softmax_cross_entropy(y, t))
    solver = nnabla_lutq.LUTQSolver(S.Sgd(0.5))
    solver.set_parameters(nn.get_parameters())
    for _ in range(3):
        before = {s.name: (s.d.d.copy()) for s in solver.layers}
        loss.forward()
        solver.zero_grad()
        loss.backward()
        solver.update()
        for s in solver.layers:
            d, a = ref_grouped_step(s.W.d, before[s.name], s.config)
            np.testing.assert_array_equal(s.A.d.ravel(), a)
            np.testing.assert_array_equal(s.d.d, d)
    assert_tables_fitted(solver.layers)


def test_grouped_assignment_of_signed_zeros_and_extremes_equals_one_table_rule(rng):
    """The order-preserving integer keys of the grouped search agree with the float comparisons
    of the one-table rule for -0/+0, subnormals and the largest floats."""
    vals = np.array([-0.0, 0.0, -1e-45, 1e-45, -3e38, 3e38, 1.0, -1.0, 0.5, -0.5], np.float32)
    cfg = make_config(3, 'free', 0.0, None, 48, 'l', 1, (4, 12), 0)
    one = cfg.one_group()
    for _ in range(200):
        w = rng.choice(vals, size=(4, 12)).astype(np.float32)
        d = np.sort(rng.choice(vals, size=(4, 3)), axis=1).astype(np.float32)
        a = assign(w, d, cfg)
        for g in range(4):
            np.testing.assert_array_equal(a[g], assign(w[g], d[g], one))


@pytest.mark.parametrize('group_size', [None, 1, 4])
@pytest.mark.parametrize('k,dictionary,prune', [(16, 'free', 0.0), (4, 'pow2', 0.0),
                                                (16, 'free', 0.3), (2, 'free', 0.5),
                                                (40, 'free', 0.0)])
def test_counting_assignment_is_bit_identical_to_the_binary_search(group_size, k, dictionary,
                                                                    prune, rng, monkeypatch):
    """The k-means step with thresholds counted by comparisons (K - 1 <= COUNT_MAX) equals, bit
    for bit, the same step with the binary search it replaced, on weights that sit exactly on
    midpoints, on the values themselves, at ±0 and at the extremes."""
    import nnabla_lutq.core.kmeans as km
    shape = (8, 6, 3, 3)
    cfg = make_config(k, dictionary, prune, None, int(np.prod(shape)), 'l', group_size, shape, 0)
    w = rng.randn(*shape).astype(np.float32)
    d, _ = fit_table(w, cfg)
    rows = d.reshape(-1, k)
    flat = w.ravel()
    if k - 1 > cfg.first_free:  # at least two fitted values: weights on their midpoints
        r = rng.randint(0, rows.shape[0], size=flat.size // 3)
        c = rng.randint(cfg.first_free, k - 1, size=r.size)
        flat[:r.size] = (rows[r, c].astype(np.float64) + rows[r, c + 1]) / 2  # rounded
        flat[r.size:2 * r.size] = rows[r, c]                                  # the values
    flat[-4:] = [0.0, -0.0, 3e38, -3e38]
    w = flat.reshape(shape)
    counted = kmeans_step(w.ravel(), d, cfg)
    monkeypatch.setattr(km, 'COUNT_MAX', -1)
    searched = kmeans_step(w.ravel(), d, cfg)
    np.testing.assert_array_equal(counted[1], searched[1])
    assert counted[0].tobytes() == searched[0].tobytes()
    if prune:  # pruning ranks |W|: no NaN there
        return
    w.ravel()[5] = np.nan  # a NaN goes last, as in the binary search (LUTQSolver refuses it)
    searched = assign(w, d, cfg)
    monkeypatch.setattr(km, 'COUNT_MAX', 32)
    np.testing.assert_array_equal(assign(w, d, cfg), searched)


def test_a_forked_child_runs_the_threaded_step(rng):
    """The comparison passes' thread pool is made again in a forked child (whose parent's threads
    do not exist there): a step in the child finishes and equals the parent's."""
    import multiprocessing
    w = rng.randn(1 << 19).astype(np.float32)
    cfg = make_config(16, 'free', 0.0, None, w.size)
    d, _ = fit_table(w[:4096], make_config(16, 'free', 0.0, None, 4096))
    want = kmeans_step(w, d, cfg)  # the parent's pool exists now
    ctx = multiprocessing.get_context('fork')
    with ctx.Pool(1) as pool:  # the timeout guards against a hang, it bounds no speed
        got = pool.apply_async(kmeans_step, (w, d, cfg)).get(timeout=300)
    np.testing.assert_array_equal(got[1], want[1])
    assert got[0].tobytes() == want[0].tobytes()
