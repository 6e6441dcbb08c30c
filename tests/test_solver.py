# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
import hashlib
import json
import os

import h5py
import numpy as np
import pytest
import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF
import nnabla.solvers as S

import nnabla_lutq
from nnabla_lutq.kmeans import GraphKMeans
from nnabla_lutq.training.solver import SolverStateError
from reference import ref_step

OPTS = {'free': dict(n_values=8), 'pow2': dict(n_values=8, dictionary='pow2'),
        'prune': dict(n_values=4, prune_ratio=0.5), 'ternary': dict(dictionary=[-1, 0, 1]),
        'pow2_prune': dict(n_values=5, dictionary='pow2', prune_ratio=0.3, pow2_range=(-8, 0))}


def _net(rng, opts, batch=16):
    x = nn.Variable.from_numpy_array(rng.randn(batch, 3, 8, 8).astype(np.float32))
    t = nn.Variable.from_numpy_array(rng.randint(0, 5, (batch, 1)).astype(np.int32))
    h = F.relu(PF.lutq_convolution(x, 8, (3, 3), name='c1', **opts))
    h = F.relu(PF.lutq_convolution(h, 8, (3, 3), name='c2', **opts))
    y = PF.lutq_affine(h, 5, name='fc', **opts)
    return F.mean(F.softmax_cross_entropy(y, t))


def _snapshot():
    return {k: v.d.copy() for k, v in nn.get_parameters(grad_only=False).items()}


@pytest.mark.parametrize('kind', list(OPTS))
@pytest.mark.parametrize('iters', [1, 3])
def test_update_is_inner_update_then_kmeans_exactly(kind, iters, rng, ctx):
    with nn.context_scope(ctx):
        loss = _net(rng, OPTS[kind])
        solver = nnabla_lutq.LUTQSolver(S.Momentum(0.5, 0.9), kmeans_iters=iters)
        solver.set_parameters(nn.get_parameters())
        assert [s.name for s in solver.layers] == ['c1/lutq_conv', 'c2/lutq_conv', 'fc/lutq_affine']
        twin = S.Momentum(0.5, 0.9)  # the same update on copies of W and b
        copies = {k: nn.Variable.from_numpy_array(v.d.copy(), need_grad=True)
                  for k, v in nn.get_parameters().items()}
        twin.set_parameters(copies)
        for step in range(3):
            before = _snapshot()
            loss.forward()
            solver.zero_grad()
            loss.backward()
            for k, v in nn.get_parameters().items():
                copies[k].g = v.g.copy()
            solver.update()
            twin.update()
            after = _snapshot()
            for k, v in copies.items():
                np.testing.assert_array_equal(after[k], v.d)  # W, b: exactly the inner solver's update
            for s in solver.layers:
                cfg = s.config
                d = before[s.name + '/d']
                for _ in range(iters):
                    d, a = ref_step(after[s.name + '/W'], d, cfg)
                np.testing.assert_array_equal(after[s.name + '/A'].ravel(), a)
                np.testing.assert_array_max_ulp(after[s.name + '/d'], d, maxulp=1)
                assert s.A.d.dtype == np.int32


@pytest.mark.parametrize('kind', list(OPTS))
def test_device_graph_step_matches_host_step(kind, rng):
    """The nnabla-function step (used in cudnn contexts) agrees with the exact host step."""
    loss = _net(rng, OPTS[kind])
    solver = nnabla_lutq.LUTQSolver(S.Sgd(0.3))
    solver.set_parameters(nn.get_parameters())
    for s in solver.layers:  # move W away from the initial tables
        s.W.d = s.W.d + rng.randn(*s.W.shape).astype(np.float32) * 0.05
    start = _snapshot()
    g = GraphKMeans(solver.layers, 2)
    g.step()
    dev = _snapshot()
    for k, v in start.items():
        nn.get_parameters(grad_only=False)[k].d = v
    solver.kmeans_step()
    solver.kmeans_step()
    host = _snapshot()
    for s in solver.layers:
        assert s.A.d.dtype == np.int32
        np.testing.assert_array_equal(dev[s.name + '/A'], host[s.name + '/A'])
        np.testing.assert_allclose(dev[s.name + '/d'], host[s.name + '/d'], rtol=2e-6, atol=1e-9)


