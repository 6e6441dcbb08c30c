# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Data-parallel k-means: identical tables on every rank by construction, checked in one process
with a communicator stand-in that implements nnabla's ``bcast``."""
import numpy as np
import pytest
import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF
import nnabla.solvers as S

import nnabla_lutq
from nnabla_lutq.kmeans import HostKMeans, SyncKMeans, backend_for
from reference import ref_step


class _Group:
    """Ranks of one process; rank 0 must reach each collective first (as the test drives them)."""

    def __init__(self, size):
        self.size = size
        self.sent = []


class FakeComm:
    """The part of nnabla's data-parallel communicator the backend uses (``bcast``)."""

    def __init__(self, group, rank):
        self.group, self.rank, self.size = group, rank, group.size
        self.calls = 0

    def bcast(self, data, src=0, inplace=False):
        assert src == 0  # nnabla: the result lands in the given arrays either way
        if self.rank == 0:
            self.group.sent.append([a.get_data('r').copy() for a in data])
        else:
            for a, v in zip(data, self.group.sent[self.calls]):
                a.cast(v.dtype)[...] = v
        self.calls += 1


class NoisyKMeans(HostKMeans):
    """A host step whose means differ by one ulp per rank: what GPU atomics can do."""
    name = 'noisy'
    rank = 0

    def _run(self):
        super()._run()
        for s in self.layers:
            d = s.d.data.cast(np.float32)[s.config.first_free:]  # a pruned layer's 0 stays 0
            for _ in range(NoisyKMeans.rank):
                d[...] = np.nextafter(d, np.float32(np.inf))


def _rank_net(rank, rng_seed=3):
    rng = np.random.RandomState(rng_seed)  # the same weights on every rank
    with nn.parameter_scope(f'rank{rank}'):
        x = nn.Variable((4, 3, 6, 6))
        PF.lutq_convolution(x, 4, (3, 3), name='c1', n_values=4, dictionary='pow2')
        PF.lutq_affine(x, 5, name='fc', n_values=6, prune_ratio=0.3)
    layers = [s for s in nnabla_lutq.lutq_layers() if s.name.startswith(f'rank{rank}/')]
    for s in layers:
        s.W.d = rng.randn(*s.W.shape).astype(np.float32)
    nnabla_lutq.initialize(layers)  # ranks start from identical parameters, as in training
    return layers


@pytest.mark.parametrize('iters', [1, 3])
def test_sync_backend_makes_every_rank_hold_rank0s_tables(iters):
    group = _Group(3)
    ranks = [_rank_net(r) for r in range(3)]
    start = [(s.W.d.copy(), s.d.d.copy()) for s in ranks[0]]
    backends = [SyncKMeans(layers, iters, comm=FakeComm(group, r), inner=NoisyKMeans)
                for r, layers in enumerate(ranks)]
    for step in range(2):
        for r, b in enumerate(backends):
            NoisyKMeans.rank = r
            b.step()
        assert len(group.sent) == (step + 1) * iters  # one bcast of all tables per iteration
        for r in (1, 2):
            for a, b in zip(ranks[0], ranks[r]):
                np.testing.assert_array_equal(a.d.d, b.d.d)
                np.testing.assert_array_equal(a.A.d, b.A.d)
    # rank 0's result is the plain step (its noise is zero): two steps of M iterations
    for (w, d), s in zip(start, ranks[0]):
        for _ in range(2 * iters):
            d, a = ref_step(w, d, s.config)
        np.testing.assert_array_equal(s.A.d.ravel(), a)
        np.testing.assert_array_max_ulp(s.d.d, d, maxulp=1)


