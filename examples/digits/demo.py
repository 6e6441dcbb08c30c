# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The main job, offline: float vs LUT-Q on scikit-learn's handwritten digits.

Trains a small CNN float, then LUT-Q 4-bit, 2-bit power-of-two with multiplier-less BN and 4-bit
with 50 % pruning, each initialized from the float weights and trained with
:class:`nnabla_lutq.LUTQSolver` by the examples' shared training loop
(:func:`examples.common.trainer.train`: one run folder per configuration, monitors, checkpoints,
``results.json``, ``model.nnp``). It prints the accuracies side by side and the 4-bit model's
report, packs the 4-bit ``model.nnp`` (look-up tables only, no float W) into ``lutq4.lutq``,
reloads the .nnp and the unpacked .lutq with nnabla's loader and checks that the outputs match.

Usage: ``python -m examples.digits.demo [--epochs 30] [--context cpu|cudnn] [--output demo_output]``
"""
import argparse
import json
import os
import shutil
import sys

if __name__ == '__main__':  # no nnabla INFO lines on the demo's console, Ctrl-C in one line
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
        __file__)))))
    from examples.common.console import script_console
    script_console('demo', 'interrupted (Ctrl-C); run it again to start over')

import numpy as np

import nnabla_lutq
from examples.common import configs, trainer
from examples.common.console import quiet_nnabla  # noqa: F401 (demo.quiet_nnabla)
from examples.common.runfolder import RunLock
from examples.common.models import digits_cnn
from examples.digits.data import digits_dataset

#: The demo's configurations (names of :mod:`examples.common.configs`).
CONFIGS = ('float', 'lutq4', 'lutq2-pow2-mlbn', 'lutq4-prune50')

#: The training recipe of every configuration (flags of :func:`examples.common.trainer.train`).
RECIPE = ('--batch-size', '64', '--lr', '0.1', '--schedule', 'cosine', '--weight-decay', '1e-4',
          '--val-batch-size', '360')


def parser():
    """The demo's command line (the recipe's flags are the trainer's, see :data:`RECIPE`)."""
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--epochs', type=int, default=30, help='epochs per configuration')
    p.add_argument('--context', default='cpu', choices=['cpu', 'cudnn'], help='nnabla context')
    p.add_argument('--output', default='demo_output',
                   help='folder of the run folders, lutq4.lutq and results.json (its run folders '
                        'from an earlier demo are replaced)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--configs', nargs='+', default=list(CONFIGS), choices=list(CONFIGS),
                   help='configurations to train (float is always trained first)')
    p.add_argument('--no-progress', dest='progress', action='store_false', help='no progress bars')
    return p


def train(config, epochs, output, seed=0, context='cpu', init=None, progress=True, extra=()):
    """Train one configuration on the digits with the demo's recipe (shared trainer).

    Args:
        config (str): a configuration name, e.g. ``'lutq4'``.
        epochs (int): epochs of the cosine schedule.
        output (str): the run folder (must not hold a run).
        seed (int): seed of the split, initializers and minibatch order.
        context (str): ``'cpu'`` or ``'cudnn'``.
        init (str or None): a float run's ``params.h5`` or ``model.nnp`` to start from.
        progress (bool): a progress bar.
        extra (tuple): further trainer flags (e.g. ``('--solver', 'lc')``).

    Returns:
        dict: the run's results (``results.json``), with ``accuracy`` added.
    """
    argv = ['--config', config, '--epochs', str(epochs), '--output', output, '--seed', str(seed),
            '--context', context, *RECIPE, *extra]
    if init:
        argv += ['--init', init]
    if not progress:
        argv.append('--no-progress')
    try:
        res = trainer.train_argv(argv, lambda a: digits_dataset(seed), digits_cnn,
                                 log=lambda *a: None, epoch_lines=False)
    except SystemExit as e:
        if e.code in (130, 143):  # the trainer stopped on Ctrl-C / SIGTERM (its log is muted)
            print(f"demo: interrupted while training {config}; run it again to start over",
                  file=sys.stderr)
        raise
    return dict(res, accuracy=1 - res['final_val_error'])


def main(argv=None):
    """Run the demo (see the module docs); returns the summary written to ``results.json``."""
    with quiet_nnabla():
        return _main(argv)


