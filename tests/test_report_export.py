# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
import os

import numpy as np
import pytest
import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF
from nnabla.utils.nnp_graph import NnpLoader

import nnabla_lutq
from reference import ref_pruned


def _model(x, test=False):
    h = PF.lutq_convolution(x, 8, (3, 3), pad=(1, 1), n_values=5, name='c1', with_bias=False)
    h = F.relu(PF.batch_normalization(h, batch_stat=not test, name='bn1'))
    h = PF.convolution(h, 4, (1, 1), name='c2')  # a float layer
    h = F.relu(PF.mlbn(h, batch_stat=not test, name='bn2'))
    return PF.lutq_affine(h, 3, n_values=4, dictionary='pow2', prune_ratio=0.5, name='fc')


def test_report_counts_memory_and_multiplications(rng):
    x = nn.Variable.from_numpy_array(rng.randn(2, 3, 6, 6).astype(np.float32))
    y = _model(x)
    rows = nnabla_lutq.report(y)
    by = {r.name: r for r in rows}
    assert list(by) == ['c1/lutq_conv', 'bn1/bn', 'c2/conv', 'bn2/mlbn', 'fc/lutq_affine']
    c1 = by['c1/lutq_conv']
    # K=5 -> 3 bits; N = 8*3*3*3 = 216; memory K*32 + N*3
    assert (c1.n_values, c1.n_weights, c1.bits, c1.memory_bits, c1.float_memory_bits) == \
        (5, 216, 3, 5 * 32 + 216 * 3, 216 * 32)
    d = nn.get_parameters(grad_only=False)['c1/lutq_conv/d'].d
    nonzero = len(set(d[d != 0].tolist()))
    assert c1.mults == 8 * 6 * 6 * min(nonzero, 27) and c1.float_mults == 8 * 6 * 6 * 27
    c2 = by['c2/conv']
    assert not c2.lutq and c2.mults == c2.float_mults == 4 * 36 * 8 and c2.memory_bits == 32 * 32
    fc = by['fc/lutq_affine']
    a = nn.get_parameters(grad_only=False)['fc/lutq_affine/A'].d
    fd = nn.get_parameters(grad_only=False)['fc/lutq_affine/d'].d
    # the pruned pow-2 table: d[0] = 0 takes exactly the ceil(N/2) smallest |W| (brute force),
    # the other values are sorted powers of two
    w = nn.get_parameters(grad_only=False)['fc/lutq_affine/W'].d.ravel()
    assert fd[0] == 0 and np.all(np.diff(fd[1:]) >= 0)
    assert np.all(np.abs(fd[1:]) == 2.0 ** np.round(np.log2(np.abs(fd[1:]))))
    np.testing.assert_array_equal(a.ravel() == 0, ref_pruned(w, int(np.ceil(0.5 * w.size))))
    # 3 outputs x distinct non-zero values, as shifts
    assert fc.pow2 and fc.mults == 0 and fc.shifts == 3 * len(set(fd[fd != 0].tolist()))
    assert fc.sparsity == pytest.approx(np.mean(a == 0)) and fc.sparsity >= 0.5
    assert fc.memory_bits == 4 * 32 + 144 * 3 * 2
    assert by['bn2/mlbn'].shifts == 4 * 36 and by['bn2/mlbn'].mults == 0
    assert by['bn1/bn'].mults == 8 * 36
    t = rows.totals
    assert t['memory_bits'] == sum(r.memory_bits for r in rows)
    table = rows.table()
    assert 'c1/lutq_conv' in table and 'total' in table and 'smaller' in table
    # the inference graph (mlbn folded, tables only) gives the same rows
    with nnabla_lutq.inference_mode():
        yi = _model(x, test=True)
    assert [r.name for r in nnabla_lutq.report(yi)] == list(by)


def test_export_nnp_reloads_with_identical_outputs(rng, tmp_path):
    x = nn.Variable.from_numpy_array(rng.randn(4, 3, 6, 6).astype(np.float32))
    _model(x)
    with nnabla_lutq.inference_mode():
        y = _model(x, test=True)
    y.forward()
    path = str(tmp_path / 'm.nnp')
    saved = nnabla_lutq.export_nnp(path, {'x': x}, {'y': y})
    assert 'c1/lutq_conv/A' in saved and 'c1/lutq_conv/d' in saved
    assert not any(n.endswith('lutq_conv/W') or n.endswith('lutq_affine/W') for n in saved)
    net = NnpLoader(path).get_network('lutq', batch_size=4)
    xi, yo = list(net.inputs.values())[0], list(net.outputs.values())[0]
    xi.d = x.d
    yo.forward()
    assert np.array_equal(yo.d, y.d)
    assert nn.get_parameters(grad_only=False)['c1/lutq_conv/A'].d.dtype == np.int32


