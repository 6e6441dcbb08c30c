import numpy as np
import pytest
import nnabla as nn
import nnabla.parametric_functions as PF

import nnabla_lutq
from nnabla_lutq.core.pow2 import pow2_round


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
