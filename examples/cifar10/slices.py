"""Train CIFAR-10 runs in time slices: many short device leases add up to full schedules.

A *recipe* is a named, recorded schedule shared by a set of configurations; each configuration
of a recipe has its own run folder ``RUNS/<recipe>/<config>``. One *slice* starts (or resumes)
every unfinished run of the recipe, at most ``--parallel`` side by side, and stops them all
cleanly at a deadline (SIGINT: the trainer writes its checkpoint and exits 130), so the next
slice, perhaps on another machine, continues them bit-identically with ``--resume``::

    python -m examples.cifar10.slices run --runs RUNS --recipe cosine30 \\
        --configs float,lutq4,lutq2-pow2 --parallel 3 --deadline-s 420 --context cudnn \\
        --data-dir .gpu/data
    python -m examples.cifar10.slices status --runs RUNS
    python -m examples.cifar10.slices pack --runs RUNS --output $OUT       # on the device
    python -m examples.cifar10.slices unpack --runs RUNS FOLDER_OF_PARTS   # back home

Every slice appends one JSON line to ``RUNS/slices.jsonl``: start and end time, wall seconds,
host and GPU, and per run the iterations and epochs before and after, the exit code, the state
(``new``/``resume``/``skip``/``wait`` -> ``finished``/``stopped``/``failed``/``killed``) and the
images per second, so the throughput of N runs side by side on one device can be compared with
that of one. A run that fails (any other exit code) does not stop the others; the slice prints
the tail of its log (``train.log`` in its run folder) and exits 1.

The runs start in ``RUNS`` as their working directory with relative paths (``--output``,
``--init``), so a run folder stays valid when ``RUNS`` travels between machines.
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

__all__ = ['Recipe', 'RECIPES', 'SliceError', 'run_slice', 'run_state', 'status', 'pack',
           'unpack', 'in_progress', 'main']

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECORDS = 'slices.jsonl'
LOG = 'train.log'
#: Exit codes of a run stopped by a signal: the trainer's (128 + signal, after its checkpoint),
#: and Python's (a signal that arrived before the training loop installed its handler).
STOPPED = {128 + signal.SIGINT, 128 + signal.SIGTERM, -signal.SIGINT, -signal.SIGTERM}
#: Flags the slice runner sets itself; refused among the extra train flags.
_OWN_FLAGS = ('--config', '--output', '--resume', '--init', '--context', '--data-dir',
              '--list-configs')
PART_PREFIX = 'runs.tar.gz.part-'


class SliceError(RuntimeError):
    """Wrong input of a slice (nothing is started then); the message says what to fix."""


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


#: The recipes (recorded in every slice record with the flags they give).
RECIPES = {r.name: r for r in (
    Recipe('cosine30', '30 epochs, cosine lr 0.1 -> 0, wd 5e-4, batch 128, momentum 0.9, every '
           'configuration from scratch',
           ('--epochs', '30', '--schedule', 'cosine', '--lr', '0.1', '--weight-decay', '5e-4',
            '--batch-size', '128', '--momentum', '0.9')),
    Recipe('proto12', "12 epochs, cosine lr 0.1 -> 0, wd 5e-4, batch 128, momentum 0.9, from "
           "scratch: the prototype's schedule (its errors are in reproduce.PROTOTYPE)",
           ('--epochs', '12', '--schedule', 'cosine', '--lr', '0.1', '--weight-decay', '5e-4',
            '--batch-size', '128', '--momentum', '0.9')),
    Recipe('proto25', "25 epochs, otherwise as proto12 (the prototype's second schedule)",
           ('--epochs', '25', '--schedule', 'cosine', '--lr', '0.1', '--weight-decay', '5e-4',
            '--batch-size', '128', '--momentum', '0.9')),
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


def _checkpoint_state(run_dir):
    """The ``state.json`` of the run's complete checkpoint (``checkpoint.old`` if only that is
    whole, as the trainer recovers it), or ``None``."""
    from examples.common.trainer import complete_checkpoint
    for c in ('checkpoint', 'checkpoint.old'):
        folder = os.path.join(run_dir, c)
        if complete_checkpoint(folder):
            return _read_json(os.path.join(folder, 'state.json'))
    return None


def run_state(run_dir):
    """What a run folder holds.

    Args:
        run_dir (str): the run folder.

    Returns:
        dict: ``finished`` (bool: results.json), ``checkpoint`` (bool), ``iteration``,
        ``epoch``, ``target_epochs``, ``target_iterations`` (``None`` when unknown),
        ``last_val_error``, ``best_val_error``, ``batch_size``, ``train_seconds``.
    """
    res = _read_json(os.path.join(run_dir, 'results.json'))
    state = _checkpoint_state(run_dir)
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


# --- one slice --------------------------------------------------------------------------------

def _gpu_name():
    if shutil.which('nvidia-smi') is None:
        return None
    try:
        r = subprocess.run(['nvidia-smi', '--query-gpu=name', '--format=csv,noheader'],
                           capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return ', '.join(line.strip() for line in r.stdout.splitlines() if line.strip()) or None


def _tail(path, lines=15):
    try:
        with open(path, errors='replace') as f:
            return [line.rstrip('\n') for line in f.readlines()[-lines:]]
    except OSError:
        return []


def _check_extra(extra):
    for tok in extra:
        flag = tok.split('=', 1)[0]
        if flag in _OWN_FLAGS:
            raise SliceError(f"{flag} is set by the slice runner (use --configs, --context, "
                             "--data-dir of the slice command), not as an extra train flag")


def _check_new_run(argv):
    """Parse and check the flags of a new run as train.py would, without starting it."""
    from examples.cifar10 import train
    from examples.common import trainer
    p = train.parser()

    def error(msg):
        raise SliceError(f"train flags {' '.join(argv)}: {msg}")
    p.error = error
    args = trainer.parse_args(p, argv)
    args.init, args.context = None, args.context or 'cpu'
    try:
        trainer.check_arguments(args)
    except trainer.RunError as e:
        raise SliceError(str(e))


class _Job:
    """One run of the slice: its plan, and its process once started."""

    def __init__(self, recipe, config, runs_dir):
        self.config = config
        self.rel = os.path.join(recipe.name, config)
        self.path = os.path.join(runs_dir, self.rel)
        self.before = run_state(self.path)
        self.action = None  # new, resume, skip, wait
        self.status = None  # finished, stopped, failed, killed, skipped, waiting
        self.argv = None
        self.proc = self.log = None
        self.started = self.ended = None
        self.signalled = None

    def record(self, t0):
        after = run_state(self.path)
        r = {'config': self.config, 'run': self.rel, 'action': self.action,
             'status': self.status, 'argv': self.argv,
             'iteration_before': self.before['iteration'], 'epoch_before': self.before['epoch'],
             'iteration_after': after['iteration'], 'epoch_after': after['epoch'],
             'target_epochs': after['target_epochs'],
             'target_iterations': after['target_iterations'],
             'last_val_error': after['last_val_error'], 'best_val_error': after['best_val_error'],
             'exit': None, 'signal_sent': self.signalled, 'started_s': None, 'ended_s': None,
             'wall_s': 0.0, 'images': 0, 'images_per_s': None, 'train_images_per_s': None}
        if self.proc is not None:
            images = (after['iteration'] - self.before['iteration']) * (after['batch_size'] or 0)
            wall = self.ended - self.started
            train_s = after['train_seconds'] - self.before['train_seconds']
            r.update(exit=self.proc.returncode, started_s=round(self.started - t0, 3),
                     ended_s=round(self.ended - t0, 3), wall_s=round(wall, 3), images=images,
                     images_per_s=round(images / wall, 2) if wall > 0 else None,
                     train_images_per_s=round(images / train_s, 2) if train_s > 0 else None)
        return r


def _describe(st):
    if st['target_epochs']:
        return f"epoch {st['epoch']:.2f}/{st['target_epochs']:g}"
    return f"epoch {st['epoch']:.2f}"


def run_slice(runs_dir, recipe, config_names, deadline_s, parallel=1, context=None,
              data_dir=None, extra=(), stop_timeout_s=60.0, log=print, poll_s=0.2):
    """Run one slice: start, resume or skip every configuration, stop all at the deadline.

    Args:
        runs_dir (str): the folder of the recipes' run folders (created if missing).
        recipe (str): a name of :data:`RECIPES`.
        config_names (list): configuration names (``float``, ``lutq4``, ...).
        deadline_s (float): seconds from the start of the slice (the data decode included)
            after which every run still going gets SIGINT.
        parallel (int): runs side by side at most; the others start when one finishes.
        context (str or None): ``cpu`` or ``cudnn`` for every run.
        data_dir (str or None): ``--data-dir`` of the runs; decoded once here before any run
            starts, so they all read the cache.
        extra (list): further train.py flags of every run (on resume too: a longer
            ``--max-iter`` / ``--epochs`` extends a run).
        stop_timeout_s (float): how long a stopped run may take to write its checkpoint and exit
            before it is killed (its previous checkpoint stays valid).
        log (callable): where progress lines go.
        poll_s (float): how often the processes are looked at.

    Returns:
        dict: the slice record (also appended to ``runs_dir/slices.jsonl``).

    Raises:
        SliceError: an unknown recipe or configuration, or wrong settings (before anything is
            started).
    """
    if recipe not in RECIPES:
        raise SliceError(f"unknown recipe {recipe!r}: choose one of {', '.join(RECIPES)}")
    rec = RECIPES[recipe]
    if not config_names:
        raise SliceError("--configs is empty: name at least one configuration, e.g. float")
    if len(set(config_names)) != len(config_names):
        raise SliceError(f"--configs {','.join(config_names)} names a configuration twice")
    for c in config_names:
        try:
            configs.parse(c)
        except ValueError as e:
            raise SliceError(str(e))
    if parallel < 1:
        raise SliceError(f"--parallel {parallel}: must be at least 1")
    if not deadline_s > 0:
        raise SliceError(f"--deadline-s {deadline_s}: must be positive")
    extra = list(extra)
    _check_extra(extra)
    runtime = ['--no-progress'] + (['--context', context] if context else []) + (
        ['--data-dir', os.path.abspath(data_dir)] if data_dir else [])
    for c in config_names:
        _check_new_run(rec.argv(c) + runtime + extra)
    if data_dir is not None and not os.path.exists(data_dir):
        raise SliceError(f"--data-dir {data_dir}: no such folder or file")

    t0 = time.time()
    os.makedirs(runs_dir, exist_ok=True)
    record = {'recipe': recipe, 'recipe_flags': list(rec.flags),
              'quantized_flags': list(rec.quantized_flags),
              'init_from_float': rec.init_from_float, 'configs': list(config_names),
              'parallel': parallel, 'deadline_s': deadline_s, 'context': context or 'cpu',
              'extra': extra, 'start': time.strftime('%Y-%m-%dT%H:%M:%S%z', time.localtime(t0)),
              'host': socket.gethostname(), 'gpu': _gpu_name(), 'cpus': os.cpu_count()}
    log(f"slice: recipe {recipe} ({rec.description}); {len(config_names)} configurations, "
        f"{parallel} side by side, deadline {deadline_s:g} s, context {context or 'cpu'}"
        + (f", GPU {record['gpu']}" if record['gpu'] else ''))

    from examples.cifar10.data import load_arrays
    from examples.common.image_data import DataError
    try:  # decode once here, so that the runs read the cache instead of each decoding
        load_arrays(data_dir, progress=False)
    except DataError as e:
        raise SliceError(str(e))
    record['prepare_s'] = round(time.time() - t0, 3)

    jobs = [_Job(rec, c, runs_dir) for c in config_names]
    jobs.sort(key=lambda j: j.config != 'float')  # the float run first: others may need it
    float_job = next((j for j in jobs if j.config == 'float'), None)
    float_dir = os.path.join(runs_dir, recipe, 'float')
    pending, waiting = [], []
    for j in jobs:
        if j.before['finished']:
            j.action, j.status = 'skip', 'skipped'
            log(f"  {j.config}: finished ({_describe(j.before)}), skipped")
        elif rec.needs_float(j.config) and not j.before['checkpoint'] \
                and not os.path.isfile(os.path.join(float_dir, 'results.json')):
            j.action, j.status = 'wait', 'waiting'
            waiting.append(j)
            fs = run_state(float_dir)
            now = f"at {_describe(fs)}" if fs['checkpoint'] else 'not started'
            why = ("in this slice, first" if float_job is not None else
                   "not in --configs of this slice")
            log(f"  {j.config}: waits for {recipe}/float to finish (it starts from its "
                f"best.h5; float is {now}, {why})")
        else:
            pending.append(j)

    env = dict(os.environ, PYTHONUNBUFFERED='1',
               PYTHONPATH=os.pathsep.join([ROOT] + [p for p in os.environ.get(
                   'PYTHONPATH', '').split(os.pathsep) if p]))
    interrupted = []

    def on_signal(signum, frame):
        interrupted.append(signum)
    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    def start(j):
        resume = j.before['checkpoint']
        j.action = 'resume' if resume else 'new'
        if resume:
            j.argv = ['--resume', j.rel] + runtime + extra
        else:
            init = ['--init', os.path.join(recipe, 'float', 'best.h5')] \
                if rec.needs_float(j.config) else []
            j.argv = rec.argv(j.config) + init + ['--output', j.rel] + runtime + extra
        os.makedirs(j.path, exist_ok=True)
        j.log = open(os.path.join(j.path, LOG), 'ab')
        j.log.write(f"=== slice {record['start']} on {record['host']}: train "
                    f"{' '.join(j.argv)}\n".encode())
        j.log.flush()
        j.started = time.time()
        j.proc = subprocess.Popen([sys.executable, '-m', 'examples.cifar10.train'] + j.argv,
                                  cwd=runs_dir, env=env, stdout=j.log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
        log(f"  {j.config}: {'resumed at ' + _describe(j.before) if resume else 'started'}"
            f" (pid {j.proc.pid}) in {j.path}")

    def finish(j):
        j.ended = time.time()
        j.log.close()
        code = j.proc.returncode
        st = run_state(j.path)
        if code == 0:
            j.status = 'finished' if st['finished'] else 'stopped'
        elif code in STOPPED:
            j.status = 'stopped'
        elif code == -signal.SIGKILL and j.signalled:
            j.status = 'killed'
        else:
            j.status = 'failed'
        wall = j.ended - j.started
        done = (st['iteration'] - j.before['iteration']) * (st['batch_size'] or 0)
        err = (f", validation error {st['last_val_error']:.4f}"
               if st['last_val_error'] is not None else '')
        log(f"  {j.config}: {j.status} at {_describe(st)} (exit {code}){err}; "
            f"{done / wall if wall > 0 else 0:.0f} images/s over {wall:.0f} s")
        if j.status == 'failed':
            log(f"    last lines of {os.path.join(j.path, LOG)}:")
            for line in _tail(os.path.join(j.path, LOG)):
                log(f"    | {line}")

    running = []
    try:
        while True:
            for j in list(running):
                if j.proc.poll() is not None:
                    running.remove(j)
                    finish(j)
            if waiting and os.path.isfile(os.path.join(float_dir, 'results.json')) \
                    and float_job not in running:  # finished, and its process has ended
                for j in waiting:
                    log(f"  {j.config}: {recipe}/float has finished, {j.config} may start")
                pending += waiting
                waiting = []
            late = time.time() - t0 >= deadline_s or interrupted
            while pending and len(running) < parallel and not late:
                j = pending.pop(0)
                start(j)
                running.append(j)
            if late or not running:
                break
            time.sleep(poll_s)
        if running:  # stop every run still going: each writes its checkpoint and exits
            # after a Ctrl-C of the terminal the runs have had a SIGINT already, and a second
            # one would stop them without a checkpoint: SIGTERM then (the same clean stop)
            sig = signal.SIGTERM if interrupted else signal.SIGINT
            log(f"{'interrupted' if interrupted else 'deadline'} after {time.time() - t0:.0f} "
                f"s: {signal.Signals(sig).name} to {', '.join(j.config for j in running)}")
            for j in running:
                j.signalled = signal.Signals(sig).name
                if j.proc.poll() is None:
                    j.proc.send_signal(sig)
            limit = time.time() + stop_timeout_s
            while running:
                for j in list(running):
                    if j.proc.poll() is not None:
                        running.remove(j)
                        finish(j)
                if running and time.time() > limit:
                    for j in running:
                        log(f"  {j.config}: no exit {stop_timeout_s:g} s after the signal, "
                            "killed (its previous checkpoint stays)")
                        j.signalled = 'SIGKILL'
                        j.proc.kill()
                        j.proc.wait()
                        finish(j)
                    running = []
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

    t1 = time.time()
    runs = [j.record(t0) for j in jobs]
    ran = [r for r in runs if r['started_s'] is not None]
    images = sum(r['images'] for r in ran)
    window = (max(r['ended_s'] for r in ran) - min(r['started_s'] for r in ran)) if ran else 0
    record.update(end=time.strftime('%Y-%m-%dT%H:%M:%S%z', time.localtime(t1)),
                  wall_s=round(t1 - t0, 3), interrupted=bool(interrupted), images=images,
                  train_window_s=round(window, 3),
                  images_per_s=round(images / window, 2) if window > 0 else None,
                  failed=[r['config'] for r in runs if r['status'] == 'failed'], runs=runs)
    path = os.path.join(runs_dir, RECORDS)
    record['slice'] = len(_records(runs_dir)) + 1
    with open(path, 'a') as f:
        f.write(json.dumps(record) + '\n')
    log(f"slice {record['slice']} done in {record['wall_s']:.0f} s: {len(ran)} runs, "
        f"{images} images, {record['images_per_s'] or 0:.0f} images/s together"
        + (f"; FAILED: {', '.join(record['failed'])}" if record['failed'] else '')
        + f"; recorded in {path}")
    return record


# --- status -----------------------------------------------------------------------------------

def _records(runs_dir):
    out = []
    try:
        with open(os.path.join(runs_dir, RECORDS)) as f:
            for line in f:
                if line.strip():
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass  # a line cut short (a killed slice): skipped
    except OSError:
        pass
    return out


def _is_run(folder):
    return any(os.path.exists(os.path.join(folder, f))
               for f in ('args.json', 'checkpoint', 'checkpoint.old', 'results.json', LOG))


def status(runs_dir, out=print):
    """Print a table per recipe: epoch reached / target, last and best validation error, state,
    slices and seconds of every run.

    Args:
        runs_dir (str): the ``--runs`` folder.
        out (callable): where the lines go.

    Returns:
        dict: recipe -> list of row dicts (``config``, ``epoch``, ``target_epochs``,
        ``last_val_error``, ``best_val_error``, ``state``, ``slices``, ``seconds``).
    """
    if not os.path.isdir(runs_dir):
        raise SliceError(f"--runs {runs_dir}: no such folder")
    records = _records(runs_dir)
    names = {r['recipe'] for r in records}
    names |= {d for d in os.listdir(runs_dir) if os.path.isdir(os.path.join(runs_dir, d))
              and any(_is_run(os.path.join(runs_dir, d, c))
                      for c in os.listdir(os.path.join(runs_dir, d)))}
    tables = {}
    for name in sorted(names):
        recs = [r for r in records if r['recipe'] == name]
        folder = os.path.join(runs_dir, name)
        found = [c for c in sorted(os.listdir(folder)) if _is_run(os.path.join(folder, c))] \
            if os.path.isdir(folder) else []
        listed = [c for r in recs for c in r['configs']]
        order = list(dict.fromkeys(
            (['float'] if 'float' in found + listed else []) + listed + found))
        rows = []
        for c in order:
            st = run_state(os.path.join(folder, c))
            mine = [(r.get('slice', '?'), run) for r in recs for run in r['runs']
                    if run['config'] == c]
            ran = [run for _, run in mine if run['started_s'] is not None]
            n, last = mine[-1] if mine else (None, None)
            if st['finished']:
                state = 'finished'
            elif last and last['status'] == 'failed':
                state = f"failed (slice {n})"
            elif st['checkpoint']:
                state = 'checkpoint'
            elif last and last['status'] == 'waiting':
                state = 'waits for float'
            else:
                state = 'not started'
            rows.append({'config': c, 'epoch': st['epoch'], 'target_epochs': st['target_epochs'],
                         'last_val_error': st['last_val_error'],
                         'best_val_error': st['best_val_error'], 'state': state,
                         'slices': len(ran), 'seconds': sum(run['wall_s'] for run in ran)})
        tables[name] = rows
        desc = RECIPES[name].description if name in RECIPES else 'not a known recipe'
        out(f"{name}: {desc}")
        out(f"  {len(recs)} slices, {sum(r['wall_s'] for r in recs):.0f} device seconds "
            f"(wall time of the slices)")
        out(f"  {'config':<18} {'epoch':>15} {'last err':>9} {'best err':>9}  "
            f"{'state':<18} {'slices':>6} {'run s':>8}")
        for row in rows:
            pct = (lambda e: f"{100 * e:.2f}%" if e is not None else '—')
            target = f"{row['target_epochs']:g}" if row['target_epochs'] else '?'
            out(f"  {row['config']:<18} {row['epoch']:>8.2f} / {target:<4} "
                f"{pct(row['last_val_error']):>9} {pct(row['best_val_error']):>9}  "
                f"{row['state']:<18} {row['slices']:>6} {row['seconds']:>8.0f}")
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


# --- bringing runs back from a device ---------------------------------------------------------

def _last_runs(runs_dir):
    recs = _records(runs_dir)
    if not recs:
        return []
    return [r['run'] for r in recs[-1]['runs'] if r['started_s'] is not None]


def pack(runs_dir, output, everything=False, part_mib=15, max_parts=4):
    """Pack run folders and ``slices.jsonl`` into ``output/runs.tar.gz.part-NN`` files.

    By default only the runs that the last slice started travel (the others did not change);
    a finished run travels without its checkpoint (not needed any more), and
    ``checkpoint.tmp`` / ``checkpoint.old`` never do.

    Args:
        runs_dir (str): the ``--runs`` folder.
        output (str): the folder to write the parts into (e.g. ``$OUT``).
        everything (bool): pack every run folder.
        part_mib (int): size of one part in MiB (the device returns files of at most 16 MiB).
        max_parts (int): refuse to write more parts than this (the device returns at most 8
            files, 64 MiB together).

    Returns:
        list: the paths of the parts written.

    Raises:
        SliceError: if the archive needs more than ``max_parts`` parts.
    """
    if not os.path.isdir(runs_dir):
        raise SliceError(f"--runs {runs_dir}: no such folder")
    if everything:
        runs = [os.path.join(r, c) for r in sorted(os.listdir(runs_dir))
                if os.path.isdir(os.path.join(runs_dir, r))
                for c in sorted(os.listdir(os.path.join(runs_dir, r)))
                if _is_run(os.path.join(runs_dir, r, c))]
    else:
        runs = _last_runs(runs_dir)

    def keep(info):
        parts = info.name.split('/')
        if any(p in ('checkpoint.tmp', 'checkpoint.old', '__pycache__') for p in parts):
            return None
        if 'checkpoint' in parts[3:4] and os.path.isfile(
                os.path.join(runs_dir, *parts[1:3], 'results.json')):
            return None
        return info

    os.makedirs(output, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output) as tmp:
        archive = os.path.join(tmp, 'runs.tar.gz')
        with tarfile.open(archive, 'w:gz') as tar:
            for run in runs:
                if os.path.isdir(os.path.join(runs_dir, run)):
                    tar.add(os.path.join(runs_dir, run), arcname='runs/' + run.replace(os.sep, '/'),
                            filter=keep)
            if os.path.isfile(os.path.join(runs_dir, RECORDS)):
                tar.add(os.path.join(runs_dir, RECORDS), arcname='runs/' + RECORDS)
        size = os.path.getsize(archive)
        step = part_mib << 20
        n = max(1, -(-size // step))
        if n > max_parts:
            raise SliceError(f"the runs need {size / 2**20:.1f} MiB, more than {max_parts} parts "
                             f"of {part_mib} MiB: use fewer configurations per runs folder")
        paths = []
        with open(archive, 'rb') as f:
            for i in range(n):
                p = os.path.join(output, f"{PART_PREFIX}{i:02d}")
                with open(p, 'wb') as g:
                    g.write(f.read(step))
                paths.append(p)
    return paths


def unpack(runs_dir, parts_dir):
    """Put the runs of :func:`pack` parts into ``runs_dir``: each run folder in the archive
    replaces the local one, and the records of ``slices.jsonl`` that are not here yet are
    appended.

    Args:
        runs_dir (str): the local ``--runs`` folder (created if missing).
        parts_dir (str): the folder holding ``runs.tar.gz.part-NN``.

    Returns:
        list: the run folders replaced (relative to ``runs_dir``).

    Raises:
        SliceError: if there are no parts, or they do not make a whole archive.
    """
    parts = sorted(glob.glob(os.path.join(parts_dir, PART_PREFIX + '*')))
    if not parts:
        raise SliceError(f"{parts_dir}: no {PART_PREFIX}NN files there")
    os.makedirs(runs_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=runs_dir, prefix='.unpack-') as tmp:
        archive = os.path.join(tmp, 'runs.tar.gz')
        with open(archive, 'wb') as f:
            for p in parts:
                with open(p, 'rb') as g:
                    shutil.copyfileobj(g, f)
        try:
            with tarfile.open(archive) as tar:
                for m in tar.getmembers():
                    if m.name.startswith('/') or '..' in m.name.split('/') or not (
                            m.isfile() or m.isdir()) or not m.name.startswith('runs/'):
                        raise SliceError(f"{parts_dir}: unexpected entry {m.name!r} in the parts")
                tar.extractall(os.path.join(tmp, 'x'))
        except (tarfile.TarError, EOFError, OSError) as e:
            raise SliceError(f"{parts_dir}: the parts do not make a whole archive ({e}); bring "
                             "all of them back")
        src = os.path.join(tmp, 'x', 'runs')
        replaced = []
        for recipe in sorted(os.listdir(src)):
            if not os.path.isdir(os.path.join(src, recipe)):
                continue
            for config in sorted(os.listdir(os.path.join(src, recipe))):
                dest = os.path.join(runs_dir, recipe, config)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                if os.path.exists(dest):
                    shutil.rmtree(dest)
                shutil.move(os.path.join(src, recipe, config), dest)
                replaced.append(os.path.join(recipe, config))
        if os.path.isfile(os.path.join(src, RECORDS)):
            local = os.path.join(runs_dir, RECORDS)
            have = set()
            if os.path.isfile(local):
                with open(local) as f:
                    have = {line.strip() for line in f if line.strip()}
            with open(os.path.join(src, RECORDS)) as f, open(local, 'a') as g:
                for line in f:
                    if line.strip() and line.strip() not in have:
                        g.write(line.strip() + '\n')
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
    k = sub.add_parser('pack', help='pack the runs of the last slice for the trip back')
    k.add_argument('--runs', required=True)
    k.add_argument('--output', required=True, help='folder for runs.tar.gz.part-NN')
    k.add_argument('--all', action='store_true', help='every run, not only the last slice\'s')
    k.add_argument('--part-mib', type=int, default=15,
                   help='size of one part in MiB (default: %(default)s)')
    k.add_argument('--max-parts', type=int, default=4,
                   help='refuse to write more parts (default: %(default)s)')
    u = sub.add_parser('unpack', help='put packed runs into the local runs folder')
    u.add_argument('--runs', required=True)
    u.add_argument('parts', help='the folder holding runs.tar.gz.part-NN')
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
            for path in pack(args.runs, args.output, everything=args.all, part_mib=args.part_mib,
                             max_parts=args.max_parts):
                print(f"wrote {path} ({os.path.getsize(path) / 2**20:.1f} MiB)")
        else:
            for run in unpack(args.runs, args.parts):
                print(f"updated {os.path.join(args.runs, run)}")
        return 0
    except SliceError as e:
        raise SystemExit(f"error: {e}")


if __name__ == '__main__':
    sys.exit(main())
