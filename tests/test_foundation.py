# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Regression tests of the foundation: owned state, one pow-2 rule, one k-means interface,
the solver in nnabla's ecosystem, detached straight-through copies, self-describing exports."""
import gc
import json
import os
import struct
import zipfile
import zlib
from fractions import Fraction

import numpy as np
import pytest
import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF
import nnabla.solvers as S

import nnabla_lutq
from nnabla_lutq import STATE
from nnabla_lutq.core.pow2 import pow2_round, is_pow2_array
from nnabla_lutq.io.nnp import NnpError, read_nnp
from nnabla_lutq.kmeans import GraphKMeans, HostKMeans, backend_for
from nnabla_lutq.nn.functions import pow2_round_graph
from examples.common.models import Layers, resnet20
from reference import ref_step


# --- state: lifetime, settings, scope independence ---------------------------------------------

def test_clearing_parameters_frees_every_layer_record():
    x = nn.Variable((2, 3, 32, 32))
    for _ in range(3):
        with nn.parameter_scope('net'):
            y = resnet20(x, Layers(lutq=True, n_values=4, mlbn=True))
        assert len(STATE.lutq_layers()) == 22 and len(STATE.mlbn_layers()) == 21
        nn.clear_parameters()
        assert STATE.lutq_layers() == [] and STATE.mlbn_layers() == []
    del y
    gc.collect()
    # nothing is kept: no record, live or stale, and so no weights
    assert STATE.lutq_layers(live=False) == [] and STATE.mlbn_layers(live=False) == []
    assert STATE._entries == {}


def test_clearing_a_sub_scope_forgets_only_its_layers():
    x = nn.Variable((2, 6))
    with nn.parameter_scope('a'):
        PF.lutq_affine(x, 3, name='fc', n_values=2)
    with nn.parameter_scope('b'):
        PF.lutq_affine(x, 3, name='fc', n_values=2)
        nn.clear_parameters()
    gc.collect()
    assert [s.name for s in STATE.lutq_layers(live=False)] == ['a/fc/lutq_affine']


def test_rebuilding_with_other_settings_raises_and_changes_nothing(rng):
    x = nn.Variable.from_numpy_array(rng.randn(2, 20).astype(np.float32))
    PF.lutq_affine(x, 5, name='fc', n_values=4)
    p = nn.get_parameters(grad_only=False)
    before = {k: v.d.copy() for k, v in p.items()}
    with pytest.raises(ValueError, match=r"fc/lutq_affine: the layer exists with n_values=4, "
                                         r"dictionary='free'.*cannot be rebuilt with n_values=4, "
                                         r"dictionary='pow2', prune_ratio=0.5"):
        PF.lutq_affine(x, 5, name='fc', n_values=4, dictionary='pow2', prune_ratio=0.5)
    for k, v in nn.get_parameters(grad_only=False).items():
        np.testing.assert_array_equal(v.d, before[k])
    assert STATE.lutq_layers()[0].config.kind == 'free'
    PF.lutq_affine(x, 5, name='fc', n_values=4)  # the same settings: fine
    PF.mlbn(x, name='bn', eps=1e-5)
    with pytest.raises(ValueError, match=r'bn/mlbn: the layer exists with eps=1e-05'):
        PF.mlbn(x, name='bn', eps=1e-3)
    nn.clear_parameters()
    PF.lutq_affine(x, 5, name='fc', n_values=4, dictionary='pow2')  # after clearing: a new layer
    assert STATE.lutq_layers()[0].config.kind == 'pow2'


def test_lookups_do_not_depend_on_the_current_scope(rng):
    x = nn.Variable.from_numpy_array(rng.randn(2, 30).astype(np.float32))
    with nn.parameter_scope('net'):
        PF.lutq_affine(x, 4, name='fc', n_values=4)
    layer = STATE.lutq_layers()[0]
    assert layer.name == 'net/fc/lutq_affine'
    layer.W.d = rng.randn(*layer.W.shape) * 3
    with nn.parameter_scope('unrelated'):
        assert [s.name for s in nnabla_lutq.lutq_layers()] == ['net/fc/lutq_affine']
        assert nnabla_lutq.initialize() == ['net/fc/lutq_affine']
        assert STATE.layer('net/fc') is layer
    d, a = nnabla_lutq.init_dictionary(layer.W.d, layer.config)
    np.testing.assert_array_equal(layer.d.d, d)
    np.testing.assert_array_equal(layer.A.d, a)


