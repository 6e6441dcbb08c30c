# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The training loop shared by the examples: float or LUT-Q, checkpoints, exact resume, export.

One run = one configuration trained in its own folder::

    RUN_DIR/
      args.json            the settings of the run (``--resume`` reads them back; the flags and
                           what a resumed run may change: :mod:`examples.common.args`)
      run.lock             while a process trains the run (it holds an OS lock on it)
      checkpoint/          params.h5 + solver.h5 + state.json (iteration, epoch, validation
                           history, monitor state, the .h5 files' digests; the latest one,
                           replaced atomically: :mod:`examples.common.checkpoint`)
      checkpoint.old/      the one before it (the fallback if checkpoint/ is damaged)
      *.series.txt         nnabla monitors: train_loss, train_error, val_error, time
      params.h5            final parameters (``--init`` of a LUT-Q run takes a float one)
      best.h5              parameters at the lowest validation error so far (not for LC runs,
                           whose weights are only compressed at the end)
      model.nnp            inference graph (LUT-Q layers as F.embed(A, d), no float W)
      results.json         config, epochs, final/best validation error, time, memory report

The input of the graphs (and of ``model.nnp``) is raw pixels in [0, 255]; the network scales them
to [-1, 1] itself.

:func:`train` runs the phases of nnabla-examples' training scripts, one function each: the data
(:func:`_load_data`), the graphs (:func:`_build_graphs`), the solver (:func:`_build_solver`),
the restore of a checkpoint or the start of a new run (:func:`_restore`), the loop
(:class:`_Loop`) and the files of a finished run (:func:`_finish`).

Interruptions: in the training loop Ctrl-C (SIGINT) and SIGTERM (a scheduler's stop, ``timeout``)
only set a flag; the run stops at the next iteration boundary (every rank at the same one), writes
its checkpoint and exits (130 / 143), so ``--resume`` continues bit-identically. Before the loop
(the data, the graphs) and after it (the final files) they end the run at once with one line and
the same status; a new run's folder is then removed unless it holds a checkpoint
(:class:`examples.common.timelimit.Interrupts`). Checkpoints are also written every
``--checkpoint-interval`` seconds (so a ``kill -9`` or a crash loses minutes, not an epoch), and
``--time-limit`` stops the run with a checkpoint before a scheduler's limit (exit
:data:`TIME_LIMIT_STATUS`). A run folder belongs to one process at a time
(:mod:`examples.common.runfolder`), and checkpoints are whole or not used
(:mod:`examples.common.checkpoint`); the monitor files of a resumed run hold the whole run
(:mod:`examples.common.monitors`).

