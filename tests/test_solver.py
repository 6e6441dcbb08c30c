import numpy as np
import pytest
import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF
import nnabla.solvers as S

import nnabla_lutq
from nnabla_lutq.kmeans import GraphKMeans
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
