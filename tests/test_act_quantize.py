# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""quantized_relu: nnabla's ReLU + tracked-range MinMaxQuantize with a training graph of a few
cheap functions (nnabla_lutq.nn.quantize).

The reference is what the examples built before, kept here: ``F.relu`` followed by
``PF.min_max_quantize(ql_min=0, ql_max=2**b - 1, x_min_max=not test, ema=True, qr_min_init=0,
qr_max_init=6)``. Training: the tracked range to the bit; the codes equal except where ``x/s``
is within about an ulp of a rounding boundary (the new graph divides as ``x·(1/s)``), there by
exactly one level; the gradient within an ulp of nnabla's with the same mask. Inference: the
same graph.
"""
import numpy as np
import pytest
import nnabla as nn
import nnabla.functions as F
import nnabla.initializer as I
import nnabla.parametric_functions as PF

from nnabla_lutq.nn.quantize import quantized_relu
from examples.common.models import Layers, resnet20


def _reference(x, bits, test, decay=0.99, name='ref'):
    return PF.min_max_quantize(F.relu(x), ql_min=0, ql_max=2 ** bits - 1, decay=decay,
                               x_min_max=not test, ema=True,
                               qr_min_init=I.ConstantInitializer(0.0),
                               qr_max_init=I.ConstantInitializer(6.0), name=name)


def _types(y):
    out = []
    y.visit(lambda f: out.append(f.info.type_name))
    return out


def _params(prefix):
    return {k[len(prefix) + 1:]: v for k, v in nn.get_parameters(grad_only=False).items()
            if k.startswith(prefix + '/')}


@pytest.mark.parametrize('shape', [(16, 8, 6, 6), (32, 40), (4, 3, 2, 5, 5)])
@pytest.mark.parametrize('bits', [8, 4])
@pytest.mark.parametrize('impl', ['graph', 'host'])
def test_training_tracks_the_range_and_quantizes_as_min_max_quantize(shape, bits, impl, rng):
    x = nn.Variable(shape, need_grad=True)
    y = quantized_relu(x, bits, decay=0.99, name='new', impl=impl)
    y2 = _reference(x, bits, test=False)
    new, ref = _params('new/min_max_quantize'), _params('ref/min_max_quantize')
    levels = 2 ** bits - 1
    n_diff = 0
    for step in range(8):
        x.d = rng.randn(*shape) * (0.5 + step)  # the batch maximum grows: the range moves
        dy = rng.randn(*shape).astype(np.float32)
        outs = []
        for out in (y, y2):
            out.forward()
            x.grad.zero()
            out.backward(dy)
            outs.append((out.d.copy(), x.g.copy()))
        (q, g), (q2, g2) = outs
        for k in ('qr_min', 'qr_max'):  # the tracked range, to the bit
            assert np.array_equal(new[k].d, ref[k].d), (step, k)
        s = np.float32(ref['qr_max'].d.ravel()[0] / np.float32(levels))
        codes, codes2 = q / s, q2 / s
        np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)
        assert codes.min() >= 0 and codes.max() <= levels + 1e-3
        diff = q != q2
        n_diff += diff.sum()
        # where the codes differ: by one level, x/s within 2 ulps of a rounding boundary
        assert np.all(np.abs(codes - codes2)[diff] < 1 + 1e-3)
        u = (x.d / s).astype(np.float32)
        frac = np.abs(u - np.floor(u) - np.float32(0.5))
        assert np.all(frac[diff] <= 2 * np.spacing(u[diff])), (step, u[diff])
        # gradient: nnabla's mask (0 < x, x <= top of the range) and values within an ulp
        same = ~diff
        assert np.array_equal(g[same] != 0, g2[same] != 0)
        np.testing.assert_allclose(g, g2, rtol=2.5e-7, atol=0)
    assert n_diff <= 1e-3 * 8 * np.prod(shape)


@pytest.mark.parametrize('impl', ['graph', 'host'])
def test_codes_at_rounding_boundaries_differ_by_at_most_one_level(impl):
    """The documented difference: at x = fl((k + 1/2)·s) and its float neighbours,
    round(x·(1/s)) and nnabla's round(x/s) disagree for some values, by one level (a fixed
    range: decay 1 keeps qr_max at 6)."""
    s = np.float32(np.float32(6.0) / np.float32(255))
    mid = ((np.arange(255, dtype=np.float32) + np.float32(0.5)) * s).astype(np.float32)
    xs = np.concatenate([mid, np.nextafter(mid, np.float32(0)), np.nextafter(mid, np.float32(9))])
    x = nn.Variable.from_numpy_array(xs.reshape(1, 1, 1, -1), need_grad=True)
    y = quantized_relu(x, 8, decay=1.0, name='new', impl=impl)
    y2 = _reference(x, 8, test=False, decay=1.0)
    F.sink(y, y2).forward()
    diff = y.d != y2.d
    assert 0 < diff.sum() < 0.2 * xs.size  # 62 of 765 here
    np.testing.assert_allclose(np.abs(y.d - y2.d)[diff], s, rtol=1e-5)


def test_half_precision_tracks_the_range_in_float32(rng):
    """cpu:half: the per-layer values (moving average, step) are computed in float32, so the
    range is nnabla's float32 one on the (half-rounded) activations, not a half-precision average
    that stalls; the outputs are within one level (the quotient is a half-precision value)."""
    from nnabla.ext_utils import get_extension_context
    shape = (8, 4, 5, 5)
    x = nn.Variable(shape)
    with nn.context_scope(get_extension_context('cpu', type_config='half')):
        y = quantized_relu(x, 8, decay=0.99, name='new')
    y2 = _reference(x, 8, test=False)
    new, ref = _params('new/min_max_quantize'), _params('ref/min_max_quantize')
    for step in range(5):
        x.d = (rng.randn(*shape) * (1 + step)).astype(np.float16)
        y.forward()
        y2.forward()
        assert np.array_equal(new['qr_max'].d, ref['qr_max'].d)
        step_size = ref['qr_max'].d.ravel()[0] / 255
        assert np.all(np.abs(y.d - y2.d) <= 1.01 * step_size + 2e-3 * np.abs(y2.d))


@pytest.mark.parametrize('impl', ['graph', 'host'])
def test_dead_layer_nudges_the_range_as_nnabla(impl, rng):
    """All inputs negative: the range decays to eps = 0.01 and stays (nnabla's nudge)."""
    x = nn.Variable((4, 3, 4, 4), need_grad=True)
    y = quantized_relu(x, 8, decay=0.5, name='new', impl=impl)
    y2 = _reference(x, 8, test=False, decay=0.5)
    new, ref = _params('new/min_max_quantize'), _params('ref/min_max_quantize')
    for _ in range(12):
        x.d = -np.abs(rng.randn(*x.shape)) - 0.1
        y.forward()
        y2.forward()
        assert np.array_equal(new['qr_max'].d, ref['qr_max'].d)
        assert np.array_equal(y.d, y2.d) and not y.d.any()
    assert new['qr_max'].d.ravel()[0] == np.float32(0.01)


def test_parameters_are_min_max_quantize_s():
    """Same names, shapes, dtypes, values and flags as PF.min_max_quantize's, so either builds
    on the other's parameters (checkpoints, the inference graph)."""
    x = nn.Variable((2, 3, 4, 4))
    quantized_relu(x, 8, name='new')
    _reference(x, 8, test=False)
    new, ref = _params('new/min_max_quantize'), _params('ref/min_max_quantize')
    assert list(new) == ['ql_min', 'ql_max', 'qr_min', 'qr_max'] and sorted(ref) == sorted(new)
    for k in new:
        assert new[k].shape == ref[k].shape and new[k].d.dtype == ref[k].d.dtype, k
        assert np.array_equal(new[k].d, ref[k].d) and new[k].need_grad == ref[k].need_grad, k


def test_inference_graph_is_nnabla_s(rng):
    """track_range=False: ReLU + MinMaxQuantize on the stored range, the same values."""
    x = nn.Variable.from_numpy_array(rng.randn(2, 3, 4, 4).astype(np.float32) * 4)
    quantized_relu(x, 8, name='q')
    p = _params('q/min_max_quantize')
    p['qr_max'].d = 3.7
    y = quantized_relu(x, 8, track_range=False, name='q')
    assert _types(y) == ['ReLU', 'MinMaxQuantize']
    f = y.parent
    assert f.info.args['x_min_max'] is False and f.info.args['ema'] is True
    y2 = PF.min_max_quantize(F.relu(x), ql_min=0, ql_max=255, x_min_max=False, ema=True,
                             name='q')
    F.sink(y, y2).forward()
    assert np.array_equal(y.d, y2.d)
    assert p['qr_max'].d.ravel()[0] == np.float32(3.7)  # inference does not move the range


def test_training_graph_functions():
    """One reduction, 11 functions on one value (the moving average, its persistence, the step
    and its reciprocal), 6 on the activations (two depthwise products, the clip that is also the
    ReLU, rounding) and the constant number of levels (one per graph and channel count), instead
    of ReLU + MinMaxQuantize's ~20 broadcast sub-functions; no constant leaf."""
    x = nn.Variable((2, 3, 4, 4), need_grad=True)
    y = quantized_relu(x, 8, name='q', impl='graph')
    assert _types(y) == [
        'MulScalar', 'Max', 'MulScalar', 'MaximumScalar', 'Add2', 'AddScalar', 'Maximum2',
        'Assign', 'Sub2', 'Reshape', 'Constant', 'Div2', 'RDivScalar', 'DepthwiseConvolution',
        'MaximumScalar', 'MinimumScalar', 'AddScalar', 'Floor', 'DepthwiseConvolution']
    funcs = []
    y.visit(lambda f: funcs.append(f))
    params = {v.data for v in nn.get_parameters(grad_only=False).values()} | {x.data}
    assert all(v.parent is not None or v.data in params for f in funcs for v in f.inputs)
    y2 = quantized_relu(y, 8, name='q2', impl='graph')  # same channel count: shared constant
    assert len(_types(y2)) == 2 * len(_types(y)) - 1
    assert _types(quantized_relu(x, 8, name='q', impl='host')) == ['QuantizedReLUHost']


def _count(layers, test=False, ctx=None):
    x = nn.Variable((2, 3, 32, 32))
    with nn.context_scope(ctx or nn.get_current_context()):
        return len(_types(resnet20(x, layers, test=test)))


def test_resnet20_graph_sizes():
    """Function counts of the examples' ResNet-20 (deterministic, unlike timings): in a float32
    CPU context a tracked-range activation is one function in training (it replaces the ReLU);
    in other contexts (here cpu:half, as on a GPU) 18 and one constant per channel count;
    nnabla's 2 in inference. A power-of-two step: one host function in training on a CPU, else
    ReLU + FixedPointQuantize (also in inference)."""
    from nnabla.ext_utils import get_extension_context
    half = get_extension_context('cpu', type_config='half')
    assert _count(Layers()) == 72
    assert _count(Layers(act_bits=8)) == 72
    assert _count(Layers(act_bits=8), ctx=half) == 72 + 19 * 17 + 3
    assert _count(Layers(act_bits=8), test=True) == 72 + 19
    assert _count(Layers(act_bits=8, act_quant='pow2')) == 72
    assert _count(Layers(act_bits=8, act_quant='pow2'), ctx=half) == 72 + 19
    assert _count(Layers(act_bits=8, act_quant='pow2'), test=True) == 72 + 19
    nn.clear_parameters()
    train = resnet20(nn.Variable((2, 3, 32, 32)), Layers(act_bits=8))
    assert 'MinMaxQuantize' not in _types(train) and 'ReLU' not in _types(train)
