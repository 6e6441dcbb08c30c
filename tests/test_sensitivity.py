# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Sensitivities from calibration data (issue 25, parts 2 and 3): the Fisher diagonal, K per
layer under a memory budget, sensitivity-weighted tables, post-training quantization of an .nnp
with both. Each is checked against an independent reference: gradients written out by hand,
brute force over all partitions of the sorted weights and over all K assignments, the memory
formula written out."""
import itertools
import math

import numpy as np
import pytest
import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF

import nnabla_lutq
from nnabla_lutq import LayerConfig
from nnabla_lutq import cli
from nnabla_lutq.core.config import make_config
from nnabla_lutq.core.fit import fit_table, init_dictionary, table_sse
from nnabla_lutq.io.nnp import read_nnp
from nnabla_lutq.io.quantize import quantize_nnp
from nnabla_lutq.training.budget import Budget, choose_bits, layer_bits, multiple_choice_knapsack
from nnabla_lutq.training.sensitivity import Fisher, fisher_diagonal, initialize_weighted
from examples.common.models import Layers, digits_cnn


# --- references ----------------------------------------------------------------------------------

def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _hand_gradients(x, t, w1, b1, w2, b2):
    """dLoss/dW1, dLoss/dW2 of mean softmax cross-entropy of relu(x W1 + b1) W2 + b2."""
    x = x.astype(np.float64)
    z1 = x @ w1 + b1
    a = np.maximum(z1, 0)
    z2 = a @ w2 + b2
    dz2 = _softmax(z2)
    dz2[np.arange(len(t)), t.ravel()] -= 1
    dz2 /= len(t)
    dz1 = (dz2 @ w2.T) * (z1 > 0)
    return x.T @ dz1, a.T @ dz2


def _brute_force_weighted_sse(w, f, k):
    """The least weighted SSE of any table of k values: in 1-D the clusters of an optimum are
    runs of the sorted weights, each at its weighted mean; every partition into k runs."""
    order = np.argsort(w, kind='stable')
    ws, fs = w[order].astype(np.float64), f[order].astype(np.float64)
    best = np.inf
    for cuts in itertools.combinations(range(1, len(w)), k - 1):
        total = 0.0
        for lo, hi in zip((0,) + cuts, cuts + (len(w),)):
            run, fr = ws[lo:hi], fs[lo:hi]
            if fr.sum() > 0:
                m = np.dot(fr, run) / fr.sum()
                total += np.dot(fr, (run - m) ** 2)
        best = min(best, total)
    return best


def _memory(k, n):
    """The memory formula written out: K float32 values and N indices of ceil(log2 K) bits."""
    bits = 0
    while 2 ** bits < k:
        bits += 1
    return 32 * k + n * bits


def _two_layer_net(batch=6, fix_second=True):
    x, t = nn.Variable((batch, 4)), nn.Variable((batch, 1))
    h = F.relu(PF.affine(x, 5, name='fc1'))
    y = PF.affine(h, 3, name='fc2', fix_parameters=fix_second)
    return x, t, y, F.mean(F.softmax_cross_entropy(y, t))


def _batches(rng, n, batch=6):
    return [(rng.randn(batch, 4).astype(np.float32), rng.randint(0, 3, (batch, 1)))
            for _ in range(n)]


# --- the Fisher diagonal -------------------------------------------------------------------------

def test_fisher_diagonal_is_the_mean_squared_minibatch_gradient(rng):
    x, t, y, loss = _two_layer_net()
    p = nn.get_parameters(grad_only=False)
    w1, b1, w2, b2 = (p[k].d.astype(np.float64) for k in
                      ('fc1/affine/W', 'fc1/affine/b', 'fc2/affine/W', 'fc2/affine/b'))
    batches = _batches(rng, 3)
    fisher = fisher_diagonal(loss, batches, inputs=[x, t])
    assert list(fisher) == ['fc1', 'fc2'] and fisher.n_batches == 3
    g = [_hand_gradients(xb, tb, w1, b1, w2, b2) for xb, tb in batches]
    for i, name in enumerate(('fc1', 'fc2')):
        expected = np.mean([gi[i] ** 2 for gi in g], axis=0)
        np.testing.assert_allclose(fisher[name], expected, rtol=1e-4, atol=1e-12)
        assert fisher.trace(name) == pytest.approx(expected.sum(), rel=1e-4)
    np.testing.assert_array_equal(fisher.weights['fc1'], p['fc1/affine/W'].d)
    # the fixed layer's graph weight keeps need_grad=False; {Variable: array} feeds the same
    assert y.parent.inputs[1].need_grad is False
    again = fisher_diagonal(loss, [{x: xb, t: tb} for xb, tb in batches])
    np.testing.assert_array_equal(again['fc2'], fisher['fc2'])


def test_fisher_of_a_lutq_network_is_taken_at_its_float_weights(rng):
    x, t = nn.Variable((6, 4)), nn.Variable((6, 1))
    with nnabla_lutq.weight_mode('float'):
        h = F.relu(PF.lutq_affine(x, 5, n_values=4, name='fc1'))
        y = PF.lutq_affine(h, 3, n_values=4, name='fc2')
    loss = F.mean(F.softmax_cross_entropy(y, t))
    p = nn.get_parameters(grad_only=False)
    w1, b1, w2, b2 = (p[k].d.astype(np.float64) for k in
                      ('fc1/lutq_affine/W', 'fc1/lutq_affine/b', 'fc2/lutq_affine/W',
                       'fc2/lutq_affine/b'))
    batches = _batches(rng, 2)
    fisher = fisher_diagonal(loss, batches, inputs=[x, t])
    g = [_hand_gradients(xb, tb, w1, b1, w2, b2) for xb, tb in batches]
    np.testing.assert_allclose(fisher['fc1'], np.mean([gi[0] ** 2 for gi in g], axis=0),
                               rtol=1e-4, atol=1e-12)
    tied = PF.lutq_affine(h, 3, n_values=4, name='fc2')  # computes with d[A]
    with pytest.raises(ValueError, match=r"weight_mode\('float'\)"):
        fisher_diagonal(F.mean(F.softmax_cross_entropy(tied, t)), batches, inputs=[x, t])


def test_fisher_refuses_what_it_cannot_measure(rng):
    x, t, y, loss = _two_layer_net()
    with pytest.raises(ValueError, match='scalar'):
        fisher_diagonal(y, _batches(rng, 1), inputs=[x, t])
    with pytest.raises(ValueError, match='no calibration minibatch'):
        fisher_diagonal(loss, [], inputs=[x, t])
    with pytest.raises(ValueError, match='batch size is fixed'):
        fisher_diagonal(loss, _batches(rng, 1, batch=3), inputs=[x, t])
    with pytest.raises(ValueError, match='inputs='):
        fisher_diagonal(loss, _batches(rng, 1))


# --- sensitivity-weighted tables -----------------------------------------------------------------

@pytest.mark.parametrize('seed', range(6))
def test_weighted_table_is_optimal_with_exact_weighted_means(seed):
    r = np.random.RandomState(seed)
    n, k = 10, 3
    w = r.randn(n).astype(np.float32)
    f = r.rand(n) * (r.rand(n) > 0.2) + 1e-3 * (seed % 2)
    d, a = fit_table(w, make_config(k, 'free', 0.0, None, n), weight=f)
    best = _brute_force_weighted_sse(w, f, k)
    assert table_sse(w, d, a, f) == pytest.approx(best, rel=1e-5, abs=1e-9)
    dist = np.abs(w[:, None] - d[None, :])  # nearest-value assignment
    np.testing.assert_allclose(dist[np.arange(n), a], dist.min(1))
    for j in range(k):  # the fixed point: each value is its cluster's weighted mean
        m = a == j
        if f[m].sum() > 0:
            assert d[j] == pytest.approx(np.dot(f[m], w[m]) / f[m].sum(), rel=1e-5, abs=1e-7)


def test_uniform_weights_give_the_plain_table(rng):
    w = rng.randn(300).astype(np.float32)
    cfg = make_config(8, 'free', 0.0, None, w.size)
    d0, a0 = fit_table(w, cfg)
    d1, a1 = fit_table(w, cfg, weight=np.full(w.size, 3.0))
    np.testing.assert_allclose(d1, d0, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(a1, a0)


def test_initialize_weighted_refits_converted_layers(rng):
    x, t = nn.Variable((6, 4)), nn.Variable((6, 1))
    h = F.relu(PF.affine(x, 16, name='fc1'))
    dead = PF.affine(x, 8, name='dead')  # in the loss with weight 0: no gradient
    y = PF.affine(h, 3, name='fc2')
    loss = F.mean(F.softmax_cross_entropy(y, t)) + 0.0 * F.sum(dead)
    fisher = fisher_diagonal(loss, _batches(rng, 3), inputs=[x, t])
    assert not np.any(fisher['dead']) and np.all(fisher['fc1'] >= 0)
    nnabla_lutq.convert([y, dead], LayerConfig(4), overrides={'dead': LayerConfig(2)})
    assert sorted(initialize_weighted(fisher)) == ['dead', 'fc1', 'fc2']
    for name in ('fc1', 'fc2'):
        rec = nnabla_lutq.STATE.layer(name)
        d, a = fit_table(rec.W.d, rec.config, weight=fisher[name])
        np.testing.assert_array_equal(rec.d.d, d)
        np.testing.assert_array_equal(rec.A.d, a)
    rec = nnabla_lutq.STATE.layer('dead')  # no sensitivity at all: the plain fit
    d, a = init_dictionary(rec.W.d, rec.config)
    np.testing.assert_array_equal(rec.d.d, d)
    with pytest.raises(ValueError, match='no sensitivities'):
        initialize_weighted(fisher, layers=['nope'])


# --- the budget ----------------------------------------------------------------------------------

@pytest.mark.parametrize('k', [2, 3, 4, 5, 8, 9, 16, 17, 256])
def test_layer_memory_is_table_plus_indices(k):
    for n in (1, 7, 1000):
        assert layer_bits(k, n) == _memory(k, n) == k * 32 + n * math.ceil(math.log2(k))


def test_budget_arithmetic_and_errors():
    assert Budget(bits_per_weight=2.5).total(15248) == 38120
    assert Budget(bits_per_weight=0.1).total(10) == 1  # floor of the float's exact value
    assert Budget(bits=1234).total(10 ** 6) == 1234
    assert Budget.of(3) == Budget(bits_per_weight=3)
    for kw in ({}, {'bits': 3, 'bits_per_weight': 2}, {'bits': 0}, {'bits': 2.5},
               {'bits_per_weight': -1}, {'bits_per_weight': float('nan')}):
        with pytest.raises(ValueError, match='budget'):
            Budget(**kw)


@pytest.mark.parametrize('seed', range(25))
def test_knapsack_is_exact_against_brute_force(seed):
    r = np.random.RandomState(seed)
    groups = r.randint(1, 5)
    costs = [r.randint(1, 40, size=r.randint(1, 5)) for _ in range(groups)]
    errors = [np.round(r.rand(len(c)) * 8) / 8 for c in costs]  # ties on purpose
    lo, hi = sum(c.min() for c in costs), sum(c.max() for c in costs)
    budget = int(r.randint(lo, hi + 1))
    choice, cost, err = multiple_choice_knapsack(costs, errors, budget)
    best = min(sum(e[i] for e, i in zip(errors, pick))
               for pick in itertools.product(*(range(len(c)) for c in costs))
               if sum(c[i] for c, i in zip(costs, pick)) <= budget)
    assert cost == sum(c[i] for c, i in zip(costs, choice)) <= budget
    assert err == pytest.approx(sum(e[i] for e, i in zip(errors, choice)))
    assert err == pytest.approx(best)
    with pytest.raises(ValueError, match=f'minimum possible {lo} bits'):
        multiple_choice_knapsack(costs, errors, lo - 1)


def _synthetic_fisher(seed, sizes=(40, 100, 250, 17)):
    r = np.random.RandomState(seed)
    return Fisher({f'l{i}': (r.randn(n) * r.uniform(0.1, 2), r.rand(n) ** 3 * r.uniform(0.1, 10))
                   for i, n in enumerate(sizes)})


@pytest.mark.parametrize('seed', range(4))
@pytest.mark.parametrize('bpw', [1.7, 2.4, 3.3, 5.0])
def test_choose_bits_is_the_best_assignment_of_k_within_the_budget(seed, bpw):
    fisher = _synthetic_fisher(seed)
    ks = (2, 3, 4, 8, 16)
    overrides, report = choose_bits(fisher, bpw, candidates=ks)
    n = sum(w.size for w in fisher.weights.values())
    budget = math.floor(bpw * n)
    err = {}
    for name, w in fisher.weights.items():  # S(K): the Fisher-weighted table's weighted error
        for k in ks:
            d, a = fit_table(w, make_config(k, 'free', 0.0, None, w.size), weight=fisher[name])
            err[name, k] = table_sse(w, d, a, fisher[name])
    names = list(fisher)
    best = min(sum(err[nm, k] for nm, k in zip(names, pick))
               for pick in itertools.product(ks, repeat=len(names))
               if sum(_memory(k, fisher.weights[nm].size) for nm, k in zip(names, pick))
               <= budget)
    chosen = [overrides[nm].n_values for nm in names]
    assert report.budget_bits == budget
    assert report.total_bits == sum(_memory(k, fisher.weights[nm].size)
                                    for nm, k in zip(names, chosen)) <= budget
    assert report.error == pytest.approx(best, rel=1e-9)
    assert [r.n_values for r in report.layers] == chosen
    text = str(report)
    assert all(nm in text for nm in names) and str(report.total_bits) in text


def test_choose_bits_follows_the_conversion_settings():
    fisher = _synthetic_fisher(0)
    overrides, report = choose_bits(
        fisher, 3, candidates=(2, 4, 8), config=LayerConfig(dictionary='pow2'),
        overrides={'l1': None, 'l2': LayerConfig(dictionary=[-1, 0, 1])}, min_weights=20)
    assert sorted(overrides) == ['l0', 'l2']  # l1 float by override, l3 below min_weights
    assert overrides['l0'].dictionary == 'pow2'
    assert overrides['l2'] == LayerConfig(3, (-1.0, 0.0, 1.0))  # a fixed set: its one option
    assert report.n_weights == 40 + 250
    minimum = _memory(2, 40) + _memory(3, 250)
    with pytest.raises(ValueError, match=f'minimum possible {minimum} bits'):
        choose_bits(fisher, Budget(bits=minimum - 1), candidates=(2, 4, 8),
                    overrides={'l1': None, 'l2': LayerConfig(dictionary=[-1, 0, 1])},
                    min_weights=20)
    with pytest.raises(ValueError, match='match no layer'):
        choose_bits(fisher, 3, overrides={'conv*': None})
    with pytest.raises(ValueError, match='candidates'):
        choose_bits(fisher, 3, candidates=(1, 4))


def test_allocate_bits_then_convert_gives_the_chosen_layers(rng):
    x, t, y, loss = _two_layer_net(fix_second=False)
    overrides, report = nnabla_lutq.allocate_bits(loss, _batches(rng, 2), 6.0, inputs=[x, t],
                                                  candidates=(2, 4, 8, 16))
    assert report.fisher.n_batches == 2 and report.total_bits <= report.budget_bits
    nnabla_lutq.convert(y, config=None, overrides=overrides)
    assert {r.name: len(r.d.d) for r in nnabla_lutq.lutq_layers()} == \
        {f'{r.name}/lutq_affine': r.n_values for r in report.layers}


# --- post-training quantization of an .nnp -------------------------------------------------------

def _float_nnp(tmp_path, rng, batch=20):
    x = nn.Variable((batch, 1, 8, 8))
    with nn.parameter_scope('net'):
        digits_cnn(x, Layers(), test=False)
    for k, v in nn.get_parameters(grad_only=False).items():
        if k.endswith(('/mean', '/beta')):
            v.d = rng.randn(*v.shape) * 0.3
        elif k.endswith(('/var', '/gamma')):
            v.d = rng.rand(*v.shape) + 0.5
    with nn.parameter_scope('net'):
        y = digits_cnn(x, Layers(), test=True)
    x.d = rng.rand(*x.shape) * 2 - 1
    y.forward()
    path = tmp_path / 'float.nnp'
    nnabla_lutq.export_nnp(str(path), {'x': x}, {'y': y})
    return x.d.copy(), y.d.argmax(1), path


def _file_tables(path):
    p = read_nnp(str(path)).params
    return {k[:-2]: (p[k], p[k[:-2] + '/A']) for k in p if k.endswith('/d')}


def test_quantize_nnp_with_a_budget_writes_the_chosen_k_within_the_budget(tmp_path, rng):
    x, labels, path = _float_nnp(tmp_path, rng)
    floats = read_nnp(str(path)).params
    out = tmp_path / 'q.nnp'
    r = quantize_nnp(str(path), str(out), calibration=(x, labels), budget=2.5,
                     calibration_batch_size=8, candidates=(2, 4, 8, 16))
    report, fisher = r['bits'], r['fisher']
    assert fisher.n_batches == 3  # 20 samples: 8 + 8 + 4 filled up with the first 4
    tables = _file_tables(out)
    assert len(tables) == len(report.layers) == 4
    total = 0
    for row in report.layers:
        scope = 'lutq_affine' if row.name.endswith('fc') else 'lutq_conv'
        d, a = tables[f'{row.name}/{scope}']
        assert len(d) == row.n_values
        total += _memory(len(d), a.size)
        # the file holds the Fisher-weighted table of the float weights
        w = floats[f"{row.name}/{scope.replace('lutq_', '')}/W"]
        dw, aw = fit_table(w, make_config(row.n_values, 'free', 0.0, None, w.size),
                           weight=fisher[row.name])
        np.testing.assert_array_equal(d, dw)
        np.testing.assert_array_equal(a, aw)
    n = sum(row.n_weights for row in report.layers)
    assert total == report.total_bits <= math.floor(2.5 * n) == report.budget_bits
    # without labels the targets are the float model's own predictions: here, the labels given
    r2 = quantize_nnp(str(path), str(tmp_path / 'q2.nnp'), calibration=(x, None), budget=2.5,
                      calibration_batch_size=8, candidates=(2, 4, 8, 16))
    for name in fisher:
        np.testing.assert_allclose(r2['fisher'][name], fisher[name], rtol=1e-6)


def test_quantize_nnp_weighted_tables_and_refusals(tmp_path, rng):
    x, labels, path = _float_nnp(tmp_path, rng)
    plain = quantize_nnp(str(path), str(tmp_path / 'p.nnp'), n_values=4)
    r = quantize_nnp(str(path), str(tmp_path / 'w.nnp'), n_values=4, calibration=(x, labels),
                     calibration_batch_size=10)
    assert sorted(r['weighted']) == ['net/conv1', 'net/conv2', 'net/conv3', 'net/fc']
    assert 'bits' not in r and 'fisher' not in plain
    same = quantize_nnp(str(path), str(tmp_path / 'u.nnp'), n_values=4, calibration=(x, labels),
                        weighted=False)
    assert _file_tables(tmp_path / 'u.nnp').keys() == _file_tables(tmp_path / 'p.nnp').keys()
    for k, (d, a) in _file_tables(tmp_path / 'u.nnp').items():
        np.testing.assert_array_equal(d, _file_tables(tmp_path / 'p.nnp')[k][0])
    assert 'fisher' not in same
    out = tmp_path / 'never.nnp'
    with pytest.raises(ValueError, match='calibration'):
        quantize_nnp(str(path), str(out), budget=3)
    with pytest.raises(ValueError, match='minimum possible'):
        quantize_nnp(str(path), str(out), calibration=(x, labels), budget=0.5)
    with pytest.raises(ValueError, match='labels'):
        quantize_nnp(str(path), str(out), n_values=4, calibration=(x, labels[:3]))
    assert not out.exists()

    def loss_fn(net):  # any loss: here the mean squared output
        y = list(net.outputs.values())[0]
        xi = list(net.inputs.values())[0]
        return F.mean(y ** 2), [{xi: x[:5]}, {xi: x[5:10]}]
    r = quantize_nnp(str(path), str(out), n_values=4, calibration=loss_fn,
                     calibration_batch_size=5)
    assert r['fisher'].n_batches == 2 and len(r['weighted']) == 4


def test_command_convert_with_a_budget(tmp_path, rng, capsys):
    x, labels, path = _float_nnp(tmp_path, rng)
    calib = tmp_path / 'calib.npz'
    np.savez(calib, x=x, y=labels)
    out = tmp_path / 'q.nnp'
    assert cli.main(['convert', str(path), str(out), '--calibration', str(calib),
                     '--bits-per-weight', '3', '--candidates', '2', '4', '8',
                     '--calibration-batch-size', '10', '--eval-data', str(calib)]) == 0
    text = capsys.readouterr().out
    assert 'memory bits' in text and 'budget 3 bits per weight' in text and 'accuracy' in text
    tables = _file_tables(out)
    bits = sum(_memory(len(d), a.size) for d, a in tables.values())
    assert bits <= math.floor(3 * sum(a.size for _, a in tables.values()))
    np.savez(calib, x=x)  # no labels: the float model's predictions
    assert cli.main(['convert', str(path), str(out), '--calibration', str(calib),
                     '--budget-bits', str(bits)]) == 0
    capsys.readouterr()
    assert cli.main(['convert', str(path), str(tmp_path / 'n.nnp'), '--bits-per-weight',
                     '3']) == 1
    assert 'give calibration data' in capsys.readouterr().err
    assert not (tmp_path / 'n.nnp').exists()


# --- the digits CNN: weighted vs plain tables, measured ------------------------------------------

@pytest.mark.slow
def test_digits_cnn_weighted_and_plain_tables_measured(capsys):
    """A float digits CNN trained briefly here, then post-training LUT-Q at K = 4 with plain and
    with Fisher-weighted tables. The accuracies are printed, not compared (the data decides);
    what is asserted is what the fit guarantees: the weighted tables leave a smaller
    Fisher-weighted error."""
    import nnabla.solvers as S
    from examples.digits.data import load_digits_data
    xtr, ytr, xte, yte = load_digits_data(0)
    rng = np.random.RandomState(0)
    b = 64
    x, t = nn.Variable((b, 1, 8, 8)), nn.Variable((b, 1))
    with nn.parameter_scope('net'):
        loss = F.mean(F.softmax_cross_entropy(digits_cnn(x, Layers(), test=False), t))
    solver = S.Momentum(0.1, 0.9)
    solver.set_parameters(nn.get_parameters())
    for epoch in range(8):
        order = rng.permutation(len(xtr))
        for i in range(0, len(xtr) - b + 1, b):
            x.d, t.d = xtr[order[i:i + b]], ytr[order[i:i + b]]
            loss.forward()
            solver.zero_grad()
            loss.backward(clear_buffer=True)
            solver.update()
    xv, tv = nn.Variable((len(xte), 1, 8, 8)), nn.Variable((b, 1))
    xc = nn.Variable((b, 1, 8, 8))
    with nn.parameter_scope('net'):
        y_test = digits_cnn(xv, Layers(), test=True)
        calib = F.mean(F.softmax_cross_entropy(digits_cnn(xc, Layers(), test=True), tv))
    fisher = fisher_diagonal(calib, [(xtr[i:i + b], ytr[i:i + b]) for i in range(0, 256, b)],
                             inputs=[xc, tv])
    xv.d = xte
    y_test.forward()
    acc = {'float': float(np.mean(y_test.d.argmax(1) == yte.ravel()))}
    y_q = nnabla_lutq.convert(y_test, LayerConfig(4))
    err = {}
    for mode in ('plain', 'weighted'):
        if mode == 'weighted':
            initialize_weighted(fisher)
        else:
            nnabla_lutq.initialize()
        y_q.forward()
        acc[mode] = float(np.mean(y_q.d.argmax(1) == yte.ravel()))
        err[mode] = sum(table_sse(r.W.d, r.d.d, r.A.d, fisher[r.name.rsplit('/', 1)[0]])
                        for r in nnabla_lutq.lutq_layers())
    with capsys.disabled():
        print(f"\ndigits CNN, K=4 post-training: accuracy {acc}, Fisher-weighted error {err}")
    assert err['weighted'] <= err['plain']
    assert acc['float'] > 0.8
