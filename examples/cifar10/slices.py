# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Train the CIFAR-10 configurations of a recipe in time-limited sessions, and move run folders.

For machines that are only yours for a while (a batch job's time limit, a preemptible or rented
GPU): a *recipe* is a named schedule for a set of configurations, each run in its own folder
``RUNS/<recipe>/<config>``. One *slice* starts (or resumes) every unfinished run of the recipe,
at most ``--parallel`` side by side, and stops them all cleanly at a deadline (SIGINT: the trainer
writes its checkpoint and exits 130), so the next slice, on this machine or another, continues
them bit-identically with ``--resume``::

    python -m examples.cifar10.slices run --runs RUNS --recipe cosine30 \\
        --configs float,lutq4,lutq2-pow2 --parallel 3 --deadline-s 3500 --context cudnn
    python -m examples.cifar10.slices status --runs RUNS
    python -m examples.cifar10.slices pack --runs RUNS --output DIR [--part-size MIB]
    python -m examples.cifar10.slices unpack --runs RUNS DIR_OR_ARCHIVE

A run that fails does not stop the others; the slice prints the tail of its log (``train.log``
in its run folder) and exits 1. The runs start in ``RUNS`` with relative paths, so a runs folder
stays valid on another machine; ``pack`` / ``unpack`` move run folders there and back as one
archive or as parts of a size you choose.
"""
import argparse
import dataclasses
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time

if __package__ in (None, ''):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))

from examples.common import configs  # noqa: E402
from examples.common.args import TIME_LIMIT_STATUS  # noqa: E402

__all__ = ['Recipe', 'RECIPES', 'SliceError', 'run_slice', 'run_state', 'status', 'pack',
           'unpack', 'in_progress', 'main']

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOG = 'train.log'
#: Exit codes of a run stopped with a checkpoint: the trainer's after a signal (128 + signal) or
#: ``--time-limit`` (75), and Python's (a signal before the training loop installed its handler).
STOPPED = {128 + signal.SIGINT, 128 + signal.SIGTERM, -signal.SIGINT, -signal.SIGTERM,
           TIME_LIMIT_STATUS}
#: Flags the slice runner sets itself; refused among the extra train flags.
_OWN_FLAGS = ('--config', '--output', '--resume', '--init', '--context', '--data-dir',
              '--list-configs')
ARCHIVE = 'runs.tar.gz'
PART_PREFIX = ARCHIVE + '.part-'
#: Never packed: the trainer's temporary and previous checkpoints, Python caches.
_NOT_PACKED = ('checkpoint.tmp', 'checkpoint.old', '__pycache__')


class SliceError(RuntimeError):
    """Wrong input (nothing is started or written then); the message says what to fix."""


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A named schedule for every configuration of a comparison.

    Attributes:
        name (str): the folder name below ``--runs``.
        description (str): one line, printed by ``status``.
        flags (tuple): train.py flags of every run.
        quantized_flags (tuple): flags added (after ``flags``) for LUT-Q configurations.
        init_from_float (bool): LUT-Q configurations start from the float run of the same
            recipe (its ``best.h5``: the parameters at its lowest validation error), so they wait
            until it has finished.
    """
    name: str
    description: str
    flags: tuple
    quantized_flags: tuple = ()
    init_from_float: bool = False

    def argv(self, config):
        """The train.py flags of a new run of ``config`` (without ``--output`` / ``--init``)."""
        lutq = configs.parse(config).lutq
        return ['--config', config, *self.flags, *(self.quantized_flags if lutq else ())]

    def needs_float(self, config):
        """Whether ``config`` starts from this recipe's float run."""
        return self.init_from_float and configs.parse(config).lutq


_SGD = ('--schedule', 'cosine', '--lr', '0.1', '--weight-decay', '5e-4', '--batch-size', '128',
        '--momentum', '0.9')
