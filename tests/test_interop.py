# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Deployment through nnabla's own tools: NNB (nnabla's NNB writer, ``nnabla_cli convert`` and
``nnb_template``, nnabla's C runtime where one is given) and ONNX (nnabla's ONNX exporter,
onnxruntime), for every layer kind: convolution, grouped and depthwise convolution, affine,
multiplier-less BN (folded or not) and float BN.

The NNB files are read back with a decoder written here from the layout nnabla's writer documents
(``nnabla/utils/converter/nnablart/nnb.py``): the network it holds is rebuilt as an .nnp and run
with nnabla, beside the model it came from. Set ``NNABLA_C_RUNTIME`` to an ``nnablart`` binary
(built from sony/nnabla-c-runtime) to also run the files in nnabla's C runtime."""
import os
import shutil
import struct
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF

import nnabla_lutq
from nnabla_lutq import cli
from nnabla_lutq.nn import layers as LPF
from nnabla_lutq.io.nnb import FIXED_TYPES, export_nnb, weight_type
from nnabla_lutq.io.nnp import Nnp, loaded_network, read_nnp, write_nnp

pytest.importorskip('nnabla.utils.converter.nnablart')

TABLES = ('conv/lutq_conv', 'gconv/lutq_conv', 'dw/lutq_depthwise_conv', 'fc/lutq_affine')


def model(x, test, dictionary):
    """Every layer kind: conv + mlbn, grouped conv + float BN, depthwise conv, affine."""
    k = 4 if dictionary == 'pow2' else 16
    h = LPF.lutq_convolution(x, 8, (3, 3), pad=(1, 1), n_values=k, dictionary=dictionary,
                             name='conv')
    h = F.relu(LPF.mlbn(h, batch_stat=not test, name='bn1'))
    h = LPF.lutq_convolution(h, 8, (3, 3), pad=(1, 1), group=2, n_values=k,
                             dictionary=dictionary, name='gconv')
    h = PF.batch_normalization(h, batch_stat=not test, name='bn2')
    h = LPF.lutq_depthwise_convolution(h, (3, 3), pad=(1, 1), n_values=k, dictionary=dictionary,
                                       name='dw')
    h = F.average_pooling(F.relu(h), (2, 2))
    return LPF.lutq_affine(h, 10, n_values=k, dictionary=dictionary, name='fc')


def exported(path, dictionary='pow2', fold=True, batch=2, dense=False):
    """A LUT-Q model of every layer kind, exported with :func:`nnabla_lutq.export_nnp`."""
    rng = np.random.RandomState(7)
    nn.random.seed(7)  # the initializers' generator
    x = nn.Variable((batch, 3, 8, 8))
    model(x, False, dictionary)
    for k, v in nn.get_parameters(grad_only=False).items():
        if k.endswith(('/mean', '/beta')):
            v.d = rng.randn(*v.shape) * 0.3
        elif k.endswith(('/var', '/gamma')):
            v.d = rng.rand(*v.shape) + 0.5
    nnabla_lutq.initialize()
    with nnabla_lutq.inference_mode():
        y = model(x, True, dictionary)
    nnabla_lutq.export_nnp(str(path), {'x': x}, {'y': y}, fold=fold, batch_size=batch,
                           dense=dense)
    return str(path)


def run_nnp(path, x):
    """Outputs of an .nnp's first network run by nnabla on ``x``."""
    m = read_nnp(path)
    with loaded_network(path, m.proto.executor[0].network_name, len(x)) as net:
        list(net.inputs.values())[0].d = x
        y = list(net.outputs.values())[0]
        y.forward()
        return y.d.copy()


# --- an NNB reader, from the layout nnabla's writer (nnablart/nnb.py) documents ------------------

NNB_HEADER = 'IIiIiIiIiIiIII'
NNB_TYPES = {0: ('f', None), 1: ('h', 'FIXED16'), 2: ('b', 'FIXED8')}


