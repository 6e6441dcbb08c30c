# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Reliability of the library (issue 21): post-training files describe their own tables, reports
count shared and deconvolution layers right, conversion notes die with their layers, solver
states are checked in both formats, one naming rule, the README runs as printed, and a rebuilt
network's memory is freed without the cyclic garbage collector.

Every test injects the real fault: real files written and read back, real shared layers, real
parameter-scope rebuilds; numbers are checked against counts derived independently here.
"""
import gc
import json
import math
import os
import re
import weakref

import numpy as np
import pytest
import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF
import nnabla.solvers as S

import nnabla_lutq
from nnabla_lutq import cli
from nnabla_lutq.io.nnp import read_nnp
from nnabla_lutq.io.packed import pack
from nnabla_lutq.io.quantize import quantize_nnp
from nnabla_lutq.nn.state import STATE
from test_deployment import _float_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _info_json(path, capsys):
    capsys.readouterr()
    assert cli.main(['info', '--json', str(path)]) == 0
    return json.loads(capsys.readouterr().out)


def _export(path, x, y):
    nnabla_lutq.export_nnp(str(path), {'x': x}, {'y': y})
    return path


# --- 1. post-training LUT-Q describes its own tables ------------------------------------------

def test_convert_writes_a_description_of_its_own_tables(tmp_path, rng, capsys):
    _, _, fpath = _float_model(tmp_path, rng)
    assert read_nnp(str(fpath)).meta['tables'] == {}  # the float file: every layer kept float
    post = tmp_path / 'post.nnp'
    assert cli.main(['convert', str(fpath), str(post), '--n-values', '16']) == 0
    model = read_nnp(str(post))
    floats = read_nnp(str(fpath)).params
    layers = {'net/conv1/lutq_conv': 'conv', 'net/conv2/lutq_conv': 'conv',
              'net/conv3/lutq_conv': 'conv', 'net/fc/lutq_affine': 'affine'}
    assert set(model.meta['tables']) == set(layers)
    for name, kind in layers.items():
        t = model.meta['tables'][name]
        w = floats[name.replace('lutq_', '') + '/W']
        assert (t['kind'], t['dictionary'], t['n_values'], t['stored'], t['A'], t['d'],
                t['n_weights']) == (kind, 'free', 16, 'tables', name + '/A', name + '/d', w.size)
    assert model.meta['float_layers'] == {}  # every float weight became a table
    assert all(not b['multiplier_less'] for b in model.meta['bn'].values())
    assert sorted(model.meta['bn']) == ['net/bn1/bn', 'net/bn2/bn', 'net/bn3/bn']
    # info reports the LUT-Q layers: memory K*32 + N*4 bits each
    rep = _info_json(post, capsys)
    rows = {r['name']: r for r in rep['layers'] if r['type'] != 'bn'}
    assert set(rows) == set(layers)
    for name, r in rows.items():
        assert r['lutq'] and r['memory_bits'] == 16 * 32 + r['n_weights'] * 4
    assert [r['layer'] for r in rep['kept_float']] == sorted(model.meta['bn'])
    assert cli.main(['info', str(post)]) == 0
    assert '4 look-up table layer(s); 3 layer(s) kept float' in capsys.readouterr().out
    # pack stores the indices at 4 bits: each table is 16 float32 values + ceil(N*4/8) bytes
    stats = pack(str(post), str(tmp_path / 'post.lutq'))
    sizes = {name: model.params[name + '/A'].size for name in layers}
    assert stats['tables'] == sum(16 * 4 + math.ceil(n * 4 / 8) for n in sizes.values())
    others = [v for k, v in model.params.items() if not k.endswith(('/A', '/d'))]
    assert stats['raw'] == sum(v.nbytes for v in others)


def test_convert_of_a_file_written_by_nnabla_alone_describes_tables_and_float_bn(tmp_path,
                                                                                capsys):
    from nnabla.utils.save import save
    x = nn.Variable((2, 1, 6, 6))
    h = F.relu(PF.batch_normalization(PF.convolution(x, 4, (3, 3), name='c'), batch_stat=False,
                                      name='bn'))
    y = PF.affine(h, 3, name='fc')
    fpath = str(tmp_path / 'plain.nnp')
    save(fpath, {'networks': [{'name': 'net', 'batch_size': 2, 'outputs': {'y': y},
                               'names': {'x': x}}],
                 'executors': [{'name': 'run', 'network': 'net', 'data': ['x'],
                                'output': ['y']}]})
    assert read_nnp(fpath).meta is None  # no description at all
    post = tmp_path / 'post.nnp'
    assert cli.main(['convert', fpath, str(post), '--n-values', '4']) == 0
    meta = read_nnp(str(post)).meta
    assert sorted(meta['tables']) == ['c/lutq_conv', 'fc/lutq_affine']
    assert meta['bn'] == {'bn/bn': {'multiplier_less': False, 'folded': False, 'params': [
        'bn/bn/beta', 'bn/bn/gamma', 'bn/bn/mean', 'bn/bn/var'], 'reason': 'mlbn=False'}}
    rep = _info_json(post, capsys)
    assert [r['layer'] for r in rep['kept_float']] == ['bn/bn']
    assert [r['lutq'] for r in rep['layers']] == [True, False, True]


def test_convert_of_a_deconvolution_keeps_it_float_and_says_why(tmp_path, capsys):
    """Post-training quantization is the one conversion path: Deconvolution, which has no LUT-Q
    layer, stays float (a warning, the file's float_layers and info say why)."""
    x = nn.Variable.from_numpy_array(np.random.RandomState(1).randn(1, 3, 4, 4).astype(np.float32))
    h = F.relu(PF.convolution(x, 4, (3, 3), pad=(1, 1), name='enc'))
    y = PF.deconvolution(h, 2, (2, 2), stride=(2, 2), name='up')
    fpath = _export(tmp_path / 'f.nnp', x, y)
    post = tmp_path / 'p.nnp'
    with pytest.warns(UserWarning, match='up .Deconvolution.: Deconvolution has no LUT-Q'):
        r = quantize_nnp(str(fpath), str(post), n_values=4)
    assert r['plan'].get('up').action == 'float'
    meta = read_nnp(str(post)).meta
    assert list(meta['tables']) == ['enc/lutq_conv'] and meta['tables']['enc/lutq_conv'][
        'kind'] == 'conv'
    assert 'no LUT-Q counterpart' in meta['float_layers']['up/deconv']['reason']
    rows = {r['name']: r for r in _info_json(post, capsys)['layers']}
    up = rows['up/deconv']
    # every input value (4 channels x 4 x 4) times the 2*2*2 weights of its output channels
    assert not up['lutq'] and up['float_mults'] == 4 * 16 * 2 * 2 * 2
    assert up['memory_bits'] == 32 * 4 * 2 * 2 * 2  # W: (4 inputs, 2 outputs, 2, 2)


# --- 2. shared layers: memory once per parameter, multiplications once per call ---------------

def _conv_mults(outmaps, inmaps, kernel, out_hw):
    return outmaps * out_hw * inmaps * kernel  # every output value: a fan-in of products


@pytest.mark.parametrize('lutq', [True, False])
def test_a_layer_called_twice_counts_its_memory_once_and_its_calls_twice(rng, lutq, tmp_path,
                                                                         capsys):
    x = nn.Variable.from_numpy_array(rng.randn(1, 4, 6, 6).astype(np.float32))

    def layer(h):
        if lutq:
            return PF.lutq_convolution(h, 4, (3, 3), pad=(1, 1), n_values=4, name='shared')
        return PF.convolution(h, 4, (3, 3), pad=(1, 1), name='shared')
    with nnabla_lutq.inference_mode():
        once = layer(x)
        twice = layer(F.relu(once))
    single, double = nnabla_lutq.report(once), nnabla_lutq.report(twice)
    assert len(single) == len(double) == 1
    r1, r2 = single[0], double[0]
    n = 4 * 4 * 9
    float_per_call = _conv_mults(4, 4, 9, 36)
    assert (r1.n_weights, r1.calls, r2.calls) == (n, 1, 2)
    assert r2.memory_bits == r1.memory_bits == (4 * 32 + n * 2 if lutq else 32 * n)
    assert r2.float_memory_bits == 32 * n
    assert r1.float_mults == float_per_call and r2.float_mults == 2 * float_per_call
    if lutq:
        d = nn.get_parameters(grad_only=False)['shared/lutq_conv/d'].d
        per_call = 4 * 36 * min(len(set(d[d != 0].tolist())), 4 * 9)
    else:
        per_call = float_per_call
    assert r1.mults + r1.shifts == per_call and r2.mults + r2.shifts == 2 * per_call
    assert double.totals['memory_bits'] == r1.memory_bits
    assert 'shared/' in double.table() and ' x2 ' in double.table()
    # the same numbers from the exported file (info)
    rows = _info_json(_export(tmp_path / 'm.nnp', x, twice), capsys)['layers']
    assert len(rows) == 1 and rows[0]['calls'] == 2
    assert (rows[0]['memory_bits'], rows[0]['mults'] + rows[0]['shifts']) == \
        (r2.memory_bits, 2 * per_call)


def test_a_float_bn_called_twice_counts_each_call(rng):
    x = nn.Variable.from_numpy_array(rng.randn(1, 3, 4, 4).astype(np.float32))
    y = PF.batch_normalization(x, batch_stat=False, name='bn')
    y = PF.batch_normalization(F.relu(y), batch_stat=False, name='bn')
    (r,) = nnabla_lutq.report(y)
    assert (r.calls, r.memory_bits, r.mults) == (2, 64 * 3, 2 * 3 * 16)


# --- 3. a float Deconvolution is in the totals -------------------------------------------------

def test_a_float_deconvolution_is_counted_in_the_totals(rng):
    x = nn.Variable.from_numpy_array(rng.randn(1, 2, 5, 5).astype(np.float32))
    h = PF.lutq_convolution(x, 3, (3, 3), pad=(1, 1), n_values=4, name='c')
    y = PF.deconvolution(h, 6, (3, 3), pad=(1, 1), name='up')  # overlapping taps
    rows = {r.name: r for r in nnabla_lutq.report(y)}
    up = rows['up/deconv']
    n = 3 * 6 * 9
    # brute force: a transposed convolution scatters every input value times every weight of
    # its output channels, wherever the product lands (also outside the cropped output)
    assert up.type == 'deconv' and not up.lutq and up.n_weights == n
    assert up.memory_bits == up.float_memory_bits == 32 * n
    assert up.mults == up.float_mults == (3 * 25) * (6 * 9)
    t = nnabla_lutq.report(y).totals
    assert t['memory_bits'] == rows['c/lutq_conv'].memory_bits + 32 * n
    assert t['float_memory_bits'] == 32 * (2 * 3 * 9) + 32 * n
    assert t['mults'] + t['shifts'] == (rows['c/lutq_conv'].mults + rows['c/lutq_conv'].shifts
                                        + up.mults)


# --- 4. conversion notes die with their layers --------------------------------------------------

def _float_net(x):
    h = F.relu(PF.convolution(x, 4, (3, 3), pad=(1, 1), name='c1'))
    return PF.affine(h, 3, name='fc')


def test_conversion_notes_end_with_their_layers(tmp_path, rng):
    import warnings
    x = nn.Variable.from_numpy_array(rng.randn(1, 2, 4, 4).astype(np.float32))
    with nnabla_lutq.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        y = nnabla_lutq.convert(_float_net(x), nnabla_lutq.LayerConfig(4),
                                overrides={'fc': None})
    meta = read_nnp(str(_export(tmp_path / 'a.nnp', x, y))).meta
    assert meta['float_layers']['fc/affine']['reason'] == "override 'fc': kept float"
    scope = weakref.ref(nn.parameter.root_scope['fc'])
    nn.clear_parameters()
    assert scope() is None and STATE.conversion_notes == {}  # the note holds nothing alive
    y2 = PF.affine(F.relu(PF.convolution(x, 4, (3, 3), name='c9')), 3, name='fc')  # unrelated
    meta = read_nnp(str(_export(tmp_path / 'b.nnp', x, y2))).meta
    assert {k: v['reason'].startswith('built as a float layer')
            for k, v in meta['float_layers'].items()} == {'c9/conv': True, 'fc/affine': True}


def test_conversion_notes_of_a_network_in_a_scope_reach_its_export(tmp_path, rng):
    x = nn.Variable.from_numpy_array(rng.randn(1, 2, 4, 4).astype(np.float32))
    with nn.parameter_scope('net'), nnabla_lutq.inference_mode():
        y = nnabla_lutq.convert(_float_net(x), nnabla_lutq.LayerConfig(4),
                                overrides={'fc': None})
    meta = read_nnp(str(_export(tmp_path / 'a.nnp', x, y))).meta
    assert meta['float_layers']['net/fc/affine']['reason'] == "override 'fc': kept float"


# --- 5. solver states: the settings are checked in both formats --------------------------------

def _lutq_net(rng, n_values):
    x = nn.Variable.from_numpy_array(rng.randn(4, 2, 4, 4).astype(np.float32))
    t = nn.Variable.from_numpy_array(rng.randint(0, 3, (4, 1)))
    h = F.relu(PF.lutq_convolution(x, 3, (3, 3), pad=(1, 1), n_values=n_values, name='c1'))
    return F.mean(F.softmax_cross_entropy(PF.lutq_affine(h, 3, n_values=4, name='fc'), t))


def _trained(solver, loss):
    solver.set_parameters(nn.get_parameters())
    loss.forward()
    solver.zero_grad()
    loss.backward()
    solver.update()
    return solver


def _states(solver):
    return {k: {n: v.d.copy() for n, v in s.pstate.items()}
            for k, s in solver.get_states().items()}


@pytest.mark.parametrize('make', [
    lambda mu0=0.1: nnabla_lutq.LUTQSolver(S.Momentum(0.1, 0.9)),
    lambda mu0=0.1: nnabla_lutq.LCSolver(S.Momentum(0.1, 0.9), mu0=mu0, steps_per_lc=2)],
    ids=['LUTQSolver', 'LCSolver'])
@pytest.mark.parametrize('fmt', ['.h5', '.protobuf'])
def test_solver_states_are_checked_in_both_formats(rng, tmp_path, make, fmt):
    path = str(tmp_path / ('states' + fmt))
    _trained(make(), _lutq_net(rng, 4)).save_states(path)
    nn.clear_parameters()
    other = _trained(make(), _lutq_net(rng, 8))  # another K for c1
    before = _states(other)
    with pytest.raises(ValueError, match=r"saved for other LUT-Q layers or settings \(layer "
                                         r"c1/lutq_conv: saved .*'n_values': 4"):
        other.load_states(path)
    after = _states(other)
    assert all(np.array_equal(before[k][n], after[k][n]) for k in before for n in before[k])
    nn.clear_parameters()
    same = _trained(make(), _lutq_net(rng, 4))
    same.load_states(path)  # the same settings load
    # a plain solver that rewrote the file: no stored settings, loads unchecked (as for .h5)
    plain = S.Momentum(0.1, 0.9)
    plain.set_parameters(nn.get_parameters())
    plain.save_states(path)
    nn.clear_parameters()
    _trained(make(), _lutq_net(rng, 8)).load_states(path)


def test_lc_settings_are_checked_for_protobuf_states(rng, tmp_path):
    path = str(tmp_path / 's.protobuf')
    _trained(nnabla_lutq.LCSolver(S.Momentum(0.1, 0.9), mu0=0.1, steps_per_lc=2), _lutq_net(rng, 4)
             ).save_states(path)
    nn.clear_parameters()
    other = _trained(nnabla_lutq.LCSolver(S.Momentum(0.1, 0.9), mu0=0.2, steps_per_lc=2),
                     _lutq_net(rng, 4))
    with pytest.raises(ValueError, match=r"mu0: saved 0\.1, now 0\.2"):
        other.load_states(path)
    assert other.updates == 1


def test_solver_state_paths_a_user_can_get_wrong(rng, tmp_path):
    solver = _trained(nnabla_lutq.LUTQSolver(S.Momentum(0.1, 0.9)), _lutq_net(rng, 4))
    with pytest.raises(ValueError, match=r"states\.npz: .*name the file \*\.h5 or \*\.protobuf"):
        solver.save_states(str(tmp_path / 'states.npz'))
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match='no such solver-state file'):
        solver.load_states(str(tmp_path / 'missing.h5'))
    path = tmp_path / 's.protobuf'
    solver.save_states(str(path))
    (tmp_path / 's.protobuf.lutq.h5').write_bytes(b'not h5')
    with pytest.raises(ValueError, match=r"s\.protobuf\.lutq\.h5: not a readable solver-state"):
        solver.load_states(str(path))


