# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Table fit vs the exact optimum, on real pretrained weights that no one here trained.

The models: the three float CNNs shipped inside the PyPI wheel ``rapidocr-onnxruntime==1.4.4``
(PP-OCRv4 text detection and recognition, PP-OCR mobile direction classifier; Apache-2.0). The
wheel is fetched once with ``pip download --no-deps`` into ``~/.cache/nnabla_lutq/models`` and
only read: the ONNX files' weight tensors (Conv/MatMul/Gemm inputs) come out of the zip with the
``onnx`` package; none of the package's code runs. ``--nnp`` adds our own trained float models
(e.g. ``demo_output/float/model.nnp`` of ``make demo``).

For each model and table kind, side by side: the previous initialization (quantiles + 10 k-means
steps, kept here as the baseline) and :func:`nnabla_lutq.core.fit.fit_table`, as the ratio of the
whole model's SSE to the optimum's, and the worst layer:

* free, K = 2, 4, 16, 256: the optimum is the exact 1-D k-means of the ``kmeans1d`` package;
* pow-2, K = 2, 4: the best set of K distinct values ±2^e (exhaustive over 16 exponents below
  the layer's largest);
* pruned 50 %, K = 16: the exact 15-means of the kept weights.

Then the fit time (previous / new, best of 3) at N = 36,864 ... 2,359,296 real weights, and what
the tables do to the detector's output: the IoU of its text map (probability > 0.3) with the
float model's on a rendered text image; with ``--digits`` / ``--cifar10``, the post-training
accuracy of our own float models.
Each run adds a record to benchmarks/results/ and writes BENCHMARKS.md again.

Usage: python benchmarks/bench_fit.py [--models det rec cls] [--nnp demo_output/float/model.nnp]
       [--digits demo_output/float/model.nnp] [--cifar10 RUN/model.nnp --cifar10-data DIR]
"""
import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np

from _common import append
from nnabla_lutq.core import make_config, kmeans_step, assign, pow2_round, pruned_mask
from nnabla_lutq.core.fit import fit_table, table_sse

WHEEL = 'rapidocr-onnxruntime==1.4.4'
MODELS = {'det': 'ch_PP-OCRv4_det_infer.onnx', 'rec': 'ch_PP-OCRv4_rec_infer.onnx',
          'cls': 'ch_ppocr_mobile_v2.0_cls_infer.onnx'}
CACHE = os.path.join(os.path.expanduser('~'), '.cache', 'nnabla_lutq', 'models')


def previous_fit(w, cfg, iters=10):
    """The initialization before this fit: sample quantiles, then 10 k-means steps."""
    shape = np.shape(w)
    w = np.ascontiguousarray(w, np.float32).ravel()
    first = cfg.first_free
    rest = w[~pruned_mask(w, cfg.n_pruned)] if first else w
    s = np.sort(rest)
    k = cfg.n_values - first
    q = s[((np.arange(k) + 0.5) / k * s.size).astype(np.int64)]
    if cfg.kind == 'pow2':
        q = np.sort(pow2_round(q, cfg.pow2_range))
    d = np.concatenate([np.zeros(first, np.float32), q]).astype(np.float32)
    for _ in range(iters):
        d, _ = kmeans_step(w, d, cfg)
    return d, assign(w, d, cfg).reshape(shape)


def wheel_path():
    """The rapidocr wheel in the cache, downloaded (no dependencies, nothing installed) once."""
    os.makedirs(CACHE, exist_ok=True)
    found = [f for f in os.listdir(CACHE) if f.startswith('rapidocr_onnxruntime-1.4.4')]
    if not found:
        subprocess.run([sys.executable, '-m', 'pip', 'download', '-q', '--no-deps', '-d', CACHE,
                        WHEEL], check=True)
        found = [f for f in os.listdir(CACHE) if f.startswith('rapidocr_onnxruntime-1.4.4')]
    return os.path.join(CACHE, found[0])


def onnx_model(name):
    """The ONNX model ``name`` read from the wheel (an ``onnx.ModelProto``)."""
    import onnx
    with zipfile.ZipFile(wheel_path()) as z:
        return onnx.load_from_string(z.read('rapidocr_onnxruntime/models/' + MODELS[name]))


def onnx_weights(model):
    """{tensor name: float32 array} of every Conv/MatMul/Gemm weight stored in the model."""
    from onnx import numpy_helper
    stored = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == 'Constant' and n.attribute and n.attribute[0].name == 'value':
            stored[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    out = {}
    for n in model.graph.node:
        if n.op_type in ('Conv', 'MatMul', 'Gemm', 'ConvTranspose') and n.input[1] in stored:
            w = stored[n.input[1]]
            if w.dtype == np.float32 and w.ndim >= 2:
                out[n.input[1]] = w
    return out


def nnp_weights(path):
    """{parameter name: array} of the weight layers of a float .nnp."""
    import nnabla as nn
    from nnabla.utils.nnp_graph import NnpLoader
    nn.clear_parameters()
    NnpLoader(path)
    return {k: v.d.copy() for k, v in nn.get_parameters(grad_only=False).items()
            if k.endswith('/W') and v.ndim >= 2}


def optimum_free(w, k):
    import kmeans1d
    labels, centres = kmeans1d.cluster(w.astype(np.float64), k)
    return float(((w.astype(np.float64) - np.asarray(centres)[labels]) ** 2).sum())


def optimum_pow2(w, k, span=16):
    """Best K distinct values ±2^e over the ``span`` exponents up to the largest |w|'s (all sets,
    each scored exactly on the sorted weights)."""
    s = np.sort(w.astype(np.float64))
    c1 = np.concatenate([[0.0], np.cumsum(s)])
    c2 = np.concatenate([[0.0], np.cumsum(s * s)])
    top = int(np.round(np.log2(np.abs(s).max())))
    e = np.arange(top - span + 1, top + 1)
    cand = np.concatenate([-2.0 ** e[::-1], 2.0 ** e])
    sets = np.array(list(itertools.combinations(cand, k)))
    mids = (sets[:, :-1] + sets[:, 1:]) / 2
    pos = np.concatenate([np.zeros((len(sets), 1), np.int64), np.searchsorted(s, mids, 'right'),
                          np.full((len(sets), 1), s.size)], axis=1)
    n, t1, t2 = np.diff(pos, axis=1), np.diff(c1[pos], axis=1), np.diff(c2[pos], axis=1)
    return float(np.min(np.sum(t2 - 2 * sets * t1 + sets * sets * n, axis=1)))


def optimum(w, kind, k):
    if kind == 'free':
        return optimum_free(w, k)
    if kind == 'pow2':
        return optimum_pow2(w, k)
    keep = w[~pruned_mask(w, make_config(k, 'free', 0.5, None, w.size).n_pruned)]
    return optimum_free(keep, k - 1) + float(np.sum(w.astype(np.float64) ** 2)
                                               - np.sum(keep.astype(np.float64) ** 2))


KINDS = [('free', 2), ('free', 4), ('free', 16), ('free', 256), ('pow2', 2), ('pow2', 4),
         ('pruned 50 %', 16)]


def config(kind, k, n):
    if kind == 'pruned 50 %':
        return make_config(k, 'free', 0.5, None, n)
    return make_config(k, kind, 0.0, None, n)


def quality(models, cache_path):
    """Rows of SSE ratios to the optimum (previous and new fit) per model and kind."""
    cache = json.load(open(cache_path)) if os.path.exists(cache_path) else {}
    rows = []
    for name, weights in models.items():
        for kind, k in KINDS:
            tot = np.zeros(3)
            worst = [0.0, 0.0]
            for key, w in weights.items():
                w = w.ravel().astype(np.float32)
                if w.size < 4 * k:
                    continue
                cfg = config(kind, k, w.size)
                ref_key = f'{name}/{key}/{kind}/{k}/{w.size}'
                if ref_key not in cache:
                    cache[ref_key] = optimum(w, kind, k)
                    json.dump(cache, open(cache_path, 'w'))
                opt = cache[ref_key]
                old = table_sse(w, *previous_fit(w, cfg))
                new = table_sse(w, *fit_table(w, cfg))
                tot += [old, new, opt]
                if opt > 0:
                    worst = [max(worst[0], old / opt), max(worst[1], new / opt)]
            rows.append((name, kind, k, tot[0] / tot[2], worst[0], tot[1] / tot[2], worst[1]))
            print(*rows[-1], flush=True)
    return rows


def timing(weights, sizes=(36864, 230400, 795000, 2359296), ks=(2, 4, 16, 256), repeat=3):
    """Fit time of one layer of N real weights: previous and new, best of ``repeat``."""
    pool = np.concatenate([w.ravel() for w in weights.values()]).astype(np.float32)
    rows = []
    for n in sizes:
        w = np.resize(pool, n)
        for k in ks:
            cfg = make_config(k, 'free', 0.0, None, n)
            best = []
            for fn in (previous_fit, fit_table):
                ts = []
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    fn(w, cfg)
                    ts.append(time.perf_counter() - t0)
                best.append(min(ts))
            rows.append((n, k, best[0] * 1e3, best[1] * 1e3))
            print(*rows[-1], flush=True)
    return rows


def text_image(height=320, width=640):
    """A rendered document-like image (dark text lines on light paper), float (1, 3, H, W)
    normalized as PP-OCR expects."""
    from PIL import Image, ImageDraw, ImageFont
    img = Image.new('RGB', (width, height), (235, 232, 225))
    draw = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=28)
    except TypeError:  # Pillow < 10.1: the small bitmap font
        font = ImageFont.load_default()
    lines = ['LUT-Q: look-up table quantization', 'nnabla 1.39  K=16  2-bit pow2',
             'The quick brown fox jumps over', 'the lazy dog 0123456789', 'Invoice #42: $19.99']
    for i, line in enumerate(lines):
        draw.text((20 + 13 * i, 20 + 58 * i), line, fill=(20, 20, 30), font=font)
    x = np.asarray(img, np.float32) / 255.0
    x = (x - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def text_map_iou(model, fits, x):
    """IoU (probability > 0.3) of the detector's text map with quantized weights vs float."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    def run(m):
        sess = ort.InferenceSession(m.SerializeToString(), providers=['CPUExecutionProvider'])
        return sess.run(None, {sess.get_inputs()[0].name: x})[0]
    ref = run(model) > 0.3
    out = {}
    weights = onnx_weights(model)
    for label, (fit, cfg_of) in fits.items():
        m = onnx.ModelProto()
        m.CopyFrom(model)
        for n in m.graph.node:
            if n.op_type == 'Constant' and n.output[0] in weights:
                w = weights[n.output[0]]
                cfg = cfg_of(w.size)
                if cfg is None:  # fewer weights than table values: the layer stays float
                    continue
                d, a = fit(w.ravel(), cfg)
                q = np.asarray(d)[np.asarray(a).ravel()].reshape(w.shape).astype(np.float32)
                n.attribute[0].t.CopyFrom(numpy_helper.from_array(q, n.output[0]))
        got = run(m) > 0.3
        out[label] = float((got & ref).sum() / max((got | ref).sum(), 1))
    return out, float(ref.mean())


