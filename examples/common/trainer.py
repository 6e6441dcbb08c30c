"""The training loop shared by the examples: float or LUT-Q, checkpoints, exact resume, export.

One run = one configuration trained in its own folder::

    RUN_DIR/
      args.json            the settings of the run (``--resume`` reads them back; the flags and
                           what a resumed run may change: :mod:`examples.common.args`)
      run.lock             while a process trains the run (it holds an OS lock on it)
      checkpoint/          params.h5 + solver.h5 + state.json (iteration, epoch, validation
                           history, monitor state, the .h5 files' digests; the latest one,
                           replaced atomically)
      *.series.txt         nnabla monitors: train_loss, train_error, val_error, time
      params.h5            final parameters (``--init`` of a LUT-Q run takes a float one)
      best.h5              parameters at the lowest validation error so far (not for LC runs,
                           whose weights are only compressed at the end)
      model.nnp            inference graph (LUT-Q layers as F.embed(A, d), no float W)
      results.json         config, epochs, final/best validation error, time, memory report

The input of the graphs (and of ``model.nnp``) is raw pixels in [0, 255]; the network scales them
to [-1, 1] itself.

Interruptions: Ctrl-C (SIGINT) and SIGTERM (a scheduler's stop, ``timeout``) only set a flag; the
run stops at the next iteration boundary, writes its checkpoint and exits (130 / 143), so
``--resume`` continues bit-identically. Checkpoints are also written every
``--checkpoint-interval`` seconds (so a ``kill -9`` or a crash loses minutes, not an epoch), and
``--time-limit`` stops the run with a checkpoint before a scheduler's limit (exit
:data:`TIME_LIMIT_STATUS`). A run folder belongs to one process at a time, and checkpoints are
whole or not used (:mod:`examples.common.runfolder`); the monitor files of a resumed run hold the
whole run (:mod:`examples.common.monitors`).

Data-parallel (``mpirun -n N``): see :mod:`examples.common.distributed`; rank 0 writes the files.
"""
import argparse
import contextlib
import dataclasses
import io
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
from .args import (TIME_LIMIT_STATUS, add_arguments, check_arguments, check_context,
                   holds_run, list_configs, parse_args, prepare, read_args, run_layers, setting,
                   write_args)
from .distributed import Distributed, mpi_rank
from .monitors import RunMonitors
from .runfolder import (RunError, RunLock, complete_checkpoint, load_state, recover_checkpoint,
                        save_checkpoint, write_bytes, write_problem, writes_to)
from .timelimit import CheckpointTimer

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


def _parameters_h5():
    """The current parameters as the bytes of an ``.h5`` file, made in memory (HDF5 does not
    survive a write to a full disk; Python's writes of the bytes fail cleanly)."""
    f = io.BytesIO()
    nn.save_parameters(f, extension='.h5')
    return f.getvalue()


def _save_parameters(path):
    """Write (or replace, atomically) the parameters as ``path`` (``best.h5``, ``params.h5``)."""
    from nnabla_lutq.io.nnp import atomic_output
    data = _parameters_h5()
    with atomic_output(path, '.h5') as tmp:
        write_bytes(tmp, data)


class _Interrupts:
    """SIGINT and SIGTERM only set a flag; the training loop stops at an iteration boundary.

    A second Ctrl-C while the first is pending stops at once (without a new checkpoint; the
    previous one stays valid).
    """

    def __init__(self):
        self.signum = None
        self._old = {}

    def __enter__(self):
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: no handlers, Ctrl-C raises as usual
            pass
        return self

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt("stopped at once by a second Ctrl-C, without a new "
                                    "checkpoint; --resume continues from the last one")
        self.signum = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def _graph_parameters(*outputs):
    """Full names of the registered parameters that the graphs of ``outputs`` read."""
    data = {}
    for o in outputs:
        o.visit(lambda f: data.update({v.data: None for v in f.inputs if v.parent is None}))
    return {k for k, v in nnabla_lutq.nn.state.all_parameters().items() if v.data in data}


