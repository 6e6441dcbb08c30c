# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Grouped look-up tables through conversion, the report, the bit budget and the command line:
each group's table against ``fit_table`` on that group's weights (sliced here with numpy), the
memory ``T·K·32 + N·ceil(log2 K)`` and the budget's optimum against brute force."""
import itertools
import json
import math
import sys

import numpy as np
import pytest
import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF

import nnabla_lutq
from nnabla_lutq import cli
from nnabla_lutq.analysis.report import tied_weights
from nnabla_lutq.core import fit_table, make_config, table_sse
from nnabla_lutq.io.nnp import read_nnp
from nnabla_lutq.nn import layers as LPF
from nnabla_lutq.nn.convert import LayerConfig, conversion_plan
from nnabla_lutq.nn.convert.settings import as_layer_config, layer_config_of, table_count
from nnabla_lutq.training.budget import Budget, choose_bits, layer_bits
from nnabla_lutq.training.sensitivity import Fisher


def _params():
    return {k: v.d.copy() for k, v in nn.get_parameters(grad_only=False).items()}


def _float_net(x):
    h = F.relu(PF.convolution(x, 8, (3, 3), name='c1'))
    h = PF.depthwise_convolution(h, (3, 3), name='dw')
    return PF.affine(h, 6, name='fc')


def _group_rows(w, axis, g, gs):
    """The weights of group ``g`` in the layer's order with the output axis first (numpy)."""
    w = np.moveaxis(w, axis, 0)[g * gs:(g + 1) * gs]
    return w.reshape(-1)


def _scatter(a, axis, g, gs):
    return np.moveaxis(a, axis, 0)[g * gs:(g + 1) * gs].reshape(-1)


