# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The flags the examples share, and the settings of a new or resumed run.

:func:`add_arguments` adds them to an example's parser (its own defaults may differ, e.g.
ImageNet's), :func:`parse_args` remembers which were given, :func:`check_arguments` refuses a
wrong one with one line naming it, before anything is created (:func:`check_data`: those only
the data can check), and :func:`prepare` resolves the run folder and, for ``--resume``, the
run's own settings (``args.json``) with the few flags that may change.
:mod:`examples.common.trainer` trains with the result.
"""
import argparse
import importlib.util
import json
import math
import os
import time

import nnabla_lutq

from . import configs
from .checkpoint import checkpoint_problem, complete_checkpoint
from .runfolder import RunError, RunLock

__all__ = ['TIME_LIMIT_STATUS', 'add_arguments', 'parse_args', 'run_layers', 'check_arguments',
           'check_data', 'setting', 'check_context', 'prepare', 'read_args', 'write_args', 'holds_run',
           'list_configs']

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
    a('--act-quant', choices=['ema', 'pow2'], default=None,
      help='with --act-bits: ema (the range r tracked as above) or pow2 (a fixed power-of-two '
           'step --act-max / 2**bits, nnabla\'s fixed-point quantization: integer-friendly, see '
           'nnabla_lutq.integer) (default: pow2 for the fully multiplier-less configurations, '
           '-pow2-mlbn and binary/ternary-mlbn, so that they need no multiplication; ema '
           'otherwise)')
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
    rng = setting(args, 'pow2_range')
    return configs.parse(args.config, act_bits=args.act_bits,
                         quantize_first_last=not args.float_first_last,
                         act_quant=setting(args, 'act_quant'), act_max=setting(args, 'act_max'),
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
                            ('--lc-steps', setting(args, 'lc_steps'), setting(args, 'lc_steps') >= 1),
                            ('--lc-mu0', setting(args, 'lc_mu0'), setting(args, 'lc_mu0') > 0),
                            ('--lc-mu-growth', setting(args, 'lc_mu_growth'),
                             setting(args, 'lc_mu_growth') >= 1),
                            ('--bn-recal', setting(args, 'bn_recal'), setting(args, 'bn_recal') >= 0),
                            ('--checkpoint-interval', getattr(args, 'checkpoint_interval', 1.0),
                             getattr(args, 'checkpoint_interval', 1.0) >= 0),
                            ('--time-limit', getattr(args, 'time_limit', None),
                             getattr(args, 'time_limit', None) is None or args.time_limit > 0)):
        if not ok:
            raise RunError(f"{flag} {value} is out of range")
    if setting(args, 'solver') == 'lc' and not layers.lutq:
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


def check_data(args, dataset):
    """Refuse a ``--batch-size`` or ``--val-images`` that the data set cannot serve.

    Args:
        args (argparse.Namespace): the run's settings.
        dataset: the run's data (this rank's shard): ``steps_per_epoch(batch)``, ``n_train``,
            ``n_test``.

    Raises:
        RunError: naming the flag.
    """
    if dataset.steps_per_epoch(args.batch_size) < 1:
        raise RunError(f"--batch-size {args.batch_size} is larger than the training set "
                       f"({dataset.n_train} images)")
    val_limit = getattr(args, 'val_images', None)
    if val_limit is not None and val_limit > dataset.n_test:
        raise RunError(f"--val-images {val_limit}: the validation set has {dataset.n_test} "
                       f"images; give at most {dataset.n_test}, or leave the flag out to "
                       "validate on all of them")


def _check_pow2_range(args):
    """Refuse a ``--pow2-range`` that is reversed or cannot offer the configuration's K values.

    Raises:
        RunError: naming what is wrong and a range that works.
    """
    rng = setting(args, 'pow2_range')
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


def setting(args, name):
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
            saved = read_args(args.resume)
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
    if holds_run(run_dir):
        raise RunError(f"--output {run_dir} already holds a run: continue it with --resume "
                       f"{run_dir} or choose another --output")
    return args, layers, run_dir, False


def read_args(run_dir):
    with open(os.path.join(run_dir, 'args.json')) as f:
        return json.load(f)


def write_args(run_dir, settings):
    """Write (or replace, atomically) the run's ``args.json`` (``--time-limit`` belongs to one
    process, a scheduler's job, and is not kept)."""
    from nnabla_lutq.io.nnp import atomic_output
    path = os.path.join(run_dir, 'args.json')
    with atomic_output(path, '.json') as tmp, open(tmp, 'w') as f:
        json.dump({k: v for k, v in settings.items()
                   if k not in ('explicit', 'extended', 'time_limit')}, f, indent=1)


def holds_run(run_dir):
    return any(os.path.exists(os.path.join(run_dir, f))
               for f in ('checkpoint', 'checkpoint.old', 'results.json'))


def list_configs(out=print, act_bits=None):
    """Print every named configuration with its settings."""
    for name in configs.NAMED:
        out(f"  {name:<18} {configs.describe(configs.parse(name, act_bits=act_bits))}")
    out("  (any name of the form lutq<B>[-pow2][-mlbn][-prune<P>] works; activations: --act-bits)")
