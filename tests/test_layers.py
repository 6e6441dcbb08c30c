# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
import numpy as np
import pytest
import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF

import nnabla_lutq
from nnabla_lutq import lutq_layers
from nnabla_lutq.core.pow2 import pow2_round


def _var(rng, shape, need_grad=False):
    return nn.Variable.from_numpy_array(rng.randn(*shape).astype(np.float32), need_grad=need_grad)


LAYERS = {
    'affine': (lambda x, **kw: PF.lutq_affine(x, 7, name='l', **kw), (4, 3, 5, 5),
               lambda x, q, b: F.affine(x, q, b, 1), 'l/lutq_affine', (75, 7)),
    'conv': (lambda x, **kw: PF.lutq_convolution(x, 6, (3, 3), pad=(1, 1), stride=(2, 2), name='l', **kw),
             (4, 3, 9, 9), lambda x, q, b: F.convolution(x, q, b, pad=(1, 1), stride=(2, 2)),
             'l/lutq_conv', (6, 3, 3, 3)),
    'group_conv': (lambda x, **kw: PF.lutq_convolution(x, 4, (3, 3), group=2, name='l', **kw),
                   (2, 4, 6, 6), lambda x, q, b: F.convolution(x, q, b, group=2), 'l/lutq_conv',
                   (4, 2, 3, 3)),
    'depthwise': (lambda x, **kw: PF.lutq_depthwise_convolution(x, (3, 3), pad=(1, 1), name='l', **kw),
                  (2, 5, 6, 6), lambda x, q, b: F.depthwise_convolution(x, q, b, pad=(1, 1)),
                  'l/lutq_depthwise_conv', (5, 3, 3)),
}
OPTIONS = [dict(n_values=4), dict(n_values=5, dictionary='pow2'), dict(dictionary=[-1, 0, 1]),
           dict(n_values=4, prune_ratio=0.5)]


@pytest.mark.parametrize('kind', list(LAYERS))
@pytest.mark.parametrize('opts', OPTIONS, ids=str)
def test_parameters_forward_is_exactly_d_of_A_and_gradient_is_straight_through(kind, opts, rng, ctx):
    with nn.context_scope(ctx):
        build, xshape, ref, scope, wshape = LAYERS[kind]
        x = _var(rng, xshape, need_grad=True)
        y = build(x, **opts)
        params = nn.get_parameters(grad_only=False)
        assert set(params) == {f'{scope}/{n}' for n in ('W', 'b', 'd', 'A')}
        W, d, A = (params[f'{scope}/{n}'] for n in ('W', 'd', 'A'))
        k = len(opts['dictionary']) if isinstance(opts.get('dictionary'), list) else opts['n_values']
        assert W.shape == wshape and A.shape == wshape and d.shape == (k,)
        assert A.d.dtype == np.int32 and W.d.dtype == np.float32 and d.d.dtype == np.float32
        assert not d.need_grad and not A.need_grad and W.need_grad
        assert set(nn.get_parameters()) == {f'{scope}/W', f'{scope}/b'}  # the solver never sees d, A
        # reference: the same function with a leaf holding d[A]
        q = nn.Variable.from_numpy_array(d.d[A.d], need_grad=True)
        x2 = nn.Variable.from_numpy_array(x.d, need_grad=True)
        b2 = nn.Variable.from_numpy_array(params[f'{scope}/b'].d, need_grad=True)
        y2 = ref(x2, q, b2)
        dy = rng.randn(*y.shape).astype(np.float32)
        for out in (y, y2):
            out.forward()
        assert np.array_equal(y.d, y2.d)
        for v in (W, x, x2, q, params[f'{scope}/b'], b2):
            v.grad.zero()
        d.g, A.g = np.full(d.shape, 7.0), np.full(A.shape, 7)  # the tables get no gradient
        y.backward(dy)
        y2.backward(dy)
        assert np.array_equal(W.g, q.g)
        assert np.array_equal(x.g, x2.g)
        assert np.all(d.g == 7) and np.all(A.g == 7)


