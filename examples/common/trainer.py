"""The training loop shared by the examples: float or LUT-Q, checkpoints, exact resume, export.

One run = one configuration trained in its own folder::

    RUN_DIR/
      args.json            the settings of the run (``--resume`` reads them back)
      checkpoint/          params.h5 + solver.h5 + state.json (iteration, epoch, validation
                           history; the latest one, replaced atomically)
      *.series.txt         nnabla monitors: train_loss, train_error, val_error, time
      params.h5            final parameters (``--init`` of a LUT-Q run takes a float one)
      model.nnp            inference graph (LUT-Q layers as F.embed(A, d), no float W)
      results.json         config, epochs, final/best validation error, time, memory report

The input of the graphs (and of ``model.nnp``) is raw pixels in [0, 255]; the network scales them
to [-1, 1] itself.
"""
import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import time

import numpy as np
import nnabla as nn
import nnabla.functions as F
import nnabla.solvers as S
from nnabla.ext_utils import get_extension_context
from nnabla.monitor import Monitor, MonitorSeries, MonitorTimeElapsed
from tqdm import tqdm

import nnabla_lutq

from . import configs

__all__ = ['add_arguments', 'check_arguments', 'learning_rate', 'prepare', 'train',
           'predict_fn', 'RunError']

#: Settings a resumed run takes from the command line instead of its args.json (the ones set
#: to ``None`` on the command line keep the run's own value).
_RUNTIME_ONLY = ('context', 'resume', 'progress', 'data_dir', 'list_configs')


class RunError(RuntimeError):
    """A run cannot start or continue; the message says what to do."""


def add_arguments(parser, epochs=160):
    """Add the flags every example shares to an :class:`argparse.ArgumentParser`."""
    a = parser.add_argument
    a('--config', default='float',
      help="float or lutq<B>[-pow2][-mlbn][-prune<P>], e.g. lutq4, lutq2-pow2-mlbn, "
           "lutq2-prune70 (see --list-configs; default: %(default)s)")
    a('--list-configs', action='store_true', help='print the named configurations and exit')
    a('--act-bits', type=int, default=None,
      help='quantize activations after each ReLU to 2**bits uniform levels over [0, r], r '
           'tracked per layer (e.g. 8; default: float activations)')
    a('--float-first-last', action='store_true',
      help='keep the first convolution and the last affine layer float (default: quantize all '
           'layers, as in the paper)')
    a('--epochs', type=int, default=epochs, help='epochs of the schedule (default: %(default)s)')
    a('--max-iter', type=int, default=None,
      help='stop after this many iterations (short runs); the schedule then spans them')
    a('--batch-size', type=int, default=128, help='minibatch size (default: %(default)s)')
    a('--lr', type=float, default=0.1, help='initial learning rate (default: %(default)s)')
    a('--momentum', type=float, default=0.9, help='SGD momentum (default: %(default)s)')
    a('--weight-decay', type=float, default=5e-4, help='weight decay (default: %(default)s)')
    a('--schedule', choices=['step', 'cosine'], default='step',
      help='step: lr/10 at 50%% and 75%% of the run; cosine: cosine annealing to 0 '
           '(default: %(default)s)')
    a('--kmeans-iters', type=int, default=1,
      help='k-means iterations M per LUT-Q solver step (default: %(default)s)')
    a('--init', default=None,
      help='float parameters (.h5, e.g. a float run\'s params.h5) to start from; LUT-Q tables '
           'are initialized from them')
    a('--context', default=None, choices=['cpu', 'cudnn'],
      help='nnabla extension context (default: cpu; a resumed run keeps its own)')
    a('--seed', type=int, default=0,
      help='seed of initializers, data order and augmentation (default: %(default)s)')
    a('--output', default=None,
      help='run folder (default: a new folder <config>-<date>-<time> in the current directory)')
    a('--resume', default=None, metavar='RUN_DIR',
      help='continue the run in RUN_DIR from its last checkpoint, with its own settings')
    a('--val-batch-size', type=int, default=500,
      help='batch size of validation (default: %(default)s)')
    a('--no-progress', dest='progress', action='store_false', help='no progress bar')


