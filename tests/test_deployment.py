# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Export and deployment: NNP (tables, folded mlbn, dense), the packed .lutq format, post-training
LUT-Q, ONNX and the ``nnabla-lutq`` command, on small conv + affine + mlbn networks."""
import json
import math
import os
import struct
import zlib

import numpy as np
import pytest
import nnabla as nn
from nnabla.utils.nnp_graph import NnpLoader

import nnabla_lutq
from nnabla_lutq import cli
from nnabla_lutq.core import is_pow2_array
from examples.common.models import Layers, digits_cnn, resnet20
from nnabla_lutq.io.nnp import NnpError, read_nnp
from nnabla_lutq.io.packed import (LutqFormatError, pack, pack_indices, read_lutq, unpack,
                                unpack_indices)
from nnabla_lutq.io.quantize import quantize_nnp

LUTQ = Layers(lutq=True, n_values=4, dictionary='pow2', mlbn=True)


def _randomize_stats(rng):
    for k, v in nn.get_parameters(grad_only=False).items():
        if k.endswith(('/mean', '/beta')):
            v.d = rng.randn(*v.shape) * 0.3
        elif k.endswith(('/var', '/gamma')):
            v.d = rng.rand(*v.shape) + 0.5


def build(layers, rng, batch=5, model=digits_cnn, shape=(1, 8, 8)):
    """Training graph (creates the parameters), random BN statistics, inference graph."""
    x = nn.Variable((batch,) + shape)
    with nn.parameter_scope('net'):
        model(x, layers, test=False)
    _randomize_stats(rng)
    if layers.lutq:
        nnabla_lutq.initialize()
    with nnabla_lutq.inference_mode(), nn.parameter_scope('net'):
        y = model(x, layers, test=True)
    x.d = rng.rand(*x.shape) * 2 - 1
    y.forward()
    return x, y


def load_run(path, xd, scope='loaded'):
    with nn.parameter_scope(scope):
        net = NnpLoader(str(path)).get_network('lutq', batch_size=len(xd))
    xi, yo = list(net.inputs.values())[0], list(net.outputs.values())[0]
    xi.d = xd
    yo.forward()
    return yo.d.copy()


# --- NNP --------------------------------------------------------------------------------------

def test_export_keeps_tables_folds_mlbn_and_reloads_exactly(tmp_path, rng, ctx):
    """Reloaded in the same context the outputs are identical; in a half context the file holds
    the float32 folding (fold_mlbn's values) while the in-memory graph folds in half, so the
    outputs agree to half precision."""
    with nn.context_scope(ctx):
        _export_keeps_tables_folds_mlbn_and_reloads_exactly(tmp_path, rng,
                                                           exact='half' not in ctx.backend[0])


def _export_keeps_tables_folds_mlbn_and_reloads_exactly(tmp_path, rng, exact=True):
    def same(got, want):
        if exact:
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=2e-2, atol=1e-2)
    x, y = build(LUTQ, rng)
    path = tmp_path / 'm.nnp'
    names = nnabla_lutq.export_nnp(str(path), {'x': x}, {'y': y})
    model = read_nnp(str(path))
    types = [f.type for f in model.proto.network[0].function]
    assert types.count('Embed') == 4 and 'BatchNormalization' not in types and 'Log' not in types
    assert not any(n.endswith('/W') for n in names)
    for layer in ('conv1/lutq_conv', 'conv2/lutq_conv', 'conv3/lutq_conv', 'fc/lutq_affine'):
        a, d = model.params[f'net/{layer}/A'], model.params[f'net/{layer}/d']
        assert a.dtype == np.int32 and d.shape == (4,)
        src = [s for s in nnabla_lutq.lutq_layers() if s.name == f'net/{layer}'][0]
        np.testing.assert_array_equal(a, src.A.d)
    # mlbn stored as x * a + b with power-of-two a equal to fold_mlbn
    for bn in ('bn1', 'bn2', 'bn3'):
        a_ref, b_ref = nnabla_lutq.fold_mlbn(f'net/{bn}/mlbn')
        a = model.params[f'net/{bn}/mlbn/a']
        assert is_pow2_array(a)
        np.testing.assert_array_equal(a.ravel(), a_ref.ravel())
        np.testing.assert_allclose(model.params[f'net/{bn}/mlbn/b'].ravel(), b_ref.ravel(),
                                   rtol=1e-6, atol=1e-6)
    same(load_run(path, x.d), y.d)
    # nnabla.utils.load reproduces it too
    from nnabla.utils import load
    with nn.parameter_scope('load2'):
        info = load.load([str(path)], batch_size=len(x.d))
        out = info.executors['runtime'].network(nn.Variable.from_numpy_array(x.d))
    out.forward()
    same(out.d, y.d)


def test_export_without_folding_keeps_the_mlbn_subgraph(tmp_path, rng):
    x, y = build(LUTQ, rng)
    path = tmp_path / 'raw.nnp'
    names = nnabla_lutq.export_nnp(str(path), {'x': x}, {'y': y}, fold=False)
    assert 'net/bn1/mlbn/gamma' in names and 'net/bn1/mlbn/a' not in names
    assert 'Round' in [f.type for f in read_nnp(str(path)).proto.network[0].function]
    np.testing.assert_array_equal(load_run(path, x.d), y.d)


def test_dense_export_stores_q_as_float_weights(tmp_path, rng):
    x, y = build(LUTQ, rng)
    path = tmp_path / 'dense.nnp'
    nnabla_lutq.export_nnp(str(path), {'x': x}, {'y': y}, dense=True)
    model = read_nnp(str(path))
    assert 'Embed' not in [f.type for f in model.proto.network[0].function]
    assert not any(k.endswith(('/A', '/d')) for k in model.params)
    for s in nnabla_lutq.lutq_layers():
        np.testing.assert_array_equal(model.params[s.name + '/W'], s.d.d[s.A.d])
    np.testing.assert_array_equal(load_run(path, x.d), y.d)


def test_export_refuses_replaced_parameters_instead_of_writing_a_wrong_file(tmp_path, rng):
    x, y = build(Layers(lutq=True, n_values=4), rng)
    nnabla_lutq.export_nnp(str(tmp_path / 'a.nnp'), {'x': x}, {'y': y})
    NnpLoader(str(tmp_path / 'a.nnp')).get_network('lutq', batch_size=1)  # global scope
    with pytest.raises(ValueError, match='parameter_scope'):
        nnabla_lutq.export_nnp(str(tmp_path / 'b.nnp'), {'x': x}, {'y': y})
    assert not (tmp_path / 'b.nnp').exists()


# --- packed format ----------------------------------------------------------------------------

@pytest.mark.parametrize('bits', [1, 2, 3, 4, 5, 7, 8])
def test_index_packing_matches_a_bit_string_reference(bits, rng):
    n = 37
    a = rng.randint(0, 2 ** bits, n)
    packed = pack_indices(a, bits)
    assert len(packed) == math.ceil(n * bits / 8)
    stream = ''.join(format(v, f'0{bits}b')[::-1] for v in a)  # LSB first
    stream += '0' * (-len(stream) % 8)
    ref = bytes(int(stream[i:i + 8][::-1], 2) for i in range(0, len(stream), 8))
    assert packed == ref
    np.testing.assert_array_equal(unpack_indices(packed, n, bits), a)


def _exported(tmp_path, rng, layers=LUTQ, **kw):
    x, y = build(layers, rng, **kw)
    path = tmp_path / 'm.nnp'
    nnabla_lutq.export_nnp(str(path), {'x': x}, {'y': y})
    return x, y, path


def test_pack_unpack_roundtrip_and_byte_counts(tmp_path, rng):
    x, y, path = _exported(tmp_path, rng, Layers(lutq=True, n_values=8, mlbn=True,
                                                 prune_ratio=0.3))
    st = pack(str(path), str(tmp_path / 'm.lutq'))
    model = read_nnp(str(path))
    tables = [s for s in nnabla_lutq.lutq_layers()]
    expect = sum(4 * 8 + math.ceil(s.A.d.size * 3 / 8) for s in tables)  # K*32 + N*3 bits
    assert st['tables'] == expect
    assert [x['bytes'] for x in st['layers']] == [
        4 * 8 + math.ceil(s.A.d.size * 3 / 8) for s in sorted(
            tables, key=lambda s: list(model.params).index(s.name + '/A'))]
    raw = sum(v.nbytes for k, v in model.params.items() if not k.endswith(('/A', '/d')))
    assert st['raw'] == raw
    assert st['total'] == os.path.getsize(tmp_path / 'm.lutq') == expect + raw + st['overhead']
    assert st['overhead'] <= 4096
    back = unpack(str(tmp_path / 'm.lutq'), str(tmp_path / 'back.nnp'))
    assert list(back.params) == list(model.params)  # same parameters, in the same order
    for k, v in model.params.items():
        assert back.params[k].dtype == v.dtype
        np.testing.assert_array_equal(back.params[k], v)
    np.testing.assert_array_equal(load_run(tmp_path / 'back.nnp', x.d), y.d)


def test_resnet20_metadata_fits_in_4_kib(tmp_path, rng):
    layers = Layers(lutq=True, n_values=16, dictionary='pow2', mlbn=True)
    x, y = build(layers, rng, batch=1, model=resnet20, shape=(3, 32, 32))
    nnabla_lutq.export_nnp(str(tmp_path / 'r.nnp'), {'x': x}, {'y': y})
    st = pack(str(tmp_path / 'r.nnp'), str(tmp_path / 'r.lutq'))
    assert len(st['layers']) == 22
    assert st['overhead'] <= 4096, st
    n = sum(s.A.d.size for s in nnabla_lutq.lutq_layers())
    assert st['tables'] == sum(64 + math.ceil(s.A.d.size / 2) for s in nnabla_lutq.lutq_layers())
    assert st['tables'] < n * 4 / 7  # ~8x smaller than float weights


def test_damaged_lutq_files_give_clear_errors(tmp_path, rng):
    _, _, path = _exported(tmp_path, rng)
    good = tmp_path / 'm.lutq'
    pack(str(path), str(good))
    data = good.read_bytes()
    out = tmp_path / 'out.nnp'
    out.write_bytes(b'keep me')
    cases = {
        'truncated': data[:len(data) // 2],
        'corrupted': data[:200] + bytes([data[200] ^ 0x10]) + data[201:],
        'format version 7': data[:4] + struct.pack('<H', 7) + data[6:],
        'not a .lutq file': b'PK\x03\x04' + data[4:],
    }
    for message, blob in cases.items():
        bad = tmp_path / 'bad.lutq'
        bad.write_bytes(blob)
        with pytest.raises(LutqFormatError, match=message):
            unpack(str(bad), str(out))
        assert out.read_bytes() == b'keep me'  # nothing written on failure
    # a payload that disagrees with its manifest is refused even with a valid checksum
    body = bytearray(data[:-4][:-3])
    body[12:20] = struct.pack('<Q', struct.unpack('<Q', data[12:20])[0] - 3)
    bad = tmp_path / 'bad.lutq'
    bad.write_bytes(bytes(body) + struct.pack('<I', zlib.crc32(bytes(body)) & 0xFFFFFFFF))
    with pytest.raises(LutqFormatError, match='payload'):
        read_lutq(str(bad))


# --- post-training LUT-Q ----------------------------------------------------------------------

def _float_model(tmp_path, rng):
    x, y = build(Layers(), rng, batch=20)
    path = tmp_path / 'float.nnp'
    nnabla_lutq.export_nnp(str(path), {'x': x}, {'y': y})
    return x, y, path


@pytest.mark.parametrize('dictionary,prune', [('free', 0.0), ('pow2', 0.0), ('free', 0.5)])
def test_quantize_nnp_replaces_weights_by_nearest_values(tmp_path, rng, dictionary, prune):
    x, y, path = _float_model(tmp_path, rng)
    floats = read_nnp(str(path)).params
    out = tmp_path / 'q.nnp'
    labels = y.d.argmax(1)
    r = quantize_nnp(str(path), str(out), n_values=8, dictionary=dictionary,
                     prune_ratio=prune, data=(x.d, labels))
    assert r['accuracy_before'] == 1.0  # labels are the float model's own predictions
    model = read_nnp(str(out))
    assert not any(k.endswith('/W') for k in model.params)
    assert 'net/fc/lutq_affine/b' in model.params and 'net/fc/affine/b' not in model.params
    for name in ('conv1', 'conv2', 'conv3', 'fc'):
        scope = 'affine' if name == 'fc' else 'conv'
        w = floats[f'net/{name}/{scope}/W']
        d = model.params[f'net/{name}/lutq_{scope}/d']
        a = model.params[f'net/{name}/lutq_{scope}/A']
        assert a.dtype == np.int32 and len(d) == 8
        if dictionary == 'pow2':
            assert is_pow2_array(d)
        if prune:
            assert np.mean(d[a] == 0) >= prune
        else:  # brute force: every weight sits on its nearest dictionary value
            dist = np.abs(w.ravel()[:, None] - d[None, :])
            np.testing.assert_allclose(dist[np.arange(w.size), a.ravel()], dist.min(1))
    # the file computes the float network with W replaced by d[A]
    for k, v in nn.get_parameters(grad_only=False).items():
        if k.endswith('/W'):
            lk = k.replace('/conv/W', '/lutq_conv/').replace('/affine/W', '/lutq_affine/')
            v.d = model.params[lk + 'd'][model.params[lk + 'A']]
    y.forward()
    np.testing.assert_allclose(load_run(out, x.d), y.d, rtol=1e-5, atol=1e-6)
    assert r['accuracy_after'] == np.mean(y.d.argmax(1) == labels)


def test_quantize_nnp_errors_change_nothing(tmp_path, rng):
    _, _, path = _float_model(tmp_path, rng)
    out = tmp_path / 'q.nnp'
    for kw, msg in (({'n_values': 1}, 'n_values|K'), ({'prune_ratio': 1.5}, 'prune'),
                    ({'dictionary': 'log'}, 'dictionary')):
        with pytest.raises(ValueError, match=msg):
            quantize_nnp(str(path), str(out), **kw)
        assert not out.exists()
    with pytest.raises(ValueError, match='another file'):
        quantize_nnp(str(path), str(path))
    quantize_nnp(str(path), str(out))
    with pytest.raises(NnpError, match='already LUT-Q'):
        quantize_nnp(str(out), str(tmp_path / 'q2.nnp'))


def test_quantize_nnp_is_the_in_memory_conversion_and_leaves_the_users_parameters(tmp_path, rng):
    """Post-training quantization of a file = convert() of the same float network in memory
    (mlbn included), exported: the outputs are identical, and the parameters the user had
    registered are the same objects with the same values afterwards."""
    x, y, path = _float_model(tmp_path, rng)
    mine = {k: (v, v.d.copy()) for k, v in nn.get_parameters(grad_only=False).items()}
    out = tmp_path / 'q.nnp'
    r = quantize_nnp(str(path), str(out), n_values=4, dictionary='pow2', mlbn=True)
    after = nn.get_parameters(grad_only=False)
    assert list(after) == list(mine)
    for k, (v, d) in mine.items():
        assert after[k] is v and np.array_equal(v.d, d), k
    assert {d.action for d in r['plan']} == {'lutq', 'mlbn'}
    meta = read_nnp(str(out)).meta
    assert meta['bn'] and all(b['multiplier_less'] and b['folded'] for b in meta['bn'].values())
    with nnabla_lutq.inference_mode():  # the same conversion in memory
        yq = nnabla_lutq.convert(y, nnabla_lutq.LayerConfig(4, 'pow2'), mlbn=True)
    yq.forward()
    np.testing.assert_array_equal(load_run(out, x.d), yq.d)


def test_export_saves_once_with_nnabla_and_never_reads_back(tmp_path, rng, monkeypatch):
    """One serialization (nnabla's save, plus the description) and no temporary file parsed or
    reloaded: the constants are folded in the live graph."""
    import nnabla.utils.nnp_graph
    import nnabla_lutq.io.export as export
    x, y = build(LUTQ, rng)
    calls = []
    real = export.save
    monkeypatch.setattr(export, 'save', lambda *a, **k: (calls.append(a[0]), real(*a, **k)))

    def refuse(*a, **k):
        raise AssertionError('export read a file back')
    monkeypatch.setattr(nnabla.utils.nnp_graph.NnpLoader, '__init__', refuse)
    monkeypatch.setattr('nnabla_lutq.io.nnp.read_nnp', refuse)
    nnabla_lutq.export_nnp(str(tmp_path / 'm.nnp'), {'x': x}, {'y': y})
    assert len(calls) == 1
    monkeypatch.undo()
    np.testing.assert_array_equal(load_run(tmp_path / 'm.nnp', x.d), y.d)


# --- command line -----------------------------------------------------------------------------

def test_cli_commands(tmp_path, rng, capsys):
    x, y, path = _exported(tmp_path, rng)
    lutq = tmp_path / 'm.lutq'
    assert cli.main(['pack', str(path), str(lutq)]) == 0
    assert cli.main(['unpack', str(lutq), str(tmp_path / 'u.nnp')]) == 0
    capsys.readouterr()
    assert cli.main(['info', str(lutq)]) == 0
    text = capsys.readouterr().out
    assert 'net/conv2/lutq_conv' in text and 'net/bn1/mlbn' in text and 'total' in text
    assert cli.main(['info', '--json', str(path)]) == 0
    rep = json.loads(capsys.readouterr().out)
    lut = [r for r in rep['layers'] if r['type'] != 'bn']
    assert len(lut) == 4 and all(r['lutq'] and r['n_values'] == 4 and r['bits'] == 2 and
                                 r['pow2'] for r in lut)
    for r in lut:
        assert r['memory_bits'] == 4 * 32 + r['n_weights'] * 2
    assert all(r['pow2'] for r in rep['layers'] if r['type'] == 'bn')
    # plots: usage counts from a .nnp, histograms with dictionary marks from parameters
    assert cli.main(['plot', str(path), '-o', str(tmp_path / 'p.png')]) == 0
    nn.save_parameters(str(tmp_path / 'params.h5'))
    assert cli.main(['plot', str(tmp_path / 'params.h5'), '-o', str(tmp_path / 'h.png')]) == 0
    assert (tmp_path / 'p.png').stat().st_size > 5000 and (tmp_path / 'h.png').stat().st_size > 5000
    nn.clear_parameters()
    (tmp_path / 'f').mkdir()
    fx, fy, fpath = _float_model(tmp_path / 'f', rng)
    _float_model_data = (fx.d.copy(), fy.d.argmax(1))
    fx, fy = _float_model_data
    np.savez(tmp_path / 'eval.npz', x=fx, y=fy)
    capsys.readouterr()
    assert cli.main(['convert', str(fpath), str(tmp_path / 'c.nnp'), '--n-values', '4',
                     '--dictionary', 'pow2', '--eval-data', str(tmp_path / 'eval.npz')]) == 0
    assert 'float 100.00% -> LUT-Q' in capsys.readouterr().out
    assert read_nnp(str(tmp_path / 'c.nnp')).params['net/conv1/lutq_conv/d'].shape == (4,)


def test_cli_errors_are_one_line_and_nonzero(tmp_path, capsys):
    (tmp_path / 'junk.lutq').write_bytes(b'junk')
    for argv in (['info', str(tmp_path / 'missing.nnp')], ['unpack', str(tmp_path / 'junk.lutq'),
                                                           str(tmp_path / 'o.nnp')],
                 ['pack', str(tmp_path / 'missing.nnp'), str(tmp_path / 'o.lutq')],
                 ['info', str(tmp_path / 'x.txt')]):
        capsys.readouterr()
        assert cli.main(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith('nnabla-lutq: error:'), err
    with pytest.raises(SystemExit) as e:
        cli.main(['convert', 'a.nnp'])
    assert e.value.code == 2


# --- ONNX -------------------------------------------------------------------------------------

def test_onnx_export_matches_onnxruntime(tmp_path, rng):
    pytest.importorskip('nnabla.utils.converter.onnx')
    pytest.importorskip('onnxruntime')
    from nnabla_lutq.io.onnx import check_onnx, export_onnx
    x, y, path = _exported(tmp_path, rng)
    info = export_onnx(str(path), str(tmp_path / 'm.onnx'))
    assert info['gather_layers'] == 4 and info['dense_names'] == []  # affine keeps its table
    import onnx
    graph = onnx.load(str(tmp_path / 'm.onnx')).graph
    assert sum(n.op_type == 'Gather' for n in graph.node) == 4
    for xb in (rng.rand(1, 1, 8, 8), rng.randn(1, 1, 8, 8)):
        assert check_onnx(str(tmp_path / 'm.onnx'), str(path), xb.astype(np.float32)) < 1e-5


def test_console_script_prints_one_line_on_error(tmp_path):
    import subprocess
    import sys
    r = subprocess.run([sys.executable, '-m', 'nnabla_lutq.cli', 'info',
                        str(tmp_path / 'missing.nnp')], capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"nnabla-lutq: error: {tmp_path / 'missing.nnp'}: no such file"]
    assert r.stdout == ''
