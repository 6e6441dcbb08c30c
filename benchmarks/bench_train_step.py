# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Training-step overhead of LUT-Q: ResNet-20 (CIFAR-10 shape), LUT-Q K=16 M=1 vs float.

Float and LUT-Q networks are built side by side in one process and their steps are timed
alternately on the same random batch (forward, backward, weight decay, solver update including
the k-means step). Reported: median step time of each and the ratio LUT-Q / float. Each run
adds a record to benchmarks/results/ and writes BENCHMARKS.md again. Target: <= 1.10 on CPU and on
GPU (cudnn).

With ``--backends graph fused`` one LUT-Q network per k-means backend is timed in the same run
(each against the same float network).

Usage: python benchmarks/bench_train_step.py [--context cpu|cudnn] [--batch-sizes 32 128] [--steps 5]
           [--backends auto]
"""
import argparse
import time

import numpy as np
import nnabla as nn
import nnabla.functions as F
import nnabla.solvers as S
from nnabla.ext_utils import get_extension_context

from _common import append, synchronizer
import nnabla_lutq
from examples.common.models import Layers, resnet20


def build(scope, layers, batch, rng, backend='auto'):
    x = nn.Variable((batch, 3, 32, 32))
    t = nn.Variable((batch, 1))
    x.d = rng.randn(*x.shape)
    t.d = rng.randint(0, 10, t.shape)
    with nn.parameter_scope(scope):
        loss = F.mean(F.softmax_cross_entropy(resnet20(x, layers), t))
        params = nn.get_parameters()
    solver = S.Momentum(0.1, 0.9)
    if layers.lutq:
        solver = nnabla_lutq.LUTQSolver(solver, kmeans_iters=1, backend=backend)
    solver.set_parameters(params)
    return loss, solver


def step(loss, solver, sync):
    t0 = time.perf_counter()
    loss.forward(clear_no_need_grad=True)
    solver.zero_grad()
    loss.backward(clear_buffer=True)
    solver.weight_decay(5e-4)
    solver.update()
    sync()
    return time.perf_counter() - t0


def add_backends_argument(parser, help):
    """``--backends``: the k-means backends to time, ``auto`` by default."""
    from nnabla_lutq.kmeans import BACKENDS
    parser.add_argument('--backends', nargs='+', default=['auto'],
                        choices=['auto'] + sorted(BACKENDS), help=help)


def median_step_ms(nets, steps, sync):
    """Median step time (ms) of each ``(loss, solver)``: one warm-up step each (allocations,
    algorithm selection), then ``steps`` rounds of one step per network in turn."""
    for net in nets:
        step(*net, sync)
    times = [[] for _ in nets]
    for _ in range(steps):
        for i, net in enumerate(nets):
            times[i].append(step(*net, sync))
    return [1e3 * np.median(t) for t in times]


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--context', default='cpu', choices=['cpu', 'cudnn'])
    p.add_argument('--batch-sizes', type=int, nargs='+', default=[32, 128])
    p.add_argument('--steps', type=int, default=5, help='timed steps per network and batch size')
    add_backends_argument(p, 'k-means backends to time (one LUT-Q network each)')
    args = p.parse_args()
    nn.set_default_context(get_extension_context(args.context))
    sync = synchronizer(args.context)
    rng = np.random.RandomState(0)
    rows = ['| batch | k-means backend | float step (ms) | LUT-Q K=16 M=1 step (ms) | ratio '
            '| target |',
            '|---:|:---|---:|---:|---:|---:|']
    target = 1.10  # the same target on CPU and GPU
    for batch in args.batch_sizes:
        nn.clear_parameters()
        nets = [build('float', Layers(), batch, rng)]
        for b in args.backends:
            nets.append(build('lutq_' + b, Layers(lutq=True, n_values=16), batch, rng, b))
        tf, *tqs = median_step_ms(nets, args.steps, sync)
        for b, tq in zip(args.backends, tqs):
            row = f'| {batch} | {b} | {tf:.1f} | {tq:.1f} | {tq / tf:.3f} | <= {target:.2f} |'
            rows.append(row)
            print(row, flush=True)
    append('Training step, ResNet-20 (CIFAR-10 shape), LUT-Q K=16 M=1 vs float', '\n'.join(rows),
           args.context, f'median of {args.steps} alternating steps after one warm-up step each; '
           'LUT-Q includes the per-minibatch k-means step of all 20 layers.')


if __name__ == '__main__':
    main()