def read_nnb(path):
    """An NNB file as ``(Nnp, variable types)``: the network rebuilt as nnabla's protobuf with the
    parameters decoded (fixed point ``q * 2^-fp_pos``, the Affine weight transposed back)."""
    from nnabla.utils import nnabla_pb2
    from nnabla.utils.converter import get_api_level_info, get_function_info
    data = open(path, 'rb').read()
    (version, level, _, _, n_var, var_list, n_func, func_list, n_in, in_list, n_out, out_list,
     n_mem, _) = struct.unpack_from(NNB_HEADER, data)
    head = struct.calcsize(NNB_HEADER)
    index = struct.unpack_from(f'{n_mem}I', data, head)
    base = head + 4 * n_mem

    def at(block):
        return base + index[block]

    def ints(n, block, fmt='I'):
        return list(struct.unpack_from(f'{n}{fmt}', data, at(block)))
    assert version == 2
    api = get_api_level_info()
    api.set_api_level(level)
    by_id = {i.func_id: name for name, i in api.function_dict.items()}
    table = get_function_info()
    proto = nnabla_pb2.NNablaProtoBuf()
    net = proto.network.add()
    net.name = 'nnb'
    params, types, shapes = {}, {}, {}
    for block in ints(n_var, var_list):
        vid, n_dim, dims, code, where = struct.unpack_from('IiIBi', data, at(block))
        shape = ints(n_dim, dims)
        fmt, kind = NNB_TYPES[code & 0xf]
        v = net.variable.add()
        v.name, v.type = f'v{vid}', 'Parameter' if where >= 0 else 'Buffer'
        v.shape.dim.extend(shape)
        shapes[v.name] = shape
        if where >= 0:
            q = np.array(ints(int(np.prod(shape)), where, fmt), np.float64)
            params[v.name] = (q / 2 ** (code >> 4)).astype(np.float32).reshape(shape)
            types[v.name] = f'{kind}_{code >> 4}' if kind else 'FLOAT32'
    net.batch_size = shapes[f'v{ints(n_in, in_list)[0]}'][0]
    for block in ints(n_func, func_list):
        fid, _, n_i, i_list, n_o, o_list = struct.unpack_from('HHiIiI', data, at(block))
        f = net.function.add()
        f.type = by_id[fid]
        f.name = f'f{len(net.function)}'
        f.input.extend(f'v{i}' for i in ints(n_i, i_list))
        f.output.extend(f'v{o}' for o in ints(n_o, o_list))
        code = api.get_argument_code(f.type)
        values = list(struct.unpack_from(code, data, at(block) + 20)) if code else []
        info = table[f.type]
        p = getattr(f, info['snake_name'] + '_param') if code else None
        for name, arg in info.get('arguments', {}).items():
            if arg['type'] in ('repeated int64', 'Shape'):
                n, lst = values.pop(0), values.pop(0)
                field = getattr(p, name)
                (field.dim if arg['type'] == 'Shape' else field).extend(ints(n, lst, 'i'))
            elif arg['type'] == 'string':
                setattr(p, name, arg['available_values'][values.pop(0)])
            else:
                setattr(p, name, values.pop(0))
        if f.type == 'Affine':  # stored transposed for the runtime
            w = f.input[1]
            rows = shapes[w][0]
            params[w] = params[w].reshape(-1, rows).T.reshape(shapes[w])
    e = proto.executor.add()
    e.name, e.network_name = 'runtime', 'nnb'
    for i in ints(n_in, in_list):
        e.data_variable.add().variable_name = f'v{i}'
    for o in ints(n_out, out_list):
        e.output_variable.add().variable_name = f'v{o}'
    for name in params:
        e.parameter_variable.add().variable_name = name
    return Nnp(proto, params, {k: False for k in params}), types


def nnb_functions(path):
    return [f.type for f in read_nnb(path)[0].proto.network[0].function]


def run_nnb(path, x, folder):
    nnp, _ = read_nnb(path)
    rebuilt = os.path.join(str(folder), 'from_nnb.nnp')
    write_nnp(rebuilt, nnp)
    return run_nnp(rebuilt, x)


# --- NNB ---------------------------------------------------------------------------------------

