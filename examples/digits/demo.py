"""The main job, offline: float vs LUT-Q on scikit-learn's handwritten digits.

Trains a small CNN float, then LUT-Q 4-bit, 2-bit power-of-two with multiplier-less BN and 4-bit
with 50 % pruning (each initialized from the float weights with
:func:`nnabla_lutq.load_float_parameters` and trained with :class:`nnabla_lutq.LUTQSolver`),
prints the accuracies side by side and the 4-bit model's report, exports the float and the 4-bit
model to .nnp (the latter with look-up tables only, no float W), packs the 4-bit one into .lutq,
reloads both files with nnabla's loader and checks the outputs match.

Usage: ``python -m nnabla_lutq.demo [--epochs 30] [--context cpu|cudnn] [--output demo_output]``
"""
import argparse
import contextlib
import json
import logging
import os
import time

if __name__ == '__main__':  # keep nnabla's start-up INFO line off the demo's console
    logging.getLogger('nnabla').setLevel(logging.WARNING)

import numpy as np
import nnabla as nn
import nnabla.functions as F
import nnabla.solvers as S
from nnabla.ext_utils import get_extension_context
from nnabla.monitor import Monitor, MonitorSeries
from tqdm import tqdm

import nnabla_lutq
from examples.common.models import Layers, digits_cnn

CONFIGS = {
    'float': Layers(),
    'lutq4': Layers(lutq=True, n_values=16),
    'lutq2-pow2-mlbn': Layers(lutq=True, n_values=4, dictionary='pow2', mlbn=True),
    'lutq4-prune50': Layers(lutq=True, n_values=16, prune_ratio=0.5),
}