def check_arguments(args):
    """Validate parsed arguments (before anything is created) and return the run's Layers.

    Raises:
        RunError: with a message naming the flag to fix.
    """
    try:
        layers = configs.parse(args.config, act_bits=args.act_bits,
                               quantize_first_last=not args.float_first_last)
    except ValueError as e:
        raise RunError(str(e))
    for flag, value, ok in (('--epochs', args.epochs, args.epochs >= 1),
                            ('--batch-size', args.batch_size, args.batch_size >= 1),
                            ('--val-batch-size', args.val_batch_size, args.val_batch_size >= 1),
                            ('--max-iter', args.max_iter, args.max_iter is None
                             or args.max_iter >= 1),
                            ('--lr', args.lr, args.lr > 0),
                            ('--weight-decay', args.weight_decay, args.weight_decay >= 0),
                            ('--momentum', args.momentum, 0 <= args.momentum < 1),
                            ('--kmeans-iters', args.kmeans_iters, args.kmeans_iters >= 0)):
        if not ok:
            raise RunError(f"{flag} {value} is out of range")
    if args.init is not None:
        if not layers.lutq and not args.init.endswith('.h5'):
            raise RunError(f"--init {args.init}: expected an .h5 parameter file")
        if not os.path.isfile(args.init):
            raise RunError(f"--init {args.init}: no such file (a float run writes params.h5)")
    return layers


def learning_rate(schedule, base, it, total):
    """Learning rate of iteration ``it`` (0-based) of a run of ``total`` iterations.

    Args:
        schedule (str): ``step`` (divided by 10 at 50 % and again at 75 % of ``total``) or
            ``cosine`` (``base * (1 + cos(pi * it / total)) / 2``).
        base (float): initial learning rate.
        it (int): iteration.
        total (int): iterations of the run.

    Returns:
        float: the learning rate.
    """
    if schedule == 'step':
        return base * 0.1 ** ((it >= 0.5 * total) + (it >= 0.75 * total))
    if schedule == 'cosine':
        return base * 0.5 * (1 + math.cos(math.pi * it / total))
    raise ValueError(f"unknown schedule {schedule!r} (step or cosine)")


def _preprocess(x):
    return F.add_scalar(F.mul_scalar(x, 1 / 127.5), -1.0)


def prepare(args):
    """Resolve the run folder and the settings of a new or resumed run (creates nothing).

    Args:
        args (argparse.Namespace): parsed flags.

    Returns:
        tuple: ``(args, layers, run_dir, resuming)``; for ``--resume`` the settings are the run's
        own (from its ``args.json``) except the runtime flags (context, progress, data).

    Raises:
        RunError: a wrong flag, a missing checkpoint, or an output folder that already holds a run.
    """
    if args.resume:
        state = os.path.join(args.resume, 'checkpoint', 'state.json')
        if not os.path.isfile(state):
            raise RunError(f"--resume {args.resume}: no checkpoint there "
                           f"({state} is missing); start a new run instead")
        try:
            with open(os.path.join(args.resume, 'args.json')) as f:
                saved = json.load(f)
        except (OSError, ValueError) as e:
            raise RunError(f"--resume {args.resume}: its args.json cannot be read ({e}); the "
                           "run folder is incomplete, start a new run instead")
        merged = dict(saved, **{k: getattr(args, k) for k in _RUNTIME_ONLY
                                if getattr(args, k, None) is not None})
        args = argparse.Namespace(**merged)
        return args, check_arguments(args), args.resume, True
    args.context = args.context or 'cpu'
    layers = check_arguments(args)
    run_dir = args.output or f"{args.config}-{time.strftime('%Y%m%d-%H%M%S')}"
    if any(os.path.exists(os.path.join(run_dir, f)) for f in ('checkpoint', 'results.json')):
        raise RunError(f"--output {run_dir} already holds a run: continue it with --resume "
                       f"{run_dir} or choose another --output")
    return args, layers, run_dir, False


def predict_fn(model_fn, layers, batch_size, image_shape):
    """Inference graph (LUT-Q layers read only d and A) and a function images -> logits."""
    x = nn.Variable((batch_size,) + tuple(image_shape))
    with nnabla_lutq.inference_mode(), nn.parameter_scope('net'):
        y = model_fn(_preprocess(x), layers, test=True)

    def predict(images):
        n = len(images)
        x.d[:n] = images
        y.forward(clear_buffer=True)
        return y.d[:n].copy()
    return x, y, predict