def _exact_type(values):
    """Reference for weight_type with exact rationals: the first of FIXED8, FIXED16 (smallest
    fp_pos 0..15) whose integers hold every value, else FLOAT32."""
    fr = [Fraction(float(v)) for v in np.unique(values)]
    for name, bits in FIXED_TYPES:
        for fp in range(16):
            q = [v * 2 ** fp for v in fr]
            if all(x.denominator == 1 and -2 ** (bits - 1) <= x <= 2 ** (bits - 1) - 1
                   for x in q):
                return f'{name}_{fp}'
    return 'FLOAT32'


@pytest.mark.parametrize('values', [
    [0.125, -0.0625, 0.03125, 0.0], [2.0 ** -15, 0.5], [2.0 ** -15, 2.0 ** -8],
    [2.0 ** -16, 1.0], [-1.0, 0.5, 127 / 128], [1.0, 128 / 128 + 0.0], [3.0, -128.0],
    [127.0, 128.0], [40000.0], [0.1, 0.2], [np.float32(0.1)], [np.inf, 1.0],
    [-32768 / 2 ** 15, 32767 / 2 ** 15], [1e-30]])
def test_weight_type_is_the_narrowest_exact_nnb_type(values):
    values = np.array(values, np.float32)
    assert weight_type(values) == (_exact_type(values) if np.all(np.isfinite(values))
                                   else 'FLOAT32')


def test_weight_type_of_random_power_of_two_tables():
    rng = np.random.RandomState(3)
    for _ in range(200):
        e = rng.randint(-20, 4, size=rng.randint(1, 8))
        v = (rng.choice([-1, 1], size=e.size) * 2.0 ** e).astype(np.float32)
        span = e.max() - e.min()
        t = weight_type(np.concatenate([v, [0]]))
        assert t == _exact_type(v)
        if e.min() >= -15 and span <= 6:
            assert t.startswith('FIXED8_')


@pytest.mark.parametrize('dictionary,fold', [('pow2', True), ('free', True), ('pow2', False)])
def test_nnb_holds_the_network_nnabla_computes(tmp_path, dictionary, fold):
    path = exported(tmp_path / 'm.nnp', dictionary, fold=fold, batch=2)
    info = export_nnb(path, str(tmp_path / 'm.nnb'), batch_size=3)
    x = np.random.RandomState(1).randn(3, 3, 8, 8).astype(np.float32)
    want = run_nnp(path, x)
    got = run_nnb(str(tmp_path / 'm.nnb'), x, tmp_path)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())
    nnp, types = read_nnb(str(tmp_path / 'm.nnb'))
    functions = [f.type for f in nnp.proto.network[0].function]
    assert 'Embed' not in functions and info['runtime_lacks'] == []
    weights = [f.input[0] if f.type == 'Identity' else f.input[1]
               for f in nnp.proto.network[0].function
               if f.type in ('Affine', 'DepthwiseConvolution', 'Convolution', 'Identity')]
    weights = [w for w in weights if w in nnp.params]
    src = read_nnp(path)
    if dictionary == 'pow2':  # every weight fixed point, convolutions through an Identity
        assert sorted(info['types']) == [t + '/W' for t in sorted(TABLES)]
        for t in TABLES:
            d, a = src.params[t + '/d'], src.params[t + '/A']
            assert info['types'][t + '/W'] == _exact_type(d[a]) != 'FLOAT32'
        assert sorted(types[w] for w in weights) == sorted(info['types'].values())
        assert functions.count('Identity') == 2
    else:
        assert info['types'] == {} and len(info['float_weights']) == 4
        assert 'Identity' not in functions
        assert all(types[w] == 'FLOAT32' for w in weights)
    # the stored weights are the tables' values d[A]
    for t in TABLES:
        d, a = src.params[t + '/d'], src.params[t + '/A']
        assert any(np.array_equal(nnp.params[w], d[a]) for w in weights), t


def test_fixed_point_nnb_is_a_quarter_of_the_float_one(tmp_path):
    pow2 = export_nnb(exported(tmp_path / 'p.nnp', 'pow2'), str(tmp_path / 'p.nnb'))
    nn.clear_parameters()
    free = export_nnb(exported(tmp_path / 'f.nnp', 'free'), str(tmp_path / 'f.nnb'))
    n = sum(int(np.prod(read_nnp(str(tmp_path / 'p.nnp')).params[t + '/A'].shape))
            for t in TABLES)
    # 3 bytes saved per weight; the Identity functions and their buffers cost a few bytes more
    assert 3 * n - 200 <= free['bytes'] - pow2['bytes'] <= 3 * n