def test_weight_modes(rng):
    x = nn.Variable.from_numpy_array(rng.randn(2, 6).astype(np.float32))
    y_tied = PF.lutq_affine(x, 3, name='fc', n_values=2, with_bias=False)
    s = STATE.lutq_layers()[0]
    with nnabla_lutq.weight_mode('float'):
        y_float = PF.lutq_affine(x, 3, name='fc', n_values=2, with_bias=False)
    with nnabla_lutq.inference_mode():
        assert STATE.mode is nnabla_lutq.WeightMode.TABLES
        y_tab = PF.lutq_affine(x, 3, name='fc', n_values=2, with_bias=False)
    assert STATE.mode is nnabla_lutq.WeightMode.TIED
    for y in (y_tied, y_float, y_tab):
        y.forward()
    q = s.d.d[s.A.d]
    np.testing.assert_allclose(y_tied.d, x.d @ q, rtol=1e-5, atol=1e-6)  # float32 sums
    np.testing.assert_array_equal(y_tab.d, y_tied.d)
    np.testing.assert_allclose(y_float.d, x.d @ s.W.d, rtol=1e-5, atol=1e-6)
    leaves = []
    y_tab.visit(lambda f: leaves.extend(v for v in f.inputs if v.parent is None))
    assert all(v.data != s.W.data for v in leaves)
    with pytest.raises(ValueError, match='unknown weight mode'):
        with nnabla_lutq.weight_mode('dense'):
            pass


# --- the power-of-two rule -------------------------------------------------------------------

def _exact_exponent(x):
    """round(log2|x|) decided exactly with rationals: k with 2^(2k-1) <= x^2 < 2^(2k+1)."""
    q = Fraction(float(abs(x))) ** 2
    k = int(np.floor(np.log2(abs(float(x)))))
    while Fraction(2) ** (2 * k + 1) <= q:
        k += 1
    while Fraction(2) ** (2 * k - 1) > q:
        k -= 1
    return k


def _midpoint_values():
    vals = []
    for k in range(-40, 41):
        m = np.float32(2.0 ** (k + 0.5))
        for v in (m, np.nextafter(m, np.float32(0)), np.nextafter(m, np.float32(np.inf)),
                  np.nextafter(np.nextafter(m, np.float32(0)), np.float32(0)),
                  np.float32(2.0 ** k), np.nextafter(np.float32(2.0 ** k), np.float32(0))):
            vals += [v, -v]
    return np.array(vals, np.float32)


def test_pow2_rule_is_exact_at_the_exponent_midpoints(rng):
    x = np.concatenate([_midpoint_values(), (rng.randn(2000) * 10).astype(np.float32),
                        np.float32([0.0])])
    expect = np.array([0.0 if v == 0 else np.sign(v) * 2.0 ** _exact_exponent(v) for v in x],
                      np.float32)
    np.testing.assert_array_equal(pow2_round(x), expect)
    v = nn.Variable.from_numpy_array(x)
    g = pow2_round_graph(v)
    g.forward()
    np.testing.assert_array_equal(g.d, expect)  # the graph form: the same rule
    assert is_pow2_array(expect) and not is_pow2_array(np.float32([3.0]))
    clipped = pow2_round(x, (-3, 2))
    g = pow2_round_graph(v, (-3, 2))
    g.forward()
    np.testing.assert_array_equal(g.d, clipped)
    assert np.all(np.abs(clipped[x != 0]) >= 2.0 ** -3) and np.all(np.abs(clipped) <= 4)
    assert np.all(clipped[x == 0] == 0)


