# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The host forms of the training graphs (nnabla_lutq.nn.host) against their graph forms.

The tracked-range quantizer: the same bits as the graph form (values, gradients, the range), on
one thread and on two (from PARALLEL_MIN values), at the rounding and clipping boundaries, with
gradient accumulation. Multiplier-less BN's scale: the rounding of γ/σ_B by the host rule with
σ_B from an exact (float64) batch variance. Both are copied by graph converters and chosen by
the context.
"""
import numpy as np
import pytest
import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF
from nnabla.ext_utils import get_extension_context

import nnabla_lutq
from nnabla_lutq.core.pow2 import pow2_round
from nnabla_lutq.nn import host
from nnabla_lutq.nn.quantize import fixed_step_relu, quantized_relu


def _types(y):
    out = []
    y.visit(lambda f: out.append(f.info.type_name))
    return out


def _quantizer_steps(impl, xs, dys, two_consumers=False, decay=0.9):
    """Forward/backward of quantized_relu on each (x, dy); returns per step y, x.g, qr_max."""
    nn.clear_parameters()
    x = nn.Variable(xs[0].shape, need_grad=True)
    y = quantized_relu(x, 8, decay=decay, name='q', impl=impl)
    # with two consumers x's gradient is accumulated: the quantizer's and the product's
    z = F.add2(y, F.mul_scalar(x, 3.0)) if two_consumers else y
    qr_max = nn.get_parameters(grad_only=False)['q/min_max_quantize/qr_max']
    out = []
    for xd, dy in zip(xs, dys):
        x.d = xd
        z.forward()
        x.grad.zero()
        z.backward(dy)
        out.append((y.d.copy(), x.g.copy(), qr_max.d.copy()))
    return out


def _same_bits(xs, dys, **kw):
    """The steps of both forms, asserted equal to the bit; returns the host form's."""
    graph = _quantizer_steps('graph', xs, dys, **kw)
    hosted = _quantizer_steps('host', xs, dys, **kw)
    for a, b in zip(graph, hosted):
        for u, v in zip(a, b):
            assert np.array_equal(u, v)
    return hosted


def _boundary_values(rng, shape, s):
    """Random activations with values placed at the quantizer's boundaries for step ``s``:
    0 and ±0, the top of the range and its float neighbours, the rounding midpoints."""
    x = (rng.randn(*shape) * 2).astype(np.float32).ravel()
    mid = ((np.arange(255, dtype=np.float32) + np.float32(0.5)) * s).astype(np.float32)
    top = np.float32(255) * s
    special = np.concatenate([mid, np.nextafter(mid, np.float32(0)), [0.0, -0.0, top,
                              np.nextafter(top, np.float32(0)), np.nextafter(top, np.float32(99)),
                              -top, 1e-30, -1e-30]]).astype(np.float32)
    x[:special.size] = special
    return x.reshape(shape)


@pytest.mark.parametrize('shape', [(4, 3, 7, 7), (37, 17), (64, 16, 32, 32)])
@pytest.mark.parametrize('decay', [1.0, 0.9])
def test_quantizer_is_the_graph_form_to_the_bit(shape, decay, rng):
    """decay 1 keeps the range at 6, so the first batch's boundary values lie exactly at the
    step's rounding midpoints and range ends; decay 0.9 moves the range with growing inputs.
    (64, 16, 32, 32) holds PARALLEL_MIN values: the passes run on two threads."""
    assert shape != (64, 16, 32, 32) or np.prod(shape) >= host.PARALLEL_MIN
    xs = [_boundary_values(rng, shape, np.float32(6.0) / np.float32(255))] + \
        [(rng.randn(*shape) * (1 + k)).astype(np.float32) for k in range(3)]
    dys = [rng.randn(*shape).astype(np.float32) for _ in xs]
    hosted = _same_bits(xs, dys, decay=decay)
    if decay == 1.0:  # the boundaries were hit: codes up to the top, gradients cut at both ends
        y, g, _ = hosted[0]
        assert y.max() == np.float32(255) * (np.float32(6.0) / np.float32(255))
        assert (g == 0).any() and (g != 0).any()


@pytest.mark.parametrize('shape', [(4, 3, 7, 7), (64, 16, 32, 32)])
@pytest.mark.parametrize('step', [2.0 ** -5, 2.0 ** 3])
def test_fixed_step_quantizer_is_relu_and_fixed_point_quantize_to_the_bit(shape, step):
    """ReLU + FixedPointQuantize (nnabla's functions) and the one host function: values and
    gradients at the rounding midpoints, the top of the range and its neighbours, ±0; with
    gradient accumulation (a second consumer of x)."""
    x = nn.Variable(shape, need_grad=True)
    outs = []
    for impl in ('graph', 'host'):
        y = fixed_step_relu(x, 8, step, impl=impl)
        z = F.add2(y, F.mul_scalar(x, 3.0))
        res = []
        for k in range(2):
            x.d = _boundary_values(np.random.RandomState(k), shape, np.float32(step)) * (1 + k)
            z.forward()
            x.grad.zero()
            z.backward(np.random.RandomState(k).randn(*shape).astype(np.float32))
            res += [y.d.copy(), x.g.copy()]
        outs.append(res)
    assert _types(fixed_step_relu(x, 8, step, impl='graph')) == ['ReLU', 'FixedPointQuantize']
    assert _types(fixed_step_relu(x, 8, step, impl='host')) == ['QuantizedReLUHost']
    assert _types(fixed_step_relu(x, 8, step, training=False)) == ['ReLU', 'FixedPointQuantize']
    for u, v in zip(*outs):
        assert np.array_equal(u, v)
    assert outs[1][0].max() == np.float32(255 * step)