def test_name_argument_and_nested_scopes(rng):
    x = _var(rng, (2, 3, 4, 4))
    with nn.parameter_scope('net'):
        PF.lutq_convolution(x, 2, (1, 1), name='c1', n_values=2)
        with nn.parameter_scope('block'):
            PF.lutq_affine(x, 3, name='fc', n_values=2, with_bias=False)
    names = set(nn.get_parameters(grad_only=False))
    assert {'net/c1/lutq_conv/W', 'net/c1/lutq_conv/A', 'net/block/fc/lutq_affine/d'} <= names
    assert [s.name for s in lutq_layers()] == ['net/c1/lutq_conv', 'net/block/fc/lutq_affine']


def test_registered_in_nnabla_PF_without_replacing_nnabla_names():
    import nnabla.parametric_functions as P
    import nnabla_lutq.nn.layers as L
    for n in ('lutq_affine', 'lutq_convolution', 'lutq_depthwise_convolution', 'mlbn'):
        assert getattr(P, n) is getattr(L, n)
    assert P.convolution.__module__ == 'nnabla.parametric_functions'
    assert 'Parameters to be registered' in P.lutq_convolution.__doc__
    assert 'prune_ratio (float)' in P.lutq_convolution.__doc__


def test_save_load_round_trip_keeps_A_int32(rng, tmp_path):
    x = _var(rng, (2, 3, 6, 6))
    PF.lutq_convolution(x, 4, (3, 3), n_values=8, name='c')
    p = nn.get_parameters(grad_only=False)
    saved = {k: v.d.copy() for k, v in p.items()}
    nn.save_parameters(str(tmp_path / 'p.h5'))
    for v in p.values():
        v.data.zero()
    nn.load_parameters(str(tmp_path / 'p.h5'))
    for k, v in nn.get_parameters(grad_only=False).items():
        assert v.d.dtype == saved[k].dtype
        np.testing.assert_array_equal(v.d, saved[k])
    assert p['c/lutq_conv/A'].d.dtype == np.int32
    # rebuilding after loading keeps the loaded tables (no re-initialization)
    nn.clear_parameters()
    nn.load_parameters(str(tmp_path / 'p.h5'))
    PF.lutq_convolution(x, 4, (3, 3), n_values=8, name='c')
    np.testing.assert_array_equal(nn.get_parameters(grad_only=False)['c/lutq_conv/A'].d,
                                  saved['c/lutq_conv/A'])


@pytest.mark.parametrize('kwargs,match', [
    (dict(n_values=1), 'at least 2'), (dict(n_values=10 ** 6), 'larger than'),
    (dict(prune_ratio=1.5), 'outside'), (dict(dictionary='nope'), 'unknown dictionary'),
])
def test_bad_arguments_raise_before_any_parameter_exists(kwargs, match, rng):
    x = _var(rng, (2, 3, 4, 4))
    with pytest.raises(ValueError, match=match) as e:
        PF.lutq_convolution(x, 2, (3, 3), name='bad', **kwargs)
    assert 'bad/lutq_conv' in str(e.value)
    assert nn.get_parameters(grad_only=False) == {}


def test_existing_tables_of_another_size_are_refused(rng):
    x = _var(rng, (2, 3, 4, 4))
    PF.lutq_convolution(x, 2, (3, 3), name='c', n_values=4)
    with pytest.raises(ValueError, match='n_values=4'):
        PF.lutq_convolution(x, 2, (3, 3), name='c', n_values=16)


def test_inference_mode_has_no_float_weights_and_same_output(rng):
    x = _var(rng, (3, 3, 6, 6))
    y = PF.lutq_affine(F.relu(PF.lutq_convolution(x, 4, (3, 3), name='c', n_values=4)), 5,
                       name='f', n_values=3)
    with nnabla_lutq.inference_mode():
        yi = PF.lutq_affine(F.relu(PF.lutq_convolution(x, 4, (3, 3), name='c', n_values=4)), 5,
                            name='f', n_values=3)
    y.forward()
    yi.forward()
    assert np.array_equal(y.d, yi.d)
    types = []
    yi.visit(lambda f: types.append(f.info.type_name))
    assert 'Sub2' not in types and types.count('Embed') == 2