def test_mlbn_fold_graph_and_kmeans_agree_at_midpoints(rng):
    # BN scales gamma/sqrt(var+eps) right at 2^(k+1/2): the layer, fold_mlbn and the export agree
    c = 16
    x = nn.Variable.from_numpy_array(rng.randn(4, c, 3, 3).astype(np.float32))
    y = PF.mlbn(x, batch_stat=False, name='bn')
    p = nn.get_parameters(grad_only=False)
    p['bn/mlbn/var'].d = 1.0 - 1e-5
    g = _midpoint_values()[:c].reshape(1, c, 1, 1)
    p['bn/mlbn/gamma'].d = g
    a, b = nnabla_lutq.fold_mlbn('bn')
    y.forward()
    np.testing.assert_array_equal(y.d, x.d * a + b)
    np.testing.assert_array_equal(a, pow2_round(g / np.sqrt(np.float32(1.0))))
    # the k-means graph rounds means with the same rule as the host step (one weight per value,
    # so the means are exact in float32 too)
    w = np.sort(np.unique(_midpoint_values()[::3]))[-10:]
    xa = nn.Variable((1, w.size))
    PF.lutq_affine(xa, 1, name='fc', n_values=10, dictionary='pow2', with_bias=False)
    s = STATE.layer('fc')
    s.W.d = w.reshape(s.W.shape)
    d0 = np.sort(np.unique(w))[:10]
    s.d.d = d0
    host_d, host_a = ref_step(w, d0, s.config)
    GraphKMeans([s], 1).step()
    np.testing.assert_array_equal(s.d.d, host_d)


def test_export_folds_mlbn_at_midpoints_exactly_as_fold_mlbn_in_every_context(ctx, tmp_path):
    """The exported ±2^k scale of multiplier-less BN is fold_mlbn's, to the bit, also when the
    graph is exported from a half-precision context (folding computes in float32)."""
    c = 16
    vals = _midpoint_values()
    vals = vals[(np.abs(vals) > 2.0 ** -10) & (np.abs(vals) < 2.0 ** 10)][:c]
    with nn.context_scope(ctx):
        x = nn.Variable.from_numpy_array(np.random.RandomState(0).randn(2, c, 3, 3)
                                         .astype(np.float32))
        with nnabla_lutq.inference_mode():
            y = PF.mlbn(x, batch_stat=False, name='bn')
        p = nn.get_parameters(grad_only=False)
        p['bn/mlbn/var'].d = 1.0 - 1e-5
        p['bn/mlbn/gamma'].d = vals.reshape(1, c, 1, 1)
        a, b = nnabla_lutq.fold_mlbn('bn')
        path = str(tmp_path / 'bn.nnp')
        nnabla_lutq.export_nnp(path, {'x': x}, {'y': y})
    params = read_nnp(path).params
    np.testing.assert_array_equal(params['bn/mlbn/a'].ravel(), a.ravel())
    np.testing.assert_array_equal(params['bn/mlbn/b'].ravel(), b.ravel())


# --- the k-means interface and contexts ------------------------------------------------------

def _layers(rng, opts):
    x = nn.Variable.from_numpy_array(rng.randn(4, 3, 8, 8).astype(np.float32))
    PF.lutq_convolution(x, 8, (3, 3), name='c1', **opts)
    PF.lutq_affine(x, 7, name='fc', **opts)
    out = STATE.lutq_layers()
    for s in out:  # move W away from the initial tables
        s.W.d = s.W.d + rng.randn(*s.W.shape).astype(np.float32) * 0.05
    return out


@pytest.mark.parametrize('opts', [dict(n_values=8), dict(n_values=6, dictionary='pow2'),
                                  dict(n_values=4, prune_ratio=0.5)])
def test_device_graph_computes_in_float32_in_every_context(ctx, opts, rng):
    layers = _layers(rng, opts)
    start = {s.name: (s.W.d.copy(), s.d.d.copy()) for s in layers}
    with nn.context_scope(ctx):
        GraphKMeans(layers, 2).step()
    for s in layers:
        w, d = start[s.name]
        for _ in range(2):
            d, a = ref_step(w, d, s.config)
        assert s.A.data.dtype == np.int32
        np.testing.assert_array_equal(s.A.d.ravel(), a)
        np.testing.assert_allclose(s.d.d, d, rtol=2e-6, atol=1e-9)


