# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Whole-network conversion (nnabla_lutq.convert, LUTQModifier, conversion_plan).

The reference for every conversion is the same network written with the LUT-Q parametric
functions (``PF.lutq_*`` / ``PF.mlbn``) from the same float weights, built in a separate run
(parameters cleared in between) so both live under the same names: parameters, outputs, training
steps with the k-means step, report, export, pack and ONNX must be identical.
"""
import os
import re
import warnings

import numpy as np
import pytest
import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF
import nnabla.solvers as S
import nnabla.experimental.graph_converters as GC

import nnabla_lutq
from nnabla_lutq import LayerConfig, LUTQModifier, convert
from nnabla_lutq.nn import layers as LPF
from nnabla_lutq.nn.convert import ConversionPlan, conversion_plan
from nnabla_lutq.nn.state import STATE, all_parameters

B = 4
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# per-layer settings of the test network, written out for the reference (None: float)
SETTINGS = {
    'c1': LayerConfig(dictionary=(-1.0, 0.0, 1.0)),
    'g2': LayerConfig(4),
    'dw': LayerConfig(4, prune_ratio=0.25),
    'pw': LayerConfig(4),
    'shared': LayerConfig(4, 'pow2'),
    'ba2': LayerConfig(4),
    'fc': LayerConfig(8, 'pow2', pow2_range=(-8, 0)),
    'fc2': None,
}
# the same as converter arguments
CONVERT = dict(config=LayerConfig(4),
               overrides={'c1': LayerConfig(dictionary=[-1, 0, 1]),
                          'd*': LayerConfig(4, prune_ratio=0.25),
                          'shared': LayerConfig(4, 'pow2'),
                          'fc': LayerConfig(8, 'pow2', pow2_range=(-8, 0)),
                          'fc2': None},
               mlbn=True)


class Builder:
    """Builds the test network with nnabla's float functions, or with the LUT-Q functions from
    given float arrays (the independent reference)."""

    def __init__(self, init=None, settings=None, mlbn=True):
        self.init, self.settings, self.mlbn = init, settings, mlbn
        self.rng = np.random.RandomState(7)

    def _cfg(self, name):
        return None if self.init is None else self.settings[name]

    def conv(self, x, name, outmaps, kernel, **kw):
        cfg = self._cfg(name)
        if cfg is None and self.init is None:
            return PF.convolution(x, outmaps, kernel, rng=self.rng, name=name, **kw)
        w, b = self.init[f'{name}/conv/W'], self.init.get(f'{name}/conv/b')
        if cfg is None:
            return PF.convolution(x, outmaps, kernel, w_init=w, b_init=b, name=name, **kw)
        return LPF.lutq_convolution(x, outmaps, kernel, w_init=w, b_init=b, name=name,
                                    **kw, **cfg.kwargs())

    def dwconv(self, x, name, kernel, **kw):
        cfg = self._cfg(name)
        if cfg is None:
            return PF.depthwise_convolution(x, kernel, rng=self.rng, name=name, **kw)
        return LPF.lutq_depthwise_convolution(
            x, kernel, w_init=self.init[f'{name}/depthwise_conv/W'],
            b_init=self.init.get(f'{name}/depthwise_conv/b'), name=name, **kw, **cfg.kwargs())

    def affine(self, x, name, outmaps, **kw):
        cfg = self._cfg(name)
        if self.init is None:
            return PF.affine(x, outmaps, rng=self.rng, name=name, **kw)
        w, b = self.init[f'{name}/affine/W'], self.init.get(f'{name}/affine/b')
        if cfg is None:
            return PF.affine(x, outmaps, w_init=w, b_init=b, name=name, **kw)
        return LPF.lutq_affine(x, outmaps, w_init=w, b_init=b, name=name, **kw, **cfg.kwargs())

    def bn(self, x, name, test, axes=(1,)):
        if self.init is None or not self.mlbn:
            init = None if self.init is None else {
                k: self.init[f'{name}/bn/{k}'] for k in ('beta', 'gamma', 'mean', 'var')}
            return PF.batch_normalization(x, axes=list(axes), batch_stat=not test,
                                          param_init=init, name=name)
        init = {k: self.init[f'{name}/bn/{k}'] for k in ('beta', 'gamma', 'mean', 'var')}
        return LPF.mlbn(x, axes=list(axes), batch_stat=not test, param_init=init, name=name)


def network(b, x, test, base_axis2=True):
    """Grouped + dilated conv without bias, depthwise with multiplier, residual adds, one
    weight used by two convolutions, base_axis=2 convolution and affine, tuple outmaps."""
    h = b.conv(x, 'c1', 8, (3, 3), pad=(1, 1))
    h = F.relu(b.bn(h, 'b1', test))
    h = b.conv(h, 'g2', 8, (3, 3), pad=(2, 2), dilation=(2, 2), group=2, with_bias=False)
    h = b.bn(h, 'b2', test)
    r = b.dwconv(h, 'dw', (3, 3), pad=(1, 1), multiplier=2)
    r = b.conv(F.relu(r), 'pw', 8, (1, 1), with_bias=False)
    h = F.relu(h + r)
    s = b.conv(h, 'shared', 8, (1, 1))
    s = b.conv(F.relu(s), 'shared', 8, (1, 1))
    h = h + s
    if base_axis2:
        h5 = F.reshape(h, (B, 2, 4, 8, 8))
        h5 = b.conv(h5, 'ba2', 4, (3, 3), pad=(1, 1), stride=(2, 2), base_axis=2)
        y2 = b.affine(h5, 'fc2', 3, base_axis=2)
        h = F.reshape(h5, (B, 8, 4, 4))
    else:  # export_nnp's variable batch size cannot reload base_axis=2 convolutions
        h = b.conv(h, 'ba2', 8, (3, 3), pad=(1, 1), stride=(2, 2))
        y2 = b.affine(h, 'fc2', 3)
    h = F.average_pooling(h, (2, 2))
    y = b.affine(h, 'fc', (2, 5))
    return y, y2


def _float_weights(base_axis2=True):
    """Float parameters of the test network (BN statistics randomized too), as arrays."""
    nn.clear_parameters()
    x = nn.Variable((B, 4, 8, 8))
    network(Builder(), x, False, base_axis2)
    rng = np.random.RandomState(11)
    out = {}
    for k, v in nn.get_parameters(grad_only=False).items():
        if '/bn/' in k:
            v.d = rng.uniform(0.5, 1.5, v.shape) if k.endswith(('gamma', 'var')) else \
                rng.randn(*v.shape) * 0.1
        out[k] = v.d.copy()
    nn.clear_parameters()
    return out


def _load(values):
    for k, v in nn.get_parameters(grad_only=False).items():
        v.d = values[k]


def _params():
    return {k: (v.d.copy(), v.data.dtype) for k, v in all_parameters().items()}


def _batches(n):
    rng = np.random.RandomState(5)
    return [(rng.randn(B, 4, 8, 8), rng.randn(B, 2, 5), rng.randn(B, 2, 3)) for _ in range(n)]


def _build(kind, init, together=True, mlbn=True):
    """The training graph, the test graph and the input, written with the LUT-Q functions
    ('ref') or converted from the float network ('convert')."""
    x = nn.Variable((B, 4, 8, 8))
    if kind == 'ref':
        b = Builder(init, SETTINGS, mlbn)
        return network(b, x, False), network(b, x, True), x, None
    b = Builder()
    train, test = network(b, x, False), network(b, x, True)
    _load(init)
    settings = dict(CONVERT, mlbn=mlbn)
    if together:
        outs, plan = convert(list(train) + list(test), return_decisions=True, **settings)
        return tuple(outs[:2]), tuple(outs[2:]), x, plan
    train_c, plan = convert(train, return_decisions=True, **settings)
    return train_c, convert(test, **settings), x, plan


def _run(kind, init, together=True, mlbn=True, steps=3):
    """Everything observable about a network after building and training it."""
    (y, y2), (yt, yt2), x, plan = _build(kind, init, together, mlbn)
    facts = {'names': list(nn.get_parameters(grad_only=False)), 'init': _params(),
             'layers': [(r.name, r.kind, r.config) for r in STATE.lutq_layers()],
             'mlbn': [(r.name, r.eps, r.axes) for r in STATE.mlbn_layers()]}
    t, t2 = nn.Variable(y.shape), nn.Variable(y2.shape)
    loss = F.mean(F.squared_error(y, t)) + F.mean(F.squared_error(y2, t2))
    solver = nnabla_lutq.LUTQSolver(S.Momentum(0.05, 0.9), kmeans_iters=2)
    solver.set_parameters(nn.get_parameters())
    facts['solver_layers'] = [r.name for r in solver.layers]
    facts['steps'] = []
    for xb, tb, tb2 in _batches(steps):
        x.d, t.d, t2.d = xb, tb, tb2
        loss.forward()
        solver.zero_grad()
        loss.backward()
        solver.weight_decay(1e-4)
        solver.update()
        F.sink(yt, yt2).forward()
        facts['steps'].append((loss.d.copy(), y.d.copy(), y2.d.copy(), yt.d.copy(),
                               yt2.d.copy(), _params()))
    return facts, plan


def _assert_same(a, b, path='facts'):
    if isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            _assert_same(a[k], b[k], f'{path}[{k!r}]')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (u, v) in enumerate(zip(a, b)):
            _assert_same(u, v, f'{path}[{i}]')
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert np.array_equal(a, b), f"{path}: max diff {np.abs(a - b).max()}"
    else:
        assert a == b, path


@pytest.fixture(scope='module')
def float_init():
    return _float_weights()


@pytest.mark.parametrize('together, mlbn', [(True, True), (False, True), (True, False)])
def test_converted_network_is_bit_identical_to_lutq_functions(float_init, together, mlbn):
    ref, _ = _run('ref', float_init, mlbn=mlbn)
    nn.clear_parameters()
    with warnings.catch_warnings():  # nothing in this network stays float unexpectedly
        warnings.filterwarnings('error', message='LUT-Q conversion')
        got, plan = _run('convert', float_init, together, mlbn)
    _assert_same(ref, got)
    assert 'shared/lutq_conv/W' in got['names'] and 'fc2/affine/W' in got['names']
    assert not any('/conv/' in n for n in got['names'])
    assert any('/bn/' in n for n in got['names']) == (not mlbn)
    assert len(got['mlbn']) == (2 if mlbn else 0)
    assert got['init']['c1/lutq_conv/A'][1] == np.int32
    by_name = {d.name: d for d in plan}
    assert by_name['shared'].n_functions == (4 if together else 2)
    assert by_name['fc2'].action == 'float' and not by_name['fc2'].unexpected
    assert by_name['dw'].config.n_pruned == 36
    assert by_name['c1'].parameters == {'c1/conv/W': 'c1/lutq_conv/W',
                                        'c1/conv/b': 'c1/lutq_conv/b'}
    if mlbn:
        assert by_name['b1'].parameters['b1/bn/gamma'] == 'b1/mlbn/gamma'
    else:
        assert by_name['b1'].action == 'float' and by_name['b1'].reason == 'mlbn=False'


def test_conversion_in_each_context_matches_the_lutq_functions(ctx):
    xd = np.random.RandomState(0).randn(2, 3, 8, 8)
    outs = []
    for kind in ('ref', 'convert'):
        nn.clear_parameters()
        with nn.context_scope(ctx):
            x = nn.Variable.from_numpy_array(xd)
            w0, w1 = rng_w(0, (4, 3, 3, 3)), rng_w(1, (144, 5))
            if kind == 'ref':
                h = LPF.lutq_convolution(x, 4, (3, 3), w_init=w0, n_values=4, name='c')
                h = F.relu(LPF.mlbn(h, batch_stat=False, name='bn'))
                y = LPF.lutq_affine(h, 5, w_init=w1, n_values=8, name='fc')
            else:
                h = PF.convolution(x, 4, (3, 3), w_init=w0, name='c')
                h = F.relu(PF.batch_normalization(h, batch_stat=False, name='bn'))
                y = convert(PF.affine(h, 5, w_init=w1, name='fc'), LayerConfig(4),
                            overrides={'fc': LayerConfig(8)}, mlbn=True)
            y.forward()
        outs.append(y.d.copy())
    assert np.array_equal(*outs)


def test_parameters_are_moved_not_copied(float_init):
    x = nn.Variable((B, 4, 8, 8))
    y, y2 = network(Builder(), x, False)
    w = nn.get_parameters()['g2/conv/W']
    with pytest.raises(ValueError, match=r"\['fc2'\] match no"):  # not in the graph of y
        convert(y, **CONVERT)
    convert([y, y2], **CONVERT)
    assert nn.get_parameters()['g2/lutq_conv/W'] is w  # the registered variable itself
    assert 'g2/conv' not in nn.get_parameters(grad_only=False) and 'g2' in nn.parameter.root_scope
    assert 'conv' not in nn.parameter.root_scope['g2']  # no empty scope left behind


def test_inference_mode_conversion_exports_like_the_lutq_functions(tmp_path):
    from nnabla_lutq.io.nnp import read_nnp
    from nnabla_lutq.io.packed import pack
    xb = _batches(1)[0][0]
    init = _float_weights(base_axis2=False)
    results = {}
    for kind in ('ref', 'convert'):
        nn.clear_parameters()
        x = nn.Variable((B, 4, 8, 8))
        if kind == 'ref':
            b = Builder(init, SETTINGS)
            network(b, x, False, False)
            with nnabla_lutq.inference_mode():
                y, y2 = network(b, x, True, False)
        else:
            b = Builder()
            train, test = network(b, x, False, False), network(b, x, True, False)
            _load(init)
            convert(train, **CONVERT)
            with nnabla_lutq.inference_mode():
                y, y2 = convert(list(test), **CONVERT)
        assert not any(part == 'W' for part in _graph_parts(y)), kind  # tables only
        assert nnabla_lutq.initialize() == [r.name for r in STATE.lutq_layers()]
        x.d = xb
        F.sink(y, y2).forward()
        path = str(tmp_path / f'{kind}.nnp')
        saved = nnabla_lutq.export_nnp(path, {'x': x}, {'y': y, 'y2': y2}, batch_size=B)
        model = read_nnp(path)
        pack(path, str(tmp_path / f'{kind}.lutq'))
        results[kind] = {'y': y.d.copy(), 'y2': y2.d.copy(), 'saved': saved,
                         'params': dict(model.params), 'meta': model.meta,
                         'proto': str(model.proto), 'report': str(nnabla_lutq.report(y)),
                         'packed': _packed(str(tmp_path / f'{kind}.lutq'))}
    # the files differ only in why fc2 is float: built so, or kept so by the conversion
    reasons = {k: r['meta']['float_layers']['fc2/affine'].pop('reason') for k, r in results.items()}
    assert reasons == {'ref': 'built as a float layer (not a PF.lutq_* layer, not converted)',
                       'convert': "override 'fc2': kept float"}
    _assert_same(results['ref'], results['convert'])


def _packed(path):
    """What a .lutq holds but its description (which says why layers are float)."""
    from nnabla_lutq.io.packed import read_lutq
    model = read_lutq(path)
    return {'params': dict(model.params), 'need_grad': model.need_grad, 'proto': str(model.proto),
            'tables': model.meta['tables'], 'bn': model.meta['bn']}


def _graph_parts(y):
    parts = []

    def cb(f):
        for v in f.inputs:
            if v.parent is None:
                rec, part = STATE.part_of(v)
                parts.append(part)
    y.visit(cb)
    return parts


def test_onnx_export_of_a_converted_network(tmp_path):
    pytest.importorskip('nnabla.utils.converter.onnx')
    pytest.importorskip('onnxruntime')
    from nnabla_lutq.io.onnx import check_onnx
    xb = np.random.RandomState(0).randn(1, 3, 8, 8).astype(np.float32)
    outputs = {}
    for kind in ('ref', 'convert'):
        nn.clear_parameters()
        x = nn.Variable((1, 3, 8, 8))
        if kind == 'ref':
            with nnabla_lutq.inference_mode():
                h = LPF.lutq_convolution(x, 8, (3, 3), pad=(1, 1), w_init=rng_w(0, (8, 3, 3, 3)),
                                         n_values=4, name='c1')
                h = LPF.mlbn(h, batch_stat=False, name='b1')
                y = LPF.lutq_affine(F.relu(h), 5, w_init=rng_w(1, (512, 5)), n_values=4,
                                    name='fc')
        else:
            h = PF.convolution(x, 8, (3, 3), pad=(1, 1), w_init=rng_w(0, (8, 3, 3, 3)),
                               name='c1')
            h = PF.batch_normalization(h, batch_stat=False, name='b1')
            y = PF.affine(F.relu(h), 5, w_init=rng_w(1, (512, 5)), name='fc')
            with nnabla_lutq.inference_mode():
                y = convert(y, LayerConfig(4), mlbn=True)
        nnp = str(tmp_path / f'{kind}.nnp')
        nnabla_lutq.export_nnp(nnp, {'x': x}, {'y': y})
        info = nnabla_lutq.export_onnx(nnp, str(tmp_path / f'{kind}.onnx'))
        assert check_onnx(str(tmp_path / f'{kind}.onnx'), nnp, xb) < 1e-5
        import onnxruntime as ort
        sess = ort.InferenceSession(str(tmp_path / f'{kind}.onnx'))
        x0 = np.linspace(-1, 1, 192, dtype=np.float32).reshape(1, 3, 8, 8)
        outputs[kind] = (info, sess.run(None, {sess.get_inputs()[0].name: x0})[0])
    assert outputs['ref'][0] == outputs['convert'][0]
    assert np.array_equal(outputs['ref'][1], outputs['convert'][1])


def rng_w(seed, shape):
    return np.random.RandomState(seed).randn(*shape).astype(np.float32) * 0.2


def test_channel_last(tmp_path):
    """Channel-last BN becomes mlbn on the channel axis; a channel-last convolution becomes
    exactly the LUT-Q convolution PF.lutq_convolution(channel_last=True) builds."""
    x = nn.Variable((B, 6, 6, 3))
    gamma = np.random.RandomState(3).uniform(0.5, 2, (1, 1, 1, 3)).astype(np.float32)
    init = {'beta': np.full((1, 1, 1, 3), 0.1, np.float32), 'gamma': gamma,
            'mean': np.zeros((1, 1, 1, 3), np.float32), 'var': np.ones((1, 1, 1, 3), np.float32)}
    w = rng_w(4, (108, 7))
    outs = {}
    for kind in ('ref', 'convert'):
        nn.clear_parameters()
        x.d = np.random.RandomState(1).randn(*x.shape)
        if kind == 'ref':
            h = LPF.mlbn(x, axes=[3], param_init=init, name='bn')
            y = LPF.lutq_affine(h, 7, w_init=w, n_values=4, name='fc')
        else:
            h = PF.batch_normalization(x, axes=[3], param_init=init, name='bn')
            y = convert(PF.affine(h, 7, w_init=w, name='fc'), LayerConfig(4), mlbn=True)
        y.forward()
        outs[kind] = (y.d.copy(), STATE.mlbn_layers()[0].axes)
    _assert_same(outs['ref'], outs['convert'])

    # a channel-last convolution (weights (outmaps, *kernel, inmaps)): a non-square kernel and
    # distinct channel counts, so that a layout mix-up changes shapes; compared with its twin by
    # parameters and graph (nnabla's CPU backend cannot run it)
    x = nn.Variable((B, 6, 7, 5))
    w = rng_w(5, (4, 3, 2, 5))
    facts = {}
    for kind in ('ref', 'convert'):
        nn.clear_parameters()
        if kind == 'ref':
            y = LPF.lutq_convolution(x, 4, (3, 2), pad=(1, 0), channel_last=True, w_init=w,
                                     n_values=4, name='cl')
        else:
            y, plan = convert(PF.convolution(x, 4, (3, 2), pad=(1, 0), channel_last=True,
                                             w_init=w, name='cl'), LayerConfig(4),
                              return_decisions=True)
            assert plan[0].action == 'lutq'
        facts[kind] = ({k: v.d.copy() for k, v in nn.get_parameters(grad_only=False).items()},
                       y.shape, y.parent.info.type_name, dict(y.parent.info.args))
    _assert_same(facts['ref'], facts['convert'])
    assert facts['convert'][0]['cl/lutq_conv/A'].shape == (4, 3, 2, 5)
    assert facts['convert'][3]['channel_last'] and facts['convert'][1] == (B, 6, 6, 4)


def test_affine_with_base_axis_2_converts_like_its_twin():
    x = nn.Variable.from_numpy_array(np.random.RandomState(2).randn(B, 3, 2, 5))
    w = rng_w(6, (10, 4))
    outs = {}
    for kind in ('ref', 'convert'):
        nn.clear_parameters()
        if kind == 'ref':
            y = LPF.lutq_affine(x, 4, base_axis=2, w_init=w, n_values=4, name='fc')
        else:
            y = convert(PF.affine(x, 4, base_axis=2, w_init=w, name='fc'), LayerConfig(4))
        y.forward()
        outs[kind] = (y.d.copy(), {k: v.d.copy()
                                   for k, v in nn.get_parameters(grad_only=False).items()})
    _assert_same(outs['ref'], outs['convert'])
    assert outs['convert'][0].shape == (B, 3, 4)


def test_functions_that_cannot_be_converted_are_listed_in_one_warning():
    x = nn.Variable((B, 3, 8, 8))
    h = PF.convolution(x, 8, (3, 3), pad=(1, 1), name='c1')
    h = PF.deconvolution(h, 4, (2, 2), stride=(2, 2), name='up')
    h = PF.convolution(h, 4, (3, 3), pad=(1, 1), apply_w=lambda w: w * 0.5, name='wn')
    loose = nn.Variable.from_numpy_array(rng_w(2, (4, 4, 1, 1)))
    h = F.convolution(h, loose)
    h = PF.prelu(h, name='act')
    e = PF.embed(nn.Variable.from_numpy_array(np.arange(B, dtype=np.int32)), 5, 6, name='emb')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        (y, ye), plan = convert([h, e], LayerConfig(4), return_decisions=True)
    ours = [w for w in caught if 'LUT-Q conversion' in str(w.message)]
    assert len(ours) == 1
    text = str(ours[0].message)
    for part in ('up (Deconvolution)', 'wn (Convolution): its weight is computed (by MulScalar)',
                 'not a registered parameter', 'emb (Embed)'):
        assert part in text, (part, text)
    assert 'act' not in text  # a per-channel slope is not a weight
    actions = {d.name: (d.action, d.unexpected) for d in plan}
    assert actions['c1'] == ('lutq', False) and actions['up'] == ('float', True)
    assert actions['wn'] == ('float', True) and actions['act'] == ('float', False)
    assert sorted(nn.get_parameters()) == sorted([
        'c1/lutq_conv/W', 'c1/lutq_conv/b', 'up/deconv/W', 'up/deconv/b', 'wn/conv/W',
        'wn/conv/b', 'emb/embed/W', 'act/prelu/slope'])
    F.sink(y, ye).forward()  # the float functions still compute


def test_bias_shared_by_two_layers_keeps_both_float():
    from nnabla.parameter import get_parameter_or_create
    x = nn.Variable((2, 4, 6, 6))
    with nn.parameter_scope('l1/conv'):
        w1 = get_parameter_or_create('W', (4, 4, 3, 3), rng_w(0, (4, 4, 3, 3)))
    with nn.parameter_scope('l2/conv'):
        w2 = get_parameter_or_create('W', (4, 4, 3, 3), rng_w(1, (4, 4, 3, 3)))
    b = get_parameter_or_create('bias', (4,), np.zeros(4, np.float32))
    h = F.convolution(F.convolution(x, w1, b, pad=(1, 1)), w2, b, pad=(1, 1))
    h = PF.affine(h, 3, name='fc')
    with pytest.warns(UserWarning, match=r"l1 \(Convolution\): it shares the parameter bias "
                                         r"with \['l2'\]"):
        _, plan = convert(h, LayerConfig(4), return_decisions=True)
    assert [(d.name, d.action) for d in plan] == [('l1', 'float'), ('l2', 'float'),
                                                  ('fc', 'lutq')]
    assert sorted(nn.get_parameters()) == ['bias', 'fc/lutq_affine/W', 'fc/lutq_affine/b',
                                           'l1/conv/W', 'l2/conv/W']


def _snapshot():
    return ({k: (v, v.d.copy()) for k, v in all_parameters().items()},
            [(r.name, r.config) for r in STATE.lutq_layers()], len(STATE.mlbn_layers()))


def _unchanged(before):
    params, layers, n_mlbn = _snapshot()
    assert list(params) == list(before[0])
    for k, (v, d) in before[0].items():
        assert params[k][0] is v and np.array_equal(params[k][1], d), k
    assert layers == before[1] and n_mlbn == before[2]


def _small(test=False):
    x = nn.Variable((2, 3, 8, 8))
    h = PF.convolution(x, 4, (3, 3), name='res1/conv1')  # 108 weights
    h = PF.batch_normalization(h, batch_stat=not test, name='res1/bn1')
    return PF.affine(F.relu(h), 10, name='fc')  # 1440 weights


@pytest.mark.parametrize('kwargs, message', [
    (dict(overrides={'conv*': None, 'fc': LayerConfig(4)}),
     r"\['conv\*'\] match no .*the layers are \['res1/conv1', 'fc'\]"),
    (dict(config=LayerConfig(256)),
     r"res1/conv1: n_values=256 is larger than the layer's 108 weights.*overrides=\{'res1/conv1'"),
    (dict(overrides={'fc': LayerConfig(16, prune_ratio=0.995)}),
     r"fc: prune_ratio=0.995 leaves 7 weights"),
])
def test_errors_name_the_layer_and_change_nothing(kwargs, message):
    y = _small()
    before = _snapshot()
    with pytest.raises(ValueError, match=message):
        convert(y, **kwargs)
    _unchanged(before)
    with pytest.raises(ValueError, match=message):
        conversion_plan(y, **kwargs)
    with pytest.raises(ValueError, match=message):
        GC.GraphConverter([LUTQModifier(**kwargs)]).convert(y)
    _unchanged(before)


def test_the_two_rewrites_compose_in_graph_converter(rng):
    """LUTQWeightModifier then MLBNModifier in nnabla's GraphConverter = convert(mlbn=True): the
    same parameters (names, order, values) and the same outputs; each alone does its rewrite
    only."""
    from nnabla_lutq.nn.convert import LUTQWeightModifier, MLBNModifier
    init = {}
    results = []
    for how in ('convert', 'modifiers'):
        nn.clear_parameters()
        y = _small()
        x = [v for v in _leaves(y) if v.shape == (2, 3, 8, 8)][0]
        for k, v in all_parameters().items():
            v.d = init.setdefault(k, rng.rand(*v.shape).astype(np.float32) + 0.5)
        if how == 'convert':
            yc = convert(y, LayerConfig(4), mlbn=True)
        else:
            yc = GC.GraphConverter([LUTQWeightModifier(LayerConfig(4)), MLBNModifier()]).convert(y)
        x.d = np.linspace(-1, 1, x.size).reshape(x.shape)
        yc.forward()
        results.append(({k: v.d.copy() for k, v in all_parameters().items()}, yc.d.copy()))
    (pa, ya), (pb, yb) = results
    assert list(pa) == list(pb) and 'res1/bn1/mlbn/gamma' in pa and 'fc/lutq_affine/A' in pa
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)
    np.testing.assert_array_equal(ya, yb)
    nn.clear_parameters()
    y = _small()
    mod = MLBNModifier()
    GC.GraphConverter([mod]).convert(y)
    assert sorted(all_parameters()) == ['fc/affine/W', 'fc/affine/b', 'res1/bn1/mlbn/beta',
                                        'res1/bn1/mlbn/gamma', 'res1/bn1/mlbn/mean',
                                        'res1/bn1/mlbn/var', 'res1/conv1/conv/W',
                                        'res1/conv1/conv/b']
    assert [(d.name, d.action) for d in mod.decisions] == [('res1/bn1', 'mlbn')]
    nn.clear_parameters()
    y = _small()
    mod = LUTQWeightModifier(LayerConfig(4), min_weights=200)
    GC.GraphConverter([mod]).convert(y)
    assert [(d.name, d.action) for d in mod.decisions] == [('res1/conv1', 'float'), ('fc', 'lutq')]
    assert 'res1/bn1/bn/gamma' in all_parameters() and 'fc/lutq_affine/d' in all_parameters()


@pytest.mark.parametrize('batch_stat', [False, True])
def test_bn_without_scale_or_bias_becomes_the_same_mlbn(rng, batch_stat):
    """PF.batch_normalization(no_scale / no_bias / both) converts to PF.mlbn with the same
    arguments: the same parameters (names, values) and bit-identical outputs."""
    flags = [dict(no_scale=True), dict(no_bias=True), dict(no_scale=True, no_bias=True)]
    parts = [('beta', 'mean', 'var'), ('gamma', 'mean', 'var'), ('mean', 'var')]
    values = {f'b{i}/{k}': rng.rand(1, 3, 1, 1).astype(np.float32) + 0.5
              for i, ks in enumerate(parts) for k in ks}
    xd = rng.randn(4, 3, 5, 5).astype(np.float32)
    results = []
    for how in ('ref', 'convert'):
        nn.clear_parameters()
        h = nn.Variable.from_numpy_array(xd)
        for i, kw in enumerate(flags):
            init = {k: values[f'b{i}/{k}'] for k in parts[i]}
            if how == 'ref':
                h = LPF.mlbn(h, batch_stat=batch_stat, param_init=init, name=f'b{i}', **kw)
            else:
                h = PF.batch_normalization(h, batch_stat=batch_stat, param_init=init,
                                           name=f'b{i}', **kw)
        if how == 'convert':
            h, plan = convert(h, None, mlbn=True, return_decisions=True)
            assert [(d.name, d.action) for d in plan] == [(f'b{i}', 'mlbn') for i in range(3)]
        h.forward()
        results.append(({k: v.d.copy() for k, v in all_parameters().items()}, h.d.copy()))
    (pr, yr), (pc, yc) = results
    assert list(pc) == list(pr) == [f'b{i}/mlbn/{k}' for i, ks in enumerate(parts) for k in ks]
    for k in pr:
        np.testing.assert_array_equal(pc[k], pr[k], err_msg=k)
    np.testing.assert_array_equal(yc, yr)


def test_invalid_settings_are_refused_on_creation():
    for kw, message in [(dict(n_values=1), 'at least 2 values'),
                        (dict(dictionary='log'), "unknown dictionary 'log'"),
                        (dict(dictionary=[1, -1]), 'ascending order'),
                        (dict(prune_ratio=1.0), r'outside \[0, 1\)'),
                        (dict(pow2_range=(-3, 0)), "only used with dictionary='pow2'"),
                        (dict(n_values=16, dictionary='pow2', pow2_range=(-2, 0)),
                         'offers only 6 distinct values')]:
        with pytest.raises(ValueError, match='LayerConfig: .*' + message):
            LayerConfig(**kw)
    for kw in (dict(min_weights=-1), dict(mlbn=1), dict(overrides={'fc': 4}),
               dict(overrides={'fc': {'bits': 4}}), dict(config='free')):
        with pytest.raises(ValueError):
            LUTQModifier(**kw)
    assert LayerConfig(dictionary=[-1, 1]) == LayerConfig(dictionary=(-1, 1))
    assert LUTQModifier(overrides=[('fc', {'n_values': 4})]).overrides == [('fc', LayerConfig(4))]


def test_graph_with_lutq_layers_of_other_settings_is_refused():
    y = _small()
    yt = _small(test=True)
    convert(y, LayerConfig(4), mlbn=True)
    before = _snapshot()
    with pytest.raises(ValueError, match=r"res1/conv1: the graph already holds the LUT-Q layer "
                                         r"res1/conv1/lutq_conv with n_values=4.*n_values=8"):
        convert(yt, LayerConfig(8), mlbn=True)
    with pytest.raises(ValueError, match=r"fc: .*asks for float \(override 'fc': kept float\)"):
        convert(yt, LayerConfig(4), overrides={'fc': None}, mlbn=True)
    with pytest.raises(ValueError, match=r"res1/bn1: .*multiplier-less BN layer res1/bn1/mlbn"):
        convert(yt, LayerConfig(4))
    _unchanged(before)
    # the same settings: the test graph is rebuilt on the same parameters
    yt2, plan = convert(yt, LayerConfig(4), mlbn=True, return_decisions=True)
    assert [d.reason for d in plan] == ['rebuilt on the existing LUT-Q layer',
                                        'rebuilt on the existing mlbn layer',
                                        'rebuilt on the existing LUT-Q layer']
    _unchanged(before)
    # a graph written with the LUT-Q functions: kept as it is if the settings agree
    nn.clear_parameters()
    x = nn.Variable((2, 3, 8, 8))
    h = LPF.lutq_convolution(x, 4, (3, 3), n_values=4, name='c')
    yl = PF.affine(F.relu(h), 10, name='fc')
    with pytest.raises(ValueError, match="c: the graph already holds the LUT-Q layer c/lutq_conv"):
        convert(yl, LayerConfig(16))
    y2, plan = convert(yl, LayerConfig(16), overrides={'c': LayerConfig(4)},
                       return_decisions=True)
    assert [(d.name, d.action, d.reason) for d in plan] == [
        ('c', 'lutq', 'already a LUT-Q layer'), ('fc', 'lutq', 'default config')]
    x.d = np.random.RandomState(0).randn(*x.shape)
    nnabla_lutq.initialize()
    y2.forward()
    h = F.relu(LPF.lutq_convolution(x, 4, (3, 3), n_values=4, name='c'))
    ref = LPF.lutq_affine(h, 10, n_values=16, name='fc')
    ref.forward()
    assert np.array_equal(ref.d, y2.d)


def test_float_network_built_again_after_conversion_is_refused():
    convert(_small(), LayerConfig(4))
    y = _small(test=True)  # new float weights under the old names
    with pytest.raises(ValueError, match=r"res1/conv1: res1/conv1/lutq_conv already holds"):
        convert(y, LayerConfig(4))


def test_plan_min_weights_config_none_and_first_match():
    y = _small()
    before = _snapshot()
    plan = conversion_plan(y, LayerConfig(4), min_weights=200)
    assert isinstance(plan, ConversionPlan)
    assert [(d.name, d.action, d.reason) for d in plan] == [
        ('res1/conv1', 'float', '108 weights < min_weights=200'),
        ('res1/bn1', 'float', 'mlbn=False'),
        ('fc', 'lutq', 'default config')]
    plan = conversion_plan(y, None, overrides={'res*/conv1': LayerConfig(8), 'res1/*': None},
                           min_weights=200)
    assert [(d.action, d.config and d.config.n_values) for d in plan] == [
        ('lutq', 8), ('float', None), ('float', None)]
    assert plan.get('fc').reason == 'config=None and no override'
    assert [d.name for d in plan.converted] == ['res1/conv1']
    assert len(plan.kept_float) == 2
    table = str(plan).splitlines()
    assert table[0].split() == ['layer', 'function', 'action', 'weights', 'settings', 'reason']
    assert table[2].startswith('res1/conv1') and "override 'res*/conv1'" in table[2]
    _unchanged(before)


def test_modifier_in_graph_converter_with_other_modifiers():
    y = _small()
    mod = LUTQModifier(LayerConfig(4), mlbn=True)
    y1 = GC.GraphConverter([GC.IdentityModifier({}), mod]).convert(y)
    assert [d.action for d in mod.decisions] == ['lutq', 'mlbn', 'lutq']
    y2 = convert(y, LayerConfig(4), mlbn=True)  # again: rebuilt on the same layers
    assert len(STATE.lutq_layers()) == 2
    y3 = convert(y1, LayerConfig(4), mlbn=True)  # a converted graph converts to itself
    inp = [v for v in _leaves(y1) if v.shape == (2, 3, 8, 8)]
    assert len(inp) == 1 and [v for v in _leaves(y2) if v.shape == (2, 3, 8, 8)][0].data == \
        inp[0].data
    inp[0].d = np.random.RandomState(0).randn(2, 3, 8, 8)
    F.sink(y1, y2, y3).forward()
    assert np.array_equal(y1.d, y2.d) and np.array_equal(y1.d, y3.d)


def _leaves(y):
    out = []
    y.visit(lambda f: out.extend(v for v in f.inputs if v.parent is None))
    return out


def _small_nnp(tmp_path):
    """The test graph of _small() saved as a float .nnp (network 'net'); parameters cleared."""
    from nnabla.utils.save import save
    nn.clear_parameters()
    yt = _small(test=True)
    xt = [v for v in _leaves(yt) if v.shape == (2, 3, 8, 8)][0]
    path = str(tmp_path / 'float.nnp')
    save(path, {'networks': [{'name': 'net', 'batch_size': 2, 'outputs': {'y': yt},
                              'names': {'x': xt}}]})
    nn.clear_parameters()
    return path


def test_names_are_relative_to_the_current_scope(tmp_path):
    from nnabla_lutq.io.nnp import loaded_network
    with nn.parameter_scope('net'):
        y = _small()
        kw = dict(config=LayerConfig(4), overrides={'fc': LayerConfig(8)})
        assert [d.name for d in conversion_plan(y, **kw)] == ['res1/conv1', 'res1/bn1', 'fc']
        y2, plan = convert(y, return_decisions=True, **kw)
        assert plan[0].parameters == {'res1/conv1/conv/W': 'res1/conv1/lutq_conv/W',
                                      'res1/conv1/conv/b': 'res1/conv1/lutq_conv/b'}
    assert 'net/fc/lutq_affine/d' in nn.get_parameters(grad_only=False)
    plan = conversion_plan(y2, LayerConfig(4), overrides={'net/fc': LayerConfig(8)})
    assert [d.name for d in plan] == ['net/res1/conv1', 'net/res1/bn1', 'net/fc']
    # a layer built without a name is named by its function's scope
    x = nn.Variable((2, 3, 4, 4))
    plan = conversion_plan(PF.convolution(x, 4, (3, 3)), LayerConfig(4))
    assert plan[0].name == 'conv' and plan[0].action == 'lutq'
    # what `nnabla-lutq info` can show for a float .nnp, loaded in a private scope
    path = _small_nnp(tmp_path)
    with loaded_network(path, 'net') as net:
        plan = conversion_plan(list(net.outputs.values()), LayerConfig(4), overrides={'fc': None},
                               mlbn=True)
    assert [(d.name, d.action) for d in plan] == [
        ('res1/conv1', 'lutq'), ('res1/bn1', 'mlbn'), ('fc', 'float')]
    assert not nn.get_parameters(grad_only=False)


def test_nnp_network_loaded_after_the_conversion_loses_its_aliases(tmp_path):
    """NnpLoader registers the file's parameters again for every network it builds: the names
    of moved parameters come back as aliases, which the next conversion removes."""
    from nnabla.utils.nnp_graph import NnpLoader, NnpNetworkPass
    path = _small_nnp(tmp_path)
    nnp = NnpLoader(path)
    train_pass = NnpNetworkPass()
    train_pass.set_batch_normalization_batch_stat_all(True)
    train = nnp.get_network('net', batch_size=2, callback=train_pass)
    kw = dict(config=LayerConfig(4), mlbn=True)
    convert(train.outputs['y'], **kw)
    converted = list(nn.get_parameters(grad_only=False))
    w = nn.get_parameters()['fc/lutq_affine/W']
    test = nnp.get_network('net', batch_size=2)
    assert nn.get_parameters()['fc/affine/W'].data == w.data  # registered twice now
    convert(test.outputs['y'], **kw)
    assert list(nn.get_parameters(grad_only=False)) == converted


def test_weight_shared_with_a_deconvolution_is_moved_and_warned():
    x = nn.Variable((2, 3, 8, 8))
    h = PF.convolution(x, 4, (3, 3), pad=(1, 1), name='enc')
    w = nn.get_parameters()['enc/conv/W']
    y = F.deconvolution(F.relu(h), w, pad=(1, 1))  # a tied decoder
    with pytest.warns(UserWarning, match=r"enc \(Deconvolution\): Deconvolution has no LUT-Q "
                                         r"counterpart \(it reads the weights enc/conv/W\)"):
        y2, plan = convert(y, LayerConfig(4), return_decisions=True)
    assert [(d.name, d.function, d.action) for d in plan] == [
        ('enc', 'Convolution', 'lutq'), ('enc', 'Deconvolution', 'float')]
    assert nn.get_parameters()['enc/lutq_conv/W'] is w
    assert y2.parent.info.type_name == 'Deconvolution' and y2.parent.inputs[1].data == w.data
    # the test graph of the same network: the deconvolution is still listed, not skipped
    with pytest.warns(UserWarning, match='enc/lutq_conv/W'):
        convert(y, LayerConfig(4))


def test_converted_graph_reads_the_original_input():
    x = nn.Variable((2, 3, 8, 8))
    y = PF.affine(PF.convolution(x, 4, (3, 3), name='c'), 10, name='fc')
    y2 = convert(y, LayerConfig(4))
    assert any(v is x or v.data == x.data for v in _leaves(y2))
    x.d = 1.0
    y2.forward()
    first = y2.d.copy()
    x.d = 2.0
    y2.forward()
    assert not np.array_equal(first, y2.d)


def test_resnet20_from_the_examples_converts_like_its_lutq_twin():
    import sys
    sys.path.insert(0, ROOT)
    from examples.common.models import Layers, resnet20
    x = nn.Variable((2, 3, 32, 32))
    x.d = np.random.RandomState(0).randn(*x.shape)
    y = resnet20(x, Layers())
    init = {k: v.d.copy() for k, v in nn.get_parameters(grad_only=False).items()}
    y = convert(y, LayerConfig(4, 'pow2'), overrides={'conv0': LayerConfig(16),
                                                      'fc': LayerConfig(16)}, mlbn=True)
    y.forward()
    got = y.d.copy()
    names = list(nn.get_parameters(grad_only=False))
    nn.clear_parameters()
    # the twin with its first and last layer at K=16, built from the float arrays
    conv, affine = LPF.lutq_convolution, LPF.lutq_affine

    class Twin(Layers):
        def conv(self, x, outmaps, kernel, name, pad=None, stride=None, with_bias=False,
                 edge=False):
            return conv(x, outmaps, kernel, pad=pad, stride=stride, with_bias=with_bias,
                        w_init=init[f'{name}/conv/W'], n_values=16 if edge else 4,
                        dictionary='free' if edge else 'pow2', name=name)

        def affine(self, x, n_outmaps, name, edge=False):
            return affine(x, n_outmaps, w_init=init[f'{name}/affine/W'],
                          b_init=init[f'{name}/affine/b'], n_values=16, name=name)

        def bn(self, x, test, name):
            return LPF.mlbn(x, batch_stat=not test, name=name, param_init={
                k: init[f'{name}/bn/{k}'] for k in ('beta', 'gamma', 'mean', 'var')})
    yr = resnet20(x, Twin())
    yr.forward()
    assert list(nn.get_parameters(grad_only=False)) == names
    assert np.array_equal(yr.d, got)


def test_docs_example_fine_tunes_a_float_nnp(tmp_path, monkeypatch):
    """Runs the worked example of the README's "LUT-Q for an existing network" (NnpLoader ->
    convert -> LUTQSolver -> inference_mode + export_nnp), checks the file and the printed plan."""
    from nnabla.utils.nnp_graph import NnpLoader
    readme = open(os.path.join(ROOT, 'README.md')).read()
    text = readme[readme.index('## LUT-Q for an existing network'):]
    text = text[:text.index('\n## ', 1)]
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    ns = {}
    for block in blocks:
        exec(compile(block, 'README.md', 'exec'), ns)
    shown = re.search(r"what happened to each layer:\n\n```\n(.*?)```", text, re.S).group(1)
    assert str(ns['plan']).strip() == shown.strip()
    assert np.isfinite(ns['loss'].d)
    assert sorted(nn.get_parameters(grad_only=False)) == sorted(
        [f'{layer}/{part}' for layer in ('conv1/lutq_conv', 'conv2/lutq_conv', 'fc/lutq_affine')
         for part in ('W', 'b', 'd', 'A')] +
        [f'{layer}/mlbn/{part}' for layer in ('bn1', 'bn2')
         for part in ('beta', 'gamma', 'mean', 'var')])
    # the exported file reproduces the deployment graph, and holds no float W
    x_test, y_deploy = ns['x_test'], ns['y_deploy']
    x_test.d = ns['images'][:16]
    y_deploy.forward()
    with nn.parameter_scope('loaded'):
        net = NnpLoader('lutq_model.nnp').get_network('lutq', batch_size=16)
        names = list(nn.get_parameters(grad_only=False))
        xin, yout = list(net.inputs.values())[0], list(net.outputs.values())[0]
        xin.d = ns['images'][:16]
        yout.forward()
    assert not any(n.endswith('/W') for n in names)
    assert np.array_equal(yout.d, y_deploy.d)


def test_info_shows_which_layers_stayed_float_and_why(tmp_path, capsys):
    """`nnabla-lutq info` of an exported converted network lists the float layers with the
    reason the conversion recorded (override to None, min_weights, cannot be converted)."""
    import json
    from nnabla_lutq import cli
    x = nn.Variable((1, 3, 8, 8))
    with nnabla_lutq.inference_mode():
        h = F.relu(PF.batch_normalization(PF.convolution(x, 8, (3, 3), pad=(1, 1), name='c1'),
                                          batch_stat=False, name='bn1'))
        h = PF.convolution(h, 8, (1, 1), name='tiny', with_bias=False)   # 64 weights
        h = PF.deconvolution(h, 4, (2, 2), stride=(2, 2), name='up')
        h = PF.convolution(h, 8, (3, 3), name='c2')
        y = PF.affine(h, 10, name='fc')
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # the deconvolution's warning
            y = convert(y, LayerConfig(4), overrides={'fc': None}, min_weights=100)
    path = str(tmp_path / 'm.nnp')
    nnabla_lutq.export_nnp(path, {'x': x}, {'y': y})
    assert cli.main(['info', path]) == 0
    out = capsys.readouterr().out
    assert '2 look-up table layer(s); 4 layer(s) kept float:' in out
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith('  ')}
    assert "override 'fc': kept float" in lines['fc/affine'] and 'Affine' in lines['fc/affine']
    assert 'min_weights=100' in lines['tiny/conv'] and '64 weights' in lines['tiny/conv']
    assert 'Deconvolution' in lines['up/deconv']
    assert 'mlbn=False' in lines['bn1/bn']
    assert cli.main(['info', '--json', path]) == 0
    floats = {r['layer']: r for r in json.loads(capsys.readouterr().out)['kept_float']}
    assert set(floats) == {'fc/affine', 'tiny/conv', 'up/deconv', 'bn1/bn'}
    assert floats['tiny/conv']['n_weights'] == 64
    # a model built with float PF layers (no conversion) says so
    nn.clear_parameters()
    STATE.conversion_notes.clear()
    with nnabla_lutq.inference_mode():
        y2 = PF.affine(LPF.lutq_convolution(x, 4, (3, 3), n_values=4, name='q'), 3, name='f')
    nnabla_lutq.export_nnp(str(tmp_path / 'p.nnp'), {'x': x}, {'y': y2})
    assert cli.main(['info', str(tmp_path / 'p.nnp')]) == 0
    assert 'built as a float layer' in capsys.readouterr().out


# --- graphs as nnabla-examples write them -----------------------------------------------------

@pytest.mark.parametrize('batch_stat', [False, True])
def test_fused_bn_becomes_mlbn_then_add_then_relu(rng, batch_stat):
    """A fused-BN residual block (nnabla-examples' ImageNet ResNets) with mlbn=True equals the
    block written with PF.mlbn, + z, ReLU: same parameters, bit-identical outputs."""
    xd = rng.randn(2, 4, 6, 6).astype(np.float32)
    values = {k: rng.rand(1, 4, 1, 1).astype(np.float32) + 0.5
              for k in ('beta', 'gamma', 'mean', 'var')}
    results = []
    for how in ('ref', 'convert'):
        nn.clear_parameters()
        x = nn.Variable.from_numpy_array(xd)
        z = F.relu(x)  # the shortcut
        h = F.mul_scalar(x, 0.5)
        if how == 'ref':
            y = F.relu(LPF.mlbn(h, batch_stat=batch_stat, param_init=values, name='b') + z)
        else:
            y = PF.fused_batch_normalization(h, z, batch_stat=batch_stat, param_init=values,
                                             name='b')
            y = PF.fused_batch_normalization(y, batch_stat=batch_stat, name='c')  # without z
            y, plan = convert(y, None, mlbn=True, return_decisions=True)
            assert [(d.name, d.function, d.action) for d in plan] == [
                ('b', 'FusedBatchNormalization', 'mlbn'), ('c', 'FusedBatchNormalization', 'mlbn')]
        if how == 'ref':
            y = F.relu(LPF.mlbn(y, batch_stat=batch_stat, name='c'))
        y.forward()
        results.append(({k: v.d.copy() for k, v in all_parameters().items()}, y.d.copy()))
    (pr, yr), (pc, yc) = results
    assert list(pc) == list(pr) == [f'{b}/mlbn/{k}' for b in 'bc'
                                    for k in ('beta', 'gamma', 'mean', 'var')]
    for k in pr:
        np.testing.assert_array_equal(pc[k], pr[k], err_msg=k)
    np.testing.assert_array_equal(yc, yr)


def test_a_graph_with_constants_converts(rng):
    """F.constant (a function without inputs, as in GAN losses) is rebuilt as it is."""
    x = nn.Variable.from_numpy_array(rng.randn(2, 3, 8, 8).astype(np.float32))
    y = PF.affine(F.relu(PF.convolution(x, 4, (3, 3), name='c')), 1, name='fc')
    loss = F.mean(F.sigmoid_cross_entropy(y, F.constant(1, y.shape)))
    lq = convert(loss, LayerConfig(4))
    lq.forward()
    q = {k: v.d.copy() for k, v in all_parameters().items()}
    w = {n: q[f'{n}/d'][q[f'{n}/A']] for n in ('c/lutq_conv', 'fc/lutq_affine')}
    h = F.relu(F.convolution(x, nn.Variable.from_numpy_array(w['c/lutq_conv']),
                             nn.Variable.from_numpy_array(q['c/lutq_conv/b'])))
    yr = F.affine(h, nn.Variable.from_numpy_array(w['fc/lutq_affine']),
                  nn.Variable.from_numpy_array(q['fc/lutq_affine/b']))
    ref = F.mean(F.sigmoid_cross_entropy(yr, F.constant(1, yr.shape)))
    ref.forward()
    np.testing.assert_array_equal(lq.d, ref.d)


def test_a_conversion_that_fails_midway_changes_nothing(monkeypatch):
    """An error while the graph is rebuilt (after parameters were moved) puts every parameter
    and scope back: the float network is as it was, and converts afterwards."""
    y = _small()
    before = _snapshot()
    import nnabla_lutq.nn.convert.modifiers as M
    real = M.MLBNModifier.rebuild

    def fail(self, *a):
        raise RuntimeError('injected failure while rebuilding BN')
    monkeypatch.setattr(M.MLBNModifier, 'rebuild', fail)
    with pytest.raises(RuntimeError, match='injected'):
        convert(y, LayerConfig(4), mlbn=True)  # the weights were converted before BN failed
    _unchanged(before)
    assert 'res1/conv1/lutq_conv' not in str(list(all_parameters()))
    monkeypatch.setattr(M.MLBNModifier, 'rebuild', real)
    y2 = convert(y, LayerConfig(4), mlbn=True)
    y2.forward()
    assert 'res1/bn1/mlbn/gamma' in all_parameters() and STATE.lutq_layers()


def test_unlinked_copies_follow_the_converted_graph(rng):
    """The GAN idiom: the discriminator reads fake.get_unlinked_variable(); converting the
    generator's and the discriminator's graphs together makes the copy read the converted
    generator's output (it would otherwise read an array nothing computes)."""
    z = nn.Variable.from_numpy_array(rng.randn(4, 8).astype(np.float32))
    fake = F.tanh(PF.affine(z, 16, name='gen'))
    fake_d = fake.get_unlinked_variable(need_grad=False)
    loss_d = F.mean(F.sigmoid_cross_entropy(PF.affine(fake_d, 1, name='dis'),
                                            F.constant(0, (4, 1))))
    fake_q, loss_dq = convert([fake, loss_d], LayerConfig(4))
    fake_q.forward()
    loss_dq.forward()
    np.testing.assert_array_equal(fake_d.d, fake_q.d)
    assert np.abs(fake_d.d).sum() > 0
    q = {k: v.d for k, v in all_parameters().items()}
    logit = fake_q.d @ q['dis/lutq_affine/d'][q['dis/lutq_affine/A']] + q['dis/lutq_affine/b']
    want = np.mean(np.maximum(logit, 0) + np.log1p(np.exp(-np.abs(logit))))
    np.testing.assert_allclose(loss_dq.d, want, rtol=1e-5)


def test_an_activation_quantizer_is_not_a_layer(rng):
    """The tracked-range quantizer multiplies by a per-channel step computed from its range
    (depthwise products): conversion does not take them for layers with weights and warns about
    nothing; the quantizer's range parameters are one float entry of the plan."""
    from nnabla_lutq.nn.quantize import quantized_relu
    x = nn.Variable.from_numpy_array(rng.randn(2, 3, 8, 8).astype(np.float32))
    h = PF.convolution(x, 4, (3, 3), name='c')
    with nn.parameter_scope('q'):
        h = quantized_relu(h, 8)
    y = PF.affine(h, 2, name='fc')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        yq, plan = convert(y, LayerConfig(4), return_decisions=True)
    assert [(d.name, d.action) for d in plan] == [('c', 'lutq'), ('q', 'float'), ('fc', 'lutq')]
    yq.forward()