def _tied(d, a, axis):
    """``d[A]`` channel by channel (an independent loop over the output channels)."""
    moved = np.moveaxis(a, axis, 0)
    gs = moved.shape[0] // d.shape[0]
    q = np.empty(moved.shape, np.float32)
    for c in range(moved.shape[0]):
        q[c] = d[c // gs][moved[c]]
    return np.moveaxis(q, 0, axis)


# -- LayerConfig --------------------------------------------------------------------------------

def test_layer_config_group_size_checks_and_round_trip():
    assert LayerConfig(4).group_size is None and LayerConfig(4).kwargs()['group_size'] is None
    c = LayerConfig(4, 'pow2', 0.25, group_size=np.int64(2))
    assert c.group_size == 2 and type(c.group_size) is int and c.kwargs()['group_size'] == 2
    for bad in (0, -1, 2.5, True, '2'):
        with pytest.raises(ValueError, match='group_size'):
            LayerConfig(4, group_size=bad)
    assert as_layer_config({'n_values': 4, 'group_size': 3}, 'x') == LayerConfig(4, group_size=3)
    cfg = c.resolve(8 * 27, 'conv', (8, 3, 3, 3), 0)
    assert cfg.table_shape == (4, 4) and cfg.settings()['group_size'] == 2
    assert layer_config_of(cfg) == c
    assert LayerConfig(4).resolve(216, 'conv').group_size is None
    affine = LayerConfig(4, group_size=3).resolve(60, 'fc', (10, 6), -1)
    assert affine.n_groups == 2 and affine.out_axis == 1
    with pytest.raises(ValueError, match=r"fc: group_size=4 must divide the 6 output channels; "
                                         r"use one of \[1, 2, 3, 6\]"):
        LayerConfig(4, group_size=4).resolve(60, 'fc', (10, 6), -1)
    assert table_count(None, (8, 3)) == 1 and table_count(2, (10, 6), -1) == 3
    with pytest.raises(ValueError, match=r"conv: group_size=3 .* \[1, 2, 4, 8\]"):
        table_count(3, (8, 3, 3, 3), 0, 'conv')


# -- conversion ---------------------------------------------------------------------------------

def test_convert_fits_each_groups_table_to_its_weights(rng):
    x = nn.Variable.from_numpy_array(rng.randn(2, 3, 6, 6).astype(np.float32))
    y = _float_net(x)
    for v in nn.get_parameters(grad_only=False).values():  # weights of different scales
        v.d = rng.randn(*v.shape) * rng.choice([0.05, 0.5, 2.0], size=v.shape[-1:])
    floats = _params()
    settings = {'c1': (4, 'free', 0.0, 2), 'dw': (3, 'pow2', 0.3, 4), 'fc': (4, 'free', 0.25, 3)}
    overrides = {n: LayerConfig(k, dic, p, group_size=g) for n, (k, dic, p, g) in settings.items()}
    yq, plan = nnabla_lutq.convert(y, None, overrides, return_decisions=True)
    text = str(plan)
    assert 'group_size=2 (4 tables)' in text and 'group_size=3 (2 tables)' in text
    params = _params()
    for name, scope, axis in (('c1', 'conv', 0), ('dw', 'depthwise_conv', 0), ('fc', 'affine', 1)):
        k, dic, p, gs = settings[name]
        w = floats[f'{name}/{scope}/W']
        d, a = params[f'{name}/lutq_{scope}/d'], params[f'{name}/lutq_{scope}/A']
        n_groups = w.shape[axis] // gs
        assert d.shape == (n_groups, k) and a.shape == w.shape
        np.testing.assert_array_equal(params[f'{name}/lutq_{scope}/W'], w)  # moved, not changed
        for g in range(n_groups):
            rows = _group_rows(w, axis, g, gs)
            dg, ag = fit_table(rows, make_config(k, dic, p, None, rows.size))
            np.testing.assert_array_equal(d[g], dg)
            np.testing.assert_array_equal(_scatter(a, axis, g, gs), ag)
        np.testing.assert_array_equal(tied_weights(d, a.astype(np.int64), axis), _tied(d, a, axis))
    # the converted affine layer computes with the tied weights, bias included
    d, a = params['fc/lutq_affine/d'], params['fc/lutq_affine/A']
    h = yq.parent.inputs[0]
    yq.forward()
    expect = h.d.reshape(2, -1).astype(np.float64) @ _tied(d, a, 1) + params['fc/lutq_affine/b']
    np.testing.assert_allclose(yq.d, expect, rtol=1e-5, atol=1e-5)


def test_convert_without_group_size_keeps_one_table(rng):
    x = nn.Variable.from_numpy_array(rng.randn(2, 3, 6, 6).astype(np.float32))
    y = _float_net(x)
    floats = _params()
    nnabla_lutq.convert(y, LayerConfig(4))
    params = _params()
    w = floats['c1/conv/W']
    d, a = fit_table(w, make_config(4, 'free', 0.0, None, w.size))
    np.testing.assert_array_equal(params['c1/lutq_conv/d'], d)
    np.testing.assert_array_equal(params['c1/lutq_conv/A'], a)


def test_a_group_size_that_does_not_divide_is_refused_before_anything_changes(rng):
    x = nn.Variable.from_numpy_array(rng.randn(2, 3, 6, 6).astype(np.float32))
    y = _float_net(x)
    before = _params()
    with pytest.raises(ValueError) as e:
        nnabla_lutq.convert(y, LayerConfig(4, group_size=2), overrides={'fc': LayerConfig(
            4, group_size=4)})
    msg = str(e.value)
    assert '\n' not in msg and msg.startswith('fc: group_size=4 must divide the 6 output channels')
    assert '[1, 2, 3, 6]' in msg
    after = _params()
    assert list(after) == list(before)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k])
    with pytest.raises(ValueError, match=r"c1: group_size=3 .* \[1, 2, 4, 8\]"):
        conversion_plan(y, LayerConfig(4, group_size=3), overrides={'fc': None})


def test_an_existing_grouped_layer_keeps_its_settings(rng):
    x = nn.Variable.from_numpy_array(rng.randn(2, 3, 6, 6).astype(np.float32))
    y = LPF.lutq_convolution(x, 8, (3, 3), n_values=4, group_size=2, name='c1')
    plan = conversion_plan(y, LayerConfig(4, group_size=2))
    assert plan.get('c1').reason == 'already a LUT-Q layer'
    assert plan.get('c1').config.group_size == 2
    with pytest.raises(ValueError, match='group_size=2.*asks for.*group_size=4'):
        conversion_plan(y, LayerConfig(4, group_size=4))
    with pytest.raises(ValueError, match='already holds the LUT-Q layer'):
        conversion_plan(y, LayerConfig(4))


# -- report -------------------------------------------------------------------------------------