def test_backend_choice_and_one_validation_path(rng):
    layers = _layers(rng, dict(n_values=4))
    assert isinstance(backend_for(layers), HostKMeans)
    from nnabla.ext_utils import get_extension_context
    assert isinstance(backend_for(layers, ctx=get_extension_context('cpu', type_config='half')),
                      HostKMeans)
    assert isinstance(backend_for(layers, backend='graph'), GraphKMeans)
    with pytest.raises(ValueError, match="unknown k-means backend 'cupy'"):
        backend_for(layers, backend='cupy')
    with pytest.raises(ValueError, match="unknown k-means backend"):
        nnabla_lutq.LUTQSolver(S.Sgd(0.1), backend='cupy')
    for cls in (HostKMeans, GraphKMeans):
        s = layers[0]
        s.A.d = s.A.d.astype(np.float64)  # the dtype trap
        with pytest.raises(ValueError, match='c1/lutq_conv: A has dtype float64'):
            cls(layers).step()
        s.A.data.cast(np.int32)
        w = s.W.d.copy()
        s.W.d[0, 0, 0, 0] = np.inf
        with pytest.raises(ValueError, match='c1/lutq_conv: W has non-finite values'):
            cls(layers).step()
        s.W.d = w


# --- the solver in nnabla's ecosystem --------------------------------------------------------

class _ExamplesStyleSolver(object):
    """Like nnabla-examples' MomentumNoWeightDecayBn: a wrapper with its own, narrower methods."""

    def __init__(self, lr):
        self._solver = S.Momentum(lr, 0.9)

    def set_parameters(self, params):
        self._solver.set_parameters(params)

    def update(self):
        self._solver.update()

    def zero_grad(self):
        self._solver.zero_grad()

    def save_states(self, path):
        self._solver.save_states(path)

    def load_states(self, path):
        self._solver.load_states(path)

    def get_parameters(self):
        return self._solver.get_parameters()


def _examples_checkpoint(path, solvers):
    """The type check and calls of nnabla-examples' save_checkpoint."""
    if isinstance(solvers, nn.solver.Solver):
        solvers = {"": solvers}
    assert isinstance(solvers, dict)
    for name, s in solvers.items():
        s.save_states(os.path.join(path, name + 'states.h5'))
        return list(s.get_parameters().keys())


def _loss(rng):
    x = nn.Variable.from_numpy_array(rng.randn(8, 3, 6, 6).astype(np.float32))
    t = nn.Variable.from_numpy_array(rng.randint(0, 4, (8, 1)).astype(np.int32))
    h = F.relu(PF.lutq_convolution(x, 4, (3, 3), name='c1', n_values=4))
    return F.mean(F.softmax_cross_entropy(PF.lutq_affine(h, 4, name='fc', n_values=4), t))


def test_solver_wraps_examples_style_wrappers_and_fits_their_checkpoints(rng, tmp_path):
    loss = _loss(rng)
    solver = nnabla_lutq.LUTQSolver(_ExamplesStyleSolver(0.1))
    assert isinstance(solver, nn.solver.Solver)
    solver.set_parameters(nn.get_parameters())
    loss.forward()
    solver.zero_grad()
    loss.backward()
    solver.update()
    names = _examples_checkpoint(str(tmp_path), solver)
    assert set(names) == set(nn.get_parameters())
    assert [s.name for s in solver.layers] == ['c1/lutq_conv', 'fc/lutq_affine']