#: The recipes.
RECIPES = {r.name: r for r in (
    Recipe('cosine30', '30 epochs, cosine lr 0.1 -> 0, wd 5e-4, batch 128, momentum 0.9, every '
           'configuration from scratch', ('--epochs', '30') + _SGD),
    Recipe('proto12', "12 epochs, cosine lr 0.1 -> 0, wd 5e-4, batch 128, momentum 0.9, from "
           "scratch: the prototype's schedule (its errors are in reproduce.PROTOTYPE)",
           ('--epochs', '12') + _SGD),
    Recipe('proto25', "25 epochs, otherwise as proto12 (the prototype's second schedule)",
           ('--epochs', '25') + _SGD),
    Recipe('paper160', '160 epochs, lr /10 at epochs 80 and 120 (step), wd 2e-4, batch 128, '
           'momentum 0.9; float from scratch at lr 0.1, LUT-Q from the best float checkpoint '
           '(best.h5) at lr 0.01',
           ('--epochs', '160', '--schedule', 'step', '--lr', '0.1', '--weight-decay', '2e-4',
            '--batch-size', '128', '--momentum', '0.9'),
           quantized_flags=('--lr', '0.01'), init_from_float=True),
)}


# --- the state of a run folder ----------------------------------------------------------------

def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def run_state(run_dir):
    """What a run folder holds: ``finished`` (bool: results.json), ``checkpoint`` (bool),
    ``iteration``, ``epoch``, ``target_epochs``, ``target_iterations`` (``None`` when unknown),
    ``last_val_error``, ``best_val_error``, ``batch_size``, ``train_seconds`` (a dict)."""
    from examples.common.trainer import complete_checkpoint
    res = _read_json(os.path.join(run_dir, 'results.json'))
    state = next((_read_json(os.path.join(run_dir, c, 'state.json'))  # as the trainer recovers
                  for c in ('checkpoint', 'checkpoint.old')
                  if complete_checkpoint(os.path.join(run_dir, c))), None)
    args = _read_json(os.path.join(run_dir, 'args.json')) or {}
    out = {'finished': res is not None, 'checkpoint': state is not None, 'iteration': 0,
           'epoch': 0.0, 'target_epochs': None, 'target_iterations': None,
           'last_val_error': None, 'best_val_error': None,
           'batch_size': args.get('batch_size'), 'train_seconds': 0.0}
    if state:
        it = state['iteration']
        history = state.get('history') or []
        out.update(iteration=it, epoch=state.get('epoch', 0.0),
                   train_seconds=state.get('train_seconds', state.get('seconds', 0.0)),
                   best_val_error=state.get('best_val_error'),
                   last_val_error=history[-1]['val_error'] if history else None)
        if it and state.get('epoch'):
            steps = round(it / state['epoch'])
            total = args.get('epochs', 0) * steps
            if args.get('max_iter'):
                total = min(total, args['max_iter'])
            out.update(target_iterations=total, target_epochs=total / steps)
    elif args.get('epochs'):
        out['target_epochs'] = float(args['epochs'])
    if res:
        s = res['schedule']
        out.update(iteration=s['iterations'], epoch=s['epochs_run'],
                   target_iterations=s['iterations'], target_epochs=s['epochs_run'],
                   last_val_error=res['final_val_error'], best_val_error=res['best_val_error'],
                   batch_size=s['batch_size'])
    return out


def _describe(st):
    return f"epoch {st['epoch']:.2f}" + (f"/{st['target_epochs']:g}" if st['target_epochs'] else '')


# --- one slice --------------------------------------------------------------------------------

def _check(rec, names, parallel, deadline_s, runtime, extra):
    """Refuse wrong settings before anything starts (each new run's flags as train.py would)."""
    from examples.cifar10 import train
    from examples.common import trainer
    for c in names:
        try:
            configs.parse(c)
        except ValueError as e:
            raise SliceError(str(e))
    own = ''.join([f.split('=', 1)[0] for f in extra if f.split('=', 1)[0] in _OWN_FLAGS][:1])
    for bad, msg in ((not names, "--configs is empty: name at least one configuration"),
                     (len(set(names)) != len(names), "--configs names a configuration twice"),
                     (parallel < 1, f"--parallel {parallel}: must be at least 1"),
                     (not deadline_s > 0, f"--deadline-s {deadline_s}: must be positive"),
                     (own, f"{own} is set by the slice runner (use --configs, --context, "
                           "--data-dir of the slice command), not as an extra train flag")):
        if bad:
            raise SliceError(msg)
    for argv in (rec.argv(c) + runtime + extra for c in names):
        def error(msg, argv=argv):
            raise SliceError(f"train flags {' '.join(argv)}: {msg}")
        p = train.parser()
        p.error = error
        args = trainer.parse_args(p, argv)
        args.init, args.context = None, args.context or 'cpu'
        try:
            trainer.check_arguments(args)
        except trainer.RunError as e:
            raise SliceError(str(e))