def _grouped_net(x):
    h = F.relu(LPF.lutq_convolution(x, 8, (3, 3), n_values=4, group_size=2, name='c1'))
    h = LPF.lutq_depthwise_convolution(h, (3, 3), n_values=3, dictionary='pow2',
                                       prune_ratio=0.3, group_size=1, name='dw')
    h = PF.convolution(h, 4, (1, 1), name='c2')
    return LPF.lutq_affine(h, 6, n_values=5, group_size=3, name='fc')


def test_report_memory_counts_every_table(rng):
    x = nn.Variable.from_numpy_array(rng.randn(2, 3, 6, 6).astype(np.float32))
    y = _grouped_net(x)
    rows = nnabla_lutq.report(y)
    by = {r.name: r for r in rows}
    params = nn.get_parameters(grad_only=False)
    outputs = {'c1/lutq_conv': 8 * 4 * 4, 'dw/lutq_depthwise_conv': 8 * 2 * 2,
               'fc/lutq_affine': 6}
    for name, axis in (('c1/lutq_conv', 0), ('dw/lutq_depthwise_conv', 0),
                       ('fc/lutq_affine', 1)):
        d, a = params[f'{name}/d'].d, params[f'{name}/A'].d.astype(np.int64)
        n_tables, k = d.shape
        n = a.size
        r = by[name]
        assert (r.n_tables, r.n_values, r.n_weights) == (n_tables, k, n)
        assert r.memory_bits == n_tables * k * 32 + n * math.ceil(math.log2(k))
        assert r.float_memory_bits == 32 * n
        q = _tied(d, a, axis)
        assert r.sparsity == pytest.approx(np.mean(q == 0))
        # one product per output value and distinct non-zero value of its channel's table
        fan = n // a.shape[axis]
        per_channel = [min(len(set(row[row != 0].tolist())), fan)
                       for row in np.repeat(d, a.shape[axis] // n_tables, axis=0)]
        products = outputs[name] // a.shape[axis] * sum(per_channel)
        assert r.mults + r.shifts == products
    assert by['dw/lutq_depthwise_conv'].pow2 and by['dw/lutq_depthwise_conv'].sparsity >= 0.3
    assert by['c2/conv'].n_tables == 0 and by['c2/conv'].memory_bits == 32 * 8 * 4
    t = rows.totals
    assert t['memory_bits'] == sum(r.memory_bits for r in rows)
    assert t['compression'] == t['float_memory_bits'] / t['memory_bits']
    table = rows.table()
    assert 'tables' in table.splitlines()[0]
    fp = nnabla_lutq.footprint(y)
    biases = sum(params[f'{s}/b'].size for s in ('c1/lutq_conv', 'dw/lutq_depthwise_conv',
                                                 'c2/conv', 'fc/lutq_affine'))
    assert fp['param_bits'] == t['memory_bits'] + 32 * biases


def test_tied_weights_refuses_tables_that_do_not_divide_the_channels():
    with pytest.raises(ValueError, match='3 look-up tables for 8 output channels'):
        tied_weights(np.zeros((3, 4), np.float32), np.zeros((8, 2), np.int64), 0, 'c')


# -- bit budget ---------------------------------------------------------------------------------

def _fisher(seed, shapes=(('conv', (8, 3, 3)), ('fc', (12, 6)), ('dw', (4, 5)))):
    r = np.random.RandomState(seed)
    return Fisher({n: ((r.randn(*s) * r.uniform(0.1, 2, size=s[-1:])), r.rand(*s) ** 3)
                   for n, s in shapes})


AXES = {'conv': 0, 'fc': -1, 'dw': 0}


def _option(w, f, k, gs, axis):
    """``(bits, S)`` of one layer at K and group size, computed here group by group."""
    if gs is None:
        d, a = fit_table(w, make_config(k, 'free', 0.0, None, w.size), weight=f)
        return layer_bits(k, w.size), table_sse(w, d, a, f)
    n_groups = w.shape[axis] // gs
    err = 0.0
    for g in range(n_groups):
        rows, fr = _group_rows(w, axis, g, gs), _group_rows(f, axis, g, gs)
        d, a = fit_table(rows, make_config(k, 'free', 0.0, None, rows.size), weight=fr)
        err += table_sse(rows, d, a, fr)
    return n_groups * k * 32 + w.size * math.ceil(math.log2(k)), err


def _brute_force(fisher, options, budget):
    names = list(fisher)
    best = None
    for pick in itertools.product(*(options[n] for n in names)):
        bits = sum(b for b, _ in pick)
        if bits <= budget:
            err = sum(e for _, e in pick)
            best = err if best is None else min(best, err)
    return best


@pytest.mark.parametrize('bpw', [4.0, 5.5, 8.0, 11.0])
def test_choose_bits_with_grouped_settings_is_the_exact_optimum(bpw):
    fisher = _fisher(1)
    ks = (2, 4, 8)
    gs = {'conv': 2, 'fc': 3, 'dw': 4}
    overrides = {n: LayerConfig(group_size=g) for n, g in gs.items()}
    chosen, report = choose_bits(fisher, bpw, ks, overrides=overrides, out_axes=AXES)
    n = sum(w.size for w in fisher.weights.values())
    budget = math.floor(bpw * n)
    options = {name: [_option(fisher.weights[name], fisher[name], k, gs[name], AXES[name] % 2)
                      for k in ks] for name in fisher}
    assert report.budget_bits == budget
    assert report.total_bits <= budget
    assert report.error == pytest.approx(_brute_force(fisher, options, budget), rel=1e-9)
    for row in report.layers:
        w = fisher.weights[row.name]
        assert chosen[row.name].group_size == gs[row.name] == row.group_size
        assert row.n_tables == w.shape[AXES[row.name]] // gs[row.name]
        assert row.bits == row.n_tables * row.n_values * 32 + w.size * math.ceil(
            math.log2(row.n_values))
    assert 'tables' in str(report)


def test_choose_bits_chooses_the_group_size_from_pairs():
    fisher = _fisher(2)
    cands = [(2, None), (4, None), (2, 2), (4, 2), (4, 1), (8, 3)]
    n = sum(w.size for w in fisher.weights.values())
    budget = Budget(bits=int(3.5 * n))
    chosen, report = choose_bits(fisher, budget, cands, out_axes=AXES)
    options = {}
    for name in fisher:
        w = fisher.weights[name]
        options[name] = [_option(w, fisher[name], k, g, AXES[name] % 2) for k, g in cands
                         if g is None or w.shape[AXES[name]] % g == 0]
    assert report.total_bits <= budget.bits
    assert report.error == pytest.approx(_brute_force(fisher, options, budget.bits), rel=1e-9)
    for row in report.layers:
        w = fisher.weights[row.name]
        assert (row.n_values, row.group_size) in row.options
        assert len(row.options) == len(options[row.name])  # (8, 3) only where 3 divides
        assert chosen[row.name] == LayerConfig(row.n_values, group_size=row.group_size)
    assert (8, 3) in report.layers[1].options and (8, 3) not in report.layers[0].options


def test_choose_bits_refuses_a_group_size_that_does_not_divide():
    fisher = _fisher(3)
    with pytest.raises(ValueError, match=r"fc: group_size=4 must divide the 6 output channels; "
                                         r"use one of \[1, 2, 3, 6\]"):
        choose_bits(fisher, 6, (2, 4), config=LayerConfig(group_size=4),
                    overrides={'conv': None, 'dw': None}, out_axes=AXES)
    with pytest.raises(ValueError, match='out_axes'):
        choose_bits(fisher, 6, (2, 4), config=LayerConfig(group_size=2), out_axes={})
    with pytest.raises(ValueError, match='candidates'):
        choose_bits(fisher, 6, [(4, 0)], out_axes=AXES)
    # without groups the memory is the one-table memory, as before
    _, report = choose_bits(fisher, 6, (2, 4))
    for row in report.layers:
        assert row.n_tables == 1 and row.bits == layer_bits(row.n_values, row.n_weights)


# -- command line -------------------------------------------------------------------------------

def _float_nnp(tmp_path, rng):
    x = nn.Variable((2, 3, 6, 6))
    y = _float_net(x)
    for v in nn.get_parameters(grad_only=False).values():
        v.d = rng.randn(*v.shape)
    path = tmp_path / 'float.nnp'
    nnabla_lutq.export_nnp(str(path), {'x': x}, {'y': y})
    nn.clear_parameters()
    return path


def test_command_convert_group_size_that_does_not_divide(tmp_path, rng, capsys):
    path = _float_nnp(tmp_path, rng)
    out = tmp_path / 'q.nnp'
    assert cli.main(['convert', str(path), str(out), '--n-values', '4',
                     '--group-size', '4']) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert 'fc: group_size=4 must divide the 6 output channels; use one of [1, 2, 3, 6]' in err
    assert not out.exists()


def test_command_convert_group_size_then_info(tmp_path, rng, capsys):
    path = _float_nnp(tmp_path, rng)
    out = tmp_path / 'q.nnp'
    assert cli.main(['convert', str(path), str(out), '--n-values', '4',
                     '--group-size', '2']) == 0
    assert 'group_size=2 (3 tables)' in capsys.readouterr().out
    params = read_nnp(str(out)).params
    tables = {k[:-2]: (params[k], params[k[:-2] + '/A']) for k in params if k.endswith('/d')}
    assert {k: d.shape for k, (d, _) in tables.items()} == {
        'c1/lutq_conv': (4, 4), 'dw/lutq_depthwise_conv': (4, 4), 'fc/lutq_affine': (3, 4)}
    nn.clear_parameters()
    assert cli.main(['info', '--json', str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    rows = {r['name']: r for r in info['layers']}
    for name, (d, a) in tables.items():
        assert (rows[name]['n_tables'], rows[name]['n_values']) == d.shape
        assert rows[name]['memory_bits'] == d.size * 32 + a.size * 2  # K = 4: 2-bit indices
    assert info['totals']['memory_bits'] == sum(d.size * 32 + a.size * 2
                                                for d, a in tables.values())
    nn.clear_parameters()
    assert cli.main(['info', str(out)]) == 0
    assert '3 look-up table layer(s) (11 tables)' in capsys.readouterr().out


def test_command_candidates_take_group_sizes():
    args = sys.modules[cli.main.__module__]._parser().parse_args(
        ['convert', 'a.nnp', 'b.nnp', '--candidates', '4', '8:2', '16:1', '--group-size', '2'])
    assert args.candidates == [4, (8, 2), (16, 1)] and args.group_size == 2
    for bad in ('1', '4:0', '4:x', ':2'):
        with pytest.raises(SystemExit):
            cli.main(['convert', 'a.nnp', 'b.nnp', '--candidates', bad])


def test_fisher_records_each_layers_output_axis_for_grouped_budgets(rng):
    """fisher_diagonal records the output axis of every layer, so a budget can choose group
    sizes without being told the axes; the chosen groups divide the right axis."""
    x = nn.Variable.from_numpy_array(rng.randn(4, 3, 6, 6).astype(np.float32))
    t = nn.Variable.from_numpy_array(rng.randint(0, 6, (4, 1)))
    h = PF.convolution(x, 8, (3, 3), name='c')
    y = PF.affine(h, 6, name='fc')
    loss = F.mean(F.softmax_cross_entropy(y, t))
    fisher = nnabla_lutq.fisher_diagonal(loss, [{}])
    assert fisher.out_axes == {'c': 0, 'fc': -1}
    chosen, report = choose_bits(fisher, 4.0, [(4, 2), (4, 3)])
    assert chosen['c'].group_size == 2           # 3 does not divide the 8 output channels
    assert chosen['fc'].group_size in (2, 3)     # both divide fc's 6 outputs (its last axis)
    for row in report.layers:
        assert row.n_tables == {'c': 8, 'fc': 6}[row.name] // row.group_size


def test_fisher_of_a_tied_grouped_affine_with_apply_w_names_the_weight_mode(rng):
    """A grouped affine's tables sit several functions above its weight input (transposes,
    gather, the table's reshapes, apply_w): the tied graph is still recognised."""
    x = nn.Variable.from_numpy_array(rng.randn(4, 12).astype(np.float32))
    t = nn.Variable.from_numpy_array(rng.randint(0, 6, (4, 1)))
    y = LPF.lutq_affine(x, 6, n_values=4, group_size=3, apply_w=lambda w: w * 0.5, name='fc')
    loss = F.mean(F.softmax_cross_entropy(y, t))
    with pytest.raises(ValueError, match="weight_mode"):
        nnabla_lutq.fisher_diagonal(loss, [{}])
