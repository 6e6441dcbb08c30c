"""LUT-Q vs learning-compression (LC), side by side: same layers, same schedule length.

Both methods start from the same float checkpoint (trained first by this script, or given with
``--float-init``), use the same ``PF.lutq_*`` network, inner solver (SGD with momentum 0.9),
learning-rate schedule (cosine), weight decay, minibatches and number of updates. They differ only
in the algorithm:

* ``lutq``: :class:`nnabla_lutq.LUTQSolver` -- the network computes with ``d[A]`` (tied weights,
  straight-through gradient to ``W``), one k-means step per update;
* ``lc-toolkit``: :class:`nnabla_lutq.LCSolver` with the LC toolkit's ``mu_j = 9e-5·1.1^j`` over
  ``--lc-steps`` LC steps -- the network computes with ``W`` (L step), k-means to convergence in
  each C step, ``d[A]`` only at the end;
* ``lc-matched``: the same with ``mu0`` scaled so that ``mu0 · lr · (updates per L step)`` equals
  the toolkit example's ``9e-5 · 0.09 · 4700`` (LeNet300: 20 epochs of 235 minibatches per L step
  at lr 0.09): the penalty pulls as hard per L step as in the toolkit, on a much shorter run;
* ``dc``: direct compression, the LC algorithm's starting point -- the C step of the float
  weights, no training (the error of just quantizing the float network).

Every error is that of the inference graph (``nnabla_lutq.inference_mode()``: ``F.embed(A, d)``,
no float weight), after the same BN refresh for every method (``--bn-recal`` forward passes of
the training graph with the final tables, which LC needs: its BN running statistics were gathered
while the network computed with the float ``W``); ``error_raw`` in the JSON is the error before.
Time per step is the wall time of the training loop divided by its updates (the LC C steps and
``finalize`` included; evaluation and the BN refresh excluded).

Usage::

    python -m examples.compare_lc --dataset digits --seeds 0 1 2
    python -m examples.compare_lc --dataset cifar10 --data-dir ../shared/data \\
        --float-iters 300 --iters 100 --batch-size 64 --configs K2-free K4-pow2 ternary-scaled
"""
import argparse
import json
import math
import os
import time

import numpy as np
import nnabla as nn
import nnabla.functions as F
import nnabla.solvers as S

import nnabla_lutq
from examples.common.models import Layers, digits_cnn, resnet20

#: name -> (LUT-Q layer settings, learn_scale of LC)
CONFIGS = {
    'K2-free': (dict(n_values=2), False),
    'K4-free': (dict(n_values=4), False),
    'K2-pow2': (dict(n_values=2, dictionary='pow2'), False),
    'K4-pow2': (dict(n_values=4, dictionary='pow2'), False),
    'ternary': (dict(dictionary=[-1, 0, 1]), False),
    'ternary-scaled': (dict(dictionary=[-1, 0, 1]), True),
}
METHODS = ('dc', 'lutq', 'lc-toolkit', 'lc-matched')
#: mu0 · lr · updates per L step of the toolkit's LeNet300 quantization example
TOOLKIT_PULL = 9e-5 * 0.09 * 4700


class Digits:
    """scikit-learn's 8x8 digits (as :mod:`examples.digits.demo`), minibatches by (seed, it)."""
    name = 'digits'

    def __init__(self, args):
        from examples.digits.data import load_digits_data
        self.x_train, self.y_train, self.x_test, self.y_test = load_digits_data(0)
        self.model = digits_cnn

    def steps_per_epoch(self, batch_size):
        return len(self.x_train) // batch_size

    def batch(self, it, batch_size, seed):
        epoch, index = divmod(it, self.steps_per_epoch(batch_size))
        perm = np.random.RandomState([seed, epoch]).permutation(len(self.x_train))
        idx = perm[index * batch_size:(index + 1) * batch_size]
        return self.x_train[idx], self.y_train[idx]

    def preprocess(self, x):
        return x

    def test_batches(self, batch_size):
        for i in range(0, len(self.x_test), batch_size):
            yield self.x_test[i:i + batch_size], self.y_test[i:i + batch_size]


class Cifar10:
    """CIFAR-10 (:func:`examples.cifar10.data.load_cifar10`), ResNet-20, pad-4 crop + flip."""
    name = 'cifar10'

    def __init__(self, args):
        from examples.cifar10.data import load_cifar10
        self.data = load_cifar10(args.data_dir, progress=False)
        self.model = resnet20
        self.stride = args.test_stride

    def steps_per_epoch(self, batch_size):
        return self.data.steps_per_epoch(batch_size)

    def batch(self, it, batch_size, seed):
        epoch, index = divmod(it, self.steps_per_epoch(batch_size))
        return self.data.train_batch(epoch, index, batch_size, seed)

    def preprocess(self, x):
        return F.add_scalar(F.mul_scalar(x, 1 / 127.5), -1.0)

    def test_batches(self, batch_size):
        x, y = self.data.x_test[::self.stride], self.data.y_test[::self.stride]
        for i in range(0, len(x), batch_size):
            yield x[i:i + batch_size].astype(np.float32), y[i:i + batch_size]