def test_fix_parameters_computes_with_tables_only(rng):
    x = _var(rng, (2, 8))
    y = PF.lutq_affine(x, 3, name='f', n_values=4, fix_parameters=True)
    y.forward()
    p = nn.get_parameters(grad_only=False)
    q = p['f/lutq_affine/d'].d[p['f/lutq_affine/A'].d]
    np.testing.assert_allclose(y.d, x.d @ q + p['f/lutq_affine/b'].d, rtol=1e-5, atol=1e-6)
    types = []
    y.visit(lambda f: types.append(f.info.type_name))
    assert types == ['Embed', 'Affine']


# --- nnabla's arguments: the PF signatures are nnabla's plus the LUT-Q arguments ------------------

@pytest.mark.parametrize('ours,theirs,extra', [
    ('lutq_affine', 'affine', ['n_values', 'dictionary', 'prune_ratio', 'pow2_range',
                               'group_size']),
    ('lutq_convolution', 'convolution', ['n_values', 'dictionary', 'prune_ratio', 'pow2_range',
                                         'group_size']),
    ('lutq_depthwise_convolution', 'depthwise_convolution',
     ['n_values', 'dictionary', 'prune_ratio', 'pow2_range', 'group_size']),
    ('mlbn', 'batch_normalization', ['impl']),
])
def test_signature_is_nnabla_s_plus_the_lutq_arguments(ours, theirs, extra):
    import inspect
    mine = inspect.signature(getattr(nnabla_lutq, ours)).parameters
    ref = inspect.signature(getattr(PF, theirs)).parameters
    assert list(mine) == [n for n in ref if n != 'name'] + extra + ['name']
    for n, p in ref.items():
        assert mine[n].default == p.default, n


def _apply_w(w):
    return F.tanh(w) * 0.5


def _apply_b(b):
    return b + 1.0


@pytest.mark.parametrize('kind', ['affine', 'conv'])
@pytest.mark.parametrize('mode', ['tied', 'float', 'tables'])
def test_apply_w_and_apply_b_act_as_in_nnabla_on_the_weight_computed_with(kind, mode, rng):
    """apply_w receives d[A] (W in float mode) and apply_b the bias, as in PF.affine/convolution
    on a layer whose W holds that weight: same outputs and gradients."""
    x = _var(rng, (3, 4, 6, 6), need_grad=True)
    if kind == 'affine':
        ours = lambda **kw: PF.lutq_affine(x, 5, name='l', n_values=4, **kw)  # noqa: E731
        theirs = lambda **kw: PF.affine(x, 5, name='ref', **kw)  # noqa: E731
    else:
        ours = lambda **kw: PF.lutq_convolution(x, 5, (3, 3), pad=(1, 1), name='l',  # noqa: E731
                                                n_values=4, **kw)
        theirs = lambda **kw: PF.convolution(x, 5, (3, 3), pad=(1, 1), name='ref',  # noqa: E731
                                             **kw)
    ours()  # create the parameters
    layer = lutq_layers()[0]
    layer.W.d = layer.W.d + rng.randn(*layer.W.shape).astype(np.float32) * 0.1  # W != d[A]
    b = nn.get_parameters()[layer.name + '/b']
    b.d = rng.randn(*b.shape)
    with nnabla_lutq.weight_mode(mode):
        y = ours(apply_w=_apply_w, apply_b=_apply_b)
    used = layer.W.d if mode == 'float' else layer.d.d[layer.A.d]
    y2 = theirs(apply_w=_apply_w, apply_b=_apply_b, w_init=used.copy(), b_init=b.d.copy())
    ref = nn.get_parameters()
    dy = rng.randn(*y.shape).astype(np.float32)
    for out in (y, y2):
        out.forward()
    assert np.array_equal(y.d, y2.d)
    for v in nn.get_parameters().values():
        v.grad.zero()
    y.backward(dy)
    y2.backward(dy)
    scope = 'ref/affine' if kind == 'affine' else 'ref/conv'
    if mode != 'tables':  # straight through the look-up: W gets the gradient of the used weight
        assert np.array_equal(layer.W.g, ref[scope + '/W'].g)
    assert np.array_equal(b.g, ref[scope + '/b'].g)