# --- 6. one naming rule -------------------------------------------------------------------------

def _nearest(w, d):
    return np.abs(w.reshape(-1, 1) - d.reshape(1, -1)).argmin(1)


def test_initialize_names_are_relative_to_the_current_scope_as_in_convert(rng):
    import warnings
    x = nn.Variable.from_numpy_array(rng.randn(1, 2, 4, 4).astype(np.float32))
    with nn.parameter_scope('net'), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        _, plan = nnabla_lutq.convert(_float_net(x), nnabla_lutq.LayerConfig(4),
                                      return_decisions=True)
    assert [d.name for d in plan] == ['c1', 'fc']
    p = nn.get_parameters(grad_only=False)
    fc = {k: p[f'net/fc/lutq_affine/{k}'] for k in ('W', 'd', 'A')}
    c1_a = p['net/c1/lutq_conv/A'].d.copy()
    fc['W'].d = rng.randn(*fc['W'].shape) * 3  # the table no longer fits W
    with nn.parameter_scope('net'):
        assert nnabla_lutq.initialize(['fc']) == ['net/fc/lutq_affine']  # the name convert shows
        with pytest.raises(ValueError, match=r"no LUT-Q or mlbn layer named 'net/fc' in the "
                                             r"current parameter scope 'net' .*\['c1/lutq_conv', "
                                             r"'fc/lutq_affine'\]"):
            nnabla_lutq.initialize(['net/fc'])
    assert np.array_equal(fc['A'].d.ravel(), _nearest(fc['W'].d, fc['d'].d))
    assert np.abs(fc['d'].d).max() > 1  # refitted to the new weights
    assert np.array_equal(p['net/c1/lutq_conv/A'].d, c1_a)  # the other layer is untouched
    assert nnabla_lutq.initialize(['net/fc']) == ['net/fc/lutq_affine']  # from the root


