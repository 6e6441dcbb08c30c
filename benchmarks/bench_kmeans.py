# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""k-means step time vs N and K: nnabla-lutq's step against numpy sort + searchsorted + bincount.

Both run in the same process on the same data; the ratio is what counts. With ``--context
cudnn`` the device steps of one layer are timed too: the ``'graph'`` backend and the ``'fused'``
CUDA kernels (target for N = 2.36 M, K = 16: <= 0.5 ms).
Each run adds a record to benchmarks/results/ and writes BENCHMARKS.md again.

Usage: python benchmarks/bench_kmeans.py [--context cpu|cudnn] [--repeat 5]
"""
import argparse
import time

import numpy as np
import nnabla as nn
from nnabla.ext_utils import get_extension_context

from _common import append, synchronizer
from nnabla_lutq.core import make_config, kmeans_step


def numpy_baseline(w, d):
    """The plain numpy step: sort the values, searchsorted on midpoints, bincount the means."""
    d = np.sort(d)
    a = np.searchsorted((d[1:] + d[:-1]) / 2, w)
    k = d.size
    counts = np.bincount(a, minlength=k)
    sums = np.bincount(a, weights=w, minlength=k)
    new = np.where(counts > 0, sums / np.maximum(counts, 1), d).astype(np.float32)
    return new, a


def best_of(fn, repeat, min_sample_s=0.005):
    """Best of ``repeat`` samples in ms per call; a sample loops a fast ``fn`` for >= 5 ms."""
    fn()
    t0 = time.perf_counter()
    fn()
    loops = max(1, int(min_sample_s / max(time.perf_counter() - t0, 1e-7)))
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        times.append((time.perf_counter() - t0) / loops)
    return min(times) * 1e3


def device_step_ms(w, d, cfg, repeat, backend='graph'):
    """Time the device step of one layer (cudnn context) on a backend, without the finiteness
    check (which reads back from the device)."""
    from nnabla_lutq.kmeans import BACKENDS
    from nnabla_lutq.nn.state import LUTQLayer
    W = nn.Variable.from_numpy_array(w)
    dv = nn.Variable.from_numpy_array(d)
    A = nn.Variable.from_numpy_array(np.zeros(w.shape, np.int32))
    g = BACKENDS[backend]([LUTQLayer('bench', 'conv', W, dv, A, cfg)], 1, check_finite=False)
    sync = synchronizer('cudnn')

    def run():
        g.step()
        sync()
    return best_of(run, repeat)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--context', default='cpu', choices=['cpu', 'cudnn'])
    p.add_argument('--repeat', type=int, default=5)
    args = p.parse_args()
    nn.set_default_context(get_extension_context(args.context))
    rng = np.random.RandomState(0)
    rows = ['| N | K | numpy baseline (ms) | nnabla-lutq host step (ms) | ratio (lutq / numpy) |'
            + (' device graph (ms) | device fused (ms) |' if args.context != 'cpu' else ''),
            '|---:|---:|---:|---:|---:|' + ('---:|---:|' if args.context != 'cpu' else '')]
    for n in (2304, 36864, 589824, 2359296):
        w = (rng.randn(n) * 0.05).astype(np.float32)
        for k in (2, 4, 16, 64, 256):
            if k > n:
                continue
            cfg = make_config(k, 'free', 0.0, None, n)
            d = np.sort(rng.choice(w, k, replace=False))
            t_np = best_of(lambda: numpy_baseline(w, d), args.repeat)
            t_lq = best_of(lambda: kmeans_step(w, d, cfg), args.repeat)
            row = f'| {n:,} | {k} | {t_np:.2f} | {t_lq:.2f} | {t_lq / t_np:.2f} |'
            if args.context != 'cpu':
                row += f' {device_step_ms(w, d, cfg, args.repeat):.3f} |'
                row += f' {device_step_ms(w, d, cfg, args.repeat, "fused"):.3f} |'
            rows.append(row)
            print(row, flush=True)
    append('k-means step (one iteration, one layer, free dictionary)', '\n'.join(rows),
           args.context, f'best of {args.repeat} samples each (a sample loops a step for at least '
           '5 ms); the host step computes exact '
           'float64 cluster sums and an int32 assignment.')


if __name__ == '__main__':
    main()