def evaluation_data(name, data_dir=None, images=1000):
    """Test images and labels as the examples' exported models take them (uint8 pixels):
    ``'digits'`` (all 360) or ``'cifar10'`` (``images`` evenly spaced test images)."""
    if name == 'digits':
        from examples.digits.data import digits_dataset
        ds = digits_dataset()
        return ds.x_test.astype(np.float32), ds.y_test
    from examples.cifar10.data import load_cifar10
    from examples.common.image_data import evenly_spaced
    ds = load_cifar10(data_dir, progress=False)
    i = evenly_spaced(len(ds.x_test), images)
    return ds.x_test[i].astype(np.float32), ds.y_test[i]


def post_training_accuracy(nnp, data):
    """Post-training accuracy of a float model with K = 4, 16 (free, pow-2) tables from the
    previous and the new fit (``quantize_nnp`` of every weight layer)."""
    import nnabla_lutq.io.quantize as quantize
    import nnabla_lutq.nn.layers as layers  # the layers fit their tables when they are built
    rows = []
    fits = {'previous': lambda w, cfg, iters=None: previous_fit(w, cfg),
            'new': layers.init_dictionary}
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, 'q.nnp')
        for k, kind in [(4, 'free'), (16, 'free'), (4, 'pow2'), (2, 'pow2')]:
            acc = {}
            for label, fn in fits.items():
                saved = layers.init_dictionary
                layers.init_dictionary = fn
                try:
                    r = quantize.quantize_nnp(nnp, out, n_values=k, dictionary=kind, data=data)
                finally:
                    layers.init_dictionary = saved
                acc[label] = r['accuracy_after']
                acc['float'] = r['accuracy_before']
            rows.append((k, kind, acc['float'], acc['previous'], acc['new']))
            print(*rows[-1], flush=True)
    return rows