@pytest.mark.parametrize('impl,training', [('host', True), ('graph', True), ('host', False)])
@pytest.mark.parametrize('step', [0.03, 0.0, -0.25, float('inf')])
def test_fixed_step_must_be_a_power_of_two(impl, training, step):
    """Refused in every form (the graph form would quantize with any step)."""
    x = nn.Variable((2, 3))
    with pytest.raises(ValueError, match='power of two'):
        fixed_step_relu(x, 8, step, training=training, impl=impl)


def test_quantizer_accumulates_into_a_shared_gradient(rng):
    shape = (8, 4, 6, 6)
    xs = [(rng.randn(*shape) * 3).astype(np.float32) for _ in range(2)]
    dys = [rng.randn(*shape).astype(np.float32) for _ in xs]
    hosted = _same_bits(xs, dys, two_consumers=True)
    assert np.abs(hosted[0][1]).min() > 0  # 3·dy everywhere, plus dy inside the range


@pytest.mark.parametrize('shape', [(8, 6, 5, 5), (64, 16, 32, 32)])
@pytest.mark.parametrize('no_scale', [False, True])
def test_mlbn_scale_is_the_rule_on_the_exact_batch_variance(shape, no_scale, rng):
    """γ̂ / σ_B is pow2(γ / σ_B) with σ_B from the float64 variance (channels whose ratio lies
    within 1e-5 of a rounding boundary excepted: there are none in these draws), γ̂ within
    float rounding of pow2(γ/σ_B)·σ_B; the gradient of γ is the one of γ̂."""
    c = shape[1]
    x = nn.Variable.from_numpy_array(
        (rng.randn(*shape) * rng.uniform(0.1, 5, (1, c, 1, 1)) + 1).astype(np.float32))
    gamma = None
    if not no_scale:
        gamma = nn.Variable.from_numpy_array(
            (rng.uniform(0.2, 3, (1, c, 1, 1)) * rng.choice([-1, 1], (1, c, 1, 1)))
            .astype(np.float32), need_grad=True)
    g_hat = host.mlbn_gamma_host(x, gamma, 1, 1e-5)
    assert _types(g_hat) == ['MLBNGammaHost'] and g_hat.shape == (1, c, 1, 1)
    g_hat.forward()
    std = np.sqrt(x.d.astype(np.float64).var(axis=(0, 2, 3), keepdims=True) + 1e-5)
    ratio = (1.0 if no_scale else gamma.d.astype(np.float64)) / std
    expected = pow2_round(ratio)
    edge = np.abs(np.log2(np.abs(ratio)) - np.round(np.log2(np.abs(ratio)) - 0.5) - 0.5) < 1e-5
    assert not edge.any()
    np.testing.assert_allclose(g_hat.d, expected * std, rtol=3e-7)
    if not no_scale:
        gamma.grad.zero()
        dg = rng.randn(1, c, 1, 1).astype(np.float32)
        g_hat.backward(dg)
        assert np.array_equal(gamma.g, dg)


def test_converters_copy_the_host_quantizer(rng):
    """GraphModifier rebuilds the host function with its settings on the same parameters: the
    copy computes the same values and moves the same range."""
    import nnabla.experimental.graph_converters as GC
    from nnabla_lutq.nn.graph import GraphModifier
    x = nn.Variable.from_numpy_array((rng.randn(4, 3, 5, 5) * 4).astype(np.float32))
    y = quantized_relu(PF.convolution(x, 3, (3, 3), name='c'), 8, decay=0.5, name='q',
                       impl='host')
    y2 = GC.GraphConverter([GraphModifier()]).convert(y)
    assert _types(y2) == ['Convolution', 'QuantizedReLUHost']
    qr_max = nn.get_parameters(grad_only=False)['q/min_max_quantize/qr_max']
    y.forward()
    first, r1 = y.d.copy(), qr_max.d.copy()
    qr_max.d = 6.0
    y2.forward()
    assert np.array_equal(y2.d, first) and np.array_equal(qr_max.d, r1)
    assert host.copy_host_function(y.parent.inputs[0].parent, []) is None  # not a host one


def test_the_context_chooses_the_form():
    x = nn.Variable((2, 3, 4, 4))
    assert _types(quantized_relu(x, 8, name='a')) == ['QuantizedReLUHost']
    assert _types(nnabla_lutq.mlbn(x, name='b')) == ['MLBNGammaHost', 'BatchNormalization']
    with nn.context_scope(get_extension_context('cpu', type_config='half')):
        assert 'QuantizedReLUHost' not in _types(quantized_relu(x, 8, name='c'))
        assert 'MLBNGammaHost' not in _types(PF.mlbn(x, name='d'))
    assert 'MLBNGammaHost' not in _types(PF.mlbn(x, axes=[1, 2], name='e'))  # two axes: graph


def test_a_wrong_impl_is_refused_before_any_parameter_is_made():
    x = nn.Variable((2, 3, 4, 4))
    with pytest.raises(ValueError, match="impl must be 'auto', 'host' or 'graph'"):
        quantized_relu(x, 8, name='q', impl='fused')
    with pytest.raises(ValueError, match="impl must be 'auto', 'host' or 'graph'"):
        PF.mlbn(x, name='b', impl='gpu')
    with pytest.raises(ValueError, match="impl='host' needs one channel axis"):
        PF.mlbn(x, axes=[1, 2], name='b', impl='host')
    assert not nn.get_parameters(grad_only=False)