def test_apply_w_none_is_the_plain_layer(rng):
    x = _var(rng, (2, 6))
    y = PF.lutq_affine(x, 3, name='f', n_values=4)
    y1 = PF.lutq_affine(x, 3, name='f', n_values=4, apply_w=None, apply_b=None)
    y.forward()
    y1.forward()
    assert np.array_equal(y.d, y1.d)


def _bn_inputs(rng, c=4):
    """Input and running statistics for which nnabla's BN scale 1/sqrt(var + eps) is exactly a
    power of two (eps = 2^-10, var + eps in {1/4, 1, 4, 16}), so mlbn and PF.batch_normalization
    compute the same function."""
    x = nn.Variable.from_numpy_array((rng.randn(8, c, 3, 3) * 2 + 1).astype(np.float32))
    eps = 2.0 ** -10
    var = (np.array([0.25, 1.0, 4.0, 16.0])[:c] - eps).reshape(1, c, 1, 1)
    mean = rng.randn(1, c, 1, 1)
    gamma = (2.0 ** rng.randint(-2, 3, (1, c, 1, 1))) * rng.choice([-1, 1], (1, c, 1, 1))
    beta = rng.randn(1, c, 1, 1)
    return x, eps, {'mean': mean, 'var': var, 'gamma': gamma, 'beta': beta}


@pytest.mark.parametrize('no_scale,no_bias', [(True, False), (False, True), (True, True),
                                               (False, False)])
def test_mlbn_no_scale_no_bias_as_in_batch_normalization(no_scale, no_bias, rng):
    x, eps, init = _bn_inputs(rng)
    y = PF.mlbn(x, eps=eps, batch_stat=False, param_init=init, no_scale=no_scale,
                no_bias=no_bias, name='bn')
    y2 = PF.batch_normalization(x, eps=eps, batch_stat=False, param_init=init,
                                no_scale=no_scale, no_bias=no_bias, name='ref')
    names = {k.split('/')[-1] for k in nn.get_parameters(grad_only=False) if k.startswith('bn/')}
    assert names == {k.split('/')[-1] for k in nn.get_parameters(grad_only=False)
                     if k.startswith('ref/')}
    assert ('gamma' in names) != no_scale and ('beta' in names) != no_bias
    y.forward()
    y2.forward()
    np.testing.assert_allclose(y.d, y2.d, rtol=1e-6, atol=1e-6)
    # the folded export values compute the same and the layer is known as multiplier-less
    a, b = nnabla_lutq.fold_mlbn('bn')
    np.testing.assert_allclose(x.d * a + b, y.d, rtol=1e-6, atol=1e-6)
    g = 1.0 if no_scale else init['gamma']
    np.testing.assert_array_equal(a, (g / np.sqrt(init['var'] + eps)).astype(np.float32))
    assert [r.name for r in nnabla_lutq.mlbn_layers()] == ['bn/mlbn']


