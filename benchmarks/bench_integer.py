# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The integer executor on trained networks: agreement with nnabla and the op tables.

1. Digits (the demo's recipe, :func:`examples.digits.demo.train`: shared trainer, cosine lr 0.1,
   batch 64, raw pixels in and ``x / 127.5 - 1`` in the graph): a float run, then
   ``lutq2-pow2-mlbn --act-bits 8`` started from it, once with the examples' EMA activation
   range (``act_quant='ema'``, what the trainer's ``--act-bits`` builds) and once with the
   power-of-two step (``act_quant='pow2'``; the trainer has no flag for it yet, so this script
   passes it to :func:`examples.common.configs.parse` for that run). Each ``model.nnp`` is
   checked with :func:`nnabla_lutq.integer.verify_int` on the 360 test images.
2. ResNet-20 ``lutq4-pow2-mlbn --act-bits 8`` (both activation kinds) after a short run on
   generated 32x32 images (no CIFAR-10 on this machine; a real CIFAR-10 run works the same with
   the run's ``model.nnp``), checked on generated images: the networks of
   ``tests/test_integer.py`` (its data generator, training loop and export), trained longer.

Prints the agreement figures and the op tables and writes them to ``--output`` (JSON). Nothing is
recorded in benchmarks/results/: these are counts and agreements, not timings.

Usage: python benchmarks/bench_integer.py [--epochs 30] [--resnet-steps 50] [--parts ...]
       [--output FILE]
"""
import argparse
import functools
import json
import os
import sys
import tempfile

import numpy as np

import _common  # puts the repository root on sys.path
from nnabla_lutq.integer import verify_int
from examples.common import configs
from examples.common.models import resnet20
from examples.digits import demo
from examples.digits.data import digits_dataset


def _digits(epochs, folder):
    data = digits_dataset(0)
    out = {}
    demo.train('float', epochs, os.path.join(folder, 'float'), progress=False)
    init = os.path.join(folder, 'float', 'params.h5')
    parse = configs.parse
    for act in ('ema', 'pow2'):
        run = os.path.join(folder, f'lutq2-pow2-mlbn-{act}')
        configs.parse = functools.partial(parse, act_quant=act)  # no trainer flag yet
        try:
            r = demo.train('lutq2-pow2-mlbn', epochs, run, init=init, progress=False,
                           extra=('--act-bits', '8'))
        finally:
            configs.parse = parse
        v = verify_int(os.path.join(run, 'model.nnp'), data.x_test, data.y_test)
        out[act] = dict(_summary(v), trained_accuracy=r['accuracy'])
    return out


def _resnet(steps, n_eval, folder):
    """The test suite's ResNet-20 networks (tests/test_integer.py: same generated data, same
    training loop and export), trained for ``steps`` instead of 6."""
    sys.path.insert(0, os.path.join(_common.ROOT, 'tests'))
    import test_integer as T
    out = {}
    for act in ('ema', 'pow2'):
        layers = configs.parse('lutq4-pow2-mlbn', act_bits=8, act_quant=act)
        T._train(layers, resnet20, (3, 32, 32), steps, T._cifar_like, lr=0.05, batch=32,
                 preprocess=T._preprocess)
        path = T._export(os.path.join(folder, f'resnet20-{act}.nnp'), resnet20, layers,
                         (3, 32, 32), T._preprocess)
        xv, yv = T._cifar_like(np.random.RandomState(1), n_eval)
        out[act] = _summary(verify_int(path, xv, yv))
    return out


def _summary(v):
    keep = ('n', 'agree', 'agreement', 'accuracy_int', 'accuracy_float', 'max_abs_diff',
            'multiplier_less', 'exact', 'table', 'report')
    return dict({k: v[k] for k in keep}, total=v['op_counts'][-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--epochs', type=int, default=30, help='digits epochs per run')
    p.add_argument('--resnet-steps', type=int, default=50,
                   help='ResNet-20 training steps (batch 32)')
    p.add_argument('--resnet-eval', type=int, default=1000, help='ResNet-20 test images')
    p.add_argument('--parts', nargs='+', default=['digits', 'resnet20'],
                   choices=['digits', 'resnet20'])
    p.add_argument('--output', default='integer_results.json')
    args = p.parse_args(argv)
    res = {}
    with tempfile.TemporaryDirectory() as folder, demo.quiet_nnabla():
        if 'digits' in args.parts:
            res['digits'] = _digits(args.epochs, folder)
        if 'resnet20' in args.parts:
            res['resnet20'] = _resnet(args.resnet_steps, args.resnet_eval, folder)
    for model, runs in res.items():
        for act, r in runs.items():
            print(f"\n### {model}, lutq{'2' if model == 'digits' else '4'}-pow2-mlbn "
                  f"--act-bits 8, act_quant={act}\n")
            print(r['report'])
    with open(args.output, 'w') as f:
        json.dump(res, f, indent=1)
    return res


if __name__ == '__main__':
    main()
