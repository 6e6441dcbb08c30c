# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""LUT-Q vs learning-compression (LC), side by side: same layers, same schedule length.

Every run is a run of the examples' shared trainer (:func:`examples.common.trainer.train`), so
both methods use the same ``PF.lutq_*`` network, inner solver (SGD with momentum 0.9),
learning-rate schedule (cosine), weight decay, minibatches and number of updates, and start from
the same float run (trained first by this script). They differ only in the algorithm:

* ``lutq`` (``--solver lutq``): :class:`nnabla_lutq.LUTQSolver` -- the network computes with
  ``d[A]`` (tied weights, straight-through gradient to ``W``), one k-means step per update;
* ``lc`` (``--solver lc``): :class:`nnabla_lutq.LCSolver` with the LC toolkit's
  ``mu_j = 9e-5·1.1^j`` over ``--lc-steps`` LC steps -- the network computes with ``W`` (L step),
  k-means to convergence in each C step, ``d[A]`` at the end, then a BN refresh;
* ``lc-matched``: the same with ``mu0`` scaled so that ``mu0 · lr · (updates per L step)`` equals
  the toolkit example's ``9e-5 · 0.09 · 4700`` (LeNet300: 20 epochs of 235 minibatches per L step
  at lr 0.09): the penalty pulls as hard per L step as in the toolkit, on a much shorter run;
* ``dc``: direct compression, the LC algorithm's starting point -- the float model quantized
  without training (:func:`nnabla_lutq.quantize_nnp`: k-means tables, 100 iterations; the float
  BN statistics are kept).

Errors are those of the inference graph (``F.embed(A, d)``, no float weight). Time per step is
the trainer's training time (data, forward, backward, update, the LC C steps) per update.
Fixed codebooks (``lutq-ternary``) run with a learned scale in LC (``--lc-learn-scale``) and as
given in LUT-Q.

Usage::

    python -m examples.compare_lc --dataset digits --seeds 0 1 2
    python -m examples.compare_lc --dataset cifar10 --data-dir DATA \\
        --float-iters 300 --iters 100 --batch-size 64 --configs lutq1 lutq2-pow2 lutq-ternary
