# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Grouped look-up tables in every file format and in the integer executor: export and reload
with nnabla's own loader, folding, the packed .lutq, ONNX (run by onnxruntime), NNB, post-training
quantization of an .nnp and the integer executor, each checked against the tied weights read
group by group with tests/reference.py's slices."""
import json
import math
import shutil
import subprocess
import zipfile

import numpy as np
import pytest
import nnabla as nn
import nnabla.functions as F

import nnabla_lutq
from nnabla_lutq.io import metadata
from nnabla_lutq.io import packed as io_packed
from nnabla_lutq.io.fold import fold_constants
from nnabla_lutq.io.nnp import (NnpError, describe_legacy, loaded_network, lut_embeds, read_nnp,
                                write_nnp)
from nnabla_lutq.io.packed import FLAG_GROUPED, LutqFormatError, pack, read_lutq, unpack
from nnabla_lutq.nn import layers as LPF
from reference import ref_group_slices

#: layer -> (output axis of W, group_size): grouped conv, one group of a channel-grouped conv,
#: per-channel depthwise, one table, grouped affine (output axis last)
LAYERS = {'conv/lutq_conv': (0, 2), 'gconv/lutq_conv': (0, 8),
          'dw/lutq_depthwise_conv': (0, 1), 'plain/lutq_conv': (0, None),
          'fc/lutq_affine': (1, 3)}
GROUPED = [k for k, (_, g) in LAYERS.items() if g is not None]


def model(x, test, dictionary='pow2'):
    """Every layer kind with grouped tables, and one layer with one table."""
    k = 4 if dictionary == 'pow2' else 6
    kw = dict(n_values=k, dictionary=dictionary)
    h = LPF.lutq_convolution(x, 8, (3, 3), pad=(1, 1), group_size=2, name='conv', **kw)
    h = F.relu(LPF.mlbn(h, batch_stat=not test, name='bn1'))
    h = LPF.lutq_convolution(h, 8, (3, 3), pad=(1, 1), group=2, prune_ratio=0.25, group_size=8,
                             name='gconv', **kw)
    h = LPF.lutq_depthwise_convolution(h, (3, 3), pad=(1, 1), n_values=3,
                                       dictionary=dictionary, group_size=1, name='dw')
    h = LPF.lutq_convolution(h, 4, (1, 1), name='plain', **kw)
    h = F.average_pooling(F.relu(h), (2, 2))
    return LPF.lutq_affine(h, 6, group_size=3, name='fc', **kw)


def _spread(rng):
    """Weights of very different scales per output channel (so that the groups' tables differ)
    and random BN statistics."""
    for k, v in nn.get_parameters(grad_only=False).items():
        if k.endswith('/W'):
            axis = LAYERS[k[:-2]][0]
            scale = rng.choice([0.02, 0.3, 2.0], size=v.shape[axis])
            view = [1] * v.ndim
            view[axis] = -1
            v.d = rng.randn(*v.shape) * scale.reshape(view)
        elif k.endswith(('/mean', '/beta')):
            v.d = rng.randn(*v.shape) * 0.3
        elif k.endswith(('/var', '/gamma')):
            v.d = rng.rand(*v.shape) + 0.5


def live(dictionary='pow2', batch=2, seed=7):
    """The inference graph of :func:`model` with fitted tables: ``(x, y)``, ``y`` computed."""
    rng = np.random.RandomState(seed)
    x = nn.Variable.from_numpy_array(rng.randn(batch, 3, 8, 8).astype(np.float32))
    model(x, False, dictionary)
    _spread(rng)
    nnabla_lutq.initialize()
    with nnabla_lutq.inference_mode():
        y = model(x, True, dictionary)
    y.forward()
    return x, y


def export(path, x, y, **kw):
    nnabla_lutq.export_nnp(str(path), {'x': x}, {'y': y}, batch_size=len(x.d), **kw)
    return str(path)