def _nnabla_cli(*args):
    exe = shutil.which('nnabla_cli', path=os.path.dirname(sys.executable))
    if exe is None:
        pytest.skip('nnabla_cli is not installed beside this python')
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=300)


def test_nnabla_cli_converts_what_export_nnb_gives_it_to_the_same_bytes(tmp_path):
    path = exported(tmp_path / 'm.nnp', 'pow2')
    # nnabla's command on the LUT-Q export itself: the Affine weight is computed, not stored
    r = _nnabla_cli('convert', path, str(tmp_path / 'raw.nnb'))
    assert r.returncode != 0 and "UnboundLocalError: local variable 'w_data'" in r.stdout
    info = export_nnb(path, str(tmp_path / 'm.nnb'), batch_size=2,
                      settings_path=str(tmp_path / 's.yaml'), nnp_out=str(tmp_path / 'd.nnp'))
    r = _nnabla_cli('convert', str(tmp_path / 'd.nnp'), str(tmp_path / 'cli.nnb'), '-b', '2',
                    '--api', str(info['api_level']), '--settings', str(tmp_path / 's.yaml'))
    assert r.returncode == 0, r.stdout
    assert (tmp_path / 'cli.nnb').read_bytes() == (tmp_path / 'm.nnb').read_bytes()
    r = _nnabla_cli('nnb_template', str(tmp_path / 'd.nnp'), str(tmp_path / 't.yaml'))
    assert r.returncode == 0, r.stdout
    import yaml
    template = yaml.safe_load((tmp_path / 't.yaml').read_text())
    settings = yaml.safe_load((tmp_path / 's.yaml').read_text())
    assert set(template['variables']) == set(settings['variables'])
    assert {settings['variables'][k] for k in info['types']} == set(info['types'].values())


def test_nnb_api_level_is_the_lowest_that_holds_the_network(tmp_path):
    from nnabla.utils.converter import get_api_level_info
    path = exported(tmp_path / 'm.nnp')
    info = export_nnb(path, str(tmp_path / 'm.nnb'))
    level = info['api_level']
    assert struct.unpack_from('II', (tmp_path / 'm.nnb').read_bytes())[1] == level
    api = get_api_level_info()
    api.set_api_level(-1)
    codes = {t: api.get_argument_code(t) for t in set(nnb_functions(str(tmp_path / 'm.nnb')))}
    api.set_api_level(level - 1)
    assert any(t not in api.function_dict or api.get_argument_code(t) != c
               for t, c in codes.items())
    api.set_api_level(-1)
    newest = export_nnb(path, str(tmp_path / 'n.nnb'), api_level=api.get_current_level())
    assert newest['api_level'] == api.get_current_level() > level


@pytest.mark.parametrize('kwargs,message', [
    ({'nnb_path': 'x.onnx'}, 'x.onnx: the NNB file name must end with .nnb'),
    ({'batch_size': 0}, 'batch_size must be an integer >= 1, got 0'),
    ({'api_level': 1}, 'api_level must be from '),
    ({'api_level': 10 ** 6}, 'api_level must be from '),
    ({'settings_path': 's.txt'}, 's.txt: the settings file name must end with .yaml or .yml'),
    ({'nnp_out': 'IN'}, 'used twice'),
])
def test_nnb_errors_are_one_line_and_write_nothing(tmp_path, kwargs, message):
    path = exported(tmp_path / 'm.nnp')
    before = sorted(os.listdir(tmp_path))
    args = {'nnb_path': str(tmp_path / 'm.nnb')}
    args.update({k: path if v == 'IN' else v for k, v in kwargs.items()})
    if 'settings_path' in args:
        args['settings_path'] = str(tmp_path / args['settings_path'])
        message = str(tmp_path / message)
    with pytest.raises(ValueError) as e:
        export_nnb(path, **args)
    assert message in str(e.value) and '\n' not in str(e.value)
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.skipif(not os.environ.get('NNABLA_C_RUNTIME'),
                    reason='set NNABLA_C_RUNTIME to an nnablart binary (nnabla-c-runtime)')
