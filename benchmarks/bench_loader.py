# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Images per second of the ImageNet example's loader alone (decode, random-resized crop, flip).

A synthetic ImageNet-like folder is generated once (JPEGs of 500x375 with smooth content, the
typical ImageNet size) and read with ``examples.imagenet.data.ImageFolder`` at ``--image-size``
with 0, 1, 2, ... worker processes; the table gives images/s of training minibatches (the
network is not run). Each run adds a record to benchmarks/results/ and writes BENCHMARKS.md again.

Usage: python benchmarks/bench_loader.py [--images 512] [--image-size 224] [--batch-size 64]
       [--workers 0 1 2]
"""
import argparse
import os
import tempfile
import time

import numpy as np
from PIL import Image

from _common import append
from examples.imagenet.data import ImageFolder


def make_folder(root, n, classes=8, size=(500, 375), seed=0):
    """A train/<class>/ + val/<class>/ folder of ``n`` training JPEGs (smooth random images)."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:size[1], 0:size[0]] / 50.0
    for split, count in (('train', n), ('val', classes)):
        for k in range(count):
            d = os.path.join(root, split, f'n{k % classes:03d}')
            os.makedirs(d, exist_ok=True)
            f = rng.rand(3, 3)
            img = np.stack([np.sin(xx * f[c, 0] + yy * f[c, 1] + f[c, 2] * 6) for c in range(3)], -1)
            Image.fromarray(((img + 1) * 127.5).astype(np.uint8)).save(
                os.path.join(d, f'{k}.JPEG'), quality=90)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--images', type=int, default=1024)
    p.add_argument('--image-size', type=int, default=224)
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--workers', type=int, nargs='+', default=[0, 1, 2])
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as root:
        make_folder(root, args.images)
        for w in args.workers:
            ds = ImageFolder(root, args.image_size, workers=w, prefetch=4)
            steps = ds.steps_per_epoch(args.batch_size)
            ds.train_batch(1, 0, args.batch_size, 0)  # start the workers (another epoch)
            t0 = time.perf_counter()
            for i in range(steps):
                ds.train_batch(0, i, args.batch_size, 0)
            rate = steps * args.batch_size / (time.perf_counter() - t0)
            ds.close()
            rows.append(f"| {w} | {args.image_size} | {args.batch_size} | {rate:,.0f} |")
            print(rows[-1], flush=True)
    table = ("| workers | image size | batch | images/s |\n|---:|---:|---:|---:|\n"
             + '\n'.join(rows))
    append('ImageNet loader alone (examples/imagenet/data.py), synthetic 500x375 JPEGs', table,
           notes='Decode + random-resized crop + flip in worker processes, a bounded prefetch '
                 'queue of 4 minibatches; no network. With 2 cores, workers beyond 2 cannot help.')


if __name__ == '__main__':
    main()
