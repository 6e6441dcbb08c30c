import numpy as np
import pytest
import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF

import nnabla_lutq
from nnabla_lutq import lutq_layers


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