Data-parallel (``mpirun -n N``): see :mod:`examples.common.distributed`; rank 0 writes the files.
"""
import argparse
import contextlib
import dataclasses
import json
import os
import signal
import sys
import time

import numpy as np
import nnabla as nn
import nnabla.functions as F
import nnabla.solvers as S
from nnabla.ext_utils import get_extension_context
from nnabla.utils.learning_rate_scheduler import (CosineScheduler, LinearWarmupScheduler,
                                                  StepScheduler)
from tqdm import tqdm

import nnabla_lutq

from . import configs
from .args import (TIME_LIMIT_STATUS, add_arguments, check_arguments, check_context, check_data,
                   holds_run, list_configs, parse_args, prepare, read_args, run_layers, setting,
                   write_args)
from .checkpoint import (Checkpoints, complete_checkpoint, complete_init, load_init_nnp,
                         recover_checkpoint)
from .distributed import Distributed, mpi_rank
from .monitors import RunMonitors
from .runfolder import RunError, RunLock
from .timelimit import CheckpointTimer, Interrupts, end_interrupted

__all__ = ['add_arguments', 'parse_args', 'check_arguments', 'run_layers', 'check_context',
           'list_configs', 'scheduler', 'learning_rate', 'prepare', 'train', 'train_argv',
           'predict_fn', 'complete_checkpoint', 'recover_checkpoint', 'RunError',
           'TIME_LIMIT_STATUS']


def scheduler(schedule, base, total, warmup=0):
    """nnabla's learning-rate scheduler for a run of ``total`` iterations.

    Args:
        schedule (str): ``step`` (divided by 10 at 50 % and again at 75 % of ``total``) or
            ``cosine`` (``base * (1 + cos(pi * it / total)) / 2``).
        base (float): initial learning rate.
        total (int): iterations of the run.
        warmup (int): iterations of linear warm-up from 0 (nnabla's LinearWarmupScheduler).

    Returns:
        nnabla.utils.learning_rate_scheduler.BaseLearningRateScheduler: with
        ``get_learning_rate(it)``.
    """
    if schedule == 'step':
        sched = StepScheduler(base, 0.1, [-(-total // 2), -(-3 * total // 4)])
    elif schedule == 'cosine':
        sched = CosineScheduler(base, total)
    else:
        raise ValueError(f"unknown schedule {schedule!r} (step or cosine)")
    return LinearWarmupScheduler(sched, warmup) if warmup > 0 else sched


def learning_rate(schedule, base, it, total):
    """Learning rate of iteration ``it`` (0-based) of a run of ``total`` iterations (see
    :func:`scheduler`)."""
    return scheduler(schedule, base, total).get_learning_rate(it)


def _preprocess(x):
    return F.add_scalar(F.mul_scalar(x, 1 / 127.5), -1.0)


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


def _evaluate(predict, dataset, batch_size, limit=None):
    wrong = total = 0
    for xb, yb in dataset.test_batches(batch_size, limit):
        wrong += int(np.sum(predict(xb).argmax(1) != yb[:, 0]))
        total += len(xb)
    return wrong / total


def train_argv(argv, dataset_fn, model_fn, **kwargs):
    """Train a run given by command-line flags, from another script (the demo, compare_lc).

    Args:
        argv (list): the flags of :func:`add_arguments`.
        dataset_fn, model_fn: as :func:`train`.
        **kwargs: further arguments of :func:`train` (e.g. ``log``, ``epoch_lines``).

    Returns:
        dict: what :func:`train` returns.
    """
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return train(parse_args(parser, argv), dataset_fn, model_fn, **kwargs)


def _finalize_lc(solver, dataset, args, steps, x, t, loss):
    """End an LC run: the layers compute with ``d[A]`` (``W := d[A]``), then ``--bn-recal``
    forward passes of the training graph on the next minibatches refresh the BN statistics.

    Returns:
        dict: what ``results.json`` records of the LC run (``mu`` range, constraint gap).
    """
    gaps = solver.finalize()
    total = solver.updates
    for i in range(args.bn_recal):
        epoch, index = divmod(total + i, steps)
        x.d, t.d = dataset.train_batch(epoch, index, args.batch_size, args.seed)
        loss.forward(clear_buffer=True)
    return {'lc_steps': solver.lc_steps, 'steps_per_lc': solver.steps_per_lc,
            'mu_first': solver.mu_at(0), 'mu_last': solver.mu_at(max(0, solver.lc_steps - 1)),
            'gap_before_finalize': float(np.mean(list(gaps.values()))) if gaps else 0.0,
            'bn_recal': args.bn_recal,
            'converged': all(solver.converged.values())}


def train(args, dataset_fn, model_fn, stop_at=None, log=print, comm=None, epoch_lines=True):
    """Train one configuration end to end (see the module docs for what the run folder holds).

    Args:
        args (argparse.Namespace): flags from :func:`add_arguments` (via :func:`parse_args`).
        dataset_fn (callable): ``dataset_fn(args) -> dataset`` with ``image_shape``,
            ``n_train``, ``n_test``, ``steps_per_epoch(batch)``,
            ``train_batch(epoch, index, batch, seed)`` and ``test_batches(batch, limit)`` (called
            after the flags are checked and the run folder is locked; a new run's folder is
            removed again if it fails).
        model_fn (callable): ``model_fn(x, layers, test) -> logits`` (e.g.
            :func:`examples.common.models.resnet20`).
        stop_at (int or None): stop after this iteration with a checkpoint, as if interrupted
            (Ctrl-C does the same); ``--resume`` continues from there.
        log (callable): where progress lines go.
        epoch_lines (bool): print the validation error of every epoch (above the progress bar).
        comm: a data-parallel communicator (tests); by default one is created under mpirun.

    Returns:
        dict: the results (also written to ``results.json``), or the state when stopped early.

    Raises:
        RunError: for wrong flags, a run folder that cannot be used or is in use by another
            process (nothing is changed then), or a write that failed (the last checkpoint
            stays).
        SystemExit: 130 (SIGINT) or 143 (SIGTERM) after checkpointing an interrupted run,
            :data:`TIME_LIMIT_STATUS` after checkpointing at ``--time-limit``; 143 (with one
            line on stderr) for a SIGTERM outside the training loop.
        KeyboardInterrupt: for a SIGINT outside the training loop (the scripts print one line
            and exit 130: :mod:`examples.common.console`).
    """
    began = time.monotonic()
    run_dir = resuming = None
    with Interrupts() as interrupts:
        try:
            args, layers, run_dir, resuming = prepare(
                args, writer=(comm.rank if comm is not None else mpi_rank()) == 0)
            ctx = get_extension_context(args.context)
            dist = Distributed(comm) if comm is not None else Distributed.create(ctx)
            with _owned(run_dir, resuming, dist, log, interrupts):
                run = _Run(args, layers, run_dir, resuming, dist, log,
                           Checkpoints(run_dir, dist.is_main), interrupts)
                _load_data(run, dataset_fn)
                graphs = _build_graphs(run, ctx, model_fn)
                solver, params = _build_solver(run)
                state = _restore(run, solver)
                if _Loop(run, graphs, solver, params, state, began).train(stop_at, epoch_lines):
                    return state  # stopped at stop_at, with a checkpoint
                return _finish(run, model_fn, graphs.y_val, state) if dist.is_main else state
        except KeyboardInterrupt as e:  # outside the loop, or a second Ctrl-C
            end_interrupted(e, run_dir if run_dir and holds_run(run_dir) else None)


@contextlib.contextmanager
def _owned(run_dir, resuming, dist, log, interrupts):
    """Hold the run folder (rank 0 locks it) with its last whole checkpoint in place; a new run
    that ends without a checkpoint (an error, a signal) leaves the folder as it found it."""
    flag = f"--resume {run_dir}" if resuming else f"--output {run_dir}"
    lock = RunLock(run_dir, flag) if dist.is_main else None
    failed = False
    try:
        if lock is not None:
            with interrupts.deferred():  # a signal waits until the lock knows what it made
                lock.acquire()
            if not resuming and holds_run(run_dir):  # since prepare() looked
                raise RunError(f"--output {run_dir} already holds a run: continue it with "
                               f"--resume {run_dir} or choose another --output")
        if resuming:  # one process renames; the others wait for it
            if dist.is_main:
                recover_checkpoint(run_dir, log)
            dist.barrier()
        yield
    except BaseException:
        failed = not resuming and not holds_run(run_dir)
        raise
    finally:
        if lock is not None:
            with interrupts.deferred():  # the clean-up is not cut short
                lock.release(failed=failed)


@dataclasses.dataclass
class _Run:
    """What the phases of one run share (see :func:`train`)."""
    args: argparse.Namespace
    layers: object  # examples.common.models.Layers
    run_dir: str
    resuming: bool
    dist: Distributed
    log: object  # callable
    checkpoints: Checkpoints
    interrupts: Interrupts
    dataset: object = None
    steps: int = 0  # iterations per epoch
    total: int = 0  # iterations of the run
    val_limit: object = None  # --val-images (None: all)

    @property
    def lc(self):
        """bool: the LUT-Q layers are trained by learning-compression (``--solver lc``)."""
        return setting(self.args, 'solver') == 'lc'

    @property
    def lr(self):
        """float: the base learning rate, ``--lr`` times the processes (linear scaling rule)
        unless ``--no-lr-scaling``."""
        scaled = getattr(self.args, 'lr_scaling', True)
        return self.args.lr * self.dist.size if scaled else self.args.lr


@dataclasses.dataclass
class _Graphs:
    """The training graph (``x``, ``t`` -> ``logits``, ``loss``) and the validation one."""
    x: nn.Variable
    t: nn.Variable
    logits: nn.Variable
    loss: nn.Variable
    predict: object  # images -> logits (validation batch size)
    y_val: nn.Variable


def _load_data(run, dataset_fn):
    """The run's data set (this rank's shard), iterations per epoch and of the run."""
    args = run.args
    dataset = dataset_fn(args)
    if run.dist.size > 1:
        dataset.shard(run.dist.rank, run.dist.size)
    check_data(args, dataset)
    steps = dataset.steps_per_epoch(args.batch_size)
    total = args.epochs * steps
    if args.max_iter:
        total = min(total, args.max_iter)
    run.dataset, run.steps, run.total = dataset, steps, total
    run.val_limit = getattr(args, 'val_images', None)


def _build_graphs(run, ctx, model_fn):
    """The training and validation graphs with their initial parameters: seeded initializers,
    or a new run's ``--init`` file."""
    args, layers, image_shape = run.args, run.layers, run.dataset.image_shape
    nn.set_default_context(ctx)
    nn.clear_parameters()
    nn.random.seed(args.seed)
    nn.random.set_parameter_seed(args.seed)
    init = None if run.resuming else args.init
    loaded = load_init_nnp(init, layers) if init and init.endswith('.nnp') else None
    x = nn.Variable((args.batch_size,) + image_shape)
    t = nn.Variable((args.batch_size, 1))
    try:
        with nnabla_lutq.weight_mode('float' if run.lc else 'tied'), nn.parameter_scope('net'):
            logits = model_fn(_preprocess(x), layers, test=False)
        _, y_val, predict = predict_fn(model_fn, layers, args.val_batch_size, image_shape)
    except ValueError as e:  # a parameter of the --init file with another shape
        if loaded is None:
            raise
        raise RunError(f"--init {init}: its parameters do not fit this model "
                       f"({str(e).splitlines()[0]}); give the model.nnp of a float run of this "
                       "model and --act-bits setting")
    logits.persistent = True
    loss = F.mean(F.softmax_cross_entropy(logits, t))
    if init:
        complete_init(init, loaded, loss, y_val)
    return _Graphs(x, t, logits, loss, predict, y_val)