def _load_init_nnp(path, layers):
    """Register a float run's ``model.nnp`` parameters (converted to LUT-Q for a LUT-Q run).

    The file's network is loaded with nnabla's ``NnpLoader`` (its parameters keep their names,
    e.g. ``net/conv0/conv/W``) and, for a LUT-Q run, converted with :func:`nnabla_lutq.convert`
    with the run's settings, which moves the float weights to the LUT-Q names and initializes the
    tables; the run's model then finds its parameters there.
    """
    from nnabla.utils.nnp_graph import NnpLoader
    from nnabla_lutq.io.nnp import default_network, read_nnp
    try:
        net = NnpLoader(path).get_network(default_network(read_nnp(path)), batch_size=1)
    except Exception as e:  # nnabla's loader raises many kinds
        raise RunError(f"--init {path}: not a readable float .nnp ({e})")
    if layers.lutq:
        edges = None if layers.quantize_first_last else {'conv0': None, 'fc': None}
        cfg = nnabla_lutq.LayerConfig(layers.n_values, layers.dictionary, layers.prune_ratio,
                                      layers.pow2_range)
        try:
            nnabla_lutq.convert(list(net.outputs.values()), config=cfg, mlbn=layers.mlbn,
                                overrides={f'net/{k}': v for k, v in (edges or {}).items()})
        except ValueError as e:
            raise RunError(f"--init {path}: cannot convert it to {configs.describe(layers)} ({e})")


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
            :data:`TIME_LIMIT_STATUS` after checkpointing at ``--time-limit``.
    """
    began = time.monotonic()
    args, layers, run_dir, resuming = prepare(
        args, writer=(comm.rank if comm is not None else mpi_rank()) == 0)
    ctx = get_extension_context(args.context)
    dist = Distributed(comm) if comm is not None else Distributed.create(ctx)
    flag = f"--resume {run_dir}" if resuming else f"--output {run_dir}"
    with RunLock(run_dir, flag) if dist.is_main else contextlib.nullcontext():
        if dist.is_main and not resuming and holds_run(run_dir):  # since prepare() looked
            raise RunError(f"--output {run_dir} already holds a run: continue it with --resume "
                           f"{run_dir} or choose another --output")
        if resuming:  # one process renames; the others wait for it
            if dist.is_main:
                recover_checkpoint(run_dir, log)
            dist.barrier()
        return _train(args, layers, run_dir, resuming, dist, ctx, dataset_fn, model_fn,
                      stop_at, log, epoch_lines, began)


def _train(args, layers, run_dir, resuming, dist, ctx, dataset_fn, model_fn, stop_at, log,
           epoch_lines, began):
    """The run of :func:`train` once its folder is locked."""
    dataset = dataset_fn(args)
    if dist.size > 1:
        dataset.shard(dist.rank, dist.size)
    steps = dataset.steps_per_epoch(args.batch_size)
    if steps < 1:
        raise RunError(f"--batch-size {args.batch_size} is larger than the training set "
                       f"({dataset.n_train} images)")
    val_limit = getattr(args, 'val_images', None)
    if val_limit is not None and val_limit > dataset.n_test:
        raise RunError(f"--val-images {val_limit}: the validation set has {dataset.n_test} "
                       f"images; give at most {dataset.n_test}, or leave the flag out to "
                       "validate on all of them")
    total = args.epochs * steps
    if args.max_iter:
        total = min(total, args.max_iter)
    lr = dist.scaled_lr(args.lr) if getattr(args, 'lr_scaling', True) else args.lr
    sched = scheduler(args.schedule, lr, total, int(getattr(args, 'warmup_epochs', 0) * steps))

    nn.set_default_context(ctx)
    nn.clear_parameters()
    nn.random.seed(args.seed)
    nn.random.set_parameter_seed(args.seed)
    loaded = None
    if args.init and not resuming and args.init.endswith('.nnp'):
        _load_init_nnp(args.init, layers)
        loaded = set(nnabla_lutq.nn.state.all_parameters())
    x = nn.Variable((args.batch_size,) + dataset.image_shape)
    t = nn.Variable((args.batch_size, 1))
    lc = setting(args, 'solver') == 'lc'
    try:
        with nnabla_lutq.weight_mode('float' if lc else 'tied'), nn.parameter_scope('net'):
            logits = model_fn(_preprocess(x), layers, test=False)
        _, y_val, predict = predict_fn(model_fn, layers, args.val_batch_size,
                                       dataset.image_shape)
    except ValueError as e:  # a parameter of the --init file with another shape
        if loaded is None:
            raise
        raise RunError(f"--init {args.init}: its parameters do not fit this model "
                       f"({str(e).splitlines()[0]}); give the model.nnp of a float run of this "
                       "model and --act-bits setting")
    logits.persistent = True
    loss = F.mean(F.softmax_cross_entropy(logits, t))
    if args.init and not resuming:
        if args.init.endswith('.h5'):
            try:
                nnabla_lutq.load_float_parameters(args.init)
            except ValueError as e:
                raise RunError(f"--init {args.init}: {e}")
        else:  # the model must have found all its parameters in the file
            used = _graph_parameters(loss, y_val)
            missing = sorted(used - loaded)
            if missing:
                raise RunError(f"--init {args.init}: the file has no {missing[:3]} (+"
                               f"{max(0, len(missing) - 3)} more); give the model.nnp of a float "
                               "run of this model and --act-bits setting")
            for k in loaded - used:  # e.g. parameters the converted float graph no longer reads
                nn.parameter.pop_parameter(k)
    solver = S.Momentum(lr, args.momentum)
    if lc:  # no communication: the C step is a deterministic function of identical W, lambda
        solver = nnabla_lutq.LCSolver(
            solver, augmented_lagrangian=setting(args, 'lc_penalty') == 'augmented',
            learn_scale=setting(args, 'lc_learn_scale'),
            **nnabla_lutq.lc_schedule(total, args.lc_steps, args.lc_mu0, args.lc_mu_growth))
    elif layers.lutq:
        solver = nnabla_lutq.LUTQSolver(solver, kmeans_iters=args.kmeans_iters,
                                        comm=dist.kmeans_comm())
    params = nn.get_parameters()
    solver.set_parameters(params)
    saved = {'iteration': None}  # the iteration of the checkpoint on disk

    def writing():  # a failed write into the run folder: one line, the checkpoint stays
        return writes_to(run_dir, lambda: saved['iteration'])
    if resuming:
        ck = os.path.join(run_dir, 'checkpoint')
        try:
            nn.load_parameters(os.path.join(ck, 'params.h5'))
            solver.load_states(os.path.join(ck, 'solver.h5'))
            state = load_state(ck)
        except (OSError, RuntimeError) as e:  # e.g. the file size limit on a temporary copy
            raise RunError(f"--resume {run_dir}: the checkpoint cannot be loaded "
                           f"({write_problem(e)}); it is unchanged")
        saved['iteration'] = state['iteration']
        if state['iteration'] > total:
            raise RunError(f"--resume {run_dir}: the run is at iteration {state['iteration']}, "
                           f"beyond the {total} iterations asked for; give a larger --max-iter")
        log(f"resuming {run_dir} at iteration {state['iteration']} of {total}")
        if args.extended and dist.is_main:  # the longer run is the run's setting from now on
            with writing():
                write_args(run_dir, {**read_args(run_dir), **args.extended})
    else:
        dist.bcast_parameters(nn.get_parameters(grad_only=False))
        if dist.is_main:
            with writing():
                write_args(run_dir, vars(args))
        state = {'iteration': 0, 'seconds': 0.0, 'train_seconds': 0.0, 'history': [],
                 'best_val_error': None}
    log(f"{args.config}: {configs.describe(layers)}; {total} iterations "
        f"({steps} per epoch{f', {dist.size} processes' if dist.size > 1 else ''}), schedule "
        f"{args.schedule}, run folder {run_dir}")

    quiet = not dist.is_main
    monitors = None
    if not quiet:
        with writing():
            monitors = RunMonitors(run_dir, max(1, min(50, steps, total)), min(steps, total),
                                   state if resuming else None)
    timer = CheckpointTimer(getattr(args, 'checkpoint_interval', 300.0),
                            getattr(args, 'time_limit', None), start=began)

    def validate(it):
        timer.begin()
        err = _evaluate(predict, dataset, args.val_batch_size, val_limit)
        timer.end('validation')
        best = state['best_val_error']
        if best is None or err < best:
            state['best_val_error'], state['best_iteration'] = err, it
            if dist.is_main and not lc:
                with writing():
                    _save_parameters(os.path.join(run_dir, 'best.h5'))
        if not quiet:
            with writing():
                monitors.add_val(it, err)
        state['history'].append({'iteration': it, 'epoch': it / steps, 'val_error': err})
        return err

    def checkpoint(it):
        timer.begin()
        state.update(iteration=it, epoch=it / steps, seconds=time.time() - start)
        if monitors is not None:
            state['monitors'] = monitors.state()
        if dist.is_main:
            with writing():
                save_checkpoint(run_dir, _parameters_h5(), solver.save_states, state)
            saved['iteration'] = it
        timer.end('checkpoint')

    it = state['iteration']
    bar = tqdm(total=total, initial=it, desc=args.config, disable=not args.progress or quiet,
               ncols=90)
    start = time.time() - state['seconds']
    with _Interrupts() as interrupts:
        while it < total:
            timer.begin()
            tick = time.perf_counter()
            epoch, index = divmod(it, steps)
            x.d, t.d = dataset.train_batch(epoch, index, args.batch_size, args.seed)
            solver.set_learning_rate(sched.get_learning_rate(it))
            loss.forward(clear_no_need_grad=True)
            if not np.isfinite(loss.d):
                raise RunError(f"iteration {it}: the loss is {float(loss.d)}; lower --lr")
            solver.zero_grad()
            loss.backward(clear_buffer=True)
            dist.all_reduce_gradients(params)
            solver.weight_decay(args.weight_decay)
            try:
                solver.update()
            except ValueError as e:  # e.g. non-finite weights at the k-means step
                raise RunError(f"iteration {it}: {e} (--lr)")
            state['train_seconds'] = state.get('train_seconds', 0.0) + time.perf_counter() - tick
            if not quiet:
                with writing():
                    monitors.add_train(it, float(loss.d),
                                       float(np.mean(logits.d.argmax(1) != t.d[:, 0])))
            timer.end('step')
            it += 1
            bar.update(1)
            bar.set_postfix(loss=f'{float(loss.d):.3f}')
            if lc and it == total:
                state['lc'] = _finalize_lc(solver, dataset, args, steps, x, t, loss)
            if it % steps == 0 or it == total:
                err = validate(it)
                if epoch_lines and not quiet:
                    bar.write(f"  epoch {it / steps:6.2f}  validation error {err:.4f}")
            out_of_time = it < total and timer.out_of_time((it + 1) % steps == 0
                                                           or it + 1 == total)
            if timer.time_limit is not None and dist.size > 1:  # all ranks stop together
                out_of_time = dist.any_true(out_of_time)
            if it % steps == 0 or it == total or it == stop_at or interrupts.signum \
                    or out_of_time or timer.checkpoint_due():
                checkpoint(it)
            if interrupts.signum:
                bar.close()
                name = signal.Signals(interrupts.signum).name
                log(f"{name} at iteration {it}: checkpoint written; continue with --resume "
                    f"{run_dir}")
                sys.exit(128 + interrupts.signum)
            if out_of_time:
                bar.close()
                log(f"--time-limit {args.time_limit:g} s: stopped at iteration {it} of {total} "
                    f"with a checkpoint; continue with --resume {run_dir}")
                sys.exit(TIME_LIMIT_STATUS)
            if it == stop_at:
                bar.close()
                log(f"stopped at iteration {it}: continue with --resume {run_dir}")
                return state
    bar.close()
    if not state['history'] or state['history'][-1]['iteration'] != total:
        validate(total)  # e.g. a checkpoint of an older version, written before its validation
        checkpoint(total)
    if not dist.is_main:
        return state
    with writing():
        return _finish(args, layers, run_dir, dataset, model_fn, y_val, state, dist, steps,
                       total, val_limit, log)


def _finish(args, layers, run_dir, dataset, model_fn, y_val, state, dist, steps, total,
            val_limit, log):
    """Write the finished run's ``params.h5``, ``model.nnp`` and ``results.json``."""
    from nnabla_lutq.io.nnp import atomic_output
    _save_parameters(os.path.join(run_dir, 'params.h5'))
    xe, ye, _ = predict_fn(model_fn, layers, 1, dataset.image_shape)
    nnabla_lutq.export_nnp(os.path.join(run_dir, 'model.nnp'), {'x': xe}, {'y': ye})
    rep = nnabla_lutq.report(y_val)
    lc = setting(args, 'solver') == 'lc'
    results = {
        'config': args.config, 'settings': configs.describe(layers),
        'layers': dataclasses.asdict(layers), 'act_bits': args.act_bits,
        'schedule': {'name': args.schedule, 'lr': args.lr, 'epochs': args.epochs,
                     'max_iter': args.max_iter, 'iterations': total,
                     'epochs_run': total / steps, 'batch_size': args.batch_size,
                     'processes': dist.size, 'weight_decay': args.weight_decay,
                     'init': args.init, 'warmup_epochs': getattr(args, 'warmup_epochs', 0)},
        'solver': setting(args, 'solver'), 'lc': state.get('lc'),
        'ms_per_step': 1e3 * state.get('train_seconds', state['seconds']) / total,
        'final_val_error': state['history'][-1]['val_error'],
        'best_val_error': state['best_val_error'], 'best_iteration': state.get('best_iteration'),
        'best_params': None if lc else 'best.h5', 'history': state['history'],
        'val_images': val_limit or dataset.n_test,
        'seconds': state['seconds'], 'context': args.context, 'seed': args.seed,
        'n_train': dataset.n_train, 'n_val': dataset.n_test,
        'report': {'layers': rep.records(), 'totals': rep.totals},
        'model': 'model.nnp', 'params': 'params.h5'}
    with atomic_output(os.path.join(run_dir, 'results.json'), '.json') as tmp, \
            open(tmp, 'w') as f:
        json.dump(results, f, indent=1)
    log(f"{args.config}: final validation error {results['final_val_error']:.4f} "
        f"(best {results['best_val_error']:.4f}) after {results['schedule']['epochs_run']:.2f} "
        f"epochs, {state['seconds']:.0f} s; weights {rep.totals['memory_bits'] / 8e3:.1f} kB "
        f"(float {rep.totals['float_memory_bits'] / 8e3:.1f} kB); wrote {run_dir}/results.json")
    return results
