"""The training loop shared by the examples: float or LUT-Q, checkpoints, exact resume, export.

One run = one configuration trained in its own folder::

    RUN_DIR/
      args.json            the settings of the run (``--resume`` reads them back)
      checkpoint/          params.h5 + solver.h5 + state.json (iteration, epoch, validation
                           history; the latest one, replaced atomically)
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
import importlib.util
import io
import json
import math
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
from .distributed import Distributed, mpi_rank
from .monitors import RunMonitors
from .runfolder import (RunError, RunLock, checkpoint_problem, complete_checkpoint, load_state,
                        recover_checkpoint, save_checkpoint, write_bytes, write_problem,
                        writes_to)
from .timelimit import CheckpointTimer

__all__ = ['add_arguments', 'parse_args', 'check_arguments', 'scheduler', 'learning_rate',
           'prepare', 'train', 'train_argv', 'predict_fn', 'complete_checkpoint',
           'recover_checkpoint', 'RunError', 'TIME_LIMIT_STATUS']

#: Exit status of a run stopped by ``--time-limit`` with a checkpoint (EX_TEMPFAIL of
#: sysexits.h: not finished, continue it with ``--resume``).
TIME_LIMIT_STATUS = 75
#: Settings a resumed run takes from the command line instead of its args.json.
_RUNTIME_ONLY = ('context', 'resume', 'progress', 'data_dir', 'list_configs', 'val_images',
                 'workers', 'checkpoint_interval', 'time_limit')
#: Settings a resumed run may change: a longer run (the schedule then spans the new length).
_EXTENDABLE = ('max_iter', 'epochs')


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
    a('--act-quant', choices=['ema', 'pow2'], default='ema',
      help='with --act-bits: ema (the range r tracked as above) or pow2 (a fixed power-of-two '
           'step --act-max / 2**bits, nnabla\'s fixed-point quantization: integer-friendly, see '
           'nnabla_lutq.integer) (default: %(default)s)')
    a('--act-max', type=float, default=8.0,
      help='--act-quant pow2: the bound of the activation range, a power of two '
           '(default: %(default)s)')
    a('--pow2-range', type=int, nargs=2, default=None, metavar=('MIN', 'MAX'),
      help='-pow2 configurations: exponents of the dictionary values, 2**MIN .. 2**MAX (a '
           'bounded span keeps integer accumulators provably small; default: unbounded)')
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
    a('--solver', choices=['lutq', 'lc'], default='lutq',
      help='how LUT-Q layers are trained: lutq (tied weights d[A], a k-means step per update) '
           'or lc (learning-compression: L steps on the float W with a penalty, C steps of '
           'k-means to convergence; nnabla_lutq.LCSolver) (default: %(default)s)')
    lc = _NEWER_DEFAULTS
    a('--lc-steps', type=int, default=lc['lc_steps'],
      help='--solver lc: LC steps (L step + C step) spread over the run (default: %(default)s, '
           'the LC toolkit\'s)')
    a('--lc-mu0', type=float, default=lc['lc_mu0'],
      help='--solver lc: penalty weight mu of the first L step (default: %(default)s)')
    a('--lc-mu-growth', type=float, default=lc['lc_mu_growth'],
      help='--solver lc: mu_j = mu0 * growth^j (default: %(default)s)')
    a('--lc-penalty', choices=['augmented', 'quadratic'], default='augmented',
      help='--solver lc: augmented Lagrangian (multipliers lambda) or quadratic penalty '
           '(default: %(default)s)')
    a('--lc-learn-scale', action='store_true',
      help='--solver lc: fixed dictionaries (e.g. ternary) get a fitted scale a*c')
    a('--bn-recal', type=int, default=lc['bn_recal'],
      help='--solver lc: minibatches that refresh the BN statistics with the final d[A] (the '
           'L steps gathered them with the float W) (default: %(default)s)')
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
    a('--val-images', type=int, default=None,
      help='validate on N evenly spaced validation images only (quick runs; at most the size of '
           'the validation set; default: all)')
    a('--checkpoint-interval', type=float, default=300.0, metavar='SECONDS',
      help='also write a checkpoint when this many seconds have passed since the last one (epoch '
           'ends always write one) (default: %(default)s)')
    a('--time-limit', type=float, default=None, metavar='SECONDS',
      help='stop with a checkpoint before this many seconds have passed since the start (e.g. a '
           'scheduler\'s limit less a few minutes); exit status %d, continue with --resume '
           '(default: no limit)' % TIME_LIMIT_STATUS)
    a('--warmup-epochs', type=float, default=0.0,
      help='linear learning-rate warm-up over this many epochs (default: %(default)s)')
    a('--no-lr-scaling', dest='lr_scaling', action='store_false',
      help='with N data-parallel processes, do not multiply --lr by N')
    a('--no-progress', dest='progress', action='store_false', help='no progress bar')


def parse_args(parser, argv=None):
    """Parse the flags and remember which ones were given (``args.explicit``).

    ``--resume`` needs to tell a flag the user typed from a default, to apply or refuse it.

    Args:
        parser (argparse.ArgumentParser): with :func:`add_arguments`.
        argv (list or None): the arguments (default: ``sys.argv[1:]``).

    Returns:
        argparse.Namespace: the flags, plus ``explicit`` (a sorted list of the given ones).
    """
    args = parser.parse_args(argv)
    saved = [(a, a.default) for a in parser._actions]
    parser_defaults = parser._defaults  # set_defaults() values are defaults too
    try:
        for a, _ in saved:
            a.default = argparse.SUPPRESS
        parser._defaults = {}
        given = parser.parse_args(argv)
    finally:
        for a, d in saved:
            a.default = d
        parser._defaults = parser_defaults
    args.explicit = sorted(vars(given))
    return args


def run_layers(args):
    """The :class:`~examples.common.models.Layers` of a run's flags (``--config``, ``--act-bits``,
    ``--act-quant``, ``--act-max``, ``--pow2-range``, ``--float-first-last``).

    Raises:
        ValueError: for a wrong configuration name or setting.
    """
    rng = _opt(args, 'pow2_range')
    return configs.parse(args.config, act_bits=args.act_bits,
                         quantize_first_last=not args.float_first_last,
                         act_quant=_opt(args, 'act_quant'), act_max=_opt(args, 'act_max'),
                         pow2_range=tuple(rng) if rng else None)


def check_arguments(args):
    """Validate parsed arguments (before anything is created) and return the run's Layers.

    Raises:
        RunError: with a message naming the flag to fix.
    """
    for name in ('lr', 'momentum', 'weight_decay', 'lc_mu0', 'lc_mu_growth', 'warmup_epochs',
                 'act_max', 'checkpoint_interval', 'time_limit'):
        value = getattr(args, name, None)
        if isinstance(value, float) and not math.isfinite(value):
            raise RunError(f"--{name.replace('_', '-')} {value}: give a finite number")
    _check_pow2_range(args)
    try:
        layers = run_layers(args)
        layers.act_step()  # validates --act-quant / --act-max
    except ValueError as e:
        raise RunError(str(e))
    if not 0 <= getattr(args, 'seed', 0) < 2 ** 31:
        raise RunError(f"--seed {args.seed}: give an integer from 0 to {2 ** 31 - 1} (nnabla's "
                       "and numpy's generators take no other seeds)")
    for flag, value, ok in (('--epochs', args.epochs, args.epochs >= 1),
                            ('--batch-size', args.batch_size, args.batch_size >= 1),
                            ('--val-batch-size', args.val_batch_size, args.val_batch_size >= 1),
                            ('--max-iter', args.max_iter, args.max_iter is None
                             or args.max_iter >= 1),
                            ('--lr', args.lr, args.lr > 0),
                            ('--weight-decay', args.weight_decay, args.weight_decay >= 0),
                            ('--momentum', args.momentum, 0 <= args.momentum < 1),
                            ('--kmeans-iters', args.kmeans_iters, args.kmeans_iters >= 1),
                            ('--val-images', getattr(args, 'val_images', None),
                             getattr(args, 'val_images', None) is None or args.val_images >= 1),
                            ('--warmup-epochs', getattr(args, 'warmup_epochs', 0),
                             getattr(args, 'warmup_epochs', 0) >= 0),
                            ('--lc-steps', _opt(args, 'lc_steps'), _opt(args, 'lc_steps') >= 1),
                            ('--lc-mu0', _opt(args, 'lc_mu0'), _opt(args, 'lc_mu0') > 0),
                            ('--lc-mu-growth', _opt(args, 'lc_mu_growth'),
                             _opt(args, 'lc_mu_growth') >= 1),
                            ('--bn-recal', _opt(args, 'bn_recal'), _opt(args, 'bn_recal') >= 0),
                            ('--checkpoint-interval', getattr(args, 'checkpoint_interval', 1.0),
                             getattr(args, 'checkpoint_interval', 1.0) >= 0),
                            ('--time-limit', getattr(args, 'time_limit', None),
                             getattr(args, 'time_limit', None) is None or args.time_limit > 0)):
        if not ok:
            raise RunError(f"{flag} {value} is out of range")
    if _opt(args, 'solver') == 'lc' and not layers.lutq:
        raise RunError(f"--solver lc trains LUT-Q layers; --config {args.config} has none "
                       "(use a lutq... config, or --solver lutq for a float run)")
    if args.init is not None:
        if not args.init.endswith(('.h5', '.nnp')):
            raise RunError(f"--init {args.init}: expected a float run's params.h5 or model.nnp")
        if not os.path.isfile(args.init):
            raise RunError(f"--init {args.init}: no such file (a float run writes params.h5 and "
                           "model.nnp)")
    check_context(args.context or 'cpu')
    return layers


def _check_pow2_range(args):
    """Refuse a ``--pow2-range`` that is reversed or cannot offer the configuration's K values.

    Raises:
        RunError: naming what is wrong and a range that works.
    """
    rng = _opt(args, 'pow2_range')
    if rng is None:
        return
    lo, hi = rng
    if lo > hi:
        raise RunError(f"--pow2-range {lo} {hi}: MIN is larger than MAX; give the smaller "
                       f"exponent first (--pow2-range {hi} {lo})")
    try:
        layers = configs.parse(args.config)
    except ValueError:
        return  # the configuration's own error comes next
    if not layers.lutq or layers.dictionary != 'pow2':
        return
    need = layers.n_values - (1 if layers.prune_ratio else 0)  # the pruned 0 is not a power
    offered = 2 * (hi - lo + 1)  # +-2^k for k in MIN..MAX
    if offered < need:
        span = -(-need // 2) - 1
        raise RunError(f"--pow2-range {lo} {hi} offers {offered} values (+-2^{lo} .. +-2^{hi}), "
                       f"but {args.config} fits {need}; widen it to at least {span + 1} "
                       f"exponents (e.g. --pow2-range {hi - span} {hi}) or use fewer bits")


#: Defaults of the flags added after the first release (the LC schedule is the LC toolkit's), for
#: run folders written before they existed.
_NEWER_DEFAULTS = {'solver': 'lutq', 'lc_steps': nnabla_lutq.training.lc.TOOLKIT_SCHEDULE['n_lc_steps'],
                'lc_mu0': nnabla_lutq.training.lc.TOOLKIT_SCHEDULE['mu0'],
                'lc_mu_growth': nnabla_lutq.training.lc.TOOLKIT_SCHEDULE['mu_growth'],
                'lc_penalty': 'augmented', 'lc_learn_scale': False, 'bn_recal': 50,
                'act_quant': 'ema', 'act_max': 8.0, 'pow2_range': None}


def _opt(args, name):
    """A flag that runs written by older versions do not have (their default then)."""
    return getattr(args, name, _NEWER_DEFAULTS[name])


def check_context(context):
    """Refuse a context whose nnabla extension is not installed, with what to install.

    Raises:
        RunError: for ``cudnn``/``cuda`` without nnabla-ext-cuda.
    """
    if context != 'cpu' and importlib.util.find_spec('nnabla_ext.cuda') is None:
        raise RunError(f"--context {context} needs nnabla's CUDA extension, which is not "
                       "installed: pip install 'nnabla-ext-cuda120==1.39.*' (in a clone: "
                       "pip install '.[cuda]'), or use --context cpu")


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


def prepare(args, writer=True):
    """Resolve the run folder and the settings of a new or resumed run.

    Nothing is created or renamed (a resumed run's checkpoint is recovered from
    ``checkpoint.old`` later, by rank 0 alone).

    Args:
        args (argparse.Namespace): parsed flags (:func:`parse_args` records which were given).
        writer (bool): this process will own the run folder (not a data-parallel rank > 0):
            refuse a folder that another process holds first.

    Returns:
        tuple: ``(args, layers, run_dir, resuming)``; for ``--resume`` the settings are the run's
        own (from its ``args.json``) except the runtime flags (context, progress, data, number of
        validation images), and a longer ``--max-iter`` / ``--epochs`` given on the command line.

    Raises:
        RunError: a wrong flag, a flag that cannot change on resume, a missing checkpoint, a
            run folder that another process trains, or an output folder that already holds a
            run.
    """
    if args.resume:
        if writer:  # before reading its files
            RunLock(args.resume, f"--resume {args.resume}").check_free()
        if not any(complete_checkpoint(os.path.join(args.resume, c))
                   for c in ('checkpoint', 'checkpoint.old')):
            problem = checkpoint_problem(os.path.join(args.resume, 'checkpoint'))
            raise RunError(f"--resume {args.resume}: no complete checkpoint there (checkpoint: "
                           f"{problem}, and no whole checkpoint.old); start a new run instead")
        try:
            saved = _read_args(args.resume)
        except (OSError, ValueError) as e:
            raise RunError(f"--resume {args.resume}: its args.json cannot be read ({e}); the "
                           "run folder is incomplete, start a new run instead")
        explicit = set(getattr(args, 'explicit', [])) - {'resume'}
        merged = dict(saved)
        for k in _RUNTIME_ONLY:
            if k in explicit or (k not in saved and getattr(args, k, None) is not None):
                merged[k] = getattr(args, k)
        for k in sorted(explicit - set(_RUNTIME_ONLY)):
            new, old = getattr(args, k), saved.get(k)
            if new == old:
                continue
            if k in _EXTENDABLE and saved.get('solver') == 'lc':
                raise RunError(f"--{k.replace('_', '-')} cannot change when resuming an LC run: "
                               "its L/C schedule is fixed by its length; start a new run")
            if k in _EXTENDABLE:
                merged[k] = new
                continue
            flag = '--' + k.replace('_', '-')
            raise RunError(f"{flag} cannot change when resuming (the run uses {old!r}); only "
                           "--max-iter / --epochs (a longer run), --context, --data-dir, "
                           "--val-images and --no-progress can; start a new run for other "
                           "settings")
        merged['resume'] = args.resume
        merged.setdefault('explicit', [])
        merged['extended'] = {k: merged[k] for k in _EXTENDABLE if merged.get(k) != saved.get(k)}
        args = argparse.Namespace(**merged)
        return args, check_arguments(args), args.resume, True
    args.context = args.context or 'cpu'
    layers = check_arguments(args)
    run_dir = args.output or f"{args.config}-{time.strftime('%Y%m%d-%H%M%S')}"
    if writer:
        RunLock(run_dir, f"--output {run_dir}").check_free()
    if _holds_run(run_dir):
        raise RunError(f"--output {run_dir} already holds a run: continue it with --resume "
                       f"{run_dir} or choose another --output")
    return args, layers, run_dir, False


def _read_args(run_dir):
    with open(os.path.join(run_dir, 'args.json')) as f:
        return json.load(f)


def _write_args(run_dir, settings):
    """Write (or replace, atomically) the run's ``args.json`` (``--time-limit`` belongs to one
    process, a scheduler's job, and is not kept)."""
    from nnabla_lutq.io.nnp import atomic_output
    path = os.path.join(run_dir, 'args.json')
    with atomic_output(path, '.json') as tmp, open(tmp, 'w') as f:
        json.dump({k: v for k, v in settings.items()
                   if k not in ('explicit', 'extended', 'time_limit')}, f, indent=1)


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
        if dist.is_main and not resuming and _holds_run(run_dir):  # since prepare() looked
            raise RunError(f"--output {run_dir} already holds a run: continue it with --resume "
                           f"{run_dir} or choose another --output")
        if resuming:  # one process renames; the others wait for it
            if dist.is_main:
                recover_checkpoint(run_dir, log)
            dist.barrier()
        return _train(args, layers, run_dir, resuming, dist, ctx, dataset_fn, model_fn,
                      stop_at, log, epoch_lines, began)


