# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
import numpy as np
import pytest
import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF

import nnabla_lutq
from nnabla_lutq.core.pow2 import SQRT2_ABOVE, is_pow2_array, pow2_round
from nnabla_lutq.nn.functions import (detached, float32_context, mlbn_batch_gamma, mlbn_scale,
                                      pow2_round_lookup)


def _setup(rng, shape=(8, 4, 3, 3)):
    x = nn.Variable.from_numpy_array((rng.randn(*shape) * 2 + 1).astype(np.float32), need_grad=True)
    return x


def _set_params(rng, c=4):
    p = nn.get_parameters(grad_only=False)
    p['bn/mlbn/gamma'].d = rng.uniform(0.2, 3, (1, c, 1, 1)) * rng.choice([-1, 1], (1, c, 1, 1))
    p['bn/mlbn/beta'].d = rng.randn(1, c, 1, 1)
    p['bn/mlbn/mean'].d = rng.randn(1, c, 1, 1)
    p['bn/mlbn/var'].d = rng.uniform(0.5, 4, (1, c, 1, 1))
    return p


def test_parameters_like_batch_normalization(rng):
    x = _setup(rng)
    PF.mlbn(x, name='bn')
    p = nn.get_parameters(grad_only=False)
    assert list(p) == ['bn/mlbn/beta', 'bn/mlbn/gamma', 'bn/mlbn/mean', 'bn/mlbn/var']
    assert all(v.shape == (1, 4, 1, 1) for v in p.values())
    assert set(nn.get_parameters()) == {'bn/mlbn/beta', 'bn/mlbn/gamma'}
    np.testing.assert_array_equal(p['bn/mlbn/gamma'].d, 1)
    np.testing.assert_array_equal(p['bn/mlbn/var'].d, 1)


def test_inference_scale_is_exactly_a_power_of_two(rng, ctx):
    with nn.context_scope(ctx):
        x = _setup(rng)
        PF.mlbn(x, name='bn')
        p = _set_params(rng)
        y = PF.mlbn(x, batch_stat=False, name='bn')
        y.forward()
        g, b, m, v = (p[f'bn/mlbn/{n}'].d.astype(np.float64) for n in ('gamma', 'beta', 'mean', 'var'))
        a = pow2_round(g / np.sqrt(v + 1e-5))
        tol = 1e-2 if 'half' in ctx.backend[0] else 1e-5  # the layer computes in the context
        np.testing.assert_allclose(y.d, a * x.d + (b - a * m), rtol=tol, atol=tol)
        fa, fb = nnabla_lutq.fold_mlbn('bn/mlbn')
        assert np.all(np.log2(np.abs(fa)) == np.round(np.log2(np.abs(fa))))  # exactly ±2^k
        np.testing.assert_array_equal(fa, a)
        np.testing.assert_allclose(fb, b - a * m, rtol=1e-6, atol=1e-6)
        assert np.array_equal(nnabla_lutq.fold_mlbn('bn')[0], fa)
        with pytest.raises(ValueError, match='no LUT-Q or mlbn layer named'):
            nnabla_lutq.fold_mlbn('other')


def test_training_forward_uses_rounded_scale_and_gamma_gets_straight_through_gradient(rng, ctx):
    if 'half' in ctx.backend[0]:
        pytest.skip('compared with float64 at 1e-4; the half lanes check the inference scale')
    with nn.context_scope(ctx):
        _training_forward_and_straight_through(rng)


