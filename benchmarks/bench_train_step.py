# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Training-step overhead of LUT-Q: every paper configuration vs float, on ResNet-20 (CIFAR-10
shape) and ResNet-18 (ImageNet shape, examples/imagenet).

Float and LUT-Q networks are built side by side in one process and their steps are timed
alternately on the same random batch (forward, backward, weight decay, solver update including
the k-means step). Reported: median step time of each, the ratio to float and the number of
functions of each training graph. Two tables, each a record in benchmarks/results/ (BENCHMARKS.md
is written again from them):

* LUT-Q K=16 M=1 per k-means backend (``--backends graph fused``: one network each), ResNet-20;
* the paper's configurations (``--configs``: names of :mod:`examples.common.configs`, with
  ``+a8`` for 8-bit tracked-range activations and ``+a8pow2`` for a power-of-two step) on
  ResNet-20 at each of ``--batch-sizes`` and on ResNet-18 at ``--resnet18-batch`` (0: none).

Target: <= 1.10 on CPU and on GPU (cudnn).

Usage: python benchmarks/bench_train_step.py [--context cpu|cudnn] [--batch-sizes 32 128] [--steps 5]
           [--backends auto] [--configs float+a8 lutq4-pow2 ...] [--resnet18-batch 16]
           [--resnet18-steps 3] [--image-size 224]
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
from examples.common import configs
from examples.common.models import Layers, resnet20

#: the configurations of the paper's tables (issue: "at float speed")
PAPER_CONFIGS = ('float+a8', 'float+a8pow2', 'lutq4-pow2', 'lutq4-pow2+a8', 'lutq2-pow2-mlbn',
                 'lutq2-pow2-mlbn+a8', 'lutq2-pow2-mlbn+a8pow2')


def layers_of(spec):
    """The Layers of ``<config>[+a8|+a8pow2]``."""
    name, _, act = spec.partition('+')
    if act not in ('', 'a8', 'a8pow2'):
        raise SystemExit(f"--configs: {spec}: the suffix is +a8 or +a8pow2")
    return configs.parse(name, act_bits=8 if act else None,
                         act_quant='pow2' if act == 'a8pow2' else 'ema')


def n_functions(loss):
    """Functions of a training graph."""
    found = []
    loss.visit(found.append)
    return len(found)


def maker(net_name, batch, size, rng):
    """``make(scope, layers)`` -> (loss, solver) of ``resnet20`` or an examples/imagenet ResNet
    (``size`` px) at ``batch``."""
    if net_name == 'resnet20':
        return lambda scope, layers: build(scope, layers, batch, rng)
    return lambda scope, layers: build_imagenet(scope, net_name, layers, batch, size, rng)


def device_functions(net_name, layers, rng):
    """Functions of the same training graph built with the graph forms that device contexts
    (``cudnn``) use instead of the host functions (:func:`nnabla_lutq.nn.host.use_host`): built
    in a half type config of the CPU context, on a batch of 2 small images (the count does not
    depend on the shapes), counted and dropped."""
    with nn.context_scope(get_extension_context('cpu', type_config='half')):
        loss = maker(net_name, 2, 64, rng)('graph_forms', layers)[0]
    count = n_functions(loss)
    nn.parameter.get_current_parameter_scope().pop('graph_forms', None)
    return count


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


def build_imagenet(scope, arch, layers, batch, size, rng, backend='auto'):
    """Loss and solver of an examples/imagenet ResNet on a fixed random batch (1000 classes)."""
    from examples.imagenet.models import resnet
    from examples.imagenet.train import DEPTHS
    x = nn.Variable.from_numpy_array(rng.randint(0, 256, (batch, 3, size, size)) / 127.5 - 1)
    t = nn.Variable.from_numpy_array(rng.randint(0, 1000, (batch, 1)))
    sgd = S.Momentum(0.1, 0.9)
    solver = nnabla_lutq.LUTQSolver(sgd, kmeans_iters=1, backend=backend) if layers.lutq else sgd
    with nn.parameter_scope(scope):
        loss = F.mean(F.softmax_cross_entropy(resnet(x, layers, DEPTHS[arch]), t))
        solver.set_parameters(nn.get_parameters())
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
    p.add_argument('--configs', nargs='*', default=list(PAPER_CONFIGS),
                   help='configurations timed against float (none: skip that table)')
    p.add_argument('--resnet18-batch', type=int, default=16,
                   help='batch of the ResNet-18 rows of the configurations table (0: none)')
    p.add_argument('--resnet18-steps', type=int, default=3, help='timed steps of ResNet-18')
    p.add_argument('--image-size', type=int, default=224, help='ResNet-18 image size')
    args = p.parse_args()
    specs = [(c, layers_of(c)) for c in args.configs]  # a wrong name fails before any timing
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
    if not specs:
        return
    rows = ['| network | batch | configuration | functions | functions, device forms | step (ms) '
            '| ratio to float | target |',
            '|:---|---:|:---|---:|---:|---:|---:|---:|']
    runs = [('resnet20', b, args.steps) for b in args.batch_sizes]
    if args.resnet18_batch:
        runs.append(('resnet18', args.resnet18_batch, args.resnet18_steps))
    for net_name, batch, steps in runs:
        nn.clear_parameters()
        make = maker(net_name, batch, args.image_size, rng)
        all_layers = [('float', Layers())] + specs
        nets = [make(f'c{i}', layers) for i, (_, layers) in enumerate(all_layers)]
        device = [device_functions(net_name, layers, rng) for _, layers in all_layers]
        times = median_step_ms(nets, steps, sync)
        for (name, _), net, dev, t in zip(all_layers, nets, device, times):
            row = (f'| {net_name} | {batch} | {name} | {n_functions(net[0])} | {dev} | {t:.1f} '
                   f'| {t / times[0]:.3f} | <= {target:.2f} |')
            rows.append(row)
            print(row, flush=True)
    image = f', ResNet-18 at {args.image_size} px ({args.resnet18_steps} steps)' \
        if args.resnet18_batch else ''
    append("Training step, the paper's configurations vs float (ResNet-20, CIFAR-10 shape; "
           "ResNet-18, ImageNet shape)", '\n'.join(rows), args.context,
           f'median of {args.steps} alternating steps{image} (one per network in turn) after one '
           'warm-up step each; +a8: 8-bit activations with a tracked range, +a8pow2: with a '
           'power-of-two step (without a suffix, float activations); functions: of the training '
           'graph (in a float32 CPU context the activation quantizers and the multiplier-less BN '
           'scale are one host function each, nnabla_lutq.nn.host; device forms: the graph '
           'forms that other contexts, e.g. cudnn, build).')


if __name__ == '__main__':
    main()