"""
import argparse
import json
import os
import shutil
import sys

if __name__ == '__main__':  # no nnabla INFO lines, Ctrl-C in one line
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from examples.common.console import script_console
    script_console('compare_lc.py', 'interrupted (Ctrl-C)')

import numpy as np

import nnabla_lutq
from examples.common import configs, trainer
from examples.common.image_data import evenly_spaced
from examples.common.models import digits_cnn, resnet20

#: configurations compared by default (names of :mod:`examples.common.configs`): K = 2 and 4,
#: free and pow-2, ternary
CONFIGS = ('lutq1', 'lutq2', 'lutq1-pow2', 'lutq2-pow2', 'lutq-ternary')
METHODS = ('dc', 'lutq', 'lc', 'lc-matched')
#: mu0 · lr · updates per L step of the toolkit's LeNet300 quantization example
TOOLKIT_PULL = 9e-5 * 0.09 * 4700


def task(args):
    """``(dataset_fn, model_fn)`` of ``--dataset``."""
    if args.dataset == 'digits':
        from examples.digits.data import digits_dataset
        data = digits_dataset(0)
        return (lambda a: data), digits_cnn
    from examples.cifar10.data import load_cifar10
    data = load_cifar10(args.data_dir, progress=False)
    return (lambda a: data), resnet20


def run(name, args, dataset_fn, model_fn, config, iters, extra=()):
    """One trainer run in ``args.output/name`` (an earlier finished run is reused).

    Returns:
        dict: the run's ``results.json``.
    """
    out = os.path.join(args.output, name)
    done = os.path.join(out, 'results.json')
    if os.path.isfile(done):
        with open(done) as f:
            return json.load(f)
    shutil.rmtree(out, ignore_errors=True)  # an unfinished run of this script: start it again
    argv = ['--config', config, '--output', out, '--max-iter', str(iters), '--epochs', '100000',
            '--batch-size', str(args.batch_size), '--lr', str(args.lr), '--schedule', 'cosine',
            '--weight-decay', str(args.weight_decay), '--seed', str(args.seed_now),
            '--context', args.context, '--no-progress', *extra]
    if args.val_images:
        argv += ['--val-images', str(args.val_images)]
    return trainer.train_argv(argv, dataset_fn, model_fn, log=lambda *a: None,
                              epoch_lines=False)


def direct_compression(float_run, config, args, dataset_fn):
    """Error of the float model quantized without training (``quantize_nnp``)."""
    layers = configs.parse(config)
    data = dataset_fn(args)
    idx = evenly_spaced(data.n_test, args.val_images)  # the images the trainer validates on
    x = data.x_test[idx].astype(np.float32)
    y = data.y_test[idx]
    path = os.path.join(args.output, f"dc-{config}-seed{args.seed_now}.nnp")
    r = nnabla_lutq.quantize_nnp(os.path.join(float_run, 'model.nnp'), path,
                                 n_values=layers.n_values, dictionary=layers.dictionary,
                                 prune_ratio=layers.prune_ratio, iters=100, data=(x, y))
    return {'final_val_error': 1 - r['accuracy_after'], 'ms_per_step': None}


def table(results, config_names, methods):
    """Markdown table: error mean ± std over seeds, and ms per update, per config and method."""
    def cell(rs):
        if not rs:
            return 'n/a'
        e = 100 * np.array([r['final_val_error'] for r in rs])
        text = f"{e.mean():.2f}" + (f" ± {e.std(ddof=1):.2f}" if len(e) > 1 else '')
        ms = [r['ms_per_step'] for r in rs if r.get('ms_per_step')]
        return text + (f" ({np.mean(ms):.1f} ms)" if ms else '')
    head = '| config | ' + ' | '.join(methods) + ' |'
    lines = [head, '|' + '---|' * (len(methods) + 1)]
    for c in config_names:
        lines.append(f"| {c} | " + ' | '.join(cell(results.get(c, {}).get(m, []))
                                             for m in methods) + ' |')
    return '\n'.join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--dataset', choices=['digits', 'cifar10'], default='digits')
    p.add_argument('--data-dir', default=None, help='CIFAR-10 folder (see examples/cifar10)')
    p.add_argument('--configs', nargs='+', default=list(CONFIGS),
                   help='configuration names (see examples/common/configs.py)')
    p.add_argument('--methods', nargs='+', default=list(METHODS), choices=list(METHODS))
    p.add_argument('--seeds', nargs='+', type=int, default=[0])
    p.add_argument('--iters', type=int, default=660,
                   help='updates of each LUT-Q/LC run (digits: 30 epochs of 22 minibatches)')
    p.add_argument('--float-iters', type=int, default=660, help='float pre-training updates')
    p.add_argument('--lc-steps', type=int, default=40, help='LC steps per run (toolkit: 40)')
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--lr', type=float, default=0.1)
    p.add_argument('--weight-decay', type=float, default=1e-4)
    p.add_argument('--val-images', type=int, default=None,
                   help='evaluate on the first N test images (default: all)')
    p.add_argument('--bn-recal', type=int, default=50,
                   help='LC: minibatches of BN statistics refresh after finalize')
    p.add_argument('--context', default='cpu', choices=['cpu', 'cudnn'])
    p.add_argument('--output', default='compare_lc_output',
                   help='run folders (finished runs are reused) and <dataset>.json / .md')
    args = p.parse_args(argv)
    for c in args.configs:
        if c == 'float' or not configs.parse(c).lutq:
            p.error(f"--configs {c}: give LUT-Q configurations (the float run is made first)")
    os.makedirs(args.output, exist_ok=True)
    dataset_fn, model_fn = task(args)
    steps_per_lc = max(1, args.iters // args.lc_steps)
    lc = ('--solver', 'lc', '--lc-steps', str(args.lc_steps), '--bn-recal', str(args.bn_recal))
    matched = lc + ('--lc-mu0', repr(TOOLKIT_PULL / (args.lr * steps_per_lc)))
    results = {'float': {'float': []}}
    for seed in args.seeds:
        args.seed_now = seed
        fl = run(f"float-seed{seed}", args, dataset_fn, model_fn, 'float', args.float_iters)
        results['float']['float'].append(fl)
        init = ('--init', os.path.join(args.output, f"float-seed{seed}", 'params.h5'))
        print(f"seed {seed} float: error {fl['final_val_error']:.4f}", flush=True)
        for c in args.configs:
            scale = ('--lc-learn-scale',) if configs.parse(c).dictionary not in ('free', 'pow2') \
                else ()
            for m in args.methods:
                if m == 'dc':
                    r = direct_compression(os.path.join(args.output, f"float-seed{seed}"), c,
                                           args, dataset_fn)
                else:
                    extra = {'lutq': (), 'lc': lc + scale, 'lc-matched': matched + scale}[m]
                    r = run(f"{c}-{m}-seed{seed}", args, dataset_fn, model_fn, c, args.iters,
                            init + extra)
                results.setdefault(c, {}).setdefault(m, []).append(r)
                ms = r.get('ms_per_step')
                print(f"seed {seed} {c} {m}: error {r['final_val_error']:.4f}"
                      + (f" ({ms:.1f} ms/step)" if ms else ''), flush=True)
    text = table(results, ['float'] + list(args.configs), ['float'] + list(args.methods))
    summary = {c: {m: [{k: r.get(k) for k in ('final_val_error', 'ms_per_step', 'lc')}
                       for r in rs] for m, rs in ms.items()} for c, ms in results.items()}
    with open(os.path.join(args.output, f'{args.dataset}.json'), 'w') as f:
        json.dump({'args': {k: v for k, v in vars(args).items() if k != 'seed_now'},
                   'steps_per_lc': steps_per_lc, 'results': summary}, f, indent=1)
    with open(os.path.join(args.output, f'{args.dataset}.md'), 'w') as f:
        f.write(text + '\n')
    print(text)
    return results


if __name__ == '__main__':
    main()
