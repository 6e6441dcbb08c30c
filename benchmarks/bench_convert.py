# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Whole-network conversion time: float ResNet-20 (CIFAR-10 shape) and ResNet-50 (ImageNet shape).

For each model, in a fresh parameter set per repetition: build the float training and test
graphs (``PF.convolution`` / ``PF.affine`` / ``PF.batch_normalization``), plan the conversion
(``conversion_plan``: decisions only), convert the training graph (moves the parameters, creates
``d`` / ``A`` and initializes them from ``W`` -- the k-means start, as the LUT-Q parametric
functions do) and then the test graph (rebuilt on the same layers). The baseline is building the
same LUT-Q training graph directly with ``PF.lutq_*`` / ``PF.mlbn`` (same initialization work).
Settings: every convolution and affine layer K=16 free, multiplier-less BN. Reported: median
times and the ratio conversion / direct build.
Each run adds a record to benchmarks/results/ and writes BENCHMARKS.md again.

Usage: python benchmarks/bench_convert.py [--repeats 3] [--models resnet20 resnet50]
"""
import argparse
import time

import numpy as np
import nnabla as nn

from _common import append
from nnabla_lutq import LayerConfig, convert
from nnabla_lutq.nn.convert import conversion_plan
from examples.common.models import Layers, resnet20
from examples.imagenet.models import resnet50

MODELS = {'resnet20': (resnet20, (1, 3, 32, 32)), 'resnet50': (resnet50, (1, 3, 224, 224))}
SETTINGS = dict(config=LayerConfig(16), mlbn=True)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def one_run(model, shape):
    """Times (seconds) of one repetition, and the plan."""
    nn.clear_parameters()
    x = nn.Variable(shape)
    t_float, (y, yt) = timed(lambda: (model(x, Layers()), model(x, Layers(), test=True)))
    t_plan, plan = timed(lambda: conversion_plan(y, **SETTINGS))
    t_train, _ = timed(lambda: convert(y, **SETTINGS))
    t_test, _ = timed(lambda: convert(yt, **SETTINGS))
    nn.clear_parameters()
    t_direct, _ = timed(lambda: model(x, Layers(lutq=True, n_values=16, mlbn=True)))
    nn.clear_parameters()
    return (t_float, t_plan, t_train, t_test, t_direct), plan


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--models', nargs='+', default=list(MODELS), choices=list(MODELS))
    args = p.parse_args()
    rows = ['| model | LUT-Q layers | mlbn layers | weights | float graphs (ms) | plan (ms) | '
            'convert train graph (ms) | convert test graph (ms) | direct PF.lutq_* build (ms) | '
            'convert / direct |',
            '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for name in args.models:
        model, shape = MODELS[name]
        one_run(model, shape)  # warm-up
        runs = []
        for _ in range(args.repeats):
            times, plan = one_run(model, shape)
            runs.append(times)
        med = np.median(np.array(runs), axis=0) * 1e3
        n_lutq = sum(d.action == 'lutq' for d in plan)
        n_mlbn = sum(d.action == 'mlbn' for d in plan)
        n_w = sum(d.n_weights for d in plan if d.action == 'lutq')
        rows.append(f"| {name} | {n_lutq} | {n_mlbn} | {n_w:,} | {med[0]:.0f} | {med[1]:.0f} | "
                    f"{med[2]:.0f} | {med[3]:.0f} | {med[4]:.0f} | {med[2] / med[4]:.2f} |")
        print(rows[-1], flush=True)
    append('Whole-network conversion time (nnabla_lutq.convert), CPU', '\n'.join(rows),
           notes=f"median of {args.repeats} repetitions after one warm-up, batch 1; K=16 free "
                 "for every convolution and affine layer, mlbn=True. Converting the training "
                 "graph includes initializing every look-up table (quantile start + 10 k-means "
                 "iterations on the host), as the direct build does; the test graph is rebuilt "
                 "on the same layers.")


if __name__ == '__main__':
    main()