def test_training_is_deterministic_on_cpu(rng):
    results = []
    for _ in range(2):
        nn.clear_parameters()
        r = np.random.RandomState(5)
        nn.random.set_parameter_seed(5)  # initializers without rng use nnabla.random.prng
        loss = _net(r, OPTS['pow2_prune'])
        solver = nnabla_lutq.LUTQSolver(S.Momentum(0.1, 0.9))
        solver.set_parameters(nn.get_parameters())
        for _ in range(4):
            loss.forward()
            solver.zero_grad()
            loss.backward()
            solver.weight_decay(1e-4)
            solver.update()
        results.append(_snapshot())
    for k in results[0]:
        assert np.array_equal(results[0][k], results[1][k]), k


def test_non_finite_weights_raise_and_leave_tables_unchanged(rng):
    loss = _net(rng, OPTS['free'])
    solver = nnabla_lutq.LUTQSolver(S.Sgd(0.1))
    solver.set_parameters(nn.get_parameters())
    loss.forward()
    solver.zero_grad()
    loss.backward()
    p = nn.get_parameters(grad_only=False)
    g = p['c2/lutq_conv/W'].g
    g[0, 0, 0, 0] = np.nan
    p['c2/lutq_conv/W'].g = g
    before = _snapshot()
    with pytest.raises(ValueError, match='c2/lutq_conv: W has non-finite values'):
        solver.update()
    after = _snapshot()
    for k in before:
        if k.endswith('/d') or k.endswith('/A'):
            assert np.array_equal(before[k], after[k]), k


def test_wrong_dtype_or_unsorted_table_is_refused(rng):
    loss = _net(rng, OPTS['free'])
    solver = nnabla_lutq.LUTQSolver(S.Sgd(0.1))
    solver.set_parameters(nn.get_parameters())
    p = nn.get_parameters(grad_only=False)
    a = p['c1/lutq_conv/A']
    a.d = a.d.astype(np.float64)  # the dtype trap: assigning floats changes the dtype
    with pytest.raises(ValueError, match='c1/lutq_conv: A has dtype float64'):
        solver.kmeans_step()
    a.data.cast(np.int32)
    p['fc/lutq_affine/d'].d = p['fc/lutq_affine/d'].d[::-1].copy()
    with pytest.raises(ValueError, match='fc/lutq_affine: d = .* is not a LUT-Q dictionary'):
        solver.kmeans_step()
    nnabla_lutq.initialize()
    solver.kmeans_step()


def test_solver_interface_is_delegated(rng, tmp_path):
    _net(rng, OPTS['free'])
    inner = S.Momentum(0.1, 0.9)
    solver = nnabla_lutq.LUTQSolver(inner)
    solver.set_parameters(nn.get_parameters())
    solver.set_learning_rate(0.02)
    assert inner.learning_rate() == pytest.approx(0.02) and solver.learning_rate() == pytest.approx(0.02)
    solver.save_states(str(tmp_path / 's.h5'))
    solver.load_states(str(tmp_path / 's.h5'))
    assert set(solver.get_states()) == set(nn.get_parameters())
    with pytest.raises(ValueError, match='kmeans_iters'):
        nnabla_lutq.LUTQSolver(inner, kmeans_iters=0)
    with pytest.raises(ValueError, match='wraps an nnabla solver'):
        nnabla_lutq.LUTQSolver(object())


# --- solver-state files: one format for LUTQSolver and LCSolver, .h5 and .protobuf ---------------
SOLVERS = {
    'LUTQSolver': lambda: nnabla_lutq.LUTQSolver(S.Adam(0.01)),
    'LCSolver': lambda: nnabla_lutq.LCSolver(S.Adam(0.01), mu0=0.1, mu_growth=1.5,
                                             steps_per_lc=2),
}


def _trained(kind, seed=3, steps=3, n_values=8):
    """A solver of ``kind`` on a fresh net after ``steps`` updates (states, counters, tables and
    LC multipliers all away from their initial values)."""
    nn.clear_parameters()
    rng = np.random.RandomState(seed)
    loss = _net(rng, dict(n_values=n_values))
    solver = SOLVERS[kind]()
    solver.set_parameters(nn.get_parameters())
    for _ in range(steps):
        loss.forward()
        solver.zero_grad()
        loss.backward()
        solver.update()
    return solver