def _train_ranks(prefix, n_ranks, steps, comm_for):
    """Train one net per simulated rank with the real LUTQSolver (device-like noisy k-means step);
    every rank sees the same data and weights, as data-parallel ranks after the all-reduce.

    Returns:
        list: per step, per rank, ``{parameter name without the rank prefix: array}``.
    """
    losses, solvers = [], []
    for r in range(n_ranks):
        rng = np.random.RandomState(3)  # the same weights and data on every rank
        with nn.parameter_scope(f'{prefix}{r}'):
            x = nn.Variable.from_numpy_array(rng.randn(4, 3, 6, 6).astype(np.float32))
            t = nn.Variable.from_numpy_array(rng.randn(4, 5).astype(np.float32))
            h = PF.lutq_convolution(x, 4, (3, 3), name='c1', n_values=4, dictionary='pow2')
            y = PF.lutq_affine(h, 5, name='fc', n_values=6, prune_ratio=0.3)
            losses.append(F.mean(F.squared_error(y, t)))
            layers = [s for s in nnabla_lutq.lutq_layers() if s.name.startswith(f'{prefix}{r}/')]
            for s in layers:
                s.W.d = rng.randn(*s.W.shape).astype(np.float32) * 0.3
            nnabla_lutq.initialize(layers)
            solver = nnabla_lutq.LUTQSolver(S.Sgd(0.05), backend=NoisyKMeans, comm=comm_for(r))
            solver.set_parameters(nn.get_parameters())
            solvers.append(solver)
    history = []
    for _ in range(steps):
        for r, (loss, solver) in enumerate(zip(losses, solvers)):  # rank 0 first, as FakeComm needs
            NoisyKMeans.rank = r
            loss.forward()
            solver.zero_grad()
            loss.backward()
            solver.update()
        history.append([{k.split('/', 1)[1]: v.d.copy()
                         for k, v in nn.get_parameters(grad_only=False).items()
                         if k.startswith(f'{prefix}{r}/')} for r in range(n_ranks)])
    return history, solvers


def test_without_sync_the_ranks_drift_apart_and_with_it_they_do_not():
    """The real solver path with a step that differs per rank in the last bit (GPU atomics):
    without a communicator nothing keeps the ranks together, and the differing tables feed back
    into training (the float weights drift apart too); with one (SyncKMeans) every parameter is
    identical on every rank after every update, and rank 0 computes what it computes alone."""
    steps = 4
    alone, solvers = _train_ranks('alone', 2, steps, lambda r: None)
    assert not any(isinstance(b, SyncKMeans) for s in solvers for b in s._backends.values())
    group = _Group(2)
    synced, solvers = _train_ranks('synced', 2, steps, lambda r: FakeComm(group, r))
    assert all(isinstance(b, SyncKMeans) for s in solvers for b in s._backends.values())
    assert len(group.sent) == steps  # one bcast of the tables per update (M = 1)
    names = [k for k in alone[0][0] if k.endswith('/d')]
    assert len(names) == 2
    for k in names:  # without sync the tables differ from the first update on
        assert not np.array_equal(alone[0][0][k], alone[0][1][k]), k
    drifted = [k for k in alone[-1][0] if k.endswith('/W')
               and not np.array_equal(alone[-1][0][k], alone[-1][1][k])]
    assert drifted, 'the differing tables never reached the float weights'
    for step in range(steps):
        rank0, rank1 = synced[step]
        assert rank0.keys() == rank1.keys() == alone[step][0].keys()
        for k in rank0:
            np.testing.assert_array_equal(rank0[k], rank1[k], err_msg=f'step {step}: {k}')
            np.testing.assert_array_equal(rank0[k], alone[step][0][k], err_msg=f'step {step}: {k}')


def test_solver_with_a_communicator_uses_the_sync_backend():
    group = _Group(2)
    layers = _rank_net(0)
    assert isinstance(backend_for(layers, comm=FakeComm(group, 0)), SyncKMeans)
    assert isinstance(backend_for(layers, comm=FakeComm(_Group(1), 0)), HostKMeans)
    x = nn.Variable.from_numpy_array(np.ones((2, 3, 6, 6), np.float32))
    with nn.parameter_scope('rank0'):
        y = PF.lutq_affine(x, 5, name='fc', n_values=6, prune_ratio=0.3)
    solver = nnabla_lutq.LUTQSolver(S.Sgd(0.1), comm=FakeComm(group, 0))
    solver.set_parameters(nn.get_parameters())
    loss = F.sum(y ** 2)
    loss.forward()
    solver.zero_grad()
    loss.backward()
    solver.update()
    assert len(group.sent) == 1 and len(group.sent[0]) == 2  # one bcast of both tables
    with pytest.raises(ValueError, match='needs an nnabla communicator'):
        SyncKMeans(layers, 1, comm=None)
