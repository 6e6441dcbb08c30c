# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Grouped look-up tables: one table per layer vs per group of output channels vs per channel.

Post-training tables on our own trained float models (``--digits``: the digits CNN of
``make demo``; ``--cifar10``: a ResNet-20 of ``examples/cifar10/train.py``): every weight layer's
float ``W`` is replaced by the table ``d[A]`` that :func:`nnabla_lutq.core.fit.fit_table` fits
(what the layers, ``convert()`` and ``quantize_nnp`` build), for K = 2, 4, 16, free and pow-2,
with one table per layer, per 16 and per 8 output channels and per channel, and the test accuracy
is measured with nnabla's loader. The table memory is the file's: ``n_groups·K·32`` bits of
values plus ``N·ceil(log2 K)`` bits of indices, stated per configuration as bits per weight.

``--step`` times LUT-Q training steps of ResNet-20 with per-channel (and per-8-channel) tables
against one table per layer (ratios in one run, alternating steps); ``--budget`` adds K per layer
under a memory budget and Fisher-weighted tables (``quantize_nnp`` with calibration data).

Usage: python benchmarks/bench_groups.py [--digits demo_output/float/model.nnp]
       [--cifar10 RUN/model.nnp --cifar10-data DIR --cifar10-images 2000] [--budget]
       [--no-groups] [--step [--batch-sizes 32 128] [--steps 5]]