def ref_tied(d, a, out_axis, group_size):
    """``d[A]`` read group by group (tests/reference.py's slices), float32."""
    if group_size is None:
        return d[a]
    q = np.empty(a.size, np.float32)
    for g, ix in enumerate(ref_group_slices(a.shape, out_axis, group_size)):
        q[ix] = d[g][a.ravel()[ix]]
    return q.reshape(a.shape)


def run_file(path, x):
    """The first network of an .nnp run by nnabla's own loader (NnpLoader) on ``x``."""
    name = read_nnp(path).proto.executor[0].network_name
    with loaded_network(path, name, len(x)) as net:
        list(net.inputs.values())[0].d = x
        y = list(net.outputs.values())[0]
        y.forward()
        return y.d.copy()


# --- export and reload ---------------------------------------------------------------------

@pytest.mark.parametrize('fold', [True, False])
def test_grouped_export_reloads_in_nnabla_with_identical_outputs(tmp_path, fold):
    x, y = live()
    path = export(tmp_path / 'm.nnp', x, y, fold=fold)
    m = read_nnp(path)
    for layer, (axis, gs) in LAYERS.items():
        a, d = m.params[layer + '/A'], m.params[layer + '/d']
        k = 3 if layer.startswith('dw') else 4
        assert a.dtype == np.int32 and layer + '/W' not in m.params
        assert d.shape == ((a.shape[axis] // gs, k) if gs else (k,))
        assert a.min() >= 0 and a.max() < k
        entry = m.meta['tables'][layer]
        assert entry['stored'] == 'tables' and entry['n_values'] == k
        assert entry.get('group_size') == gs
        if gs is not None:
            assert (entry['n_groups'], entry['out_axis']) == (a.shape[axis] // gs, axis)
    assert m.meta['flags'] == [metadata.GROUPED]
    assert np.array_equal(run_file(path, x.d), y.d)
    # each look-up the file computes gives the tied weights read group by group
    net = m.proto.network[0]
    found = {a[:-2]: f.output[0] for f, a, _ in lut_embeds(net, m.params)}
    assert sorted(found) == sorted(LAYERS)
    with loaded_network(path, net.name, len(x.d)) as loaded:
        for layer, (axis, gs) in LAYERS.items():
            v = loaded.variables[found[layer]]
            v.forward()
            want = ref_tied(m.params[layer + '/d'], m.params[layer + '/A'], axis, gs)
            np.testing.assert_array_equal(v.d, want)
    # the in-memory layers hold the same tables
    for layer in LAYERS:
        params = nn.get_parameters(grad_only=False)
        np.testing.assert_array_equal(params[layer + '/d'].d, m.params[layer + '/d'])


def test_old_readers_refuse_grouped_files_and_one_table_files_are_unflagged(tmp_path,
                                                                            monkeypatch):
    x, y = live()
    path = export(tmp_path / 'g.nnp', x, y)
    # a file with one table per layer only: no flag, no grouping keys (the previous layout)
    nn.clear_parameters()
    xs = nn.Variable.from_numpy_array(np.ones((1, 3, 4, 4), np.float32))
    LPF.lutq_convolution(xs, 4, (3, 3), n_values=4, name='one')
    with nnabla_lutq.inference_mode():
        ys = LPF.lutq_convolution(xs, 4, (3, 3), n_values=4, name='one')
    one = export(tmp_path / 'one.nnp', xs, ys)
    meta = json.loads(zipfile.ZipFile(one).read(metadata.FILE_NAME))
    assert meta['flags'] == [] and 'group_size' not in meta['tables']['one/lutq_conv']
    assert [f.type for f in read_nnp(one).proto.network[0].function] == ['Embed', 'Convolution']
    # a reader that knows no flags (the one-table layout) refuses the grouped file only
    monkeypatch.setattr(metadata, 'KNOWN_FLAGS', frozenset())
    read_nnp(one)
    with pytest.raises(NnpError, match='grouped_tables'):
        read_nnp(path)


def test_file_without_description_is_described_from_its_graph(tmp_path):
    x, y = live()
    m = read_nnp(export(tmp_path / 'm.nnp', x, y))
    described = m.meta
    m.meta = None  # as another tool would write it
    write_nnp(str(tmp_path / 'bare.nnp'), m)
    bare = read_nnp(str(tmp_path / 'bare.nnp'))
    assert bare.meta is None
    legacy = describe_legacy(bare)
    assert legacy['flags'] == [metadata.GROUPED] and sorted(legacy['tables']) == sorted(LAYERS)
    for layer, t in legacy['tables'].items():
        for key in ('n_values', 'group_size', 'n_groups', 'out_axis', 'A', 'd', 'dictionary'):
            assert t.get(key) == described['tables'][layer].get(key), (layer, key)


def test_dense_export_and_file_folding_store_each_groups_values(tmp_path):
    x, y = live('free')
    tables = read_nnp(export(tmp_path / 't.nnp', x, y))
    dense_path = export(tmp_path / 'd.nnp', x, y, dense=True)
    dense = read_nnp(dense_path)
    types = [f.type for f in dense.proto.network[0].function]
    assert not {'Embed', 'Gather', 'Transpose', 'Broadcast'} & set(types)
    for layer, (axis, gs) in LAYERS.items():
        want = ref_tied(tables.params[layer + '/d'], tables.params[layer + '/A'], axis, gs)
        np.testing.assert_array_equal(dense.params[layer + '/W'], want)
        assert layer + '/A' not in dense.params
        t = dense.meta['tables'][layer]
        assert t['stored'] == 'dense' and t['W'] == layer + '/W' and t.get('group_size') == gs
    assert np.array_equal(run_file(dense_path, x.d), y.d)
    # the same folding of the file (protobuf level): every table, or those Affine reads
    folded = fold_constants(tables, dense=True)
    for layer in LAYERS:
        np.testing.assert_array_equal(folded.params[layer + '/W'], dense.params[layer + '/W'])
    only_fc = fold_constants(tables, dense={'Affine'})
    assert 'fc/lutq_affine/W' in only_fc.params and 'fc/lutq_affine/d' not in only_fc.params
    assert all(layer + '/d' in only_fc.params for layer in LAYERS if layer != 'fc/lutq_affine')
    kept = fold_constants(tables)
    assert [f.type for f in kept.proto.network[0].function] == \
        [f.type for f in tables.proto.network[0].function]
    for out in (folded, only_fc, kept):
        write_nnp(str(tmp_path / 'f.nnp'), out)
        assert np.array_equal(run_file(str(tmp_path / 'f.nnp'), x.d), y.d)


# --- the packed .lutq ------------------------------------------------------------------------

def test_packed_size_is_group_tables_plus_packed_indices_and_round_trips(tmp_path, monkeypatch):
    x, y = live()
    path = export(tmp_path / 'm.nnp', x, y)
    m = read_nnp(path)
    st = pack(path, str(tmp_path / 'm.lutq'))
    by = {r['name']: r for r in st['layers']}
    assert sorted(by) == sorted(LAYERS)
    for layer in LAYERS:
        d, a = m.params[layer + '/d'], m.params[layer + '/A']
        k, groups = d.shape[-1], (d.shape[0] if d.ndim == 2 else 1)
        bits = math.ceil(math.log2(k))
        # G·K·32 + N·⌈log2 K⌉ bits, the indices padded to a whole byte
        assert by[layer]['bytes'] == (groups * k * 32 + (a.size * bits + 7) // 8 * 8) // 8
        assert (by[layer]['K'], by[layer].get('n_groups', 1), by[layer]['bits']) == \
            (k, groups, bits)
        assert ('n_groups' in by[layer]) == (d.ndim == 2)
    assert st['tables'] == sum(r['bytes'] for r in st['layers'])
    data = (tmp_path / 'm.lutq').read_bytes()
    assert int.from_bytes(data[6:8], 'little') == FLAG_GROUPED
    back = unpack(str(tmp_path / 'm.lutq'), str(tmp_path / 'u.nnp'))
    assert sorted(back.params) == sorted(m.params)
    for k, v in m.params.items():
        assert back.params[k].dtype == v.dtype and np.array_equal(back.params[k], v), k
    assert back.meta == m.meta and back.proto == m.proto
    assert np.array_equal(run_file(str(tmp_path / 'u.nnp'), x.d), y.d)
    # a file without description: the tables are found in the graph and packed the same
    m.meta = None
    write_nnp(str(tmp_path / 'bare.nnp'), m)
    bare = pack(str(tmp_path / 'bare.nnp'), str(tmp_path / 'bare.lutq'))
    assert bare['tables'] == st['tables']
    # a reader of the one-table layout refuses the header flag
    monkeypatch.setattr(io_packed, 'KNOWN_FLAGS', 0)
    with pytest.raises(LutqFormatError, match='format flags 0x0001'):
        read_lutq(str(tmp_path / 'm.lutq'))


# --- ONNX and NNB ----------------------------------------------------------------------------

@pytest.mark.skipif(not all(__import__('importlib').util.find_spec(m)
                            for m in ('onnx', 'onnxruntime', 'nnabla.utils.converter')),
                    reason='needs the [onnx] extra and nnabla-converter')
@pytest.mark.parametrize('dictionary', ['pow2', 'free'])
def test_onnx_keeps_grouped_tables_compact_and_onnxruntime_computes_the_network(tmp_path,
                                                                               dictionary):
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper
    from nnabla_lutq.io.onnx import export_onnx
    x, y = live(dictionary)
    path = export(tmp_path / 'm.nnp', x, y)
    info = export_onnx(path, str(tmp_path / 'm.onnx'), batch_size=len(x.d))
    assert info['gather_layers'] == len(LAYERS) and info['dense_names'] == []
    g = onnx.load(str(tmp_path / 'm.onnx')).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    src = read_nnp(path)
    for layer, (axis, gs) in LAYERS.items():
        a, d = src.params[layer + '/A'], src.params[layer + '/d']
        got_a = inits[layer + '/A']
        assert got_a.dtype == np.uint8 and got_a.size == a.size and layer + '/W' not in inits
        np.testing.assert_array_equal(inits[layer + '/d'], d.ravel())
        if gs is not None:  # one offset g·K per output channel, along one axis
            off = inits[layer + '/A/offsets']
            n_out = a.shape[axis]
            assert off.size == n_out and off.dtype == np.int32
            np.testing.assert_array_equal(np.sort(off.ravel()),
                                          np.arange(n_out) // gs * d.shape[1])
    ops = [n.op_type for n in g.node]
    assert ops.count('Gather') == len(LAYERS) and ops.count('Add') >= len(GROUPED)
    sess = ort.InferenceSession(str(tmp_path / 'm.onnx'), providers=['CPUExecutionProvider'])
    got = sess.run(None, {sess.get_inputs()[0].name: x.d})[0]
    np.testing.assert_allclose(got.reshape(y.shape), y.d, rtol=0, atol=1e-5 * np.abs(y.d).max())
    # the weights onnxruntime computes from the tables are the tied weights, exactly
    names = [layer + '/W' for layer in LAYERS]
    probe = onnx.load(str(tmp_path / 'm.onnx'))
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                              for n in names)
    onnx.save(probe, str(tmp_path / 'probe.onnx'))
    sess = ort.InferenceSession(str(tmp_path / 'probe.onnx'),
                                providers=['CPUExecutionProvider'])
    weights = sess.run(names, {sess.get_inputs()[0].name: x.d})
    for (layer, (axis, gs)), w in zip(LAYERS.items(), weights):
        want = ref_tied(src.params[layer + '/d'], src.params[layer + '/A'], axis, gs)
        np.testing.assert_array_equal(w.reshape(-1), want.reshape(-1))


@pytest.mark.skipif(not __import__('importlib').util.find_spec('nnabla.utils.converter'),
                    reason='needs nnabla-converter')
def test_nnb_of_grouped_tables_holds_the_tied_weights_in_fixed_point(tmp_path):
    """As a layer with one table: the tied weights folded, each stored fixed point."""
    from nnabla_lutq.io.nnb import export_nnb
    from test_interop import _exact_type, read_nnb, run_nnb
    x, y = live('pow2')
    path = export(tmp_path / 'm.nnp', x, y)
    info = export_nnb(path, str(tmp_path / 'm.nnb'), batch_size=len(x.d))
    src = read_nnp(path)
    nnp, types = read_nnb(str(tmp_path / 'm.nnb'))
    functions = [f.type for f in nnp.proto.network[0].function]
    assert not {'Embed', 'Gather', 'Transpose', 'Broadcast'} & set(functions)
    assert sorted(info['types']) == sorted(layer + '/W' for layer in LAYERS)
    stored = list(nnp.params.values())
    for layer, (axis, gs) in LAYERS.items():
        want = ref_tied(src.params[layer + '/d'], src.params[layer + '/A'], axis, gs)
        assert any(w.shape == want.shape and np.array_equal(w, want) for w in stored), layer
        # the narrowest exact fixed-point type of all the groups' values together
        assert info['types'][layer + '/W'] == _exact_type(want) != 'FLOAT32'
    got = run_nnb(str(tmp_path / 'm.nnb'), x.d, tmp_path)
    np.testing.assert_allclose(got, y.d, rtol=0, atol=1e-5 * np.abs(y.d).max())


# --- post-training quantization of an .nnp -----------------------------------------------------

def test_quantize_nnp_fits_one_table_per_group(tmp_path):
    import nnabla.parametric_functions as PF
    from nnabla_lutq.io.quantize import quantize_nnp
    rng = np.random.RandomState(3)
    x = nn.Variable.from_numpy_array(rng.randn(4, 3, 6, 6).astype(np.float32))
    h = F.relu(PF.convolution(x, 8, (3, 3), pad=(1, 1), name='c1'))
    y = PF.affine(h, 6, name='fc')
    for k, v in nn.get_parameters().items():  # very different scales per output channel
        if k.endswith('/W'):
            axis = 0 if k.startswith('c1') else 1
            view = [1] * v.ndim
            view[axis] = -1
            v.d = v.d * rng.choice([0.05, 1.0, 5.0], size=v.shape[axis]).reshape(view)
    y.forward()
    src = tmp_path / 'float.nnp'
    nnabla_lutq.export_nnp(str(src), {'x': x}, {'y': y})
    floats = read_nnp(str(src)).params
    r = quantize_nnp(str(src), str(tmp_path / 'q.nnp'), n_values=4, group_size=2)
    q = read_nnp(str(tmp_path / 'q.nnp'))
    for layer, w_name, axis in (('c1/lutq_conv', 'c1/conv/W', 0),
                                ('fc/lutq_affine', 'fc/affine/W', 1)):
        w, d, a = floats[w_name], q.params[layer + '/d'], q.params[layer + '/A']
        assert d.shape == (w.shape[axis] // 2, 4)
        assert q.meta['tables'][layer]['group_size'] == 2
        tied = ref_tied(d, a, axis, 2)
        res = next(t for t in r['layers'] if t['name'] == layer)
        assert (res['K'], res['group_size'], res['n_groups']) == (4, 2, w.shape[axis] // 2)
        assert res['mse'] == pytest.approx(np.mean((tied - w) ** 2), rel=1e-6)
        # each weight takes the nearest value of its own group's table
        for g, ix in enumerate(ref_group_slices(w.shape, axis, 2)):
            dist = np.abs(w.ravel()[ix][:, None] - d[g][None, :])
            np.testing.assert_array_equal(dist[np.arange(len(ix)), a.ravel()[ix]],
                                          dist.min(1))
    out = run_file(str(tmp_path / 'q.nnp'), x.d)
    assert out.shape == y.shape and np.all(np.isfinite(out))


# --- the integer executor --------------------------------------------------------------------

def int_model(x, test, dictionary='pow2'):
    """Grouped pow-2 convolutions (one also channel-grouped) and a grouped affine layer with
    multiplier-less BN and power-of-two activation steps: a fully multiplier-less network."""
    def act(h):
        return F.fixed_point_quantize(F.relu(h), sign=False, n=8, delta=2 ** -4)
    h = LPF.lutq_convolution(x, 8, (3, 3), pad=(1, 1), n_values=4, dictionary=dictionary,
                             group_size=2, with_bias=False, name='c1')
    h = act(LPF.mlbn(h, batch_stat=not test, name='bn1'))
    h = act(LPF.lutq_convolution(h, 4, (3, 3), group=2, n_values=3, dictionary=dictionary,
                                 prune_ratio=0.3, group_size=1, name='c2'))
    h = F.average_pooling(h, (2, 2))
    return LPF.lutq_affine(h, 6, n_values=4, dictionary=dictionary, group_size=3, name='fc')


INT_LAYERS = {'c1/lutq_conv': (0, 2), 'c2/lutq_conv': (0, 1), 'fc/lutq_affine': (1, 3)}


def _int_network(tmp_path, dictionary='pow2', dense=False):
    rng = np.random.RandomState(11)
    model_x = nn.Variable((4, 1, 8, 8))
    int_model(model_x, False, dictionary)
    for k, v in nn.get_parameters(grad_only=False).items():
        if k.endswith('/W'):
            axis = INT_LAYERS[k[:-2]][0]
            view = [1] * v.ndim
            view[axis] = -1
            v.d = rng.randn(*v.shape) * rng.choice([0.05, 0.3, 1.0],
                                                   size=v.shape[axis]).reshape(view)
        elif k.endswith('/var'):
            v.d = rng.rand(*v.shape) + 0.5
        elif k.endswith('/mean'):
            v.d = rng.randn(*v.shape) * 0.3
    nnabla_lutq.initialize()
    x = nn.Variable((1, 1, 8, 8))
    with nnabla_lutq.inference_mode():
        y = int_model(x, True, dictionary)
    path = tmp_path / ('dense.nnp' if dense else 'int.nnp')
    nnabla_lutq.export_nnp(str(path), {'x': x}, {'y': y}, dense=dense)
    return str(path)


def _conv64(x, w, pad, group):
    """Cross-correlation by explicit kernel taps, float64 (stride and dilation 1)."""
    n, _, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = h + 2 * pad - kh + 1, wd + 2 * pad - kw + 1
    y = np.zeros((n, o, ho, wo))
    og = o // group
    for g in range(group):
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, g * cg:(g + 1) * cg, i:i + ho, j:j + wo]
                y[:, g * og:(g + 1) * og] += np.einsum('nchw,oc->nohw', patch,
                                                       w[g * og:(g + 1) * og, :, i, j])
    return y


def _reference64(path, x_real):
    """The integer model's output in float64 from the file's parameters, the weights read group
    by group (the activation quantizer rounds half up; its step is a power of two)."""
    p = {k: np.asarray(v, np.float64) for k, v in read_nnp(path).params.items()}
    w = {layer: ref_tied(p[layer + '/d'], p[layer + '/A'].astype(np.int64), axis, gs)
         for layer, (axis, gs) in INT_LAYERS.items()}

    def act(h):
        return np.floor(np.clip(h, 0, 255 / 16) * 16 + 0.5) / 16
    h = _conv64(x_real, w['c1/lutq_conv'], 1, 1)
    h = act(h * p['bn1/mlbn/a'] + p['bn1/mlbn/b'])
    h = act(_conv64(h, w['c2/lutq_conv'], 0, 2) + p['c2/lutq_conv/b'].reshape(1, -1, 1, 1))
    h = h.reshape(h.shape[0], h.shape[1], h.shape[2] // 2, 2, h.shape[3] // 2, 2).mean((3, 5))
    return h.reshape(len(h), -1) @ w['fc/lutq_affine'] + p['fc/lutq_affine/b']


def test_integer_executor_lowers_grouped_pow2_tables_exactly_without_multiplications(tmp_path):
    from nnabla_lutq.integer import IntegerNetwork, verify_int
    from nnabla_lutq.integer import ops as O
    path = _int_network(tmp_path)
    net = IntegerNetwork.from_nnp(path, input_scale=1 / 16)
    assert net.exact and net.multiplier_less
    model = read_nnp(path)
    luts = [op for op in net.program.ops if isinstance(op, (O.LutConvOp, O.LutAffineOp))]
    assert [op.a_name[:-2] for op in luts] == list(INT_LAYERS)
    for op in luts:  # the integer rows are each group's table on one grid 2^E
        d = model.params[op.d_name].astype(np.float64)
        assert op.grouped and len(op.D) == d.size
        np.testing.assert_array_equal(np.array(op.D, np.float64).reshape(d.shape) *
                                      2.0 ** op.dict_exponent, d)
        assert len({tuple(row) for row in d}) > 1  # the groups' tables differ
    x = np.random.RandomState(4).randint(0, 256, (300, 1, 8, 8)).astype(np.uint8)
    logits, scale = net(x)
    ref = _reference64(path, x.astype(np.float64) / 16)
    assert np.abs(logits * scale - ref).max() <= scale / 2 + 1e-12
    np.testing.assert_array_equal(net.run(x[:20], form='lutq'), net.run(x[:20], form='direct'))
    res = verify_int(path, x, input_scale=1 / 16)
    assert res['agreement'] == 1.0 and res['multiplier_less']
    assert res['max_abs_diff'] <= scale / 2 + 1e-5 * res['max_abs_logit']
    # a file storing d[A] dense (described as grouped tables) gives the same integers
    dense = IntegerNetwork.from_nnp(_int_network(tmp_path, dense=True), input_scale=1 / 16)
    assert 'Gather' not in [f.type for f in read_nnp(str(tmp_path / 'dense.nnp'))
                            .proto.network[0].function]
    np.testing.assert_array_equal(dense(x)[0], logits)
    assert dense.multiplier_less and dense.exact
    if shutil.which('cc') is not None:  # the C program computes the same logits
        net.write_c(str(tmp_path / 'net.c'))
        exe = str(tmp_path / 'net')
        subprocess.run(['cc', '-O1', '-std=c99', '-o', exe, str(tmp_path / 'net.c')], check=True)
        out = subprocess.run([exe], input=x[:40].tobytes(), capture_output=True,
                             check=True).stdout.decode()
        got = np.array([[int(v) for v in line.split()] for line in out.strip().split('\n')])
        np.testing.assert_array_equal(got, logits[:40])


def test_integer_executor_counts_the_multiplications_of_grouped_free_tables(tmp_path):
    from nnabla_lutq.integer import IntegerNetwork
    from nnabla_lutq.integer import ops as O
    path = _int_network(tmp_path, 'free')
    net = IntegerNetwork.from_nnp(path, input_scale=1 / 16, acc_bits=64)
    assert not net.multiplier_less
    x = np.random.RandomState(6).randint(0, 256, (200, 1, 8, 8)).astype(np.uint8)
    logits, scale = net(x)
    ref = _reference64(path, x.astype(np.float64) / 16)
    # exact dictionaries (64-bit accumulators): the logits are the float64 network's, to float64
    # rounding of the reference and half a logit unit
    assert net.exact
    assert np.abs(logits * scale - ref).max() <= scale / 2 + 1e-9 * np.abs(ref).max()
    for row, op in zip(net.op_counts(), net.program.ops):
        if isinstance(op, (O.LutConvOp, O.LutAffineOp)):
            # per output channel, one look-up per distinct non-zero index it uses, a
            # multiplication unless that value of its own group's row is a power of two
            positions = op.size // op.A2.shape[0]
            d = np.array(op.D).reshape(-1, op.K)
            used = [(op.rows[o], k) for o in range(op.A2.shape[0])
                    for k in np.unique(op.A2[o]) if d[op.rows[o], k] != 0]
            mults = sum(1 for g, k in used if abs(d[g, k]) & (abs(d[g, k]) - 1))
            assert row['lookups'] == len(used) * positions
            assert row['mults'] == mults * positions