def _training_forward_and_straight_through(rng):
    x = _setup(rng)
    PF.mlbn(x, name='bn')
    p = _set_params(rng)
    mean0, var0 = p['bn/mlbn/mean'].d.copy(), p['bn/mlbn/var'].d.copy()
    y = PF.mlbn(x, batch_stat=True, name='bn')
    dy = rng.randn(*y.shape).astype(np.float32)
    y.forward()
    for v in p.values():
        v.grad.zero()
    x.grad.zero()
    y.backward(dy)
    xd = x.d.astype(np.float64)
    mu = xd.mean((0, 2, 3), keepdims=True)
    var_b = xd.var((0, 2, 3), keepdims=True)
    g = p['bn/mlbn/gamma'].d.astype(np.float64)
    a = pow2_round(g / np.sqrt(var_b + 1e-5)).astype(np.float64)
    xhat = (xd - mu) / np.sqrt(var_b + 1e-5)
    np.testing.assert_allclose(y.d, a * (xd - mu) + p['bn/mlbn/beta'].d, rtol=1e-4, atol=1e-4)
    # straight through: dL/dgamma = dL/dgamma_hat = sum(dy * xhat), dL/dbeta = sum(dy)
    np.testing.assert_allclose(p['bn/mlbn/gamma'].g, (dy * xhat).sum((0, 2, 3), keepdims=True),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(p['bn/mlbn/beta'].g, dy.sum((0, 2, 3), keepdims=True), rtol=1e-4, atol=1e-4)
    # running statistics as in PF.batch_normalization (decay 0.9, unbiased variance)
    n = xd.size / xd.shape[1]
    np.testing.assert_allclose(p['bn/mlbn/mean'].d, 0.9 * mean0 + 0.1 * mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p['bn/mlbn/var'].d, 0.9 * var0 + 0.1 * var_b * n / (n - 1), rtol=1e-4)


# --- the training graph against the previous formulation ---------------------------------------
#
# The previous training graph (kept here as the reference): σ²_B as mean((x - μ)^2) (a
# broadcast subtraction on the whole batch), the scale rounded with pow2_round_graph (14
# functions), then F.batch_normalization with γ̂ = γ + (pow2(γ/σ)·σ - γ). The new graph takes
# σ²_B as E[x²] - μ² from fast contiguous reductions (the way nnabla's CPU batch normalization
# computes it) and rounds with a table look-up (2 functions, the same rule), so γ̂ differs from
# the reference's by the rounding of the two variances (about 1e-7 relative) and the outputs and
# the gradient of x by a few float32 ulps; the rounded scales pow2(γ/σ), the gradients of γ and
# β (batch normalization's own) and the running statistics are the same.


def _reference_training(inp, beta, gamma, mean, var, axes, decay_rate, eps, output_stat=False):
    """The previous training formulation of PF.mlbn, verbatim."""
    red = tuple(i for i in range(inp.ndim) if i not in axes)
    mu = F.mean(inp, axis=red, keepdims=True)
    sigma2 = F.mean(F.pow_scalar(inp - mu, 2.0), axis=red, keepdims=True)
    g = None if gamma is None else detached(gamma)
    a, std = mlbn_scale(g, sigma2, eps)
    if gamma is None:
        gamma_hat = a * std
        gamma_hat.need_grad = False
    else:
        correction = a * std - g
        correction.need_grad = False
        gamma_hat = gamma + correction
    return F.batch_normalization(inp, beta, gamma_hat, mean, var, axes, decay_rate, eps, True,
                                 output_stat)


LAYOUTS = [((8, 4, 3, 3), [1]),      # conv features
           ((16, 4), [1]),           # affine features
           ((4, 4, 2, 3, 3), [1]),   # 3-D features
           ((8, 3, 3, 4), [3])]      # channel-last
OMIT = [(False, False), (True, False), (False, True), (True, True)]


def _pair(rng, shape, axes, no_scale, no_bias, fix_parameters=False, impl=None):
    """PF.mlbn (scope 'bn') and the reference on copies of the same parameters."""
    x = nn.Variable.from_numpy_array((rng.randn(*shape) * 2 + 1).astype(np.float32),
                                     need_grad=True)
    y = PF.mlbn(x, axes=axes, no_scale=no_scale, no_bias=no_bias,
                fix_parameters=fix_parameters, name='bn', impl=impl)
    p = {k.split('/')[-1]: v for k, v in nn.get_parameters(grad_only=False).items()}
    st = p['mean'].shape
    if 'gamma' in p:
        p['gamma'].d = rng.uniform(0.2, 3, st) * rng.choice([-1, 1], st)
    if 'beta' in p:
        p['beta'].d = rng.randn(*st)
    p['mean'].d, p['var'].d = rng.randn(*st), rng.uniform(0.5, 4, st)
    ref = {k: nn.Variable.from_numpy_array(v.d.copy(), need_grad=v.need_grad)
           for k, v in p.items()}
    y2 = _reference_training(x, ref.get('beta'), ref.get('gamma'), ref['mean'], ref['var'], axes,
                             0.9, 1e-5)
    return x, y, p, y2, ref


def _run(x, y, params, dy):
    y.forward()
    for v in list(params.values()) + [x]:
        v.grad.zero()
    y.backward(dy)
    return y.d.copy(), x.g.copy(), {k: v.g.copy() for k, v in params.items()}


@pytest.mark.parametrize('shape,axes', LAYOUTS)
@pytest.mark.parametrize('no_scale,no_bias', OMIT)
@pytest.mark.parametrize('impl', ['graph', 'host'])
def test_training_equals_the_previous_formulation(shape, axes, no_scale, no_bias, impl, rng):
    """Both forms of the training graph (the host form sums the batch variance in float64,
    the graph form in float32: the same tolerances)."""
    x, y, p, y2, ref = _pair(rng, shape, axes, no_scale, no_bias, impl=impl)
    dy = rng.randn(*shape).astype(np.float32)
    out, gx, g = _run(x, y, p, dy)
    out2, gx2, g2 = _run(x, y2, ref, dy)
    # running statistics: updated once, exactly as PF.batch_normalization (and the reference)
    for s in ('mean', 'var'):
        np.testing.assert_array_equal(p[s].d, ref[s].d)
    # forward: the same rounded scale; values within a few ulps (|y| ~ 10)
    np.testing.assert_allclose(out, out2, rtol=0, atol=4e-6)
    red = tuple(i for i in range(len(shape)) if i not in axes)
    xd = x.d.astype(np.float64)
    mu, std = xd.mean(red, keepdims=True), np.sqrt(xd.var(red, keepdims=True) + 1e-5)
    gamma = 1.0 if no_scale else p['gamma'].d.astype(np.float64)
    a = pow2_round(gamma / std)
    beta = 0.0 if no_bias else p['beta'].d
    np.testing.assert_allclose(out, a * (xd - mu) + beta, rtol=1e-5, atol=1e-5)
    # backward: batch normalization's with γ̂; γ straight through (its gradient and β's do not
    # depend on γ̂: the same to the bit)
    np.testing.assert_allclose(gx, gx2, rtol=0, atol=2e-6 * np.abs(gx2).max())
    for k in g:
        np.testing.assert_array_equal(g[k], g2[k])


@pytest.mark.parametrize('shape,axes', LAYOUTS[:1] + LAYOUTS[-1:])
@pytest.mark.parametrize('impl', ['graph', 'host'])
def test_training_output_stat_and_fixed_parameters(shape, axes, impl, rng):
    x, y, p, y2, ref = _pair(rng, shape, axes, False, False, fix_parameters=True, impl=impl)
    mean0 = p['mean'].d.copy()
    out = PF.mlbn(x, axes=axes, output_stat=True, fix_parameters=True, name='bn', impl=impl)
    assert len(out) == 3
    F.sink(*out).forward()
    red = tuple(i for i in range(len(shape)) if i not in axes)
    np.testing.assert_allclose(out[1].d, x.d.mean(red, keepdims=True), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[2].d, x.d.var(red, keepdims=True), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(p['mean'].d, 0.9 * mean0 + 0.1 * out[1].d, rtol=1e-6, atol=1e-6)
    for v in p.values():
        v.grad.zero()
    out[0].backward(np.ones(shape, np.float32))
    assert not p['gamma'].g.any() and not p['beta'].g.any()  # fixed: no gradient


def test_inference_graph_is_unchanged(rng):
    """batch_stat=False: inp·a + (β - a·mean) with the inference scale, to the bit."""
    x = _setup(rng)
    PF.mlbn(x, name='bn')
    p = _set_params(rng)
    y = PF.mlbn(x, batch_stat=False, name='bn')
    y.forward()
    a, _ = mlbn_scale(*(p[f'bn/mlbn/{n}'] for n in ('gamma', 'var')), 1e-5)
    ref = x * a + (p['bn/mlbn/beta'] - a * p['bn/mlbn/mean'])
    ref.forward()
    assert np.array_equal(y.d, ref.d)


def _types(y):
    out = []
    y.visit(lambda f: out.append(f.info.type_name))
    return out


VARIANCE = ['MulN', 'Mean', 'Mean', 'Mean', 'Mean', 'MulN', 'Sub2']
SCALE = ['AddScalar', 'PowScalar', 'Div2', 'SearchSorted', 'Embed', 'Mul2', 'Sub2', 'Add2']
#: the rounding tables, built once per graph (per channel count: Reshape, Broadcast)
TABLES = ['Arange'] * 6 + ['RPowScalar'] * 4 + ['MulScalar'] * 4 + ['Concatenate'] * 2 + [
    'Reshape', 'Broadcast']


@pytest.mark.parametrize('no_scale,scale', [
    (False, SCALE),
    (True, ['AddScalar', 'PowScalar', 'RDivScalar', 'SearchSorted', 'Embed', 'Mul2']),
])
@pytest.mark.parametrize('no_bias', [False, True])
def test_training_graph_functions(no_scale, scale, no_bias):
    """The training graph of a conv-feature layer: batch normalization's one function plus 15
    (13 without γ) small ones, every one with a single output and no constant leaf (the previous
    formulation: 24); the rounding tables once per graph; inference keeps its 21. The host form
    (the default in a float32 CPU context): batch normalization and one function."""
    from collections import Counter
    x = nn.Variable((2, 4, 3, 3))
    assert _types(PF.mlbn(x, no_scale=no_scale, no_bias=no_bias, name='bn')) == [
        'MLBNGammaHost', 'BatchNormalization']
    y = PF.mlbn(x, no_scale=no_scale, no_bias=no_bias, name='bn', impl='graph')
    assert Counter(_types(y)) == Counter(VARIANCE + scale + ['BatchNormalization'] + TABLES)
    y2 = PF.mlbn(y, no_scale=no_scale, no_bias=no_bias, name='bn2', impl='graph')
    assert len(_types(y2)) == len(_types(y)) + len(VARIANCE + scale) + 1
    funcs = []
    y2.visit(lambda f: funcs.append(f))
    assert all(len(f.outputs) == 1 for f in funcs)
    params = {v.data for v in nn.get_parameters(grad_only=False).values()} | {x.data}
    assert all(v.parent is not None or v.data in params  # no constant leaf
               for f in funcs for v in f.inputs)
    assert len(_types(PF.mlbn(x, no_scale=no_scale, no_bias=no_bias, batch_stat=False,
                              name='bn'))) == 21
    nn.clear_parameters()
    ref = _reference_training(x, *(nn.Variable((1, 4, 1, 1), need_grad=True) for _ in range(2)),
                              nn.Variable((1, 4, 1, 1)), nn.Variable((1, 4, 1, 1)), [1], 0.9, 1e-5)
    assert len(_types(ref)) == 25


@pytest.mark.parametrize('impl', ['graph', 'host'])
def test_a_graph_converter_copies_the_training_graph(impl, rng):
    """A GraphConverter rebuilding the graph function by function (the package's GraphModifier,
    which nnabla_lutq.convert builds on; it also rebuilds generator functions and the host
    function) gives a copy that computes the same; so does converting the LUT-Q graph again."""
    import nnabla.experimental.graph_converters as GC
    from nnabla_lutq.nn.graph import GraphModifier
    x, y, p, _, _ = _pair(rng, (8, 4, 3, 3), [1], False, False, impl=impl)
    y2 = GC.GraphConverter([GraphModifier()]).convert(y)
    y3 = nnabla_lutq.convert(y, nnabla_lutq.LayerConfig(4), mlbn=True)
    outs = []
    for out in (y, y2, y3):
        p['mean'].d, p['var'].d = 0.0, 1.0
        out.forward()
        outs.append(out.d.copy())
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])