def _build_solver(run):
    """Momentum SGD, wrapped by the LUT-Q or LC solver for LUT-Q layers; and its parameters."""
    args, layers = run.args, run.layers
    solver = S.Momentum(run.lr, args.momentum)
    if run.lc:  # no communication: the C step is a deterministic function of identical W, lambda
        solver = nnabla_lutq.LCSolver(
            solver, augmented_lagrangian=setting(args, 'lc_penalty') == 'augmented',
            learn_scale=setting(args, 'lc_learn_scale'),
            **nnabla_lutq.lc_schedule(run.total, args.lc_steps, args.lc_mu0, args.lc_mu_growth))
    elif layers.lutq:
        solver = nnabla_lutq.LUTQSolver(solver, kmeans_iters=args.kmeans_iters,
                                        comm=run.dist.comm)
    params = nn.get_parameters()
    solver.set_parameters(params)
    return solver, params


def _restore(run, solver):
    """The state the loop starts from: a resumed run's checkpoint (parameters and solver states
    loaded), or a new run's (rank 0's parameters on every rank, ``args.json`` written)."""
    args, dist, run_dir, ck = run.args, run.dist, run.run_dir, run.checkpoints
    if run.resuming:
        state = ck.load(solver)
        if state['iteration'] > run.total:
            raise RunError(f"--resume {run_dir}: the run is at iteration {state['iteration']}, "
                           f"beyond the {run.total} iterations asked for; give a larger "
                           "--max-iter")
        run.log(f"resuming {run_dir} at iteration {state['iteration']} of {run.total}")
        if args.extended and dist.is_main:  # the longer run is the run's setting from now on
            with ck.writing():
                write_args(run_dir, {**read_args(run_dir), **args.extended})
    else:
        dist.bcast_parameters(nn.get_parameters(grad_only=False))
        if dist.is_main:
            with ck.writing():
                write_args(run_dir, vars(args))
        state = {'iteration': 0, 'seconds': 0.0, 'train_seconds': 0.0, 'history': [],
                 'best_val_error': None}
    run.log(f"{args.config}: {configs.describe(run.layers)}; {run.total} iterations "
            f"({run.steps} per epoch{f', {dist.size} processes' if dist.size > 1 else ''}), "
            f"schedule {args.schedule}, run folder {run_dir}")
    return state