@pytest.mark.parametrize('no_scale,no_bias', [(True, False), (False, True), (True, True)])
def test_mlbn_no_scale_no_bias_in_training(no_scale, no_bias, rng):
    """Batch statistics: y = pow2(γ/σ_B)·(x - μ_B) + β with γ = 1 / β = 0 where omitted; the
    running statistics are updated exactly as PF.batch_normalization updates them."""
    x, eps, init = _bn_inputs(rng)
    x.need_grad = True
    kw = dict(eps=eps, param_init=init, no_scale=no_scale, no_bias=no_bias)
    y = PF.mlbn(x, name='bn', **kw)
    y2 = PF.batch_normalization(x, name='ref', **kw)
    dy = rng.randn(*y.shape).astype(np.float32)
    y.forward()
    y2.forward()
    p = nn.get_parameters(grad_only=False)
    for s in ('mean', 'var'):
        np.testing.assert_array_equal(p[f'bn/mlbn/{s}'].d, p[f'ref/bn/{s}'].d)
    xd = x.d.astype(np.float64)
    mu = xd.mean((0, 2, 3), keepdims=True)
    std = np.sqrt(xd.var((0, 2, 3), keepdims=True) + eps)
    g = 1.0 if no_scale else init['gamma']
    beta = 0.0 if no_bias else init['beta']
    a = pow2_round(g / std).astype(np.float64)
    np.testing.assert_allclose(y.d, a * (xd - mu) + beta, rtol=1e-4, atol=1e-4)
    for v in p.values():
        v.grad.zero()
    y.backward(dy)
    if not no_scale:  # straight through, as without no_bias
        np.testing.assert_allclose(p['bn/mlbn/gamma'].g, (dy * (xd - mu) / std).sum(
            (0, 2, 3), keepdims=True), rtol=1e-4, atol=1e-4)
    if not no_bias:
        np.testing.assert_allclose(p['bn/mlbn/beta'].g, dy.sum((0, 2, 3), keepdims=True),
                                   rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('no_scale,no_bias', [(True, False), (False, True), (True, True)])
def test_mlbn_without_scale_or_bias_exports_and_reloads(no_scale, no_bias, rng, tmp_path):
    from nnabla.utils.nnp_graph import NnpLoader
    x = nn.Variable.from_numpy_array(rng.randn(1, 3, 6, 6).astype(np.float32))
    kw = dict(name='bn', no_scale=no_scale, no_bias=no_bias)
    PF.mlbn(PF.lutq_convolution(x, 4, (3, 3), name='c', n_values=4), **kw)
    p = nn.get_parameters(grad_only=False)
    p['bn/mlbn/var'].d = rng.uniform(0.5, 3, (1, 4, 1, 1))
    p['bn/mlbn/mean'].d = rng.randn(1, 4, 1, 1)
    with nnabla_lutq.inference_mode():
        y = PF.mlbn(PF.lutq_convolution(x, 4, (3, 3), name='c', n_values=4), batch_stat=False,
                    **kw)
    y.forward()
    path = str(tmp_path / 'm.nnp')
    nnabla_lutq.export_nnp(path, {'x': x}, {'y': y})
    loader = NnpLoader(path)
    with nn.parameter_scope('loaded'):
        net = loader.get_network(loader.get_network_names()[0], batch_size=1)
    net.inputs['x'].d = x.d
    net.outputs['y'].forward()
    assert np.array_equal(net.outputs['y'].d, y.d)


def test_tie_is_q_forward_and_passes_its_gradient_to_w(rng):
    """tie(W, Q): Q's bits forward (also -0 and values next to W's), dQ into both W and Q
    backward; functions MulScalar and Add2 (not nnabla's slow broadcasting Sub2)."""
    from nnabla_lutq.nn.layers import TIE_FUNCTIONS, tie
    w = nn.Variable.from_numpy_array(rng.randn(5, 7).astype(np.float32), need_grad=True)
    qd = rng.randn(5, 7).astype(np.float32)
    qd[0, :3] = [-0.0, 0.0, np.float32(1e-30)]
    qd[1] = np.nextafter(w.d[1], np.float32(9))
    q = nn.Variable.from_numpy_array(qd, need_grad=True)
    y = tie(w, q)
    types = []
    y.visit(lambda f: types.append(f.info.type_name))
    assert set(types) == TIE_FUNCTIONS
    y.forward()
    assert np.array_equal(y.d, qd) and np.array_equal(np.signbit(y.d), np.signbit(qd + 0.0))
    w.grad.zero()
    q.grad.zero()
    dy = rng.randn(5, 7).astype(np.float32)
    y.backward(dy)
    assert np.array_equal(w.g, dy) and np.array_equal(q.g, dy)
