# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The integer executor (nnabla_lutq.integer): every integer operation against an independent float64
re-computation of the exported network, agreement with nnabla's own float graph (digits test
set, a briefly trained ResNet-20), hand-counted operations, the C program, refusals."""
import math
import shutil
import subprocess
from fractions import Fraction

import numpy as np
import pytest
import nnabla as nn
import nnabla.functions as F
import nnabla.initializer as I
import nnabla.parametric_functions as PF
import nnabla.solvers as S
from nnabla.parameter import get_parameter_or_create

import nnabla_lutq
from nnabla_lutq.integer import IntegerNetwork, load_eval_data, verify_int
from nnabla_lutq.integer import ops as O
from nnabla_lutq.integer.lowering import requant_op
from nnabla_lutq.io.nnp import read_nnp, write_nnp
from examples.common import configs
from examples.common.models import Layers, digits_cnn, resnet20


# --- an independent float64 evaluation of an exported .nnp ------------------------------------

def _conv64(x, w, pad, stride, dilation, group):
    """Cross-correlation by explicit kernel taps (no im2col), float64."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    ho = (h + 2 * pad[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (wd + 2 * pad[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    y = np.zeros((n, o, ho, wo))
    og = o // group
    for g in range(group):
        xs = xp[:, g * cg:(g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                y0, x0 = i * dilation[0], j * dilation[1]
                patch = xs[:, :, y0:y0 + stride[0] * (ho - 1) + 1:stride[0],
                           x0:x0 + stride[1] * (wo - 1) + 1:stride[1]]
                y[:, g * og:(g + 1) * og] += np.einsum('nchw,oc->nohw', patch,
                                                       w[g * og:(g + 1) * og, :, i, j])
    return y


def _quantize64(x, step, q_max):
    """round-half-up(clip(x, 0, Q step) / step) * step, float64; and which values are within
    1e-7 of a rounding tie (where float64 rounding may decide differently from exact math)."""
    r = np.clip(x, 0, q_max * step) / step
    frac = r - np.floor(r)
    return np.floor(r + 0.5) * step, np.abs(frac - 0.5) < 1e-7


def reference(path, x_real):
    """Every variable of the exported network, computed in float64 from the file's parameters.

    Returns:
        tuple: (values by variable name, near-tie masks of the quantizer outputs).
    """
    model = read_nnp(str(path))
    net = model.proto.network[0]
    params = {k: np.asarray(v) for k, v in model.params.items()}
    inp = model.proto.executor[0].data_variable[0].variable_name
    v = {inp: np.asarray(x_real, np.float64)}
    ties = {}

    def get(name):
        return v[name] if name in v else params[name].astype(np.float64)
    for f in net.function:
        t, i, out = f.type, list(f.input), f.output[0]
        if t == 'Embed':
            v[out] = params[i[1]].astype(np.float64)[params[i[0]]]
        elif t == 'Convolution':
            p = f.convolution_param
            y = _conv64(get(i[0]), get(i[1]), p.pad.dim, p.stride.dim, p.dilation.dim,
                        p.group or 1)
            v[out] = y + get(i[2]).reshape(1, -1, 1, 1) if len(i) > 2 else y
        elif t == 'Affine':
            xx = get(i[0]).reshape(len(get(i[0])), -1)
            y = xx @ get(i[1]).reshape(xx.shape[1], -1)
            v[out] = y + get(i[2]).reshape(1, -1) if len(i) > 2 else y
        elif t == 'Mul2':
            v[out] = get(i[0]) * get(i[1])
        elif t == 'Add2':
            v[out] = get(i[0]) + get(i[1])
        elif t == 'BatchNormalization':
            x, beta, gamma, mean, var = (get(n) for n in i)
            v[out] = (x - mean) / np.sqrt(var + np.float32(f.batch_normalization_param.eps)) * \
                gamma + beta
        elif t == 'ReLU':
            v[out] = np.maximum(get(i[0]), 0)
        elif t == 'MinMaxQuantize':
            qr_min, qr_max, ql_min, ql_max = (np.float32(params[n].ravel()[0]) for n in i[1:])
            step = np.float32(np.float32(qr_max - qr_min) / np.float32(ql_max - ql_min))
            v[out], ties[out] = _quantize64(get(i[0]), float(step), int(ql_max - ql_min))
        elif t == 'FixedPointQuantize':
            p = f.fixed_point_quantize_param
            v[out], ties[out] = _quantize64(get(i[0]), float(np.float32(p.delta)), 2 ** p.n - 1)
        elif t == 'AveragePooling':
            k, s = f.average_pooling_param.kernel.dim, f.average_pooling_param.stride.dim
            x = get(i[0])
            ho, wo = (x.shape[2] - k[0]) // s[0] + 1, (x.shape[3] - k[1]) // s[1] + 1
            v[out] = sum(x[:, :, a:a + s[0] * (ho - 1) + 1:s[0], b:b + s[1] * (wo - 1) + 1:s[1]]
                         for a in range(k[0]) for b in range(k[1])) / (k[0] * k[1])
        elif t == 'MaxPooling':
            k, s = f.max_pooling_param.kernel.dim, f.max_pooling_param.stride.dim
            x = get(i[0])
            ho, wo = (x.shape[2] - k[0]) // s[0] + 1, (x.shape[3] - k[1]) // s[1] + 1
            v[out] = np.max([x[:, :, a:a + s[0] * (ho - 1) + 1:s[0], b:b + s[1] * (wo - 1) + 1:s[1]]
                             for a in range(k[0]) for b in range(k[1])], axis=0)
        elif t == 'GlobalAveragePooling':
            v[out] = get(i[0]).mean(axis=(2, 3), keepdims=True)
        elif t == 'MulScalar':
            v[out] = get(i[0]) * f.mul_scalar_param.val
        elif t == 'AddScalar':
            v[out] = get(i[0]) + f.add_scalar_param.val
        else:
            raise NotImplementedError(t)
    return v, ties


def _real(op, x):
    """alpha * X + beta of an operation's output, float64."""
    a = np.array([float(v) for v in op.alpha]).reshape((1, -1) + (1,) * (x.ndim - 2))
    b = np.array([float(v) for v in op.beta]).reshape(a.shape)
    return x * a + b


def _round_half_up(v):
    return np.floor(v + 0.5)


# --- networks -----------------------------------------------------------------------------

def _export(path, model, layers, shape, preprocess=None):
    x = nn.Variable((1,) + shape)
    with nnabla_lutq.inference_mode(), nn.parameter_scope('net'):
        y = model(preprocess(x) if preprocess else x, layers, test=True)
    nnabla_lutq.export_nnp(str(path), {'x': x}, {'y': y})
    return str(path)


DIGITS = {
    # fully multiplier-less: pow-2 weights, multiplier-less BN, power-of-two activation step
    'pow2-mlbn-pow2act': Layers(lutq=True, n_values=4, dictionary='pow2', mlbn=True, act_bits=8,
                                act_quant='pow2'),
    # the examples' --act-bits 8 (EMA range: step r/255)
    'pow2-mlbn-ema': Layers(lutq=True, n_values=4, dictionary='pow2', mlbn=True, act_bits=8),
    # free dictionary, float BN
    'free-bn-ema': Layers(lutq=True, n_values=16, act_bits=8),
}


def _digits_data():
    """scikit-learn's digits: 17 gray levels 0..16 as uint8 codes, stratified 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    return train_test_split(d.images.astype(np.uint8)[:, None], d.target, test_size=0.2,
                            random_state=0, stratify=d.target)


def _train(layers, model, shape, steps, data, lr=0.1, batch=64, preprocess=None, seed=0):
    """A few LUT-Q steps (momentum SGD, LUTQSolver) from a fresh initialization."""
    nn.clear_parameters()
    nn.random.seed(seed)
    nn.random.set_parameter_seed(seed)
    rng = np.random.RandomState(seed)
    x, t = nn.Variable((batch,) + shape), nn.Variable((batch, 1))
    with nn.parameter_scope('net'):
        y = model(preprocess(x) if preprocess else x, layers)
    loss = F.mean(F.softmax_cross_entropy(y, t))
    solver = nnabla_lutq.LUTQSolver(S.Momentum(lr, 0.9))
    solver.set_parameters(nn.get_parameters())
    for _ in range(steps):
        xb, yb = data(rng, batch)
        x.d, t.d = xb, yb[:, None]
        loss.forward()
        solver.zero_grad()
        loss.backward(clear_buffer=True)
        solver.update()


@pytest.fixture(scope='module')
def digits(tmp_path_factory):
    """The digits test set as uint8 codes (0..16; the network's input is codes / 16) and one
    exported network per configuration, trained for 4 epochs."""
    xtr, xte, ytr, yte = _digits_data()
    folder = tmp_path_factory.mktemp('digits')
    files = {}

    def batches(rng, n):
        idx = rng.randint(0, len(xtr), n)
        return xtr[idx] / 16.0, ytr[idx]
    for name, layers in DIGITS.items():
        _train(layers, digits_cnn, (1, 8, 8), 4 * len(xtr) // 64, batches)
        files[name] = _export(folder / f'{name}.nnp', digits_cnn, layers, (1, 8, 8))
    nn.clear_parameters()
    return {'files': files, 'x': xte, 'y': yte}


def _preprocess(x):
    """The examples' trainer input scaling (raw pixels to [-1, 1])."""
    return F.add_scalar(F.mul_scalar(x, 1 / 127.5), -1.0)


def _cifar_like(rng, n):
    """Generated 32x32 RGB images whose class sets a stripe pattern (uint8) and labels."""
    y = rng.randint(0, 10, n)
    yy, xx = np.mgrid[0:32, 0:32]
    base = np.stack([np.sin(yy * (c + 1) / 5.0 + xx * (c % 3) / 4.0) for c in range(10)])
    x = base[y][:, None] * 60 + 128 + rng.randn(n, 3, 32, 32) * 30
    return np.clip(x, 0, 255).astype(np.uint8), y


@pytest.fixture(scope='module')
def resnets(tmp_path_factory):
    """ResNet-20 `lutq4-pow2-mlbn --act-bits 8` (and its power-of-two-step variant) after 6
    LUT-Q steps on generated data, exported as the examples' trainer does (raw pixels in)."""
    folder = tmp_path_factory.mktemp('resnet')
    files = {}
    for act in ('ema', 'pow2'):
        layers = configs.parse('lutq4-pow2-mlbn', act_bits=8, act_quant=act)
        _train(layers, resnet20, (3, 32, 32), 6, _cifar_like, lr=0.05, batch=16,
               preprocess=_preprocess)
        files[act] = _export(folder / f'resnet20-{act}.nnp', resnet20, layers, (3, 32, 32),
                             _preprocess)
    nn.clear_parameters()
    x, y = _cifar_like(np.random.RandomState(1), 200)
    return {'files': files, 'x': x, 'y': y}


def _param(name, value):
    value = np.asarray(value)
    return get_parameter_or_create(name, value.shape, value, False)


def tiny_network(path, quant='pow2', divisor=None):
    """A network with set weights whose operations are counted by hand in
    test_op_counts_of_a_small_network_by_hand.

    Input 1x4x4 (codes / 16). conv: 2 maps, 3x3, no padding (2x2 output), dictionary
    [-1/2, -1/8, 1/4, 1]; channel 0 uses all four values, channel 1 only -1/8 and 1. BN folded
    as x * [1/2, -2] + [0.3, -0.2]; ReLU; 8-bit activation with step 2^-4 ('pow2') or an EMA
    range [0, 3] ('minmax'); 2x2 average pooling; affine 2 -> 3 with dictionary [-1/4, 1/2]
    (outputs 0 and 2 use both values, output 1 only 1/2) and bias [0.1, 0.2, -0.3]. With
    ``divisor`` the input is raw pixels scaled to [-1, 1] in the graph: ``x / divisor - 1``.
    """
    nn.clear_parameters()
    x = nn.Variable((1, 1, 4, 4))
    h = F.add_scalar(F.mul_scalar(x, 1 / divisor), -1.0) if divisor else x
    a1 = np.array([[0, 1, 2, 3, 0, 1, 2, 3, 3], [1, 3, 1, 3, 3, 1, 1, 3, 1]],
                  np.int32).reshape(2, 1, 3, 3)
    w = F.embed(_param('conv/A', a1), _param('conv/d', np.float32([-0.5, -0.125, 0.25, 1.0])))
    h = F.convolution(h, w, None)
    h = F.mul2(h, _param('bn/a', np.float32([0.5, -2.0]).reshape(1, 2, 1, 1)))
    h = F.relu(F.add2(h, _param('bn/b', np.float32([0.3, -0.2]).reshape(1, 2, 1, 1))))
    if quant == 'pow2':
        h = F.fixed_point_quantize(h, sign=False, n=8, delta=2 ** -4)
    else:
        h = PF.min_max_quantize(h, ql_min=0, ql_max=255, x_min_max=False, ema=True,
                                qr_min_init=I.ConstantInitializer(0.0),
                                qr_max_init=I.ConstantInitializer(3.0), name='act')
    h = F.average_pooling(h, (2, 2))
    a2 = np.array([[0, 1, 1], [1, 1, 0]], np.int32)
    y = F.affine(h, F.embed(_param('fc/A', a2), _param('fc/d', np.float32([-0.25, 0.5]))),
                 _param('fc/b', np.float32([0.1, 0.2, -0.3])))
    nnabla_lutq.export_nnp(str(path), {'x': x}, {'y': y})
    nn.clear_parameters()
    return str(path)


# --- exactness against the float64 re-computation -------------------------------------------

def _compare_all(net, path, x_codes, input_scale):
    """Every operation's output against the float64 evaluation of the same exported network.

    Codes of a shift requantization must be equal (the float64 evaluation of a power-of-two
    network is exact); codes decided by thresholds may differ only where the float64 value is
    within 1e-7 of a rounding tie. Accumulators and other values must equal ``alpha * X + beta``
    exactly when alpha is a power of two and beta is 0, else to 1e-9 relative.

    Returns:
        tuple: (codes compared, codes that differed at near-ties, all outputs, the reference).
    """
    outs = net.run(x_codes, form='lutq', keep=True)
    ref, ties = reference(path, x_codes.astype(np.float64) * input_scale)
    compared = left_out = 0
    for op, out in zip(net.program.ops, outs):
        if op.var is None or op.name == 'logits':
            continue
        r = ref[op.var].reshape(out.shape)
        if op.var in ties:  # integer codes: compare the codes themselves
            rc = np.rint(r / float(op.alpha[0])).astype(np.int64)
            differ = rc != out
            if isinstance(op, O.RequantShiftOp):
                assert not differ.any(), f"{op.name}: {np.count_nonzero(differ)} codes differ"
            else:
                near = ties[op.var].reshape(out.shape)
                assert not (differ & ~near).any(), f"{op.name}: codes differ away from ties"
            compared += out.size
            left_out += int(np.count_nonzero(differ))
        elif all(b == 0 for b in op.beta) and all(_pow2(a) for a in op.alpha):
            np.testing.assert_array_equal(_real(op, out), r, err_msg=op.name)
        else:
            scale = np.abs(r).max() or 1
            np.testing.assert_allclose(_real(op, out), r, rtol=0, atol=1e-9 * scale,
                                       err_msg=op.name)
    return compared, left_out, outs, ref


def _pow2(a):
    a = abs(Fraction(a))
    return a > 0 and (a.numerator & (a.numerator - 1)) == 0 and \
        (a.denominator & (a.denominator - 1)) == 0 and min(a.numerator, a.denominator) == 1


@pytest.mark.slow
def test_fully_multiplier_less_digits_network_is_exact(digits):
    path = digits['files']['pow2-mlbn-pow2act']
    net = IntegerNetwork.from_nnp(path, input_scale=1 / 16)
    assert net.exact and net.multiplier_less
    kinds = [op.kind for op in net.program.ops]
    assert kinds.count('requant (shift)') == 3 and 'requant (thresholds)' not in kinds
    x = digits['x'][:120]
    compared, left_out, outs, ref = _compare_all(net, path, x, 1 / 16)
    assert compared > 120 * 2000 and left_out == 0
    # the accumulators are integers equal to the float64 sums divided by their scale
    conv = [i for i, op in enumerate(net.program.ops) if op.kind == 'LUT-Q conv']
    for i in conv:
        op = net.program.ops[i]
        np.testing.assert_array_equal(outs[i], ref[op.var] / float(op.alpha[0]))
    # logits: the float64 logits divided by the logit scale, rounded half up
    logits, scale = net(x)
    np.testing.assert_array_equal(logits, _round_half_up(ref['y'] / scale))
    assert np.abs(logits * scale - ref['y']).max() <= scale / 2


def _with_integer_dictionaries(net, path, out):
    """A copy of the exported file whose dictionaries are the executor's D * 2**E (a free
    dictionary is rounded to fit the accumulators); checks the rounding is below half a unit."""
    model = read_nnp(path)
    for op in net.program.ops:
        if isinstance(op, (O.LutConvOp, O.LutAffineOp)):
            d = model.params[op.d_name].astype(np.float64)
            eff = np.array(op.D, np.float64) * 2.0 ** op.dict_exponent
            assert np.abs(eff - d).max() <= 2.0 ** (op.dict_exponent - 1)
            assert op.exact == np.array_equal(eff, d)
            model.params[op.d_name] = eff.astype(np.float32)
    write_nnp(str(out), model)
    return str(out)


@pytest.mark.slow
def test_ema_and_float_bn_networks_match_reference_up_to_ties(digits, tmp_path):
    for name in ('pow2-mlbn-ema', 'free-bn-ema'):
        path = digits['files'][name]
        net = IntegerNetwork.from_nnp(path, input_scale=1 / 16)
        kinds = [op.kind for op in net.program.ops]
        assert kinds.count('requant (thresholds)') == 3
        assert net.exact == (name == 'pow2-mlbn-ema')
        ref_path = _with_integer_dictionaries(net, path, tmp_path / f'{name}.nnp')
        compared, left_out, _, _ = _compare_all(net, ref_path, digits['x'][:60], 1 / 16)
        assert compared > 60 * 2000 and left_out <= compared * 1e-4


@pytest.mark.slow
def test_lutq_form_equals_direct_form(digits):
    for name in DIGITS:
        net = IntegerNetwork.from_nnp(digits['files'][name], input_scale=1 / 16)
        a = net.run(digits['x'][:30], form='lutq', keep=True)
        b = net.run(digits['x'][:30], form='direct', keep=True)
        for op, u, v in zip(net.program.ops, a, b):
            np.testing.assert_array_equal(u, v, err_msg=op.name)


@pytest.mark.parametrize('quant', ['pow2', 'minmax'])
def test_small_network_every_op_against_reference(tmp_path, quant):
    path = tiny_network(tmp_path / 'tiny.nnp', quant)
    net = IntegerNetwork.from_nnp(path, input_scale=1 / 16)
    x = np.random.RandomState(3).randint(0, 256, (2000, 1, 4, 4)).astype(np.uint8)
    exact = quant == 'pow2'
    compared, left_out, outs, ref = _compare_all(net, path, x, 1 / 16)
    assert compared == 2000 * 8 and left_out <= (0 if exact else 2)
    logits, scale = net(x)
    assert np.abs(logits * scale - ref['y']).max() <= scale / 2 + 1e-12
    # the first channel's scale is positive, the second negative: both requantize exactly
    kind = 'requant (shift)' if exact else 'requant (thresholds)'
    rq = [op for op in net.program.ops if op.kind == kind][0]
    assert [float(a) for a in net.program.ops[rq.inputs[0]].alpha] == [2 ** -7] * 2
    codes = outs[net.program.ops.index(rq)]
    assert codes[:, 0].max() > 0 and codes[:, 1].max() > 0


def geometry_network(path):
    """Grouped, strided, dilated, padded convolution, max and global average pooling.

    Input 2x5x5 (codes / 16); conv: 4 maps in 2 groups, 3x3, pad 1, stride 2, dilation 2
    (2x2 output), dictionary [-1, -1/4, 1/2, 2], every map using all four values; ReLU and
    8-bit codes of step 1/4; max pooling 2x1; global average pooling; affine 4 -> 2.
    """
    nn.clear_parameters()
    x = nn.Variable((1, 2, 5, 5))
    a = np.array([[0, 1, 2, 3, 0, 1, 2, 3, 0], [3, 2, 1, 0, 3, 2, 1, 0, 1],
                  [1, 3, 0, 2, 2, 0, 3, 1, 1], [2, 2, 2, 0, 1, 3, 3, 1, 0]],
                 np.int32).reshape(4, 1, 3, 3)
    w = F.embed(_param('g/A', a), _param('g/d', np.float32([-1, -0.25, 0.5, 2])))
    h = F.convolution(x, w, None, pad=(1, 1), stride=(2, 2), dilation=(2, 2), group=2)
    h = F.fixed_point_quantize(F.relu(h), sign=False, n=8, delta=0.25)
    h = F.global_average_pooling(F.max_pooling(h, (2, 1), (2, 1)))
    y = F.affine(h, F.embed(_param('fc/A', np.int32([[0, 1], [1, 1], [1, 0], [0, 0]])),
                            _param('fc/d', np.float32([-0.5, 1.0]))))
    nnabla_lutq.export_nnp(str(path), {'x': x}, {'y': y})
    nn.clear_parameters()
    return str(path)


def test_conv_geometry_and_pooling(tmp_path):
    path = geometry_network(tmp_path / 'g.nnp')
    net = IntegerNetwork.from_nnp(path, input_scale=1 / 16)
    x = np.random.RandomState(5).randint(0, 256, (500, 2, 5, 5)).astype(np.uint8)
    compared, left_out, outs, ref = _compare_all(net, path, x, 1 / 16)
    assert compared == 500 * 16 and left_out == 0
    logits, scale = net(x)
    np.testing.assert_array_equal(logits * scale, ref['y'])  # no bias: exact
    rows = {r['op']: r for r in net.op_counts()}
    # taps (i, j) read rows oy * 2 - 1 + 2 i for oy = 0, 1: in bounds 1, 2, 1 times for
    # i = 0, 1, 2 (same for columns): (1 + 2 + 1)^2 = 16 in-bounds (position, tap) pairs per map;
    # 4 maps of one input channel each: 64 partial-sum adds. Each of the 4 x 4 outputs combines
    # 4 sums (D = [-4, -1, 2, 8]: 4 adds, 4 look-ups, 3 shifts).
    assert {k: rows['LUT-Q conv'][k] for k in ('float_macs', 'adds', 'shifts', 'lookups',
                                               'mults')} == \
        dict(float_macs=4 * 4 * 9, adds=64 + 64, shifts=48, lookups=64, mults=0)
    # 16 codes: ratio 2^-4 / 2^-2: bias + rounding add, one shift, two clamps
    assert (rows['requant (shift)']['adds'], rows['requant (shift)']['shifts'],
            rows['requant (shift)']['compares']) == (16, 16, 32)
    assert rows['max pool']['compares'] == 4 * 2 * 1  # 4 maps x 1x2 outputs x (2 - 1)
    assert rows['sum pool']['adds'] == 4 * 1  # 4 maps, 2 values each


def test_requantization_is_exact_for_every_integer(rng):
    """Shift and threshold requantization against the exact rational formula, every X."""
    lo, hi = np.array([-700] * 6), np.array([700] * 6)
    x = np.arange(-700, 701)[:, None].repeat(6, 1)  # (N, C): every value of the range
    q = Fraction(1, 8)
    cases = {  # alpha per channel: zero, both signs, ratios 2^j to q with j < 0, = 0, > 0
        'shift': [Fraction(0), Fraction(1, 64), Fraction(-1, 32), Fraction(1, 8),
                  Fraction(-1, 4), Fraction(1, 2)],
        'thresholds': [Fraction(0), Fraction(3, 255), Fraction(-2, 255), Fraction(1, 7),
                       Fraction(-5, 9), Fraction(float(np.float32(0.3)))]}
    for kind, alpha in cases.items():
        beta = [Fraction(float(np.float32(v))) for v in rng.randn(6) * 3]
        op = requant_op('t', 0, (6,), lo, hi, alpha, beta, q, 255)
        assert op.kind == f'requant ({kind})'
        got = op.run([x])
        want = np.array([[min(max(math.floor((a * int(v) + b) / q + Fraction(1, 2)), 0), 255)
                          for v, a, b in zip(row, alpha, beta)] for row in x])
        np.testing.assert_array_equal(got, want, err_msg=kind)
        assert (got[:, 0] == got[0, 0]).all()  # alpha = 0: a constant code


@pytest.mark.parametrize('divisor', [128, 127.5])
def test_input_scaling_is_lowered_exactly(tmp_path, divisor):
    """x / 128 - 1 is (p - 128) * 2^-7: the first layer requantizes by shifts; the examples'
    x / 127.5 - 1 is (2 p - 255) / 255: one shift and one add per pixel, then thresholds."""
    path = tiny_network(tmp_path / 'in.nnp', divisor=divisor)
    net = IntegerNetwork.from_nnp(path)
    first = net.program.ops[0]
    rows = net.op_counts()
    if divisor == 128:
        assert (first.m, first.n) == (1, -128) and float(first.alpha[0]) == 2 ** -7
        assert rows[0]['adds'] == 16 and rows[0]['shifts'] == 0
        assert 'requant (shift)' in [op.kind for op in net.program.ops]
    else:
        assert (first.m, first.n) == (2, -255) and first.alpha[0] == Fraction(1, 255)
        assert rows[0]['adds'] == rows[0]['shifts'] == 16
        assert 'requant (thresholds)' in [op.kind for op in net.program.ops]
    x = np.random.RandomState(4).randint(0, 256, (2000, 1, 4, 4)).astype(np.uint8)
    compared, left_out, _, _ = _compare_all(net, path, x, 1.0)
    assert compared == 2000 * 8 and left_out <= (0 if divisor == 128 else 2)
    assert verify_int(path, x[:200])['agreement'] >= 0.995


def test_op_counts_of_a_small_network_by_hand(tmp_path):
    net = IntegerNetwork.from_nnp(tiny_network(tmp_path / 'tiny.nnp'), input_scale=1 / 16)
    rows = {r['op']: r for r in net.op_counts()}
    # conv: 2 maps x 2x2 positions x 9 taps, every tap in bounds: 72 partial-sum adds.
    # Integer dictionary D = d / 2^-3 = [-4, -1, 2, 8]. Map 0 combines 4 sums per position
    # (4 adds, 4 look-ups, shifts by 2, 1, 3 for -4, 2, 8); map 1 combines 2 (D = -1, 8: 2 adds,
    # 2 look-ups, 1 shift). x 4 positions: 72 + 16 + 8 adds, 16 + 8 look-ups, 12 + 4 shifts.
    assert {k: rows['LUT-Q conv'][k] for k in ('float_macs', 'adds', 'shifts', 'compares',
                                               'lookups', 'mults')} == \
        dict(float_macs=72, adds=96, shifts=16, compares=0, lookups=24, mults=0)
    # requant of 8 values: scale ratios 2^-4 and -2^-2: one add (bias) + one shift + clamp
    # (2 comparisons) each
    assert {k: rows['requant (shift)'][k] for k in ('adds', 'shifts', 'compares', 'lookups',
                                                    'mults')} == \
        dict(adds=8, shifts=8, compares=16, lookups=0, mults=0)
    # 2x2 average pooling of 2 maps: 3 adds per map
    assert rows['sum pool']['adds'] == 6
    # affine 2 -> 3, D = [-1, 2]: 6 taps; output 0 and 2 combine 2 sums (one shift), output 1
    # one sum (D = 2: one shift): 6 + 5 adds, 5 look-ups, 3 shifts
    assert {k: rows['LUT-Q affine'][k] for k in ('float_macs', 'adds', 'shifts', 'lookups',
                                                 'mults')} == \
        dict(float_macs=6, adds=11, shifts=3, lookups=5, mults=0)
    # logits: each of 3 shifted onto the logit grid plus its bias
    assert (rows['align + add']['adds'], rows['align + add']['shifts']) == (3, 3)
    total = net.op_counts()[-1]
    assert {k: total[k] for k in ('float_macs', 'adds', 'shifts', 'compares', 'lookups',
                                  'mults')} == \
        dict(float_macs=78, adds=124, shifts=30, compares=16, lookups=29, mults=0)
    # with an EMA step (3/255) the requantization is a threshold search: 8 comparisons and 8
    # look-ups per value, and the negation of the values of the map with a negative scale
    net = IntegerNetwork.from_nnp(tiny_network(tmp_path / 't2.nnp', 'minmax'), input_scale=1 / 16)
    rq = [r for r in net.op_counts() if r['op'] == 'requant (thresholds)'][0]
    assert (rq['compares'], rq['lookups'], rq['adds'], rq['mults']) == (64, 64, 4, 0)


@pytest.mark.slow
def test_free_dictionary_counts_its_multiplications(digits):
    path = digits['files']['free-bn-ema']
    net = IntegerNetwork.from_nnp(path, input_scale=1 / 16)
    model = read_nnp(path)
    rows = net.op_counts()
    for r, op in zip(rows, net.program.ops):
        if isinstance(op, (O.LutConvOp, O.LutAffineOp)):
            a = model.params[op.a_name]
            a = a.reshape(a.shape[0], -1) if op.kind == 'LUT-Q conv' else a.T
            positions = op.size // a.shape[0]
            # one look-up per distinct index of an output channel per output; each of those
            # values is a multiplication unless it is a power of two (then a shift)
            distinct = sum(len(np.unique(row)) for row in a) * positions
            assert r['lookups'] == distinct and r['mults'] + r['shifts'] <= distinct
            assert r['mults'] > distinct // 2
            assert r['mults'] <= min(16 * op.size, r['float_macs'])
    assert not net.multiplier_less and rows[-1]['mults'] > 0


def test_dense_export_is_lowered_like_tables(tmp_path):
    """export_nnp(dense=True) stores d[A] as W; lutq.json says it is a table, so the executor
    recovers (A, d) and computes the same integers."""
    layers = DIGITS['pow2-mlbn-pow2act']
    with nn.parameter_scope('net'):
        digits_cnn(nn.Variable((2, 1, 8, 8)), layers)
    nnabla_lutq.initialize()
    x = nn.Variable((1, 1, 8, 8))
    with nnabla_lutq.inference_mode(), nn.parameter_scope('net'):
        y = digits_cnn(x, layers, test=True)
    nnabla_lutq.export_nnp(str(tmp_path / 't.nnp'), {'x': x}, {'y': y})
    nnabla_lutq.export_nnp(str(tmp_path / 'd.nnp'), {'x': x}, {'y': y}, dense=True)
    assert 'Embed' not in [f.type for f in read_nnp(str(tmp_path / 'd.nnp')).proto.network[0]
                           .function]
    tables = IntegerNetwork.from_nnp(str(tmp_path / 't.nnp'), input_scale=1 / 16)
    dense = IntegerNetwork.from_nnp(str(tmp_path / 'd.nnp'), input_scale=1 / 16)
    codes = np.random.RandomState(2).randint(0, 17, (40, 1, 8, 8)).astype(np.uint8)
    np.testing.assert_array_equal(tables(codes)[0], dense(codes)[0])
    assert tables.op_counts() == dense.op_counts()


# --- agreement with nnabla's float simulation -----------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize('name', list(DIGITS))
def test_digits_argmax_agrees_with_nnabla(digits, name, tmp_path):
    data = tmp_path / 'test.npz'
    np.savez(data, x=digits['x'], y=digits['y'])
    x, y = load_eval_data(str(data))
    res = verify_int(digits['files'][name], x, y, input_scale=1 / 16)
    assert res['n'] == 360 and res['agreement'] >= 0.995
    assert abs(res['accuracy_int'] - res['accuracy_float']) <= 0.005
    assert res['multiplier_less'] == (name != 'free-bn-ema')
    assert 'argmax agreement' in res['report'] and 'total' in res['table']


@pytest.mark.slow
def test_resnet20_lutq4_pow2_mlbn_act8_agrees_with_nnabla(resnets):
    res = verify_int(resnets['files']['ema'], resnets['x'], resnets['y'])
    # EMA steps make the integer path approximate (requantization by thresholds, residual sums
    # by multipliers): its logits stay within 2 % of the logit range (1.05 % measured). The argmax
    # agreement of this 6-step model is not asserted: it only counts near-ties (the 3 flips of 200
    # had float margins of 0.001-0.005 against a largest logit difference of 0.017).
    assert res['max_abs_diff'] <= 0.02 * res['max_abs_logit']
    rows = res['op_counts']
    assert rows[-1]['float_macs'] == 40_813_184  # 19 convolutions + 2 shortcuts + fc
    # with EMA steps, only the 9 residual sums multiply: one multiplier per value
    mults = {r['layer']: r['mults'] for r in rows[:-1] if r['mults']}
    assert len(mults) == 9 and all(k.endswith('/add') for k in mults)
    assert sum(mults.values()) == 3 * (16 * 32 * 32 + 32 * 16 * 16 + 64 * 8 * 8)
    assert rows[-1]['bits'] <= 32


@pytest.mark.slow
def test_resnet20_with_pow2_steps_is_multiplier_less_and_exact_after_the_input(resnets):
    path = resnets['files']['pow2']
    res = verify_int(path, resnets['x'], resnets['y'])
    assert res['agreement'] >= 0.995 and res['multiplier_less']
    net = IntegerNetwork.from_nnp(path)
    # the input x / 127.5 - 1 becomes (2 p - 255) / 255: a shift and an add per pixel; the
    # first layer's scale then is not a power of two (thresholds), every later one is (shifts)
    first = net.program.ops[0]
    assert (first.m, first.n) == (2, -255)
    kinds = [op.kind for op in net.program.ops]
    assert kinds.count('requant (thresholds)') == 1 and kinds.count('requant (shift)') == 18
    compared, left_out, _, _ = _compare_all(net, path, resnets['x'][:6], 1.0)
    assert compared > 6 * 100_000 and left_out == 0


# --- the C program ----------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(shutil.which('cc') is None, reason='no C compiler')
def test_c_program_reproduces_the_logits(tmp_path, digits, resnets):
    tiny = tiny_network(tmp_path / 'tiny.nnp', 'minmax')
    cases = [(digits['files']['pow2-mlbn-pow2act'], 1 / 16, digits['x'][:50]),  # shifts
             (digits['files']['free-bn-ema'], 1 / 16, digits['x'][:50]),  # mults, thresholds
             (tiny, 1 / 16, np.random.RandomState(0).randint(0, 256, (50, 1, 4, 4), np.uint8)),
             (geometry_network(tmp_path / 'g.nnp'), 1 / 16,
              np.random.RandomState(0).randint(0, 256, (50, 2, 5, 5), np.uint8)),
             (resnets['files']['ema'], 1.0, resnets['x'][:3])]  # residual multipliers
    for k, (path, scale, x) in enumerate(cases):
        net = IntegerNetwork.from_nnp(path, input_scale=scale)
        src, exe = tmp_path / f'net{k}.c', tmp_path / f'net{k}'
        net.write_c(str(src))
        subprocess.run(['cc', '-O1', '-std=c99', '-o', str(exe), str(src)], check=True)
        out = subprocess.run([str(exe)], input=x.tobytes(), capture_output=True,
                             check=True).stdout.decode()
        got = np.array([[int(v) for v in line.split()] for line in out.strip().split('\n')])
        np.testing.assert_array_equal(got, net(x)[0])


# --- accumulator bounds and refusals --------------------------------------------------------

def _conv_net(path, d, act=True, extra=None):
    nn.clear_parameters()
    x = nn.Variable((1, 1, 5, 5))
    a = np.ones((2, 1, 3, 3), np.int32)
    a[0, 0, 0, 0] = 0
    h = F.convolution(x, F.embed(_param('big/A', a), _param('big/d', np.float32(d))), None)
    if extra:
        h = extra(h)
    if act:
        h = F.fixed_point_quantize(F.relu(h), sign=False, n=8, delta=2 ** -4)
    nnabla_lutq.export_nnp(str(path), {'x': x}, {'y': F.average_pooling(h, (3, 3))})
    return str(path)


def test_accumulator_bound_is_proven_or_refused(tmp_path):
    # exponents 2^-30 .. 2^0 with fan-in 9: 9 * 255 * 2^30 does not fit int32
    path = _conv_net(tmp_path / 'big.nnp', [-2.0 ** -30, 1.0])
    with pytest.raises(ValueError, match=r"big \(LUT-Q conv\).*pow2_range.*acc_bits=64"):
        IntegerNetwork.from_nnp(path)
    net = IntegerNetwork.from_nnp(path, acc_bits=64)
    conv = net.program.ops[1]
    # D = [-1, 2^30]; map 1 has nine taps of 2^30, map 0 eight and one of -1
    assert conv.bound == 9 * 255 * 2 ** 30 and conv.bits == 43
    assert list(conv.hi) == [8 * 255 * 2 ** 30, 9 * 255 * 2 ** 30]
    assert list(conv.lo) == [-255, 0]
    x = np.full((1, 1, 5, 5), 255, np.uint8)
    assert net.run(x, keep=True)[1].max() == 9 * 255 * 2 ** 30  # the bound is reached
    # a modest span fits: the proven bound is the sum of |weight| * 255 per output
    net = IntegerNetwork.from_nnp(_conv_net(tmp_path / 'ok.nnp', [-0.25, 1.0]))
    assert net.program.ops[1].bound == 9 * 4 * 255


def test_refusals_name_the_function(tmp_path, rng):
    # a float (non-LUT-Q) convolution
    nn.clear_parameters()
    x = nn.Variable((1, 1, 8, 8))
    y = PF.affine(F.relu(PF.convolution(x, 2, (3, 3), name='fconv')), 3, name='fc')
    nnabla_lutq.export_nnp(str(tmp_path / 'f.nnp'), {'x': x}, {'y': y})
    with pytest.raises(ValueError, match=r"Convolution\).*fconv/conv/W is a float parameter"):
        IntegerNetwork.from_nnp(str(tmp_path / 'f.nnp'))
    # a LUT-Q network without activation quantization
    nn.clear_parameters()
    layers = Layers(lutq=True, n_values=4, dictionary='pow2', mlbn=True)
    with nn.parameter_scope('net'):
        digits_cnn(nn.Variable((2, 1, 8, 8)), layers)
    path = _export(tmp_path / 'noact.nnp', digits_cnn, layers, (1, 8, 8))
    with pytest.raises(ValueError, match=r"\(Convolution\): reads the ReLU output .* before it "
                                         r"is quantized.*--act-bits 8"):
        IntegerNetwork.from_nnp(path, input_scale=1 / 16)
    # an unsupported function
    path = _conv_net(tmp_path / 'tanh.nnp', [-0.5, 0.5], extra=F.tanh)
    with pytest.raises(ValueError, match=r"\(Tanh\): the integer executor cannot lower"):
        IntegerNetwork.from_nnp(path)
    # inputs must be pixel codes
    net = IntegerNetwork.from_nnp(_conv_net(tmp_path / 'ok.nnp', [-0.5, 0.5]))
    with pytest.raises(ValueError, match='uint8'):
        net(rng.rand(1, 1, 5, 5))
    with pytest.raises(ValueError, match=r'\[0, 255\]'):
        net(np.full((1, 1, 5, 5), 300))
    np.savez(tmp_path / 'bad.npz', labels=np.zeros(3))
    with pytest.raises(ValueError, match="no array 'x'"):
        load_eval_data(str(tmp_path / 'bad.npz'))


# --- the integer-friendly activation option -------------------------------------------------

def test_pow2_activation_option(rng):
    layers = Layers(act_bits=8, act_quant='pow2')
    assert layers.act_step() == 2 ** -5 and Layers(act_bits=4, act_quant='pow2').act_step() == 0.5
    x = nn.Variable((2, 3, 4, 4))
    y = layers.act(x, test=True, name='a')
    assert y.parent.info.type_name == 'FixedPointQuantize'
    x.d = rng.randn(*x.shape) * 6
    y.forward()
    codes = y.d / 2 ** -5
    np.testing.assert_array_equal(codes, np.rint(codes))
    assert y.d.min() == 0 and y.d.max() == 255 * 2 ** -5
    np.testing.assert_array_equal(codes, np.clip(np.floor(np.maximum(x.d, 0) * 32 + 0.5), 0,
                                                 255))
    assert Layers(act_bits=8).act(x, True, 'b').parent.info.type_name == 'MinMaxQuantize'
    with pytest.raises(ValueError, match='power of two'):
        Layers(act_bits=8, act_quant='pow2', act_max=6.0).act(x, True, 'c')
    with pytest.raises(ValueError, match="'ema' or 'pow2'"):
        configs.parse('lutq4', act_bits=8, act_quant='log')
    c = configs.parse('lutq2-pow2-mlbn', act_bits=8, act_quant='pow2', pow2_range=(-8, -1))
    assert (c.act_quant, c.pow2_range) == ('pow2', (-8, -1))
    assert 'step 2^-5' in configs.describe(c)


def test_fully_multiplier_less_configurations_default_to_a_pow2_activation_step():
    """With --act-bits, -pow2-mlbn and binary/ternary-mlbn get the power-of-two step (no
    multiplication left); every other configuration keeps the tracked range; a choice given
    explicitly wins; a run folder of an older version (no act_quant recorded) stays ema."""
    from examples.common.args import setting
    for name, want in (('lutq2-pow2-mlbn', 'pow2'), ('lutq4-pow2-mlbn-prune50', 'pow2'),
                       ('lutq-ternary-mlbn', 'pow2'), ('lutq-binary-mlbn', 'pow2'),
                       ('lutq4-pow2', 'ema'), ('lutq4-mlbn', 'ema'), ('lutq-ternary', 'ema'),
                       ('lutq2', 'ema'), ('float', 'ema')):
        assert configs.parse(name, act_bits=8).act_quant == want, name
    assert configs.parse('lutq2-pow2-mlbn', act_bits=8, act_quant='ema').act_quant == 'ema'
    assert configs.parse('lutq4', act_bits=8, act_quant='pow2').act_quant == 'pow2'
    import argparse
    assert setting(argparse.Namespace(), 'act_quant') == 'ema'


@pytest.mark.slow
def test_verify_int_command(digits, tmp_path, capsys):
    """`nnabla-lutq verify-int`: the agreement and op table, as text and JSON, a C file; a float
    model is a one-line error."""
    import json
    from nnabla_lutq import cli
    data = tmp_path / 'test.npz'
    np.savez(data, x=digits['x'], y=digits['y'])
    path = digits['files']['pow2-mlbn-pow2act']
    argv = ['verify-int', path, '--eval-data', str(data), '--input-scale', '0.0625',
            '--limit', '50']
    assert cli.main(argv + ['--c', str(tmp_path / 'net.c')]) == 0
    out = capsys.readouterr().out
    assert 'integer executor vs nnabla' in out and 'on 50 images' in out
    assert '0 multiplications (multiplier-less)' in out and (tmp_path / 'net.c').stat().st_size
    assert cli.main(argv + ['--json']) == 0
    res = json.loads(capsys.readouterr().out)
    want = verify_int(path, digits['x'][:50], digits['y'][:50], input_scale=1 / 16)
    assert res['n'] == 50 and res['agree'] == want['agree'] and res['multiplier_less']
    assert res['op_counts'][-1]['mults'] == 0
    # a model with float weights: one line naming the function
    x = nn.Variable((1, 1, 8, 8))
    with nnabla_lutq.inference_mode():
        y = PF.affine(x, 3, name='fc')
    nnabla_lutq.export_nnp(str(tmp_path / 'float.nnp'), {'x': x}, {'y': y})
    assert cli.main(['verify-int', str(tmp_path / 'float.nnp'), '--eval-data', str(data)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'Affine' in err[0] and err[0].startswith('nnabla-lutq: error:')