class _Loop:
    """The training loop of one run (:meth:`train`): steps, validations, checkpoints and stops.

    Validation after every epoch and at the end; a checkpoint then, every
    ``--checkpoint-interval`` seconds, at ``stop_at``, on SIGINT / SIGTERM and before
    ``--time-limit``. ``state`` (iteration, history, seconds, ...) is what a checkpoint keeps.
    """

    def __init__(self, run, graphs, solver, params, state, began):
        self.run, self.g, self.solver, self.params, self.state = run, graphs, solver, params, state
        steps, total = run.steps, run.total
        self.monitors = None  # rank 0 only
        if run.dist.is_main:
            with run.checkpoints.writing():
                self.monitors = RunMonitors(run.run_dir, max(1, min(50, steps, total)),
                                            min(steps, total), state if run.resuming else None)
        self.timer = CheckpointTimer(getattr(run.args, 'checkpoint_interval', 300.0),
                                     getattr(run.args, 'time_limit', None), start=began)
        self.start = time.time() - state['seconds']

    def step(self, it, lr):
        """Iteration ``it``: forward, backward, gradients averaged over the ranks, update."""
        run, g, solver, state = self.run, self.g, self.solver, self.state
        self.timer.begin()
        tick = time.perf_counter()
        epoch, index = divmod(it, run.steps)
        g.x.d, g.t.d = run.dataset.train_batch(epoch, index, run.args.batch_size, run.args.seed)
        solver.set_learning_rate(lr)
        g.loss.forward(clear_no_need_grad=True)
        if not np.isfinite(g.loss.d):
            raise RunError(f"iteration {it}: the loss is {float(g.loss.d)}; lower --lr")
        solver.zero_grad()
        g.loss.backward(clear_buffer=True)
        run.dist.all_reduce_gradients(self.params)
        solver.weight_decay(run.args.weight_decay)
        try:
            solver.update()
        except ValueError as e:  # e.g. non-finite weights at the k-means step
            raise RunError(f"iteration {it}: {e} (--lr)")
        state['train_seconds'] = state.get('train_seconds', 0.0) + time.perf_counter() - tick
        if self.monitors is not None:
            with run.checkpoints.writing():
                self.monitors.add_train(it, float(g.loss.d),
                                        float(np.mean(g.logits.d.argmax(1) != g.t.d[:, 0])))
        self.timer.end('step')

    def validate(self, it):
        """The validation error after ``it`` iterations (``best.h5`` kept, history recorded)."""
        run, state = self.run, self.state
        self.timer.begin()
        err = _evaluate(self.g.predict, run.dataset, run.args.val_batch_size, run.val_limit)
        self.timer.end('validation')
        best = state['best_val_error']
        if best is None or err < best:
            state['best_val_error'], state['best_iteration'] = err, it
            if not run.lc:
                run.checkpoints.save_parameters('best.h5')
        if self.monitors is not None:
            with run.checkpoints.writing():
                self.monitors.add_val(it, err)
        state['history'].append({'iteration': it, 'epoch': it / run.steps, 'val_error': err})
        return err

    def checkpoint(self, it):
        """Write the checkpoint of iteration ``it`` (rank 0)."""
        self.timer.begin()
        self.state.update(iteration=it, epoch=it / self.run.steps,
                          seconds=time.time() - self.start)
        if self.monitors is not None:
            self.state['monitors'] = self.monitors.state()
        self.run.checkpoints.save(self.solver, self.state)
        self.timer.end('checkpoint')

    def train(self, stop_at=None, epoch_lines=True):
        """Train to the end of the run.

        Returns:
            bool: True when stopped at ``stop_at`` (with a checkpoint), False at the end (the
            last validation and checkpoint written).

        Raises:
            SystemExit: after the checkpoint of a SIGINT / SIGTERM (128 + signal) or of
                ``--time-limit`` (:data:`TIME_LIMIT_STATUS`).
        """
        run, args, g, timer = self.run, self.run.args, self.g, self.timer
        steps, total, it = run.steps, run.total, self.state['iteration']
        sched = scheduler(args.schedule, run.lr, total,
                          int(getattr(args, 'warmup_epochs', 0) * steps))
        bar = tqdm(total=total, initial=it, desc=args.config,
                   disable=not args.progress or not run.dist.is_main, ncols=90)
        with run.interrupts.looping() as interrupts:
            while it < total:
                self.step(it, sched.get_learning_rate(it))
                it += 1
                bar.update(1)
                bar.set_postfix(loss=f'{float(g.loss.d):.3f}')
                if run.lc and it == total:
                    self.state['lc'] = _finalize_lc(self.solver, run.dataset, args, steps, g.x,
                                                    g.t, g.loss)
                if it % steps == 0 or it == total:
                    err = self.validate(it)
                    if epoch_lines and run.dist.is_main:
                        bar.write(f"  epoch {it / steps:6.2f}  validation error {err:.4f}")
                out_of_time = it < total and timer.out_of_time((it + 1) % steps == 0
                                                               or it + 1 == total)
                # every rank stops at the same iteration, whichever rank the signal reached
                signum, out_of_time = run.dist.agree_stop(interrupts.signum, out_of_time)
                if it % steps == 0 or it == total or it == stop_at or signum or out_of_time \
                        or timer.checkpoint_due():
                    self.checkpoint(it)
                if signum or out_of_time or it == stop_at:
                    bar.close()
                    return self._stopped(it, signum, out_of_time)
            bar.close()
            if not self.state['history'] or self.state['history'][-1]['iteration'] != total:
                self.validate(total)  # e.g. a checkpoint of an older version, written before it
                self.checkpoint(total)
            signum, _ = run.dist.agree_stop(interrupts.signum, False)
            if signum:  # during that validation: the checkpoint holds it
                return self._stopped(total, signum, False)
        return False

    def _stopped(self, it, signum, out_of_time):
        """Say why the run stopped at ``it`` (its checkpoint written), and exit but for
        ``stop_at``; every rank leaves once rank 0 has written the checkpoint (a launcher may
        end the others when one exits)."""
        run = self.run
        run.dist.barrier()
        if signum:
            run.log(f"{signal.Signals(signum).name} at iteration {it}: checkpoint written; "
                    f"continue with --resume {run.run_dir}")
            sys.exit(128 + signum)
        if out_of_time:
            run.log(f"--time-limit {run.args.time_limit:g} s: stopped at iteration {it} of "
                    f"{run.total} with a checkpoint; continue with --resume {run.run_dir}")
            sys.exit(TIME_LIMIT_STATUS)
        run.log(f"stopped at iteration {it}: continue with --resume {run.run_dir}")
        return True