def test_error(task, layers, batch_size=500):
    """Error of the inference graph (LUT-Q layers: ``F.embed(A, d)``) on the test set."""
    shape = next(iter(task.test_batches(1)))[0].shape[1:]
    x = nn.Variable((batch_size,) + shape)
    with nnabla_lutq.inference_mode(), nn.parameter_scope('net'):
        y = task.model(task.preprocess(x), layers, test=True)
    wrong = total = 0
    for xb, yb in task.test_batches(batch_size):
        x.d[:len(xb)] = xb
        y.forward(clear_buffer=True)
        wrong += int(np.sum(y.d[:len(xb)].argmax(1) != yb[:, 0]))
        total += len(xb)
    return wrong / total


def train(task, layers, method, args, iters, seed, init=None, learn_scale=False):
    """Train one network; returns its test error and timings.

    Args:
        task (Digits or Cifar10): data and model.
        layers (Layers): float or LUT-Q layers.
        method (str): ``'float'`` or one of :data:`METHODS`.
        args (argparse.Namespace): ``batch_size``, ``lr``, ``weight_decay``, ``lc_steps``.
        iters (int): updates.
        seed (int): seed of the initializers and the minibatches.
        init (str): float ``.h5`` checkpoint to start from.
        learn_scale (bool): LC's learned scale of a fixed dictionary.

    Returns:
        dict: ``error``, ``ms_per_step``, and for LC ``mu`` (first/last), ``gap`` (mean
        ``||W - d[A]||²/N`` before finalize) and ``c_step_s``.
    """
    nn.clear_parameters()
    nn.random.seed(seed)
    nn.random.set_parameter_seed(seed)
    shape = next(iter(task.test_batches(1)))[0].shape[1:]
    x = nn.Variable((args.batch_size,) + shape)
    t = nn.Variable((args.batch_size, 1))
    lc = method.startswith('lc') or method == 'dc'
    with nnabla_lutq.weight_mode('float' if lc else 'tied'), nn.parameter_scope('net'):
        loss = F.mean(F.softmax_cross_entropy(task.model(task.preprocess(x), layers), t))
    if init:
        nnabla_lutq.load_float_parameters(init)
    inner = S.Momentum(args.lr, 0.9)
    info = {}
    if method == 'lutq':
        solver = nnabla_lutq.LUTQSolver(inner)
    elif lc:
        sched = nnabla_lutq.lc_schedule(iters, n_lc_steps=args.lc_steps)
        if method == 'lc-matched':
            sched['mu0'] = TOOLKIT_PULL / (args.lr * sched['steps_per_lc'])
        solver = nnabla_lutq.LCSolver(inner, learn_scale=learn_scale, **sched)
        info['mu'] = [solver.mu_at(0), solver.mu_at(args.lc_steps - 1)]
    else:
        solver = inner
    solver.set_parameters(nn.get_parameters())
    if method == 'dc':
        solver.direct_compression()
        solver.finalize()
        info['error_raw'] = test_error(task, layers)
        recalibrate_bn(task, loss, x, t, args, seed, iters)
        return dict(info, error=test_error(task, layers), ms_per_step=None)
    c_time = 0.0
    start = time.perf_counter()
    for it in range(iters):
        x.d, t.d = task.batch(it, args.batch_size, seed)
        solver.set_learning_rate(args.lr * 0.5 * (1 + math.cos(math.pi * it / iters)))
        loss.forward(clear_no_need_grad=True)
        solver.zero_grad()
        loss.backward(clear_buffer=True)
        solver.weight_decay(args.weight_decay)
        if lc and (solver.updates + 1) % solver.steps_per_lc == 0:
            c0 = time.perf_counter()
            solver.update()
            c_time += time.perf_counter() - c0
        else:
            solver.update()
    if lc:
        gaps = solver.finalize()
        info['gap'] = float(np.mean(list(gaps.values())))
        info['c_step_s'] = c_time
    seconds = time.perf_counter() - start
    info['ms_per_step'] = 1e3 * seconds / iters
    if method == 'float':
        return dict(info, error=test_error(task, layers))
    info['error_raw'] = test_error(task, layers)
    recalibrate_bn(task, loss, x, t, args, seed, iters)
    return dict(info, error=test_error(task, layers))