def _everything(solver):
    """The wrapped solver's states, the LC state, and d/A of every layer (copies)."""
    out = {}
    for k, st in solver.get_states().items():
        out[f'{k}/t'] = np.asarray(st.t)
        out.update({f'{k}/{n}': v.d.copy() for n, v in st.pstate.items()})
    for s in solver.layers:
        out[s.name + '/d'], out[s.name + '/A'] = s.d.d.copy(), s.A.d.copy()
        if isinstance(solver, nnabla_lutq.LCSolver):
            out[s.name + '/lambda'] = solver.multipliers(s)
    if isinstance(solver, nnabla_lutq.LCSolver):
        out['counters'] = np.array([solver.updates, solver.lc_steps, solver.started,
                                    solver.finalized])
    return out


def _parameter_file_tables(solver, saved, kind):
    """LUTQSolver's d and A are parameters (saved with nn.save_parameters, not with the states):
    put them in place as loading the parameter file would. LCSolver's come from its states."""
    if kind == 'LUTQSolver':
        for s in solver.layers:
            s.d.d, s.A.data.cast(np.int32)[...] = saved[s.name + '/d'], saved[s.name + '/A']


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


def _resume_exactly(kind, path, write):
    """Train, ``write(solver, path)``, load into solvers of the same network that hold other
    values, and check that everything (values and dtypes) is back bit for bit."""
    solver = _trained(kind, steps=5)
    saved = _everything(solver)
    write(solver, path)
    for steps in (0, 2):  # a solver before its first update, one that has updated
        other = _trained(kind, seed=4, steps=steps)
        _parameter_file_tables(other, saved, kind)
        other.load_states(path)
        _same(saved, _everything(other))
    return other


@pytest.mark.parametrize('kind', list(SOLVERS))
@pytest.mark.parametrize('fmt', ['.h5', '.protobuf'])
def test_states_round_trip_exactly_in_both_formats(kind, fmt, tmp_path):
    path = str(tmp_path / ('states' + fmt))
    other = _resume_exactly(kind, path, lambda solver, p: solver.save_states(p))
    files = sorted(os.listdir(tmp_path))
    assert files == (['states.h5'] if fmt == '.h5' else ['states.protobuf',
                                                         'states.protobuf.lutq.h5'])
    other.save_states(path)  # saving again over the file keeps one group
    with h5py.File(str(tmp_path / files[-1]), 'r') as f:
        assert [k for k in f if k.startswith('nnabla_lutq')] == ['nnabla_lutq']
        g = f['nnabla_lutq']
        assert g.attrs['solver'] == kind and g.attrs['format'] == 2
        assert json.loads(g.attrs['settings'])['layers'].keys() == {
            'c1/lutq_conv', 'c2/lutq_conv', 'fc/lutq_affine'}


@pytest.mark.parametrize('fmt', ['.h5', '.protobuf'])
def test_states_of_the_other_solver_are_refused(fmt, tmp_path):
    path = str(tmp_path / ('s' + fmt))
    _trained('LCSolver').save_states(path)
    lutq = _trained('LUTQSolver')
    before = _everything(lutq)
    with pytest.raises(SolverStateError, match=r"saved by LCSolver; load them with LCSolver, "
                                               r"not LUTQSolver"):
        lutq.load_states(path)
    _same(before, _everything(lutq))
    _trained('LUTQSolver').save_states(path)
    with pytest.raises(SolverStateError, match='saved by LUTQSolver'):
        _trained('LCSolver').load_states(path)


def _one_line_error(solver, path, match):
    before = _everything(solver)
    with pytest.raises(SolverStateError, match=match) as e:
        solver.load_states(path)
    assert '\n' not in str(e.value) and str(path) in str(e.value)
    _same(before, _everything(solver))  # nothing was loaded