def _evaluate(predict, dataset, batch_size):
    wrong = total = 0
    for xb, yb in dataset.test_batches(batch_size):
        wrong += int(np.sum(predict(xb).argmax(1) != yb[:, 0]))
        total += len(xb)
    return wrong / total


def _save_checkpoint(run_dir, solver, state):
    tmp = os.path.join(run_dir, 'checkpoint.tmp')
    final = os.path.join(run_dir, 'checkpoint')
    old = os.path.join(run_dir, 'checkpoint.old')
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    nn.save_parameters(os.path.join(tmp, 'params.h5'))
    solver.save_states(os.path.join(tmp, 'solver.h5'))
    with open(os.path.join(tmp, 'state.json'), 'w') as f:
        json.dump(state, f, indent=1)
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(final):
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def train(args, dataset_fn, model_fn, stop_at=None, log=print):
    """Train one configuration end to end (see the module docs for what the run folder holds).

    Args:
        args (argparse.Namespace): flags from :func:`add_arguments`.
        dataset_fn (callable): ``dataset_fn(args) -> ArrayDataset`` (called after the flags are
            checked, before the run folder is created).
        model_fn (callable): ``model_fn(x, layers, test) -> logits`` (e.g.
            :func:`examples.common.models.resnet20`).
        stop_at (int or None): stop after this iteration with a checkpoint, as if interrupted
            (Ctrl-C does the same); ``--resume`` continues from there.
        log (callable): where progress lines go.

    Returns:
        dict: the results (also written to ``results.json``), or the state when stopped early.

    Raises:
        RunError: for wrong flags or a run folder that cannot be used (nothing is changed then).
    """
    args, layers, run_dir, resuming = prepare(args)
    dataset = dataset_fn(args)
    steps = dataset.steps_per_epoch(args.batch_size)
    if steps < 1:
        raise RunError(f"--batch-size {args.batch_size} is larger than the training set "
                       f"({len(dataset.x_train)} images)")
    total = args.epochs * steps
    if args.max_iter:
        total = min(total, args.max_iter)

    nn.set_default_context(get_extension_context(args.context))
    nn.clear_parameters()
    nn.random.seed(args.seed)
    nn.random.set_parameter_seed(args.seed)
    x = nn.Variable((args.batch_size,) + dataset.image_shape)
    t = nn.Variable((args.batch_size, 1))
    with nn.parameter_scope('net'):
        logits = model_fn(_preprocess(x), layers, test=False)
    logits.persistent = True
    loss = F.mean(F.softmax_cross_entropy(logits, t))
    if args.init and not resuming:
        nnabla_lutq.load_float_parameters(args.init)
    solver = S.Momentum(args.lr, args.momentum)
    if layers.lutq:
        solver = nnabla_lutq.LUTQSolver(solver, kmeans_iters=args.kmeans_iters)
    solver.set_parameters(nn.get_parameters())
    _, y_val, predict = predict_fn(model_fn, layers, args.val_batch_size, dataset.image_shape)

    os.makedirs(run_dir, exist_ok=True)
    if resuming:
        ck = os.path.join(run_dir, 'checkpoint')
        nn.load_parameters(os.path.join(ck, 'params.h5'))
        solver.load_states(os.path.join(ck, 'solver.h5'))
        with open(os.path.join(ck, 'state.json')) as f:
            state = json.load(f)
        log(f"resuming {run_dir} at iteration {state['iteration']} of {total}")
    else:
        with open(os.path.join(run_dir, 'args.json'), 'w') as f:
            json.dump(vars(args), f, indent=1)
        state = {'iteration': 0, 'seconds': 0.0, 'history': [], 'best_val_error': None}
    log(f"{args.config}: {configs.describe(layers)}; {total} iterations "
        f"({steps} per epoch), schedule {args.schedule}, run folder {run_dir}")

    monitor = Monitor(run_dir)
    m_loss = MonitorSeries('train_loss', monitor, interval=min(50, steps), verbose=False)
    m_err = MonitorSeries('train_error', monitor, interval=min(50, steps), verbose=False)
    m_val = MonitorSeries('val_error', monitor, interval=1, verbose=False)
    m_time = MonitorTimeElapsed('time', monitor, interval=steps, verbose=False)
    it = state['iteration']
    bar = tqdm(total=total, initial=it, desc=args.config, disable=not args.progress, ncols=90)
    start = time.time() - state['seconds']
    stopped = False
    try:
        while it < total:
            epoch, index = divmod(it, steps)
            x.d, t.d = dataset.train_batch(epoch, index, args.batch_size, args.seed)
            solver.set_learning_rate(learning_rate(args.schedule, args.lr, it, total))
            loss.forward(clear_no_need_grad=True)
            if not np.isfinite(loss.d):
                raise RunError(f"iteration {it}: the loss is {float(loss.d)}; lower --lr")
            solver.zero_grad()
            loss.backward(clear_buffer=True)
            solver.weight_decay(args.weight_decay)
            solver.update()
            m_loss.add(it, float(loss.d))
            m_err.add(it, float(np.mean(logits.d.argmax(1) != t.d[:, 0])))
            m_time.add(it)
            it += 1
            bar.update(1)
            bar.set_postfix(loss=f'{float(loss.d):.3f}')
            if it % steps == 0 or it == total:
                err = _evaluate(predict, dataset, args.val_batch_size)
                m_val.add(it, err)
                best = state['best_val_error']
                state['best_val_error'] = err if best is None else min(best, err)
                state['history'].append({'iteration': it, 'epoch': it / steps,
                                         'val_error': err})
                bar.write(f"  epoch {it / steps:6.2f}  validation error {err:.4f}")
            if it % steps == 0 or it == total or it == stop_at:
                state.update(iteration=it, epoch=it / steps, seconds=time.time() - start)
                _save_checkpoint(run_dir, solver, state)
            if it == stop_at:
                stopped = True
                break
    except KeyboardInterrupt:
        state.update(iteration=it, epoch=it / steps, seconds=time.time() - start)
        _save_checkpoint(run_dir, solver, state)
        bar.close()
        log(f"interrupted at iteration {it}: continue with --resume {run_dir}")
        sys.exit(130)
    bar.close()
    if stopped:
        log(f"stopped at iteration {it}: continue with --resume {run_dir}")
        return state

    nn.save_parameters(os.path.join(run_dir, 'params.h5'))
    xe, ye, _ = predict_fn(model_fn, layers, 1, dataset.image_shape)
    nnabla_lutq.export_nnp(os.path.join(run_dir, 'model.nnp'), {'x': xe}, {'y': ye})
    rep = nnabla_lutq.report(y_val)
    results = {
        'config': args.config, 'settings': configs.describe(layers),
        'layers': dataclasses.asdict(layers), 'act_bits': args.act_bits,
        'schedule': {'name': args.schedule, 'lr': args.lr, 'epochs': args.epochs,
                     'max_iter': args.max_iter, 'iterations': total,
                     'epochs_run': total / steps, 'batch_size': args.batch_size,
                     'weight_decay': args.weight_decay, 'init': args.init},
        'final_val_error': state['history'][-1]['val_error'],
        'best_val_error': state['best_val_error'], 'history': state['history'],
        'seconds': state['seconds'], 'context': args.context, 'seed': args.seed,
        'n_train': len(dataset.x_train), 'n_val': len(dataset.x_test),
        'report': {'layers': rep.records(), 'totals': rep.totals},
        'model': 'model.nnp', 'params': 'params.h5'}
    with open(os.path.join(run_dir, 'results.json'), 'w') as f:
        json.dump(results, f, indent=1)
    log(f"{args.config}: final validation error {results['final_val_error']:.4f} "
        f"(best {results['best_val_error']:.4f}) after {results['schedule']['epochs_run']:.2f} "
        f"epochs, {state['seconds']:.0f} s; weights {rep.totals['memory_bits'] / 8e3:.1f} kB "
        f"(float {rep.totals['float_memory_bits'] / 8e3:.1f} kB); wrote {run_dir}/results.json")
    return results


def list_configs(out=print, act_bits=None):
    """Print every named configuration with its settings."""
    for name in configs.NAMED:
        out(f"  {name:<18} {configs.describe(configs.parse(name, act_bits=act_bits))}")
    out("  (any name of the form lutq<B>[-pow2][-mlbn][-prune<P>] works; activations: --act-bits)")