def _holds_run(run_dir):
    return any(os.path.exists(os.path.join(run_dir, f))
               for f in ('checkpoint', 'checkpoint.old', 'results.json'))


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
    lc = _opt(args, 'solver') == 'lc'
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
            solver, augmented_lagrangian=_opt(args, 'lc_penalty') == 'augmented',
            learn_scale=_opt(args, 'lc_learn_scale'),
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
                _write_args(run_dir, {**_read_args(run_dir), **args.extended})
    else:
        dist.bcast_parameters(nn.get_parameters(grad_only=False))
        if dist.is_main:
            with writing():
                _write_args(run_dir, vars(args))
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
    lc = _opt(args, 'solver') == 'lc'
    results = {
        'config': args.config, 'settings': configs.describe(layers),
        'layers': dataclasses.asdict(layers), 'act_bits': args.act_bits,
        'schedule': {'name': args.schedule, 'lr': args.lr, 'epochs': args.epochs,
                     'max_iter': args.max_iter, 'iterations': total,
                     'epochs_run': total / steps, 'batch_size': args.batch_size,
                     'processes': dist.size, 'weight_decay': args.weight_decay,
                     'init': args.init, 'warmup_epochs': getattr(args, 'warmup_epochs', 0)},
        'solver': _opt(args, 'solver'), 'lc': state.get('lc'),
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


def list_configs(out=print, act_bits=None):
    """Print every named configuration with its settings."""
    for name in configs.NAMED:
        out(f"  {name:<18} {configs.describe(configs.parse(name, act_bits=act_bits))}")
    out("  (any name of the form lutq<B>[-pow2][-mlbn][-prune<P>] works; activations: --act-bits)")