def load_digits_data(seed=0, test_fraction=0.2):
    """scikit-learn's 8x8 handwritten digits (1797 images, shipped with the package), split.

    Args:
        seed (int): seed of the stratified split.
        test_fraction (float): fraction of images held out.

    Returns:
        tuple: ``(x_train, y_train, x_test, y_test)``; images float32 (B, 1, 8, 8) in [0, 1],
        labels int32 (B, 1).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int32)[:, None]
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_fraction, random_state=seed,
                                          stratify=d.target)
    return xtr, ytr, xte, yte


def accuracy(pred_fn, x, y, batch=200):
    """Classification accuracy of ``pred_fn`` (images -> logits) on ``(x, y)``."""
    correct = 0
    for i in range(0, len(x), batch):
        correct += int(np.sum(pred_fn(x[i:i + batch]).argmax(1) == y[i:i + batch, 0]))
    return correct / len(x)


def train(layers, data, epochs=30, batch_size=64, lr=0.1, seed=0, init=None, monitor=None,
          name='run', progress=True, kmeans_iters=1):
    """Train :func:`digits_cnn` with the given layers (clears nnabla's parameters first).

    Args:
        layers (Layers): float or LUT-Q layer choice.
        data (tuple): ``(x_train, y_train, x_test, y_test)``.
        epochs (int): passes over the training set (cosine learning rate).
        batch_size (int): minibatch size.
        lr (float): initial learning rate of SGD with momentum 0.9.
        seed (int): seed of the initializers and the shuffling.
        init (str): float ``.h5`` checkpoint loaded with :func:`nnabla_lutq.load_float_parameters`.
        monitor (~nnabla.monitor.Monitor): where to log the loss and the test error.
        name (str): name in the logs and the progress bar.
        progress (bool): show a progress bar.
        kmeans_iters (int): M of the LUT-Q solver.

    Returns:
        dict: ``accuracy`` on the test set, ``seconds``, and the graph builders ``predict``
        (images -> logits) and ``test_graph`` (x, y) for reporting/export.
    """
    xtr, ytr, xte, yte = data
    nn.clear_parameters()
    rng = np.random.RandomState(seed)
    nn.random.seed(seed)
    nn.random.set_parameter_seed(seed)
    x = nn.Variable((batch_size,) + xtr.shape[1:])
    t = nn.Variable((batch_size, 1))
    with nn.parameter_scope('net'):
        logits = digits_cnn(x, layers, test=False)
    loss = F.mean(F.softmax_cross_entropy(logits, t))
    if init:
        nnabla_lutq.load_float_parameters(init)
    solver = S.Momentum(lr, 0.9)
    if layers.lutq:
        solver = nnabla_lutq.LUTQSolver(solver, kmeans_iters=kmeans_iters)
    solver.set_parameters(nn.get_parameters())
    xv = nn.Variable((200,) + xtr.shape[1:])
    with nn.parameter_scope('net'):
        yv = digits_cnn(xv, layers, test=True)

    def predict(images):
        xv.d[:len(images)] = images
        yv.forward(clear_buffer=True)
        return yv.d[:len(images)].copy()

    mloss = MonitorSeries(f'{name} train_loss', monitor, interval=10) if monitor else None
    merr = MonitorSeries(f'{name} test_error', monitor, interval=1) if monitor else None
    steps_per_epoch = len(xtr) // batch_size
    total = epochs * steps_per_epoch
    start = time.time()
    bar = tqdm(total=total, desc=f'{name:>16}', leave=False, disable=not progress, ncols=80)
    it = 0
    for epoch in range(epochs):
        perm = rng.permutation(len(xtr))
        for s in range(steps_per_epoch):
            idx = perm[s * batch_size:(s + 1) * batch_size]
            x.d, t.d = xtr[idx], ytr[idx]
            solver.set_learning_rate(lr * 0.5 * (1 + np.cos(np.pi * it / total)))
            loss.forward(clear_no_need_grad=True)
            solver.zero_grad()
            loss.backward(clear_buffer=True)
            solver.weight_decay(1e-4)
            solver.update()
            if mloss:
                mloss.add(it, float(loss.d))
            it += 1
            bar.update(1)
        if merr:
            merr.add(epoch, 1 - accuracy(predict, xte, yte))
    bar.close()
    return {'accuracy': accuracy(predict, xte, yte), 'seconds': time.time() - start,
            'predict': predict}


@contextlib.contextmanager
def quiet_nnabla(level=logging.WARNING):
    """Keep nnabla's INFO lines (a monitor's every value, every file saved) off the console.

    The monitors still write their series files; only the console shows less: progress bars and
    results.
    """
    log = logging.getLogger('nnabla')
    before = log.level
    log.setLevel(max(level, log.getEffectiveLevel()))
    try:
        yield
    finally:
        log.setLevel(before)


def main(argv=None):
    """Run the demo (see the module docs); returns the summary written to ``results.json``."""
    with quiet_nnabla():
        return _main(argv)


def _main(argv):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--epochs', type=int, default=30, help='epochs per configuration')
    p.add_argument('--context', default='cpu', choices=['cpu', 'cudnn'], help='nnabla context')
    p.add_argument('--output', default='demo_output', help='folder for logs, checkpoint, .nnp')
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error('--epochs must be >= 1')
    nn.set_default_context(get_extension_context(args.context))
    os.makedirs(args.output, exist_ok=True)
    monitor = Monitor(args.output)
    data = load_digits_data(args.seed)
    print(f"digits: {len(data[0])} training / {len(data[2])} test images, {args.epochs} epochs "
          f"per configuration, context {args.context}")
    float_h5 = os.path.join(args.output, 'float.h5')
    results = {}
    for name, layers in CONFIGS.items():
        r = train(layers, data, epochs=args.epochs, seed=args.seed, monitor=monitor, name=name,
                  init=None if name == 'float' else float_h5)
        results[name] = r
        print(f"  {name:<16} accuracy {r['accuracy']:7.2%}   ({r['seconds']:.1f} s)")
        if name == 'float':
            nn.save_parameters(float_h5)
            float_nnp = _export_float(layers, data, args.output)
        if name == 'lutq4':
            lutq4_report, export = _report_and_export(layers, data, args.output)
    base = results['float']['accuracy']
    print('\nconfiguration       accuracy   vs float')
    for name, r in results.items():
        print(f"  {name:<16} {r['accuracy']:8.2%}   {100 * (r['accuracy'] - base):+6.2f} pts")
    print('\n4-bit LUT-Q model (lutq4):')
    print(lutq4_report.table())
    sizes = {'float.nnp': os.path.getsize(float_nnp), 'lutq4.nnp': export['bytes'],
             'lutq4.lutq': export['lutq_bytes']}
    print(f"\nfiles: float.nnp {sizes['float.nnp']:,} bytes, lutq4.nnp {sizes['lutq4.nnp']:,} "
          f"bytes (look-up tables, no float W), lutq4.lutq {sizes['lutq4.lutq']:,} bytes "
          f"(indices at 4 bits); reloaded .nnp and unpacked .lutq with nnabla's NnpLoader: "
          f"outputs identical = {export['identical']}")
    summary = {k: {'accuracy': v['accuracy'], 'seconds': v['seconds']} for k, v in results.items()}
    summary['lutq4_report'] = {'layers': lutq4_report.records(), 'totals': lutq4_report.totals}
    summary['file_bytes'] = sizes
    with open(os.path.join(args.output, 'results.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    if not export['identical']:
        raise SystemExit('the reloaded .nnp does not reproduce the in-memory outputs')
    return summary


def _export_float(layers, data, out):
    """Export the float model (for the size comparison)."""
    x = nn.Variable((1,) + data[2].shape[1:])
    with nn.parameter_scope('net'):
        y = digits_cnn(x, layers, test=True)
    path = os.path.join(out, 'float.nnp')
    nnabla_lutq.export_nnp(path, {'x': x}, {'y': y})
    return path


def _report_and_export(layers, data, out):
    """Report the trained 4-bit model, round-trip it through .nnp and pack it into .lutq."""
    from nnabla_lutq.io.nnp import loaded_network
    x = nn.Variable((len(data[2]),) + data[2].shape[1:])
    with nnabla_lutq.inference_mode(), nn.parameter_scope('net'):
        y = digits_cnn(x, layers, test=True)
    x.d = data[2]
    y.forward()
    rep = nnabla_lutq.report(y)
    path = os.path.join(out, 'lutq4.nnp')
    nnabla_lutq.export_nnp(path, {'x': x}, {'y': y})
    packed = os.path.join(out, 'lutq4.lutq')
    nnabla_lutq.pack(path, packed)
    unpacked = os.path.join(out, 'lutq4-unpacked.nnp')
    nnabla_lutq.unpack(packed, unpacked)
    identical = True
    for f in (path, unpacked):
        with loaded_network(f, 'lutq', batch_size=len(data[2])) as net:
            xi, yo = list(net.inputs.values())[0], list(net.outputs.values())[0]
            xi.d = data[2]
            yo.forward()
            identical &= bool(np.array_equal(yo.d, y.d))
    return rep, {'path': path, 'bytes': os.path.getsize(path), 'lutq_path': packed,
                 'lutq_bytes': os.path.getsize(packed), 'identical': identical}


if __name__ == '__main__':
    main()