def test_export_refuses_training_graphs_and_keeps_existing_file(rng, tmp_path):
    x = nn.Variable.from_numpy_array(rng.randn(2, 3, 6, 6).astype(np.float32))
    y = _model(x, test=True)  # built outside inference_mode: reads W
    path = tmp_path / 'm.nnp'
    path.write_bytes(b'old')
    with pytest.raises(ValueError, match='inference_mode'):
        nnabla_lutq.export_nnp(str(path), {'x': x}, {'y': y})
    assert path.read_bytes() == b'old'
    with pytest.raises(ValueError, match='.nnp'):
        nnabla_lutq.export_nnp(str(tmp_path / 'm.zip'), {'x': x}, {'y': y})
    assert os.listdir(tmp_path) == ['m.nnp']


def _float_model(x):
    h = F.relu(PF.batch_normalization(PF.convolution(x, 4, (3, 3), name='c1'), name='b1'))
    return PF.affine(h, 3, name='fc')


def _lutq_model(x):
    h = F.relu(PF.mlbn(PF.lutq_convolution(x, 4, (3, 3), name='c1', n_values=4), name='b1'))
    return PF.lutq_affine(h, 3, name='fc', n_values=3)


def test_load_float_parameters_maps_scopes_and_initializes_tables(rng, tmp_path):
    x = nn.Variable.from_numpy_array(rng.randn(2, 3, 6, 6).astype(np.float32))
    _float_model(x)
    p = nn.get_parameters(grad_only=False)
    p['b1/bn/gamma'].d = rng.rand(1, 4, 1, 1) + 0.5
    floats = {k: v.d.copy() for k, v in p.items()}
    nn.save_parameters(str(tmp_path / 'f.h5'))
    nn.clear_parameters()
    _lutq_model(x)
    mapping = nnabla_lutq.load_float_parameters(str(tmp_path / 'f.h5'))
    assert mapping['c1/conv/W'] == 'c1/lutq_conv/W' and mapping['b1/bn/gamma'] == 'b1/mlbn/gamma'
    q = nn.get_parameters(grad_only=False)
    np.testing.assert_array_equal(q['c1/lutq_conv/W'].d, floats['c1/conv/W'])
    np.testing.assert_array_equal(q['b1/mlbn/gamma'].d, floats['b1/bn/gamma'])
    from nnabla_lutq.core import init_dictionary
    for s in nnabla_lutq.lutq_layers():
        d, a = init_dictionary(s.W.d, s.config)
        np.testing.assert_array_equal(s.d.d, d)
        np.testing.assert_array_equal(s.A.d, a)
        assert s.A.d.dtype == np.int32


def test_load_float_parameters_errors_change_nothing(rng, tmp_path):
    x = nn.Variable.from_numpy_array(rng.randn(2, 3, 6, 6).astype(np.float32))
    _float_model(x)
    nn.save_parameters(str(tmp_path / 'f.h5'))
    nn.clear_parameters()
    h = PF.lutq_convolution(x, 5, (3, 3), name='c1', n_values=4)  # 5 maps: shape mismatch
    PF.lutq_affine(F.relu(PF.mlbn(h, name='b1')), 3, name='fc', n_values=3)
    before = {k: v.d.copy() for k, v in nn.get_parameters(grad_only=False).items()}
    with pytest.raises(ValueError, match=r'c1/conv/W \(4, 3, 3, 3\) does not fit'):
        nnabla_lutq.load_float_parameters(str(tmp_path / 'f.h5'))
    for k, v in nn.get_parameters(grad_only=False).items():
        assert np.array_equal(v.d, before[k])
    with pytest.raises(ValueError, match='no such file'):
        nnabla_lutq.load_float_parameters(str(tmp_path / 'missing.h5'))
    with pytest.raises(ValueError, match='.h5 parameter file'):
        nnabla_lutq.load_float_parameters(str(tmp_path / 'f.protobuf'))
    with pytest.raises(ValueError, match='no LUT-Q or mlbn layer named'):
        nnabla_lutq.initialize(['nope'])


@pytest.mark.parametrize('test', [False, True])
def test_a_multiplier_less_bn_called_twice_counts_its_memory_once_and_its_calls_twice(rng, test):
    """One PF.mlbn layer (same name) applied to two inputs: one row, memory once, a shift per
    element per call; in the training graph (the normalization) and the inference graph
    (x * a + b)."""
    x = nn.Variable.from_numpy_array(rng.randn(2, 4, 6, 6).astype(np.float32))
    h1 = PF.mlbn(x, batch_stat=not test, name='shared')
    h2 = PF.mlbn(F.average_pooling(F.relu(h1), (2, 2)), batch_stat=not test, name='shared')
    rows = {r.name: r for r in nnabla_lutq.report(h2)}
    bn = rows['shared/mlbn']
    assert list(rows) == ['shared/mlbn'] and bn.calls == 2
    assert bn.memory_bits == 2 * 4 * 32  # a and b per channel, once
    assert bn.shifts == 4 * 36 + 4 * 9 and bn.mults == 0 and bn.float_mults == bn.shifts