def test_remove_and_clear_parameters_update_the_layer_list(rng):
    _loss(rng)
    solver = nnabla_lutq.LUTQSolver(S.Sgd(0.1))
    solver.set_parameters(nn.get_parameters())
    solver.remove_parameters(['c1/lutq_conv/W'])
    assert [s.name for s in solver.layers] == ['fc/lutq_affine']
    assert 'c1/lutq_conv/W' not in solver.get_parameters()
    solver.set_parameters({'c1/lutq_conv/W': nn.get_parameters()['c1/lutq_conv/W']}, reset=False)
    assert [s.name for s in solver.layers] == ['fc/lutq_affine', 'c1/lutq_conv']
    solver.clear_parameters()
    assert solver.layers == [] and solver.get_parameters() == {}
    solver.kmeans_step()  # nothing to do


def test_solver_states_carry_the_lutq_settings(rng, tmp_path):
    _loss(rng)
    solver = nnabla_lutq.LUTQSolver(S.Momentum(0.1, 0.9), kmeans_iters=2)
    solver.set_parameters(nn.get_parameters())
    path = str(tmp_path / 'states.h5')
    solver.save_states(path)
    solver.load_states(path)
    nn.clear_parameters()
    x = nn.Variable((8, 3, 6, 6))
    h = PF.lutq_convolution(x, 4, (3, 3), name='c1', n_values=2)  # another K
    PF.lutq_affine(h, 4, name='fc', n_values=4)
    other = nnabla_lutq.LUTQSolver(S.Momentum(0.1, 0.9))
    other.set_parameters(nn.get_parameters())
    with pytest.raises(ValueError, match='saved for other LUT-Q layers or settings'):
        other.load_states(path)


def test_straight_through_copy_has_its_own_gradient_array(rng):
    x = nn.Variable.from_numpy_array(rng.randn(4, 6).astype(np.float32))
    y = PF.lutq_affine(x, 3, name='fc', n_values=3, with_bias=False)
    z = F.relu(PF.mlbn(F.reshape(y, (4, 3, 1, 1)), name='bn', impl='graph'))  # γ detached
    s = STATE.layer('fc')
    m = STATE.layer('bn')
    for param in (s.W, m.gamma):
        same_data = []
        z.visit(lambda f: same_data.extend(v for v in f.inputs
                                           if v.parent is None and v.data == param.data))
        grads = {id(v) for v in same_data}
        assert len(grads) >= 2  # the parameter and its detached copy
        assert sum(v.grad == param.grad for v in same_data) == 1, 'W.grad appears more than once'
    # the gradient is unchanged: W gets exactly the gradient of Q = d[A]
    nn.get_parameters(grad_only=False)['fc/lutq_affine/W'].grad.zero()
    y.forward()
    dy = rng.randn(*y.shape).astype(np.float32)
    y.backward(dy)
    np.testing.assert_allclose(s.W.g, x.d.T @ dy, rtol=1e-5)


# --- report and export read facts ------------------------------------------------------------

def _mlbn_net(x, test):
    h = PF.lutq_convolution(x, 4, (3, 3), pad=(1, 1), name='c1', n_values=4, dictionary='pow2')
    h = F.relu(PF.mlbn(h, batch_stat=not test, name='bn1'))
    h = F.relu(PF.batch_normalization(PF.convolution(h, 4, (3, 3), name='c2'), batch_stat=not test,
                                      name='bn2'))
    return PF.lutq_affine(h, 3, name='fc', n_values=4)


def test_report_finds_mlbn_by_its_parameters_in_train_and_test_graphs(rng, tmp_path):
    x = nn.Variable.from_numpy_array(rng.randn(2, 3, 6, 6).astype(np.float32))
    for test in (False, True):
        with nnabla_lutq.inference_mode() if test else nnabla_lutq.weight_mode('tied'):
            y = _mlbn_net(x, test)
        rows = {r.name: r for r in nnabla_lutq.report(y)}
        bn1 = rows['bn1/mlbn']
        assert bn1.lutq and bn1.shifts == 4 * 36 and bn1.mults == 0, test
        assert not rows['bn2/bn'].lutq and rows['bn2/bn'].mults == 4 * 16
    export = str(tmp_path / 'm.nnp')
    nnabla_lutq.export_nnp(export, {'x': x}, {'y': y})
    from nnabla_lutq.cli.main import load_model_report
    rep, _ = load_model_report(export)
    rows = {r.name: r for r in rep}
    assert rows['bn1/mlbn'].lutq and rows['bn1/mlbn'].shifts == 4 * 36
    assert not rows['bn2/bn'].lutq and rows['c1/lutq_conv'].pow2