@pytest.mark.parametrize('dictionary', ['pow2', 'free'])
def test_nnabla_c_runtime_computes_what_nnabla_does(tmp_path, dictionary):
    path = exported(tmp_path / 'm.nnp', dictionary)
    export_nnb(path, str(tmp_path / 'm.nnb'), batch_size=2)
    x = np.random.RandomState(2).randn(2, 3, 8, 8).astype(np.float32)
    x.tofile(str(tmp_path / 'x.bin'))
    r = subprocess.run([os.environ['NNABLA_C_RUNTIME'], 'infer', str(tmp_path / 'm.nnb'),
                        str(tmp_path / 'x.bin'), str(tmp_path / 'y')], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    want = run_nnp(path, x)
    got = np.fromfile(str(tmp_path / 'y_0.bin'), np.float32).reshape(want.shape)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_nnb_command(tmp_path, capsys):
    path = exported(tmp_path / 'm.nnp')
    assert cli.main(['nnb', path, str(tmp_path / 'm.nnb'), '--batch-size', '2']) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"wrote {tmp_path / 'm.nnb'} (") and 'batch size 2' in out[0]
    assert sorted(line.split()[0] for line in out[1:]) == [t + '/W' for t in sorted(TABLES)]
    assert cli.main(['nnb', path, str(tmp_path / 'm.nnb'), '--api-level', '1']) == 1
    assert capsys.readouterr().err.startswith('nnabla-lutq: error: api_level must be from ')


# --- ONNX --------------------------------------------------------------------------------------

onnx_converter = pytest.mark.skipif(
    not all(__import__('importlib').util.find_spec(m) for m in ('onnx', 'onnxruntime')),
    reason='needs the [onnx] extra')


@onnx_converter
@pytest.mark.parametrize('dictionary,fold,batch', [('pow2', True, 1), ('free', True, 3),
                                                   ('pow2', False, 2)])
def test_onnx_keeps_every_table_as_gather_and_runs_in_onnxruntime(tmp_path, dictionary, fold,
                                                                 batch):
    import onnx
    from onnx import numpy_helper
    import onnxruntime as ort
    from nnabla_lutq.io.onnx import check_onnx, export_onnx
    path = exported(tmp_path / 'm.nnp', dictionary, fold=fold)
    info = export_onnx(path, str(tmp_path / 'm.onnx'), batch_size=batch)
    assert info['gather_layers'] == 4 and info['dense_names'] == []
    assert info['max_abs_diff'] is not None and info['max_abs_diff'] < 1e-5
    g = onnx.load(str(tmp_path / 'm.onnx')).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    src = read_nnp(path)
    assert sum(n.op_type == 'Gather' for n in g.node) == 4
    for t in TABLES:
        a = inits[t + '/A']
        assert a.dtype == np.uint8 and a.size == src.params[t + '/A'].size
        np.testing.assert_array_equal(inits[t + '/d'], src.params[t + '/d'])
        assert t + '/W' not in inits
    # depthwise weights in ONNX's (C, 1, kh, kw)
    assert inits['dw/lutq_depthwise_conv/A'].shape == (8, 1, 3, 3)
    sess = ort.InferenceSession(str(tmp_path / 'm.onnx'), providers=['CPUExecutionProvider'])
    assert sess.get_inputs()[0].shape[0] == batch
    rng = np.random.RandomState(5)
    for x in (rng.randn(batch, 3, 8, 8), rng.rand(batch, 3, 8, 8) * 4):
        assert check_onnx(str(tmp_path / 'm.onnx'), path, x.astype(np.float32)) < 1e-5


@onnx_converter
def test_nnabla_onnx_exporter_alone_refuses_a_lutq_affine(tmp_path):
    from nnabla.utils.converter.nnabla import NnpImporter
    from nnabla.utils.converter.onnx.exporter import OnnxExporter
    path = exported(tmp_path / 'm.nnp')
    nnp = NnpImporter(path, expand_network=True, executor_index=None).execute()
    with pytest.raises(ValueError, match="Embed_out.* is not in network's parameters"):
        OnnxExporter(nnp, 1, -1, opset='11').execute(str(tmp_path / 'raw.onnx'))