"""
import argparse

import numpy as np

from _common import append
from bench_fit import evaluation_data
from examples.common.models import fitting_group_size
from nnabla_lutq.core import make_config
from nnabla_lutq.core.config import bits_per_index
from nnabla_lutq.core.fit import fit_table
from nnabla_lutq.core.kinds import BY_FUNCTION, CONVERTIBLE

#: group sizes compared (None: one table per layer; 1: per channel)
GROUPS = (None, 16, 8, 1)
TABLES = ((2, 'free'), (4, 'free'), (16, 'free'), (2, 'pow2'), (4, 'pow2'), (16, 'pow2'))


def weight_layers(path):
    """``(parameter name, out axis)`` of every convertible weight layer of an .nnp."""
    from nnabla_lutq.io.nnp import proto_network, read_nnp
    net = proto_network(read_nnp(path))
    return [(f.input[1], BY_FUNCTION[f.type].out_axis) for f in net.function
            if f.type in CONVERTIBLE]


def group_label(g):
    return 'layer' if g is None else ('channel' if g == 1 else f'{g} ch.')


def post_training(path, data, batch_size=100):
    """Accuracy and bits per weight of each (K, kind, group size) on ``data``."""
    from nnabla_lutq.io.nnp import loaded_network
    from nnabla_lutq.io.quantize import network_accuracy
    x, y = data
    layers = weight_layers(path)
    rows = []
    with loaded_network(path, _network(path), batch_size) as net:
        import nnabla as nn
        params = nn.get_parameters(grad_only=False)
        saved = {name: params[name].d.copy() for name, _ in layers}
        base = network_accuracy(net, x, y)
        n_total = sum(v.size for v in saved.values())
        for k, kind in TABLES:
            for g in GROUPS:
                bits = 0
                for name, axis in layers:
                    w = saved[name]
                    gs = fitting_group_size(g, w.shape[axis], w.size // w.shape[axis], k)
                    cfg = make_config(k, kind, 0.0, None, w.size, name, gs, w.shape, axis)
                    d, a = fit_table(w, cfg)
                    params[name].d = cfg.lookup(d, a).reshape(w.shape)
                    bits += cfg.n_groups * k * 32 + w.size * bits_per_index(k)
                acc = network_accuracy(net, x, y)
                rows.append((k, kind, group_label(g), bits / n_total, acc))
                print(f"K={k:<3} {kind:<5} {group_label(g):<8} {bits / n_total:6.3f} bits/weight "
                      f"accuracy {acc:.2%}", flush=True)
        for name, _ in layers:
            params[name].d = saved[name]
    return base, rows


def _network(path):
    from nnabla_lutq.io.nnp import default_network, read_nnp
    return default_network(read_nnp(path))


def table_of(base, rows):
    lines = ['| K | table | ' + ' | '.join(f'{group_label(g)}' for g in GROUPS) + ' |',
             '|---:|---|' + '---:|' * len(GROUPS)]
    by = {(k, kind, g): (b, a) for k, kind, g, b, a in rows}
    for k, kind in TABLES:
        cells = []
        for g in GROUPS:
            b, a = by[(k, kind, group_label(g))]
            cells.append(f'{100 * (1 - a):.2f} % ({b:.2f} b/w)')
        lines.append(f'| {k} | {kind} | ' + ' | '.join(cells) + ' |')
    lines.append(f'| float | | {100 * (1 - base):.2f} % | | | |')
    return '\n'.join(lines)


def calibration_data(name, data_dir=None, n=256):
    """The first ``n`` training images and labels (pixels as the exported models take them)."""
    if name == 'digits':
        from examples.digits.data import digits_dataset
        ds = digits_dataset()
    else:
        from examples.cifar10.data import load_cifar10
        ds = load_cifar10(data_dir, progress=False)
    return ds.x_train[:n].astype(np.float32), ds.y_train[:n]


#: (label, quantize_nnp keyword arguments) of the budget comparison
BUDGET_ROWS = (('uniform K = 2', dict(n_values=2)), ('uniform K = 4', dict(n_values=4)),
               ('uniform K = 8', dict(n_values=8)),
               ('budget 2.5 bits per weight', dict(budget=2.5)),
               ('budget 3 bits per weight', dict(budget=3.0)))


def budget_table(path, calib, data):
    """Test accuracy of uniform K vs K per layer under a budget, plain vs Fisher-weighted tables
    (``quantize_nnp`` with ``calibration``), one row per :data:`BUDGET_ROWS`."""
    import os
    import tempfile
    from nnabla_lutq.io.quantize import quantize_nnp
    lines = ['| post-training LUT-Q | K per layer (plain / weighted) | bits per weight | '
             'plain tables | Fisher-weighted tables |', '|---|---|---:|---:|---:|']
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, 'q.nnp')
        for label, kw in BUDGET_ROWS:
            acc, ks, bpw = {}, {}, {}
            for weighted in (False, True):
                r = quantize_nnp(path, out, data=data, calibration=calib, weighted=weighted, **kw)
                base = r['accuracy_before']
                acc[weighted] = r['accuracy_after']
                layers = r['layers']
                ks[weighted] = ','.join(str(x['K']) for x in layers) if 'budget' in kw \
                    else str(kw['n_values'])
                bpw[weighted] = (sum(x['K'] * 32 + x['n_weights'] * bits_per_index(x['K'])
                                     for x in layers) / sum(x['n_weights'] for x in layers))
                print(label, weighted, acc[weighted], ks[weighted], flush=True)
            ktext = ks[False] if ks[False] == ks[True] else f'{ks[False]} / {ks[True]}'
            btext = (f'{bpw[False]:.3f}' if bpw[False] == bpw[True]
                     else f'{bpw[False]:.3f} / {bpw[True]:.3f}')
            lines.append(f'| {label} | {ktext} | {btext} | {100 * (1 - acc[False]):.2f} % | '
                         f'{100 * (1 - acc[True]):.2f} % |')
    lines.append(f'| float | | 32 | {100 * (1 - base):.2f} % | |')
    return '\n'.join(lines)


#: (grouped configuration, its one-table counterpart) pairs the step benchmark times
STEP_PAIRS = (('lutq4-g1', 'lutq4'), ('lutq4-g8', 'lutq4'), ('lutq4-pow2-g1', 'lutq4-pow2'),
              ('lutq2-pow2-mlbn-g1', 'lutq2-pow2-mlbn'))


def step_table(batch_sizes, steps):
    """Training-step time of ResNet-20 with grouped tables against one table per layer (each
    pair timed alternately in one run, with float as the common reference)."""
    import nnabla as nn
    from bench_train_step import build, layers_of, median_step_ms, n_functions
    from examples.common.models import Layers
    rows = ['| batch | configuration | step (ms) | vs one table per layer | vs float | target |',
            '|---:|:---|---:|---:|---:|---:|']
    rng = np.random.RandomState(0)
    names = ['float'] + sorted({n for pair in STEP_PAIRS for n in pair}, key=len)
    for batch in batch_sizes:
        nn.clear_parameters()
        nets = [build(f'n{i}', Layers() if n == 'float' else layers_of(n), batch, rng)
                for i, n in enumerate(names)]
        times = dict(zip(names, median_step_ms(nets, steps, lambda: None)))
        for grouped, one in STEP_PAIRS:
            for n in (one, grouped):
                ratio = times[n] / times[one]
                rows.append(f'| {batch} | {n} | {times[n]:.1f} | {ratio:.3f} | '
                            f'{times[n] / times["float"]:.3f} | '
                            f'{"<= 1.05" if n == grouped else ""} |')
                print(rows[-1], f'({n_functions(nets[names.index(n)][0])} functions)', flush=True)
    return '\n'.join(rows)


#: the configurations fine-tuned from the float model (names of examples.common.configs)
FINETUNE = {'digits': tuple(f'lutq{b}{kind}{g}' for b in (1, 2, 4) for kind in ('', '-pow2')
                             for g in ('', '-g8', '-g1')),
            'cifar10': ('lutq2', 'lutq2-g8', 'lutq2-g1', 'lutq2-pow2', 'lutq2-pow2-g8',
                        'lutq2-pow2-g1')}


def finetune_table(name, float_run, updates, data_dir=None, val_images=2000, workdir=None):
    """Validation error after the same short LUT-Q fine-tuning from the float model, per
    configuration of :data:`FINETUNE`, with the examples' training loop."""
    import os
    import shutil
    import tempfile
    from examples.common.models import digits_cnn
    from examples.common.trainer import train_argv
    tmp = workdir or tempfile.mkdtemp()
    rows = ['| configuration | K | tables | validation error |', '|---|---:|---|---:|']
    init = os.path.join(float_run, 'params.h5')
    for config in FINETUNE[name]:
        out = os.path.join(tmp, config)
        shutil.rmtree(out, ignore_errors=True)
        argv = ['--config', config, '--init', init, '--max-iter', str(updates), '--output', out,
                '--no-progress']
        if name == 'digits':
            from examples.digits.data import digits_dataset
            from examples.digits.demo import RECIPE
            argv += [*RECIPE, '--epochs', '30']
            res = train_argv(argv, lambda a: digits_dataset(0), digits_cnn,
                             log=lambda *a: None, epoch_lines=False)
        else:
            from examples.cifar10 import train as cifar10_train
            argv += ['--data-dir', data_dir, '--val-images', str(val_images), '--epochs', '1',
                     '--lr', '0.01', '--schedule', 'cosine', '--batch-size', '128']
            res = cifar10_train.main(argv)
        base, _, g = config.partition('-g')
        tables = 'layer' if not g else ('channel' if g == '1' else f'{g} ch.')
        rows.append(f"| {config} | {2 ** int(base[4:].split('-')[0])} | {tables} | "
                    f"{100 * res['final_val_error']:.2f} % |")
        print(rows[-1], flush=True)
    if workdir is None:
        shutil.rmtree(tmp, ignore_errors=True)
    return '\n'.join(rows)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--digits', help="the digits demo's float model.nnp")
    p.add_argument('--cifar10', help='a float ResNet-20 model.nnp of examples/cifar10/train.py')
    p.add_argument('--cifar10-data', help='--data-dir of the CIFAR-10 example')
    p.add_argument('--cifar10-images', type=int, default=2000)
    p.add_argument('--cifar10-note', default='', help='how the CIFAR-10 model was trained')
    p.add_argument('--budget', action='store_true',
                   help='also K per layer under a budget and Fisher-weighted tables')
    p.add_argument('--no-groups', dest='groups', action='store_false',
                   help='skip the grouped-table comparison')
    p.add_argument('--step', action='store_true',
                   help='time ResNet-20 training steps: grouped tables vs one table per layer')
    p.add_argument('--finetune', type=int, default=0, metavar='UPDATES',
                   help='also fine-tune each configuration of FINETUNE for UPDATES minibatches '
                        'from the float model (its run folder: the folder of --digits/--cifar10)')
    p.add_argument('--batch-sizes', type=int, nargs='+', default=[32, 128])
    p.add_argument('--steps', type=int, default=5)
    args = p.parse_args()
    if args.step:
        append('Grouped tables: training step, ResNet-20 (CIFAR-10 shape)',
               step_table(args.batch_sizes, args.steps),
               notes=f'median of {args.steps} alternating steps (one per network in turn) after '
                     'one warm-up step each, host k-means backend; -g1: one table per output '
                     'channel, -g8: per 8 channels (fc: 5), each against the same configuration '
                     'with one table per layer.')
    notes = {'digits': 'the float digits CNN of `make demo`, seed 0',
             'cifar10': args.cifar10_note}
    for name, nnp in (('digits', args.digits), ('cifar10', args.cifar10)):
        if not nnp:
            continue
        data = evaluation_data(name, args.cifar10_data, args.cifar10_images)
        about = f'`{nnp}` ({notes[name]}; {len(data[1])} test images)'
        if args.budget:
            table = budget_table(nnp, calibration_data(name, args.cifar10_data), data)
            append(f'Bits per layer under a budget, Fisher-weighted tables: test error, {name}',
                   table, notes=about + ': `quantize_nnp` of every weight layer with calibration '
                   'on the first 256 training images (minibatches of 32, their labels); a '
                   "budget's K per layer chosen with the column's tables (listed in the "
                   "network's order).")
        if args.finetune:
            import os
            recipe = ('the demo recipe (batch 64, lr 0.1 cosine)' if name == 'digits' else
                      'batch 128, lr 0.01 cosine, momentum 0.9, weight decay 5e-4')
            append(f'Grouped tables: validation error after {args.finetune} LUT-Q updates, {name}',
                   finetune_table(name, os.path.dirname(nnp), args.finetune, args.cifar10_data,
                                  args.cifar10_images),
                   notes=about + f': `examples.common.trainer` runs of each configuration from '
                   f'the float parameters, {args.finetune} updates of {recipe}, LUTQSolver with '
                   'one k-means step per update; -g8 / -g1: one table per 8 output channels / per '
                   'channel (fitting_group_size adapts them per layer).')
        if not args.groups:
            continue
        base, rows = post_training(nnp, data)
        append(f'Grouped tables: post-training validation error, {name}', table_of(base, rows),
               notes=about + ': every convolution/affine weight replaced by its fitted table `d[A]` '
                     '(`fit_table`, no training); error in % and, in brackets, the weight memory '
                     'in bits per weight (values n_groups·K·32 + indices N·ceil(log2 K)); a group '
                     'larger than a layer is the whole layer; a size that does not divide a layer\'s '
                     'channels, or whose groups hold fewer than K weights, becomes the nearest '
                     'divisor that works (largest below, else smallest above).')


if __name__ == '__main__':
    main()