def test_lookup_rounding_is_the_rule_for_every_float32():
    """pow2_round_lookup == pow2_round at every boundary of the rule, at its float32 neighbours,
    at the powers of two, at 0, -0 and 10^6 random bit patterns (every finite float32 of
    magnitude >= 2^-126); subnormal values give 0 or -2^-126."""
    rng = np.random.RandomState(0)
    bits = rng.randint(0, 2 ** 32, 10 ** 6, dtype=np.uint64).astype(np.uint32).view(np.float32)
    pow2 = np.ldexp(np.float32(1), np.arange(-126, 128)).astype(np.float32)
    bound = (np.float32(SQRT2_ABOVE) * pow2).astype(np.float32)
    xs = np.concatenate([bits, pow2, bound, np.nextafter(bound, np.float32(0)),
                         np.float32([0.0, 1e-45, 1e-40, 3.4028235e38])])
    xs = np.concatenate([xs, -xs]).astype(np.float32)
    xs = xs[np.isfinite(xs)]
    x = nn.Variable.from_numpy_array(xs.reshape(2, -1))
    y = pow2_round_lookup(x)
    y.forward()
    got = y.d.ravel()
    normal = (np.abs(xs) >= 2.0 ** -126) | (xs == 0)
    with np.errstate(over='ignore'):
        np.testing.assert_array_equal(got[normal], pow2_round(xs[normal]))
    np.testing.assert_array_equal(got[~normal], np.where(xs[~normal] > 0, 0, -2.0 ** -126))
    types = _types(y)
    assert types.count('SearchSorted') == 1 and types.count('Embed') == 1
    assert set(types) == {'Arange', 'RPowScalar', 'MulScalar', 'Concatenate', 'Reshape',
                          'Broadcast', 'SearchSorted', 'Embed'}  # generators, no constant leaf
    funcs = []
    y.visit(lambda f: funcs.append(f))
    assert all(v.parent is not None or v.data == x.data for f in funcs for v in f.inputs)
    # the tables are shared: a second look-up of the same shape adds the two functions only
    assert len(_types(F.sink(y, pow2_round_lookup(x)))) == len(types) + 3