@pytest.mark.parametrize('kind', list(SOLVERS))
@pytest.mark.parametrize('fmt', ['.h5', '.protobuf'])
def test_damaged_or_missing_states_give_one_line_and_load_nothing(kind, fmt, tmp_path):
    path = tmp_path / ('s' + fmt)
    solver = _trained(kind)
    _one_line_error(solver, path, 'no such solver-state file')
    solver.save_states(str(path))
    good = path.read_bytes()
    for damaged in (good[:len(good) // 2], b'', b'not a state file'):
        path.write_bytes(damaged)
        _one_line_error(solver, path, 'not a readable solver-state file|holds no solver state')
    path.write_bytes(good)
    own = path if fmt == '.h5' else tmp_path / ('s' + fmt + '.lutq.h5')
    own_bytes = own.read_bytes()
    if fmt == '.protobuf':
        own.write_bytes(own_bytes[:100])
        _one_line_error(solver, path, r's\.protobuf\.lutq\.h5: not a readable solver-state file')
        own.write_bytes(own_bytes)
    if kind == 'LCSolver':  # an array of the LC state lost or of another shape
        with h5py.File(own, 'a') as f:
            del f['nnabla_lutq/lambda/c2/lutq_conv']
        _one_line_error(solver, path, r'damaged or incomplete LCSolver state \(no array '
                                      r'lambda/c2/lutq_conv\)')
        with h5py.File(own, 'a') as f:
            f['nnabla_lutq/lambda/c2/lutq_conv'] = np.zeros(3, np.float32)
        _one_line_error(solver, path, r'lambda/c2/lutq_conv is float32\[3\], expected '
                                      r'float32\[8, 8, 3, 3\]')
        with h5py.File(own, 'a') as f:
            del f['nnabla_lutq/lambda/c2/lutq_conv']
            f['nnabla_lutq/lambda/c2/lutq_conv'] = solver.multipliers('c2/lutq_conv')
            f['nnabla_lutq'].attrs['counters'] = json.dumps({'updates': 3})
        _one_line_error(solver, path, 'no counter lc_steps')
        own.write_bytes(own_bytes)
    solver.load_states(str(path))


@pytest.mark.parametrize('fmt', ['.h5', '.protobuf'])
def test_states_of_another_network_are_refused(fmt, tmp_path):
    path = str(tmp_path / ('s' + fmt))
    inner = S.Adam(0.01)  # a plain solver's file: nnabla would load part of it silently
    _trained('LUTQSolver')
    inner.set_parameters({k: v for k, v in nn.get_parameters().items() if 'c1' not in k})
    inner.save_states(path)
    solver = _trained('LUTQSolver')
    _one_line_error(solver, path, r'holds no solver state for 2 of the 6 parameters '
                                  r'\(c1/lutq_conv/W, c1/lutq_conv/b\)')
    solver.remove_parameters(['c1/lutq_conv/W', 'c1/lutq_conv/b', 'c2/lutq_conv/b'])
    _one_line_error(solver, path, r'holds solver states for 1 parameters this solver was not '
                                  r'given \(c2/lutq_conv/b\)')


def test_unsupported_file_names_are_refused_before_writing(tmp_path):
    solver = _trained('LCSolver')
    for name in ('s.npz', 's.nnp', 's'):
        with pytest.raises(ValueError, match=r'name the file \*\.h5 or \*\.protobuf'):
            solver.save_states(str(tmp_path / name))
        with pytest.raises(ValueError, match=r'name the file \*\.h5 or \*\.protobuf'):
            solver.load_states(str(tmp_path / name))
    assert os.listdir(tmp_path) == []


def _write_v1(solver, path):
    """The layout before format 2: LUTQSolver's settings in a group nnabla_lutq without solver or
    counters; LCSolver's state in a group nnabla_lutq_lc (.h5) or the file <path>.lc.h5."""
    solver.solver.save_states(path)
    lc = isinstance(solver, nnabla_lutq.LCSolver)
    own = path + '.lc.h5' if path.endswith('.protobuf') and lc else \
        path + '.lutq.h5' if path.endswith('.protobuf') else path
    with h5py.File(own, 'a' if own == path else 'w') as f:
        g = f.create_group('nnabla_lutq_lc' if lc else 'nnabla_lutq')
        g.attrs['settings'] = json.dumps(solver._own_state())
        if own != path:
            with open(path, 'rb') as s:
                g.attrs['states_sha256'] = hashlib.sha256(s.read()).hexdigest()
        if lc:
            g.attrs['counters'] = json.dumps(solver._counters())
            for k, v in solver._own_arrays().items():
                g.create_dataset(k, data=v)


@pytest.mark.parametrize('kind', list(SOLVERS))
@pytest.mark.parametrize('fmt', ['.h5', '.protobuf'])
def test_states_of_the_previous_layout_still_load(kind, fmt, tmp_path):
    path = str(tmp_path / ('s' + fmt))
    _resume_exactly(kind, path, _write_v1)
    with pytest.raises(SolverStateError, match='saved for other LUT-Q layers or settings'):
        _trained(kind, n_values=4).load_states(path)


def test_states_of_nnabla_lutq_0_1_still_load(tmp_path):
    """0.1 kept LUTQSolver's settings in an attribute of the .h5 file."""
    path = str(tmp_path / 's.h5')
    solver = _trained('LUTQSolver')
    solver.solver.save_states(path)
    with h5py.File(path, 'a') as f:
        f.attrs['nnabla_lutq'] = json.dumps(dict(solver._own_state(), kmeans_iters=1))
    _trained('LUTQSolver').load_states(path)
    with pytest.raises(SolverStateError, match="layer c1/lutq_conv: saved .*'n_values': 8"):
        _trained('LUTQSolver', n_values=4).load_states(path)


def test_lc_solver_warns_for_a_plain_solver_s_file(tmp_path):
    path = str(tmp_path / 's.h5')
    solver = _trained('LCSolver')
    solver.solver.save_states(path)
    with pytest.warns(UserWarning, match="a plain solver's state file, without LCSolver state"):
        solver.load_states(path)


class MomentumNoWeightDecayBn(object):
    """nnabla-examples' ImageNet solver (image-classification/imagenet/utils), as it is there:
    two nnabla solvers, no save_states / get_states / get_parameters of its own."""

    def __init__(self, learning_rate, momentum=0.9):
        self.solver = S.Momentum(learning_rate, momentum)
        self.solver_bn = S.Momentum(learning_rate, momentum)

    def set_parameters(self, params):
        params_bn = {k: v for k, v in params.items() if k.endswith('/gamma') or
                     k.endswith('/beta')}
        params = {k: v for k, v in params.items() if not (k.endswith('/gamma') or
                                                          k.endswith('/beta'))}
        self.solver_bn.set_parameters(params_bn)
        self.solver.set_parameters(params)

    def weight_decay(self, wd):
        self.solver.weight_decay(wd)

    def update(self):
        self.solver.update()
        self.solver_bn.update()

    def zero_grad(self):
        self.solver.zero_grad()
        self.solver_bn.zero_grad()


@pytest.mark.parametrize('ext', ['.h5', '.protobuf'])
def test_a_wrapped_solver_holder_saves_and_resumes_exactly(tmp_path, rng, ext):
    """LUTQSolver around MomentumNoWeightDecayBn gives nnabla-examples' checkpoint helpers what
    they use (save_states, get_parameters, get_states()[name].t) and resumes exactly."""
    nn.clear_parameters()
    x = nn.Variable.from_numpy_array(rng.randn(8, 3, 6, 6).astype(np.float32))
    h = PF.batch_normalization(PF.lutq_convolution(x, 4, (3, 3), n_values=4, name='c'),
                               name='bn')
    loss = F.mean(F.squared_error(PF.lutq_affine(F.relu(h), 2, n_values=4, name='fc'),
                                  F.constant(0.5, (8, 2))))

    def step(solver, n):
        for _ in range(n):
            loss.forward()
            solver.zero_grad()
            loss.backward()
            solver.weight_decay(1e-4)
            solver.update()

    def make():
        s = nnabla_lutq.LUTQSolver(MomentumNoWeightDecayBn(0.05))
        s.set_parameters(nn.get_parameters())
        return s
    solver = make()
    step(solver, 2)
    path = str(tmp_path / f'states{ext}')
    solver.save_states(path)
    params = solver.get_parameters()
    assert sorted(params) == sorted(nn.get_parameters())  # weights and BN, both inner solvers
    assert getattr(solver.get_states()['c/lutq_conv/W'], 't') == 2
    saved = {k: v.d.copy() for k, v in nn.get_parameters(grad_only=False).items()}
    step(solver, 3)
    want = {k: v.d.copy() for k, v in nn.get_parameters(grad_only=False).items()}
    for k, v in nn.get_parameters(grad_only=False).items():
        v.d = saved[k]
    again = make()
    again.load_states(path)
    assert getattr(again.get_states()['bn/bn/gamma'], 't') == 2
    step(again, 3)
    for k, v in nn.get_parameters(grad_only=False).items():
        np.testing.assert_array_equal(v.d, want[k], err_msg=k)


def test_a_holder_without_nnabla_solvers_is_refused_when_saving(tmp_path):
    class Custom:
        def set_parameters(self, params):
            pass

        def update(self):
            pass

        def zero_grad(self):
            pass
    solver = nnabla_lutq.LUTQSolver(Custom())  # training works; states cannot be kept
    with pytest.raises(ValueError, match='Custom has no save_states.*holds no nnabla solver'):
        solver.save_states(str(tmp_path / 's.h5'))
    assert not (tmp_path / 's.h5').exists()