def test_report_does_not_take_a_look_alike_of_folded_mlbn_for_bn(rng, tmp_path):
    """A per-channel ``x * a + b`` with stored power-of-two ``a`` that is not a BN layer (the
    arithmetic of a folded mlbn): no BN row, in the graph and in its exported file."""
    from nnabla.parameter import get_parameter_or_create
    x = nn.Variable.from_numpy_array(rng.randn(2, 3, 6, 6).astype(np.float32))
    with nnabla_lutq.inference_mode():
        h = PF.lutq_convolution(x, 4, (3, 3), pad=(1, 1), name='c1', n_values=4)
        a = get_parameter_or_create('gain/a', (1, 4, 1, 1),
                                    np.array([0.5, 2, -1, 4], np.float32).reshape(1, 4, 1, 1),
                                    need_grad=False)
        b = get_parameter_or_create('gain/b', (1, 4, 1, 1), np.zeros((1, 4, 1, 1), np.float32),
                                    need_grad=False)
        y = PF.lutq_affine(F.relu(h * a + b), 3, name='fc', n_values=4)
    rows = nnabla_lutq.report(y)
    assert [r.name for r in rows] == ['c1/lutq_conv', 'fc/lutq_affine']
    path = str(tmp_path / 'm.nnp')
    nnabla_lutq.export_nnp(path, {'x': x}, {'y': y})
    from nnabla_lutq.cli.main import load_model_report
    rep, _ = load_model_report(path)
    assert [r.name for r in rep] == ['c1/lutq_conv', 'fc/lutq_affine']
    assert read_nnp(path).meta['bn'] == {}


def test_report_leaves_the_dtype_of_A_alone(rng, tmp_path):
    x = nn.Variable.from_numpy_array(rng.randn(2, 3, 6, 6).astype(np.float32))
    with nnabla_lutq.inference_mode():
        y = _mlbn_net(x, True)
    path = str(tmp_path / 'm.nnp')
    nnabla_lutq.export_nnp(path, {'x': x}, {'y': y})
    from nnabla_lutq.io.nnp import loaded_network
    with loaded_network(path, 'lutq') as net:
        a = nn.get_parameters(grad_only=False)['c1/lutq_conv/A']
        dtype = a.data.dtype
        nnabla_lutq.report(list(net.outputs.values())[0], meta=read_nnp(path).meta)
        assert a.data.dtype == dtype
    before = STATE.layer('c1').A.data.dtype
    nnabla_lutq.report(y)
    assert STATE.layer('c1').A.data.dtype == before == np.int32
    with pytest.raises(ValueError, match='report\\(\\) takes the network'):
        nnabla_lutq.report('y')