def test_batch_gamma_rounds_in_float32_under_half_precision(rng):
    """γ̂ / √(σ²+ε) is exactly the rule's power of two, also in a half-precision context (the
    per-channel arithmetic runs in float32); γ̂'s gradient is γ's (straight through)."""
    from nnabla.ext_utils import get_extension_context
    g = nn.Variable.from_numpy_array(rng.uniform(0.2, 3, (1, 6, 1, 1)).astype(np.float32),
                                     need_grad=True)
    v = nn.Variable.from_numpy_array(rng.uniform(0.01, 50, (1, 6, 1, 1)).astype(np.float32))
    for ctx in ('float', 'half'):
        with nn.context_scope(get_extension_context('cpu', type_config=ctx)):
            gh = mlbn_batch_gamma(g, v, 1e-5)
        with nn.context_scope(float32_context()):
            std = F.pow_scalar(F.add_scalar(v, 1e-5), 0.5)
        F.sink(gh, std).forward()
        ratio = (g.d / std.d).astype(np.float32)
        a = gh.d.astype(np.float32) / std.d
        if ctx == 'float':
            np.testing.assert_array_equal(a, pow2_round(ratio))
        else:  # γ̂ itself is stored in half: a within half's rounding of the rule's value
            np.testing.assert_allclose(a, pow2_round(ratio), rtol=2e-3)
        g.grad.zero()
        gh.backward(np.arange(6, dtype=np.float32).reshape(1, 6, 1, 1))
        np.testing.assert_array_equal(g.g.ravel(), np.arange(6))
    assert is_pow2_array(pow2_round(ratio))


def test_training_in_half_precision(rng):
    """cpu:half: the batch variance and the scale are computed in float32 (x·x overflows half
    precision beyond |x| = 256, which cudnn's batch normalization, accumulating in float,
    handles); the output follows pow2(γ/σ)·(x - μ) + β to half precision."""
    from nnabla.ext_utils import get_extension_context
    xd = (rng.randn(8, 4, 3, 3) * 3 + 1).astype(np.float32)
    with nn.context_scope(get_extension_context('cpu', type_config='half')):
        x = nn.Variable.from_numpy_array(xd, need_grad=True)
        y = PF.mlbn(x, name='bn')
        y.forward()
        y.backward(np.ones(y.shape, np.float32))
    assert np.all(np.isfinite(x.g))
    xd = xd.astype(np.float64)
    mu, std = xd.mean((0, 2, 3), keepdims=True), np.sqrt(xd.var((0, 2, 3), keepdims=True) + 1e-5)
    ref = pow2_round(1.0 / std) * (xd - mu)
    np.testing.assert_allclose(y.d, ref, rtol=0, atol=1e-2 * np.abs(ref).max())
