# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Training-step time of the ImageNet ResNets (examples/imagenet), float vs LUT-Q.

Per network, the float net and its LUT-Q twins are built side by side in one process and their
steps are timed alternately on the same random batch (forward, backward, weight decay, solver
update including the k-means step of every layer; as benchmarks/bench_train_step.py). Reported:
median step time and the ratio LUT-Q / float.
Each run adds a record to benchmarks/results/ and writes BENCHMARKS.md again.

Usage: python benchmarks/bench_imagenet_step.py [--context cpu|cudnn] [--archs resnet18 resnet50]
           [--batch-size 4] [--image-size 224] [--steps 3] [--configs lutq4-pow2 lutq2-pow2-mlbn-a8]
           [--backends auto]
"""
import argparse

import numpy as np
import nnabla as nn
from nnabla.ext_utils import get_extension_context

from _common import append, synchronizer
from bench_train_step import add_backends_argument, build_imagenet, median_step_ms
from examples.common import configs
from examples.imagenet.reproduce import parse_name
from examples.imagenet.train import DEPTHS


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--context', default='cpu', choices=['cpu', 'cudnn'])
    p.add_argument('--archs', nargs='+', default=['resnet18', 'resnet50'], choices=sorted(DEPTHS))
    p.add_argument('--batch-size', type=int, default=4)
    p.add_argument('--image-size', type=int, default=224)
    p.add_argument('--steps', type=int, default=3, help='timed steps per network')
    p.add_argument('--configs', nargs='+', default=['lutq4-pow2', 'lutq2-pow2-mlbn-a8'],
                   help='LUT-Q run names <config>[-a<bits>] (examples/imagenet/reproduce.py)')
    add_backends_argument(p, 'k-means backends (one network per configuration and backend)')
    args = p.parse_args()
    nn.set_default_context(get_extension_context(args.context))
    sync = synchronizer(args.context)
    rng = np.random.RandomState(0)
    runs = [('float', 'auto')] + [(c, b) for c in args.configs for b in args.backends]
    labels = [c if len(args.backends) == 1 else f'{c} [{b}]' for c, b in runs[1:]]
    rows = ['| network | batch | image | float step (ms) | ' + ' | '.join(
        f'{c} step (ms) | ratio' for c in labels) + ' |',
        '|---|---:|---:|---:|' + '---:|---:|' * len(labels)]
    for arch in args.archs:
        nn.clear_parameters()
        nets = []
        for name, backend in runs:
            config, bits = parse_name(name)
            nets.append(build_imagenet(f'{name}_{backend}', arch,
                                       configs.parse(config, act_bits=bits), args.batch_size,
                                       args.image_size, rng, backend))
        ms = median_step_ms(nets, args.steps, sync)
        row = (f'| {arch} | {args.batch_size} | {args.image_size} | {ms[0]:.0f} | ' + ' | '.join(
            f'{m:.0f} | {m / ms[0]:.2f}' for m in ms[1:]) + ' |')
        rows.append(row)
        print(row, flush=True)
    append('Training step, ImageNet ResNets (examples/imagenet), LUT-Q vs float', '\n'.join(rows),
           args.context, f'median of {args.steps} alternating steps after one warm-up step each, '
           '1000 classes; LUT-Q includes the per-minibatch k-means step of every layer (k-means '
           f'backend {"/".join(args.backends)}); `-a8`: 8-bit activations, `-mlbn`: '
           'multiplier-less BN.'
           + (' GPU step times (cudnn) could not be measured here: no GPU was available.'
              if args.context == 'cpu' else ''))


if __name__ == '__main__':
    main()