def test_exported_file_describes_itself(rng, tmp_path):
    x = nn.Variable.from_numpy_array(rng.randn(2, 3, 6, 6).astype(np.float32))
    with nnabla_lutq.inference_mode():
        y = _mlbn_net(x, True)
    path = str(tmp_path / 'm.nnp')
    nnabla_lutq.export_nnp(path, {'x': x}, {'y': y})
    meta = read_nnp(path).meta
    assert meta['tables']['c1/lutq_conv']['dictionary'] == 'pow2'
    assert meta['tables']['c1/lutq_conv']['stored'] == 'tables'
    assert meta['tables']['fc/lutq_affine']['dictionary'] == 'free'
    assert meta['bn']['bn1/mlbn']['multiplier_less'] and meta['bn']['bn1/mlbn']['folded']
    assert is_pow2_array(read_nnp(path).params['bn1/mlbn/a'])
    assert meta['bn']['bn2/bn']['multiplier_less'] is False
    dense = str(tmp_path / 'dense.nnp')
    nnabla_lutq.export_nnp(dense, {'x': x}, {'y': y}, dense=True)
    assert read_nnp(dense).meta['tables']['c1/lutq_conv']['stored'] == 'dense'
    # a reader refuses flags and versions it does not know
    for change, match in ((dict(flags=['per-channel-tables']), 'format flags'),
                          (dict(version=99), 'newer nnabla-lutq')):
        bad = str(tmp_path / 'bad.nnp')
        with zipfile.ZipFile(path) as zin, zipfile.ZipFile(bad, 'w') as zout:
            for n in zin.namelist():
                data = zin.read(n)
                if n == 'lutq.json':
                    data = json.dumps(dict(json.loads(data), **change)).encode()
                zout.writestr(n, data)
        with pytest.raises(NnpError, match=match):
            read_nnp(bad)
    # so does the packed format's reader, for header flags it does not know
    from nnabla_lutq.io.packed import LutqFormatError, read_lutq, _HEADER
    nnabla_lutq.pack(path, str(tmp_path / 'm.lutq'))
    data = bytearray((tmp_path / 'm.lutq').read_bytes())
    struct.pack_into('<H', data, 6, 0x8000)  # header: magic (4), version (2), flags (2)
    data[-4:] = struct.pack('<I', zlib.crc32(bytes(data[:-4])) & 0xFFFFFFFF)  # a valid checksum
    (tmp_path / 'flag.lutq').write_bytes(bytes(data))
    with pytest.raises(LutqFormatError, match='format flags 0x8000'):
        read_lutq(str(tmp_path / 'flag.lutq'))
    assert _HEADER.unpack_from(data)[2] == 0x8000


def test_export_refuses_broken_graphs_before_writing(rng, tmp_path):
    x = nn.Variable.from_numpy_array(rng.randn(2, 3, 6, 6).astype(np.float32))
    path = tmp_path / 'm.nnp'
    path.write_bytes(b'old')
    with nnabla_lutq.inference_mode():
        y_train = _mlbn_net(x, False)  # a forgotten test=True
    with pytest.raises(ValueError, match=r'bn1/mlbn: BatchNormalization is built for training'):
        nnabla_lutq.export_nnp(str(path), {'x': x}, {'y': y_train})
    with nnabla_lutq.inference_mode():
        y = _mlbn_net(x, True)
    a = STATE.layer('c1').A
    good = a.d.copy()
    a.d = good.astype(np.float32)  # silently became float
    with pytest.raises(ValueError, match=r'c1/lutq_conv: A has dtype float32, not int32'):
        nnabla_lutq.export_nnp(str(path), {'x': x}, {'y': y})
    a.data.cast(np.int32)[...] = good
    a.data.cast(np.int32)[0, 0, 0, 0] = 7  # K = 4
    with pytest.raises(ValueError, match=r'c1/lutq_conv: A holds indices outside \[0, 4\)'):
        nnabla_lutq.export_nnp(str(path), {'x': x}, {'y': y})
    assert path.read_bytes() == b'old'
    assert os.listdir(tmp_path) == ['m.nnp']
    a.data.cast(np.int32)[...] = good
    nnabla_lutq.export_nnp(str(path), {'x': x}, {'y': y})
    assert read_nnp(str(path)).meta is not None


def test_export_of_layers_with_base_axis_2_reloads(rng, tmp_path):
    from nnabla_lutq.io.nnp import loaded_network
    x = nn.Variable.from_numpy_array(rng.randn(2, 3, 4, 6, 6).astype(np.float32))
    with nnabla_lutq.inference_mode():
        h = PF.lutq_convolution(x, 5, (3, 3), base_axis=2, name='c', n_values=4)
        y = PF.lutq_affine(h, 3, base_axis=2, name='fc', n_values=4)
    y.forward()
    path = str(tmp_path / 'm.nnp')
    nnabla_lutq.export_nnp(path, {'x': x}, {'y': y}, batch_size=2)
    with loaded_network(path, 'lutq', batch_size=2) as net:
        list(net.inputs.values())[0].d = x.d
        out = list(net.outputs.values())[0]
        out.forward()
        np.testing.assert_array_equal(out.d, y.d)