class _Job:
    """One run of the slice: its plan, and its process once started."""

    def __init__(self, config, rel, runs_dir):
        self.config, self.rel, self.path = config, rel, os.path.join(runs_dir, rel)
        self.before = run_state(self.path)
        self.action = self.status = self.argv = self.proc = self.log = None
        self.started = self.ended = self.signalled = None

    def summary(self, t0):
        after = run_state(self.path)
        r = {'config': self.config, 'run': self.rel, 'action': self.action,
             'status': self.status, 'argv': self.argv, 'exit': None, 'signal_sent': self.signalled,
             'iteration_before': self.before['iteration'], 'iteration_after': after['iteration'],
             'target_iterations': after['target_iterations'], 'started_s': None,
             'ended_s': None, 'images_per_s': None}
        if self.proc is not None:
            images = (after['iteration'] - self.before['iteration']) * (after['batch_size'] or 0)
            wall = self.ended - self.started
            r.update(exit=self.proc.returncode, started_s=self.started - t0,
                     ended_s=self.ended - t0, images_per_s=images / wall if wall > 0 else None)
        return r


def run_slice(runs_dir, recipe, config_names, deadline_s, parallel=1, context=None,
              data_dir=None, extra=(), stop_timeout_s=60.0, log=print, poll_s=0.2):
    """Run one slice: start, resume or skip every configuration, stop all at the deadline.

    ``deadline_s`` counts from the start (the data decode included); then every run still going
    gets SIGINT, and one that has not exited ``stop_timeout_s`` later is killed (its previous
    checkpoint stays valid). At most ``parallel`` runs go side by side. ``data_dir`` is decoded
    once here, so the runs read the cache. ``extra``: further train.py flags of every run (on
    resume too: a longer ``--max-iter`` / ``--epochs`` extends a run). Progress lines go to
    ``log``.

    Returns:
        dict: ``recipe``, ``wall_s``, ``interrupted``, ``failed`` (configurations) and ``runs``:
        per configuration its ``action`` (new, resume, skip, wait), ``status`` (finished,
        stopped, failed, killed, skipped, waiting, not started), ``exit``, iterations before and
        after, start and end (seconds from the start of the slice) and images per second.

    Raises:
        SliceError: an unknown recipe or configuration, or wrong settings (before anything is
            started).
    """
    if recipe not in RECIPES:
        raise SliceError(f"unknown recipe {recipe!r}: choose one of {', '.join(RECIPES)}")
    rec = RECIPES[recipe]
    extra = list(extra)
    runtime = ['--no-progress'] + (['--context', context] if context else []) + (
        ['--data-dir', os.path.abspath(data_dir)] if data_dir else [])
    _check(rec, config_names, parallel, deadline_s, runtime, extra)
    if data_dir is not None and not os.path.exists(data_dir):
        raise SliceError(f"--data-dir {data_dir}: no such folder or file")

    t0 = time.time()
    os.makedirs(runs_dir, exist_ok=True)
    log(f"slice: recipe {recipe} ({rec.description}); {len(config_names)} configurations, "
        f"{parallel} side by side, deadline {deadline_s:g} s, context {context or 'cpu'}")

    from examples.cifar10.data import load_arrays
    from examples.common.image_data import DataError
    try:  # decode once here, so that the runs read the cache instead of each decoding
        load_arrays(data_dir, progress=False)
    except DataError as e:
        raise SliceError(str(e))

    jobs = sorted((_Job(c, os.path.join(recipe, c), runs_dir) for c in config_names),
                  key=lambda j: j.config != 'float')  # the float run first: others may need it
    float_dir = os.path.join(runs_dir, recipe, 'float')
    float_done = (lambda: os.path.isfile(os.path.join(float_dir, 'results.json')))
    pending, waiting = [], []
    for j in jobs:
        if j.before['finished']:
            j.action, j.status = 'skip', 'skipped'
            log(f"  {j.config}: finished ({_describe(j.before)}), skipped")
        elif rec.needs_float(j.config) and not j.before['checkpoint'] and not float_done():
            j.action, j.status = 'wait', 'waiting'
            waiting.append(j)
            fs = run_state(float_dir)
            log(f"  {j.config}: waits for {recipe}/float to finish (it starts from its best.h5; "
                f"float is {'at ' + _describe(fs) if fs['checkpoint'] else 'not started'}, "
                f"{'in this slice' if 'float' in config_names else 'not in --configs'})")
        else:
            pending.append(j)

    env = dict(os.environ, PYTHONUNBUFFERED='1', PYTHONPATH=os.pathsep.join(
        [ROOT] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))
    interrupted = []
    old_handlers = {s: signal.signal(s, lambda signum, frame: interrupted.append(signum))
                    for s in (signal.SIGINT, signal.SIGTERM)}

    def start(j):
        resume = j.before['checkpoint']
        j.action = 'resume' if resume else 'new'
        init = ['--init', os.path.join(recipe, 'float', 'best.h5')] \
            if rec.needs_float(j.config) else []
        j.argv = (['--resume', j.rel] if resume else
                  rec.argv(j.config) + init + ['--output', j.rel]) + runtime + extra
        os.makedirs(j.path, exist_ok=True)
        j.log = open(os.path.join(j.path, LOG), 'ab')
        j.log.write(f"=== slice {time.strftime('%Y-%m-%dT%H:%M:%S%z')} on "
                    f"{socket.gethostname()}: train {' '.join(j.argv)}\n".encode())
        j.log.flush()
        j.started = time.time()
        j.proc = subprocess.Popen([sys.executable, '-m', 'examples.cifar10.train'] + j.argv,
                                  cwd=runs_dir, env=env, stdout=j.log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
        log(f"  {j.config}: {'resumed at ' + _describe(j.before) if resume else 'started'}"
            f" (pid {j.proc.pid}) in {j.path}")

    def reap(running):
        for j in [j for j in running if j.proc.poll() is not None]:
            running.remove(j)
            j.ended = time.time()
            j.log.close()
            code, st = j.proc.returncode, run_state(j.path)
            j.status = ('finished' if st['finished'] else 'stopped') if code == 0 else \
                'stopped' if code in STOPPED else \
                'killed' if code == -signal.SIGKILL and j.signalled else 'failed'
            wall = j.ended - j.started
            done = (st['iteration'] - j.before['iteration']) * (st['batch_size'] or 0)
            err = (f", validation error {st['last_val_error']:.4f}"
                   if st['last_val_error'] is not None else '')
            log(f"  {j.config}: {j.status} at {_describe(st)} (exit {code}){err}; "
                f"{done / wall if wall > 0 else 0:.0f} images/s over {wall:.0f} s")
            if j.status == 'failed':
                log(f"    last lines of {os.path.join(j.path, LOG)}:")
                with open(os.path.join(j.path, LOG), errors='replace') as f:
                    for line in f.readlines()[-15:]:
                        log(f"    | {line.rstrip()}")

    running = []
    try:
        while True:
            reap(running)
            if waiting and float_done() and not any(j.config == 'float' for j in running):
                for j in waiting:
                    log(f"  {j.config}: {recipe}/float has finished, {j.config} may start")
                pending, waiting = pending + waiting, []
            late = time.time() - t0 >= deadline_s or interrupted
            while pending and len(running) < parallel and not late:
                running.append(pending.pop(0))
                start(running[-1])
            if late or not running:
                break
            time.sleep(poll_s)
        if running:  # stop every run still going: each writes its checkpoint and exits
            # after a Ctrl-C of the terminal the runs have had a SIGINT already, and a second
            # one would stop them without a checkpoint: SIGTERM then (the same clean stop)
            sig = signal.SIGTERM if interrupted else signal.SIGINT
            log(f"{'interrupted' if interrupted else 'deadline'} after {time.time() - t0:.0f} "
                f"s: {sig.name} to {', '.join(j.config for j in running)}")
            for j in running:
                j.signalled = sig.name
                if j.proc.poll() is None:
                    j.proc.send_signal(sig)
            limit = time.time() + stop_timeout_s
            while running:
                reap(running)
                if running and time.time() > limit:
                    for j in running:
                        log(f"  {j.config}: no exit {stop_timeout_s:g} s after the signal, "
                            "killed (its previous checkpoint stays)")
                        j.signalled = 'SIGKILL'
                        j.proc.kill()
                        j.proc.wait()
                    reap(running)
                time.sleep(poll_s)
    finally:
        for j in running:  # an exception here: leave no orphan
            if j.proc.poll() is None:
                j.proc.kill()
                j.proc.wait()
        for s, h in old_handlers.items():
            signal.signal(s, h)
    for j in pending:
        j.action, j.status = 'wait', 'not started'  # no free slot before the deadline
        log(f"  {j.config}: not started (no free slot before the deadline)")

    runs = [j.summary(t0) for j in jobs]
    out = {'recipe': recipe, 'wall_s': time.time() - t0, 'interrupted': bool(interrupted),
           'failed': [r['config'] for r in runs if r['status'] == 'failed'], 'runs': runs}
    log(f"slice done in {out['wall_s']:.0f} s: "
        + ', '.join(f"{r['config']} {r['status']}" for r in runs)
        + (f"; FAILED: {', '.join(out['failed'])}" if out['failed'] else ''))
    return out


# --- status -----------------------------------------------------------------------------------

def _is_run(folder):
    return any(os.path.exists(os.path.join(folder, f))
               for f in ('args.json', 'checkpoint', 'checkpoint.old', 'results.json', LOG))


def _run_folders(runs_dir):
    """Every run folder ``<recipe>/<config>`` below ``runs_dir``, sorted."""
    return [os.path.join(r, c) for r in sorted(os.listdir(runs_dir))
            if os.path.isdir(os.path.join(runs_dir, r))
            for c in sorted(os.listdir(os.path.join(runs_dir, r)))
            if _is_run(os.path.join(runs_dir, r, c))]


def status(runs_dir, out=print):
    """Print (to ``out``) a table per recipe: epoch reached / target, last and best validation
    error, state and training seconds of every run; return them as recipe -> list of row dicts
    (``config``, ``epoch``, ``target_epochs``, ``last_val_error``, ``best_val_error``,
    ``state``, ``train_seconds``)."""
    if not os.path.isdir(runs_dir):
        raise SliceError(f"--runs {runs_dir}: no such folder")
    tables = {}
    for rel in sorted(_run_folders(runs_dir),
                      key=lambda p: (os.path.dirname(p), os.path.basename(p) != 'float', p)):
        name, c = os.path.split(rel)
        st = run_state(os.path.join(runs_dir, rel))
        waits = name in RECIPES and RECIPES[name].needs_float(c) and not run_state(
            os.path.join(runs_dir, name, 'float'))['finished']
        state = 'finished' if st['finished'] else 'checkpoint' if st['checkpoint'] else \
            'waits for float' if waits else 'no checkpoint'
        tables.setdefault(name, []).append(
            {'config': c, 'epoch': st['epoch'], 'target_epochs': st['target_epochs'],
             'last_val_error': st['last_val_error'], 'best_val_error': st['best_val_error'],
             'state': state, 'train_seconds': st['train_seconds']})
    pct = (lambda e: f"{100 * e:.2f}%" if e is not None else '—')
    for name, rows in tables.items():
        out(f"{name}: {RECIPES[name].description if name in RECIPES else 'not a known recipe'}")
        out(f"  {'config':<18} {'epoch':>15} {'last err':>9} {'best err':>9}  {'state':<15} "
            f"{'train s':>8}")
        for row in rows:
            target = f"{row['target_epochs']:g}" if row['target_epochs'] else '?'
            out(f"  {row['config']:<18} {row['epoch']:>8.2f} / {target:<4} "
                f"{pct(row['last_val_error']):>9} {pct(row['best_val_error']):>9}  "
                f"{row['state']:<15} {row['train_seconds']:>8.0f}")
    if not tables:
        out(f"no runs in {runs_dir} yet")
    return tables


def in_progress(folder):
    """Runs below ``folder`` with a checkpoint but no ``results.json`` (for RESULTS.md).

    Returns:
        list: ``(run folder relative to folder, config, run_state dict)``, sorted.
    """
    out = []
    for ck in sorted(glob.glob(os.path.join(folder, '**', 'checkpoint'), recursive=True)):
        run = os.path.dirname(ck)
        st = run_state(run)
        if st['checkpoint'] and not st['finished']:
            config = (_read_json(os.path.join(run, 'args.json')) or {}).get(
                'config', os.path.basename(run))
            out.append((os.path.relpath(run, folder), config, st))
    return out


# --- moving runs between machines -------------------------------------------------------------

def pack(runs_dir, output, runs=None, part_mib=None, max_mib=None):
    """Pack run folders into ``output/runs.tar.gz``; return the paths written.

    ``runs``: run folders ``<recipe>/<config>`` relative to ``runs_dir`` (default: all of them).
    A finished run goes without its checkpoint; ``checkpoint.tmp``, ``checkpoint.old`` and
    caches never go.
    ``part_mib`` splits the archive into ``runs.tar.gz.part-NN`` files of at most that many MiB
    (for a transfer with a file size limit); an archive larger than ``max_mib`` MiB is refused
    with a :class:`SliceError`, and nothing is written then.
    """
    if not os.path.isdir(runs_dir):
        raise SliceError(f"--runs {runs_dir}: no such folder")
    if runs is None:
        runs = _run_folders(runs_dir)
    for run in runs:
        if not os.path.isdir(os.path.join(runs_dir, run)):
            raise SliceError(f"{os.path.join(runs_dir, run)}: no such run folder")

    def keep(info):
        parts = info.name.split('/')
        if any(p in _NOT_PACKED for p in parts) or ('checkpoint' in parts[3:4] and os.path.isfile(
                os.path.join(runs_dir, *parts[1:3], 'results.json'))):
            return None
        return info

    os.makedirs(output, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output, prefix='.pack-') as tmp:
        archive = os.path.join(tmp, ARCHIVE)
        with tarfile.open(archive, 'w:gz') as tar:
            for run in runs:
                tar.add(os.path.join(runs_dir, run), arcname='runs/' + run.replace(os.sep, '/'),
                        filter=keep)
        size = os.path.getsize(archive)
        if max_mib is not None and size > max_mib * 2**20:
            raise SliceError(f"the runs need {size / 2**20:.1f} MiB, more than --max-size "
                             f"{max_mib:g} MiB: pack fewer runs at a time")
        if part_mib is None:
            shutil.move(archive, os.path.join(output, ARCHIVE))
            return [os.path.join(output, ARCHIVE)]
        step = max(1, int(part_mib * 2**20))
        paths = []
        with open(archive, 'rb') as f:
            for i in range(max(1, -(-size // step))):
                paths.append(os.path.join(output, f"{PART_PREFIX}{i:02d}"))
                with open(paths[-1], 'wb') as g:
                    g.write(f.read(step))
    return paths


def unpack(runs_dir, source):
    """Put the runs of :func:`pack` (``source``: ``runs.tar.gz``, or a folder holding it or its
    parts) into ``runs_dir``: each run folder in the archive replaces the local one. Returns the
    run folders replaced.
    Raises :class:`SliceError` if there is no archive, or the parts do not make a whole one."""
    parts = [source] if os.path.isfile(source) else \
        sorted(glob.glob(os.path.join(source, ARCHIVE))) or \
        sorted(glob.glob(os.path.join(source, PART_PREFIX + '*')))
    if not parts:
        raise SliceError(f"{source}: no {ARCHIVE} or {PART_PREFIX}NN files there")
    os.makedirs(runs_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=runs_dir, prefix='.unpack-') as tmp:
        archive = os.path.join(tmp, ARCHIVE)
        with open(archive, 'wb') as f:
            for p in parts:
                with open(p, 'rb') as g:
                    shutil.copyfileobj(g, f)
        try:
            with tarfile.open(archive) as tar:
                for m in tar.getmembers():
                    if m.name.startswith('/') or '..' in m.name.split('/') or not (
                            m.isfile() or m.isdir()) or not m.name.startswith('runs/'):
                        raise SliceError(f"{source}: unexpected entry {m.name!r} in the archive")
                tar.extractall(os.path.join(tmp, 'x'))
        except (tarfile.TarError, EOFError, OSError) as e:
            raise SliceError(f"{source}: not a whole archive ({e}); are all its parts there?")
        src = os.path.join(tmp, 'x', 'runs')
        replaced = _run_folders(src)
        for run in replaced:
            dest = os.path.join(runs_dir, run)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            if os.path.exists(dest):
                shutil.rmtree(dest)
            shutil.move(os.path.join(src, run), dest)
    return replaced


# --- command line -----------------------------------------------------------------------------

def parser():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    sub = p.add_subparsers(dest='command', required=True)
    r = sub.add_parser('run', help='run one slice',
                       epilog='Other flags (e.g. --val-images, --max-iter) go to train.py.')
    r.add_argument('--runs', required=True, help='folder of the run folders (<recipe>/<config>)')
    r.add_argument('--configs', required=True, help='comma-separated, e.g. float,lutq4,lutq2-pow2')
    r.add_argument('--recipe', required=True, help=f"one of {', '.join(RECIPES)}")
    r.add_argument('--deadline-s', type=float, required=True,
                   help='seconds from the start after which every run is stopped (SIGINT)')
    r.add_argument('--parallel', type=int, default=1,
                   help='runs side by side at most (default: %(default)s)')
    r.add_argument('--context', choices=['cpu', 'cudnn'], default=None,
                   help='nnabla context of the runs (default: cpu; a resumed run keeps its own)')
    r.add_argument('--data-dir', default=None, help='as train.py --data-dir')
    r.add_argument('--stop-timeout-s', type=float, default=60.0,
                   help='seconds a stopped run may take to checkpoint before it is killed '
                        '(default: %(default)s)')
    s = sub.add_parser('status', help='the state of every run')
    s.add_argument('--runs', required=True)
    k = sub.add_parser('pack', help='pack run folders into one archive (or parts of it)')
    k.add_argument('--runs', required=True)
    k.add_argument('--output', required=True, help='folder for runs.tar.gz (or its parts)')
    k.add_argument('run', nargs='*', help='run folders <recipe>/<config> (default: all)')
    k.add_argument('--part-size', type=float, default=None, metavar='MIB',
                   help='split into runs.tar.gz.part-NN files of at most MIB MiB')
    k.add_argument('--max-size', type=float, default=None, metavar='MIB',
                   help='refuse to write an archive larger than MIB MiB')
    u = sub.add_parser('unpack', help='put packed runs into the local runs folder')
    u.add_argument('--runs', required=True)
    u.add_argument('source', help='runs.tar.gz, or the folder holding it or its parts')
    return p


def main(argv=None):
    """The command line (see the module docs). Returns the exit status."""
    p = parser()
    args, extra = p.parse_known_args(argv)
    if extra and args.command != 'run':
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == 'run':
            names = [c.strip() for c in args.configs.split(',') if c.strip()]
            rec = run_slice(args.runs, args.recipe, names, args.deadline_s,
                            parallel=args.parallel, context=args.context, data_dir=args.data_dir,
                            extra=extra, stop_timeout_s=args.stop_timeout_s)
            return 1 if rec['failed'] else 0
        if args.command == 'status':
            status(args.runs)
        elif args.command == 'pack':
            for path in pack(args.runs, args.output, runs=args.run or None,
                             part_mib=args.part_size, max_mib=args.max_size):
                print(f"wrote {path} ({os.path.getsize(path) / 2**20:.1f} MiB)")
        else:
            for run in unpack(args.runs, args.source):
                print(f"updated {os.path.join(args.runs, run)}")
        return 0
    except SliceError as e:
        raise SystemExit(f"error: {e}")


if __name__ == '__main__':
    sys.exit(main())