# --- 15. the README runs as printed -------------------------------------------------------------

def _readme_sections():
    """``(section title, [python blocks])`` of the README's ``## `` sections with python code."""
    with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
        text = f.read()
    out = []
    for section in re.split(r'^## ', text, flags=re.M)[1:]:
        blocks = re.findall(r'^```python\n(.*?)^```', section, flags=re.M | re.S)
        if blocks:
            out.append((section.split('\n', 1)[0].strip(), blocks))
    return out


def test_the_readme_has_python_blocks_to_run():
    titles = [t for t, _ in _readme_sections()]
    assert 'The API in five minutes' in titles and len(titles) >= 3


@pytest.mark.parametrize('title,blocks', _readme_sections(), ids=lambda v: (
    v if isinstance(v, str) else None))
def test_readme_python_blocks_run_as_printed(title, blocks, tmp_path, monkeypatch, capsys):
    """Each section's blocks run in order in one fresh namespace, in an empty folder, as a reader
    pasting them into a new session would."""
    monkeypatch.chdir(tmp_path)
    namespace = {'__name__': '__readme__'}
    for block in blocks:
        exec(compile(block, f'README.md ({title})', 'exec'), namespace)
    if title == 'The API in five minutes':
        assert os.path.getsize('model.nnp') > 0 and 'fc/lutq_affine' in capsys.readouterr().out
        fc = STATE.layer('fc')
        q = fc.d.d[fc.A.d]
        # the ternary layer computes with all three values, not with zeros only
        assert set(np.unique(q).tolist()) == {-1.0, 0.0, 1.0}
        assert np.isfinite(namespace['loss'].d).all()


# --- 17. a rebuilt network is freed without the cyclic garbage collector ------------------------

def test_rebuilt_layers_are_freed_without_the_cyclic_garbage_collector():
    scopes = []
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(5):
            nn.clear_parameters()
            x = nn.Variable((1, 2048))
            y = PF.lutq_affine(x, 2048, n_values=4, name='fc')  # 4 M weights: W, A 16 MB each
            scopes.append(weakref.ref(nn.parameter.root_scope['fc']['lutq_affine']))
            nnabla_lutq.report(y)  # walks the parameter tree too
            del x, y
        nn.clear_parameters()
        alive = [r() is not None for r in scopes]
        assert not any(alive), f"layer scopes still held: {alive}"
        assert STATE.lutq_layers(live=False) == [] and not STATE._entries
    finally:
        if enabled:
            gc.enable()