def recalibrate_bn(task, loss, x, t, args, seed, start):
    """Refresh the BN running statistics for the final weights: forward passes of the training
    graph (batch statistics, running averages updated with decay 0.9) on ``args.bn_recal``
    further training minibatches. After ``LCSolver.finalize()`` the float-mode graph computes
    with ``d[A]``; LC's statistics were otherwise gathered with the float ``W``."""
    for i in range(args.bn_recal):
        x.d, t.d = task.batch(start + i, args.batch_size, seed)
        loss.forward(clear_buffer=True)


def table(results, configs, methods):
    """Markdown table: error mean ± std over seeds and ms/step per configuration and method."""
    def cell(rs):
        if not rs:
            return 'n/a'
        e = 100 * np.array([r['error'] for r in rs])
        text = f"{e.mean():.2f}" + (f" ± {e.std(ddof=1):.2f}" if len(e) > 1 else '')
        ms = [r['ms_per_step'] for r in rs if r['ms_per_step'] is not None]
        return text + (f" ({np.mean(ms):.1f} ms)" if ms else '')
    head = '| config | ' + ' | '.join(methods) + ' |'
    lines = [head, '|' + '---|' * (len(methods) + 1)]
    for c in configs:
        lines.append(f"| {c} | " + ' | '.join(cell(results.get(c, {}).get(m, []))
                                             for m in methods) + ' |')
    return '\n'.join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--dataset', choices=['digits', 'cifar10'], default='digits')
    p.add_argument('--data-dir', default=None, help='CIFAR-10 folder (see examples/cifar10)')
    p.add_argument('--configs', nargs='+', default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument('--methods', nargs='+', default=list(METHODS), choices=list(METHODS))
    p.add_argument('--seeds', nargs='+', type=int, default=[0])
    p.add_argument('--epochs', type=int, default=40,
                   help='epochs of each LUT-Q/LC run (digits; one L step per epoch with 40 LC '
                        'steps)')
    p.add_argument('--iters', type=int, default=None, help='updates of each run (overrides '
                   '--epochs)')
    p.add_argument('--float-epochs', type=int, default=30, help='float pre-training (digits)')
    p.add_argument('--float-iters', type=int, default=None, help='float pre-training updates '
                   '(overrides --float-epochs)')
    p.add_argument('--float-init', default=None, help='float .h5 to start from (skips training)')
    p.add_argument('--lc-steps', type=int, default=40, help='LC steps per run (toolkit: 40)')
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--lr', type=float, default=0.1)
    p.add_argument('--weight-decay', type=float, default=1e-4)
    p.add_argument('--test-stride', type=int, default=1,
                   help='CIFAR-10: evaluate on every n-th test image (all classes stay equal)')
    p.add_argument('--bn-recal', type=int, default=50,
                   help='minibatches of BN statistics refresh after every quantized run')
    p.add_argument('--output', default='compare_lc_output')
    args = p.parse_args(argv)
    os.makedirs(args.output, exist_ok=True)
    task = (Digits if args.dataset == 'digits' else Cifar10)(args)
    spe = task.steps_per_epoch(args.batch_size)
    iters = args.iters or args.epochs * spe
    float_iters = args.float_iters or args.float_epochs * spe
    results = {'float': {}}
    out_json = os.path.join(args.output, f'{args.dataset}.json')
    for seed in args.seeds:
        init = args.float_init
        if init is None:
            init = os.path.join(args.output, f'{args.dataset}-float-seed{seed}.h5')
            r = train(task, Layers(), 'float', args, float_iters, seed)
            nn.save_parameters(init)
            results['float'].setdefault('float', []).append(r)
            print(f"seed {seed} float: error {r['error']:.4f} ({r['ms_per_step']:.1f} ms/step)",
                  flush=True)
        for name in args.configs:
            opts, scale = CONFIGS[name]
            layers = Layers(lutq=True, **opts)
            for m in args.methods:
                if m == 'lutq' and scale:
                    continue  # LUT-Q uses a fixed dictionary as given (no scale)
                r = train(task, layers, m, args, iters, seed, init, learn_scale=scale)
                results.setdefault(name, {}).setdefault(m, []).append(r)
                print(f"seed {seed} {name} {m}: error {r['error']:.4f} "
                      f"(before BN refresh {r['error_raw']:.4f})"
                      + (f" ({r['ms_per_step']:.1f} ms/step)" if r['ms_per_step'] else '')
                      + (f" gap {r['gap']:.2e} mu {r['mu'][0]:.3g}..{r['mu'][1]:.3g} "
                         f"C steps {r['c_step_s']:.2f} s" if 'gap' in r else ''), flush=True)
                with open(out_json, 'w') as f:
                    json.dump({'args': vars(args), 'iters': iters, 'float_iters': float_iters,
                               'results': results}, f, indent=1)
    text = table(results, args.configs, args.methods)
    print(text)
    return results


if __name__ == '__main__':
    main()