def _main(argv):
    p = parser()
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error('--epochs must be >= 1')
    names = ['float'] + [c for c in args.configs if c != 'float']
    os.makedirs(args.output, exist_ok=True)
    folders = [os.path.join(args.output, name) for name in names]
    for folder in folders:  # the runs of an earlier demo are replaced; nothing else is touched
        if os.path.exists(folder) and not os.path.isfile(os.path.join(folder, 'args.json')):
            raise SystemExit(f"error: {folder} exists and is not a run folder of the demo; "
                             "choose another --output")
        try:  # another demo trains there: its runs are not removed
            RunLock(folder, f"--output {args.output}").check_free()
        except trainer.RunError as e:
            raise SystemExit(f"error: {e}")
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    data = digits_dataset(args.seed)
    print(f"digits: {data.n_train} training / {data.n_test} test images, {args.epochs} epochs "
          f"per configuration, context {args.context}")
    float_h5 = os.path.join(args.output, 'float', 'params.h5')
    results = {}
    for name in names:
        try:
            r = train(name, args.epochs, os.path.join(args.output, name), args.seed, args.context,
                      init=None if name == 'float' else float_h5, progress=args.progress)
        except trainer.RunError as e:
            raise SystemExit(f"error: {e}")
        results[name] = r
        print(f"  {name:<16} accuracy {r['accuracy']:7.2%}   ({r['seconds']:.1f} s)")
        if name == 'lutq4':  # its parameters are the live ones now
            lutq4_report, export = _report_and_pack(args.output, data)
    base = results['float']['accuracy']
    print('\nconfiguration       accuracy   vs float')
    for name, r in results.items():
        print(f"  {name:<16} {r['accuracy']:8.2%}   {100 * (r['accuracy'] - base):+6.2f} pts")
    summary = {k: {'accuracy': v['accuracy'], 'seconds': v['seconds'],
                   'run': os.path.join(args.output, k)} for k, v in results.items()}
    if 'lutq4' in results:
        print('\n4-bit LUT-Q model (lutq4):')
        print(lutq4_report.table())
        sizes = {'float/model.nnp': os.path.getsize(os.path.join(args.output, 'float',
                                                                 'model.nnp')),
                 'lutq4/model.nnp': export['bytes'], 'lutq4.lutq': export['lutq_bytes']}
        print(f"\nfiles: float/model.nnp {sizes['float/model.nnp']:,} bytes, lutq4/model.nnp "
              f"{sizes['lutq4/model.nnp']:,} bytes (look-up tables, no float W), lutq4.lutq "
              f"{sizes['lutq4.lutq']:,} bytes (indices at 4 bits); reloaded .nnp and unpacked "
              f".lutq with nnabla's NnpLoader: outputs identical = {export['identical']}")
        summary['lutq4_report'] = {'layers': lutq4_report.records(),
                                   'totals': lutq4_report.totals}
        summary['file_bytes'] = sizes
    with open(os.path.join(args.output, 'results.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    if 'lutq4' in results and not export['identical']:
        raise SystemExit('the reloaded .nnp does not reproduce the in-memory outputs')
    return summary


def _report_and_pack(out, data):
    """Report the trained 4-bit model, pack its model.nnp into .lutq and check that the .nnp and
    the unpacked .lutq reproduce the in-memory network's outputs."""
    from nnabla_lutq.io.nnp import loaded_network
    x_test = data.x_test.astype(np.float32)
    _, y, predict = trainer.predict_fn(digits_cnn, configs.parse('lutq4'), len(x_test),
                                       data.image_shape)
    want = predict(x_test)
    rep = nnabla_lutq.report(y)
    path = os.path.join(out, 'lutq4', 'model.nnp')
    packed = os.path.join(out, 'lutq4.lutq')
    nnabla_lutq.pack(path, packed)
    unpacked = os.path.join(out, 'lutq4-unpacked.nnp')
    nnabla_lutq.unpack(packed, unpacked)
    identical = True
    for f in (path, unpacked):
        with loaded_network(f, 'lutq', batch_size=len(x_test)) as net:
            xi, yo = list(net.inputs.values())[0], list(net.outputs.values())[0]
            xi.d = x_test
            yo.forward()
            identical &= bool(np.array_equal(yo.d, want))
    return rep, {'path': path, 'bytes': os.path.getsize(path), 'lutq_path': packed,
                 'lutq_bytes': os.path.getsize(packed), 'identical': identical}


if __name__ == '__main__':
    main()