def digits_seeds(n):
    """Post-training accuracy of the previous and the new fit on ``n`` float digits CNNs trained
    with the demo's recipe (seeds 0..n-1, each evaluated on its own 360 test images).

    Returns:
        tuple: ``(table, notes)`` for :func:`append`.
    """
    from examples.common.console import quiet_nnabla
    from examples.digits.data import digits_dataset
    from examples.digits.demo import train
    per = {}
    with tempfile.TemporaryDirectory() as tmp, quiet_nnabla():
        for seed in range(n):
            run = os.path.join(tmp, f'float{seed}')
            train('float', 30, run, seed=seed, progress=False)
            ds = digits_dataset(seed)
            rows = post_training_accuracy(os.path.join(run, 'model.nnp'),
                                          (ds.x_test.astype(np.float32), ds.y_test))
            for k, kind, f, a, b in rows:
                per.setdefault((k, kind), []).append((f, a, b))
    table = ['| K | table | float (mean) | previous fit, per seed | new fit, per seed | '
             'previous mean | new mean | new - previous (images) |',
             '|---:|---|---:|---|---|---:|---:|---:|']
    for (k, kind), vals in per.items():
        f, a, b = (np.array(v) for v in zip(*vals))
        table.append(f"| {k} | {kind} | {f.mean():.2%} | {' '.join(f'{x:.1%}' for x in a)} | "
                     f"{' '.join(f'{x:.1%}' for x in b)} | {a.mean():.2%} | {b.mean():.2%} | "
                     f"{round((b - a).sum() * 360):+d} |")
    notes = (f'{n} float digits CNNs (`examples.digits.demo` recipe, 30 epochs, seeds 0..{n - 1}, '
             'each with its own 80/20 split: 360 test images, one image = 0.28 points); '
             '`quantize_nnp` of every weight layer with the previous fit (quantile start + 10 '
             'k-means steps) and the new one; last column: images gained over all seeds.')
    return '\n'.join(table), notes


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--models', nargs='*', default=['det', 'rec', 'cls'], choices=list(MODELS))
    p.add_argument('--nnp', nargs='*', default=[], help='our own trained float .nnp files')
    p.add_argument('--digits', help="the digits demo's float model.nnp: post-training accuracy")
    p.add_argument('--cifar10', help='a CIFAR-10 float model.nnp of examples/cifar10/train.py: '
                                     'post-training accuracy (--cifar10-images test images)')
    p.add_argument('--cifar10-data', help='--data-dir of the CIFAR-10 example')
    p.add_argument('--cifar10-images', type=int, default=1000,
                   help='evenly spaced CIFAR-10 test images to evaluate on (default: %(default)s)')
    p.add_argument('--digits-seeds', type=int, default=0, metavar='N',
                   help='train N float digits CNNs (the demo recipe, seeds 0..N-1) and compare '
                        'the post-training accuracy of the previous and the new fit on each')
    p.add_argument('--no-timing', action='store_true')
    p.add_argument('--reference-cache', default=os.path.join(CACHE, 'fit_optimum.json'),
                   help='where the optima (slow to compute) are kept between runs')
    args = p.parse_args()
    onnx_models = {n: onnx_model(n) for n in args.models}
    models = {f'PP-OCR {n}': onnx_weights(m) for n, m in onnx_models.items()}
    for path in args.nnp:
        models[os.path.basename(os.path.dirname(os.path.abspath(path))) + '/' +
               os.path.basename(path)] = nnp_weights(path)
    if models:
        rows = quality(models, args.reference_cache)
        table = ['| model | weights | table | K | previous / optimum | worst layer | new / optimum '
                 '| worst layer |', '|---|---:|---|---:|---:|---:|---:|---:|']
        for name, kind, k, r0, w0, r1, w1 in rows:
            n = sum(w.size for w in models[name].values())
            table.append(f'| {name} | {n:,} | {kind} | {k} | {r0:.3f} | {w0:.2f} | {r1:.4f} | '
                         f'{w1:.3f} |')
        notes = ('SSE of the whole model (all its weight layers) over the optimum\'s: exact 1-D '
                 'k-means (`kmeans1d`) for free and pruned tables (pruned: the optimal 15-means of '
                 'the kept weights), the best of all sets of K distinct ±2^e among 16 exponents '
                 'for pow-2. "previous": quantile start + 10 k-means steps.')
        append('Table fit vs the exact optimum (real pretrained weights)', '\n'.join(table),
               notes=notes)
    if 'det' in onnx_models:
        fits = {}
        for k in (16, 256):
            cfg_of = (lambda n, k=k: make_config(k, 'free', 0.0, None, n) if n >= k else None)
            fits[f'previous K={k}'] = (previous_fit, cfg_of)
            fits[f'new K={k}'] = (fit_table, cfg_of)
        iou, frac = text_map_iou(onnx_models['det'], fits, text_image())
        table = ['| post-training tables | IoU with the float text map |', '|---|---:|']
        table += [f'| {label} | {v:.3f} |' for label, v in iou.items()]
        append('Table fit: PP-OCRv4 detector output with post-training tables', '\n'.join(table),
               notes=f'Every Conv weight of the detector with at least K weights replaced by '
                     f'd[A]; a 320x640 rendered text image; text map = probability > 0.3 '
                     f'({frac:.1%} of the float map\'s pixels); onnxruntime CPU.')
    for name, nnp in (('digits', args.digits), ('cifar10', args.cifar10)):
        if not nnp:
            continue
        data = evaluation_data(name, args.cifar10_data, args.cifar10_images)
        rows = post_training_accuracy(nnp, data)
        table = ['| K | table | float | previous fit | new fit |', '|---:|---|---:|---:|---:|']
        table += [f'| {k} | {kind} | {f:.2%} | {a:.2%} | {b:.2%} |' for k, kind, f, a, b in rows]
        append(f'Table fit: post-training accuracy, {name}', '\n'.join(table),
               notes=f'`quantize_nnp` of `{nnp}` (every weight layer, no training), '
                     f'{len(data[1])} test images.')
    if args.digits_seeds:
        table, notes = digits_seeds(args.digits_seeds)
        append('Table fit: post-training accuracy, digits, several float models', table,
               notes=notes)
    if not args.no_timing and models:
        rows = timing(models['PP-OCR rec'] if 'PP-OCR rec' in models
                      else next(iter(models.values())))
        table = ['| N | K | previous (ms) | new (ms) | new / previous |',
                 '|---:|---:|---:|---:|---:|']
        table += [f'| {n:,} | {k} | {a:.1f} | {b:.1f} | {b / a:.2f} |' for n, k, a, b in rows]
        append('Table fit time, one layer of real weights', '\n'.join(table),
               notes='PP-OCRv4 recognizer weights (repeated to N), best of 3 each.')


if __name__ == '__main__':
    main()