@onnx_converter
def test_onnx_file_that_onnxruntime_refuses_is_not_written(tmp_path, monkeypatch):
    """The earlier export (tables kept as nnabla's exporter writes them, only Affine folded) gave
    depthwise convolutions a (C, kh, kw) weight: the check refuses it and writes nothing."""
    import nnabla_lutq.io.onnx as io_onnx
    path = exported(tmp_path / 'm.nnp')
    fold = io_onnx.fold_constants
    monkeypatch.setattr(io_onnx, 'fold_constants', lambda m, dense: fold(m, dense={'Affine'}))
    with pytest.raises(ValueError, match='onnxruntime refuses the converted file'):
        io_onnx.export_onnx(path, str(tmp_path / 'm.onnx'))
    assert not (tmp_path / 'm.onnx').exists()


@onnx_converter
def test_a_dense_export_goes_through_nnablas_own_tools_unchanged(tmp_path):
    """``export_nnp(..., dense=True)`` (``d[A]`` stored as ``W``): nnabla's ``nnabla_cli convert``
    to NNB, ``nnb_template`` and nnabla's ONNX exporter take it as it is, and what they write
    computes what nnabla computes (NNB read back by the decoder above, ONNX by onnxruntime)."""
    from nnabla.utils.converter.nnabla import NnpImporter
    from nnabla.utils.converter.onnx.exporter import OnnxExporter
    from nnabla_lutq.io.onnx import check_onnx
    path = exported(tmp_path / 'm.nnp', 'pow2', dense=True)
    x = np.random.RandomState(3).randn(2, 3, 8, 8).astype(np.float32)
    want = run_nnp(path, x)
    r = _nnabla_cli('convert', path, str(tmp_path / 'm.nnb'), '-b', '2')
    assert r.returncode == 0, r.stdout
    got = run_nnb(str(tmp_path / 'm.nnb'), x, tmp_path)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    r = _nnabla_cli('nnb_template', path, str(tmp_path / 't.yaml'))
    assert r.returncode == 0, r.stdout
    nnp = NnpImporter(path, expand_network=True, executor_index=None).execute()
    OnnxExporter(nnp, 2, -1, opset='11').execute(str(tmp_path / 'm.onnx'))
    assert check_onnx(str(tmp_path / 'm.onnx'), path, x) < 1e-5


def test_onnx_index_types():
    from nnabla_lutq.io.onnx import index_dtype
    assert [index_dtype(k).name for k in (2, 256, 257, 65536, 65537)] == [
        'uint8', 'uint8', 'uint16', 'uint16', 'int32']


@onnx_converter
def test_onnx_command_batch_size_and_help(tmp_path, capsys):
    import onnx
    path = exported(tmp_path / 'm.nnp')
    assert cli.main(['onnx', path, str(tmp_path / 'm.onnx'), '--batch-size', '3']) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"wrote {tmp_path / 'm.onnx'}: 4 layers as Gather(d, A) (A uint8), "
                      "0 dense (none)")
    assert out[1].startswith('onnxruntime vs nnabla on a random batch of 3: max |diff| ')
    dim = onnx.load(str(tmp_path / 'm.onnx')).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_value == 3
    with pytest.raises(SystemExit):
        cli.main(['onnx', '--help'])
    help_text = capsys.readouterr().out
    assert '`nnabla_cli convert x.nnp x.onnx` fails without TensorFlow' in help_text
    assert 'nnabla-lutq onnx x.nnp x.onnx --batch-size 1' in help_text


def test_nnabla_cli_onnx_needs_tensorflow(tmp_path):
    """What the README and ``nnabla-lutq onnx --help`` say about nnabla's command."""
    import importlib.util
    if importlib.util.find_spec('tensorflow') is not None:
        pytest.skip('TensorFlow is installed here')
    path = exported(tmp_path / 'm.nnp')
    r = _nnabla_cli('convert', path, str(tmp_path / 'm.onnx'))
    assert r.returncode != 0 and "No module named 'tensorflow'" in r.stdout + r.stderr
    assert not (tmp_path / 'm.onnx').exists()