def _finish(run, model_fn, y_val, state):
    """Write the finished run's ``params.h5``, ``model.nnp`` and ``results.json`` (rank 0)."""
    from nnabla_lutq.io.nnp import atomic_output
    args, layers, dataset, run_dir = run.args, run.layers, run.dataset, run.run_dir
    with run.checkpoints.writing():
        run.checkpoints.save_parameters('params.h5')
        xe, ye, _ = predict_fn(model_fn, layers, 1, dataset.image_shape)
        nnabla_lutq.export_nnp(os.path.join(run_dir, 'model.nnp'), {'x': xe}, {'y': ye})
        rep = nnabla_lutq.report(y_val)
        results = {
            'config': args.config, 'settings': configs.describe(layers),
            'layers': dataclasses.asdict(layers), 'act_bits': args.act_bits,
            'schedule': {'name': args.schedule, 'lr': args.lr, 'epochs': args.epochs,
                         'max_iter': args.max_iter, 'iterations': run.total,
                         'epochs_run': run.total / run.steps, 'batch_size': args.batch_size,
                         'processes': run.dist.size, 'weight_decay': args.weight_decay,
                         'init': args.init, 'warmup_epochs': getattr(args, 'warmup_epochs', 0)},
            'solver': setting(args, 'solver'), 'lc': state.get('lc'),
            'ms_per_step': 1e3 * state.get('train_seconds', state['seconds']) / run.total,
            'final_val_error': state['history'][-1]['val_error'],
            'best_val_error': state['best_val_error'],
            'best_iteration': state.get('best_iteration'),
            'best_params': None if run.lc else 'best.h5', 'history': state['history'],
            'val_images': run.val_limit or dataset.n_test,
            'seconds': state['seconds'], 'context': args.context, 'seed': args.seed,
            'n_train': dataset.n_train, 'n_val': dataset.n_test,
            'report': {'layers': rep.records(), 'totals': rep.totals},
            'model': 'model.nnp', 'params': 'params.h5'}
        with atomic_output(os.path.join(run_dir, 'results.json'), '.json') as tmp, \
                open(tmp, 'w') as f:
            json.dump(results, f, indent=1)
        run.log(f"{args.config}: final validation error {results['final_val_error']:.4f} "
                f"(best {results['best_val_error']:.4f}) after "
                f"{results['schedule']['epochs_run']:.2f} epochs, {state['seconds']:.0f} s; "
                f"weights {rep.totals['memory_bits'] / 8e3:.1f} kB (float "
                f"{rep.totals['float_memory_bits'] / 8e3:.1f} kB); wrote {run_dir}/results.json")
    return results
