# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The training scripts under real faults (issue 21): kill -9, a second writer, a full disk and
the file size limit, damaged caches, archives and checkpoints, Ctrl-C at start-up and in the
data decode, a time limit, wrong numbers. Every fault is the real one (a signal to a real
process, a small tmpfs filled up, RLIMIT_FSIZE, damaged bytes), and no check depends on the
machine's speed: waits poll for a state of the run, with a generous bound that only guards
against a hang.
"""
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import nnabla as nn

from faults import tmpfs
from test_cifar10_example import ROOT, _cache, jpeg_tar, official, run  # noqa: F401 (fixtures)
from test_imagenet_example import folder  # noqa: F401 (fixture)
from test_trainer_reliability import _assert_same, _params
from examples.cifar10 import data as cifar_data
from examples.cifar10 import train as cifar_train
from examples.common import trainer
from examples.common.checkpoint import SAVE_STAGES
from examples.common.timelimit import CheckpointTimer

#: 40 training images at batch 8: 5 iterations per epoch.
TINY = ['--batch-size', '8', '--val-batch-size', '7', '--no-progress']
MONITORS = ('train_loss.series.txt', 'train_error.series.txt', 'val_error.series.txt')
HANG_S = 300  # a bound for waits on a run's progress: only a hang reaches it


def _start(out, *argv, log=None, module='examples.cifar10.train', err=None):
    """A training process, its console going to ``log`` (a file: no pipe to fill up), its
    stderr to ``err`` if given."""
    log = open(log or f"{out}.log", 'w')
    return subprocess.Popen([sys.executable, '-m', module, '--output', str(out), *argv],
                            cwd=ROOT, stdout=log,
                            stderr=open(err, 'w') if err else subprocess.STDOUT,
                            preexec_fn=_default_sigint)


def _default_sigint():
    """Start the run with Ctrl-C's default disposition, as from a terminal: an ignored SIGINT
    is inherited through exec, and Python then leaves it ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _iteration(out):
    """The iteration of the run's checkpoint (None while there is none, or mid-rename)."""
    try:
        with open(os.path.join(out, 'checkpoint', 'state.json')) as f:
            return json.load(f)['iteration']
    except (OSError, ValueError, KeyError):
        return None


def _wait(condition, proc, what):
    limit = time.monotonic() + HANG_S
    while not condition():
        assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before {what}"
        assert time.monotonic() < limit, f"no {what} after {HANG_S} s"
        time.sleep(0.05)


def _lines(path):
    with open(path) as f:
        return f.read().splitlines()


def _monitors_equal(a, b):
    for name in MONITORS:
        assert _lines(a / name) == _lines(b / name), name
    iterations = [[line.split()[0] for line in _lines(d / 'time.timer.txt')] for d in (a, b)]
    assert iterations[0] == iterations[1]  # the times differ, the lines do not


# --- item 7 and 13: monitors of a resumed run, checkpoints between epoch ends -----------------

@pytest.mark.slow
def test_kill_9_between_epoch_ends_then_resume_ends_as_a_straight_run(tmp_path, official):
    """--checkpoint-interval 0 checkpoints after every iteration; a kill -9 at any moment loses
    at most the iteration in flight, and --resume ends bit-identical to a straight run, with the
    same monitor files (no line lost or doubled)."""
    long = ['--config', 'lutq4', '--epochs', '8', '--max-iter', '40']
    out = tmp_path / 'killed'
    proc = _start(out, '--data-dir', official[0], *TINY, *long, '--checkpoint-interval', '0')
    _wait(lambda: (_iteration(out) or 5) % 5 != 0, proc, 'a checkpoint between epoch ends')
    proc.kill()
    proc.wait()
    res = cifar_train.main(['--resume', str(out), '--no-progress'])
    resumed = _params()
    nn.clear_parameters()
    straight, _ = run(tmp_path, 'straight', *long, data_dir=official[0])
    _assert_same(_params(), resumed)
    assert res['history'] == straight['history']
    _monitors_equal(out, tmp_path / 'straight')
    assert (out.parent / 'killed.log').read_text().count('[nnabla][INFO]') == 0  # item 14


@pytest.mark.slow
def test_a_stop_in_the_middle_of_a_monitor_mean_continues_it(tmp_path, official):
    """Stopped after 3 of the 5 iterations a train_loss line averages: the resumed run's files
    are those of a straight run (the partial means travel in the checkpoint)."""
    run(tmp_path, 'split', '--config', 'float', data_dir=official[0], stop_at=3)
    cifar_train.main(['--resume', str(tmp_path / 'split'), '--no-progress'])
    run(tmp_path, 'straight', '--config', 'float', data_dir=official[0])
    _monitors_equal(tmp_path / 'split', tmp_path / 'straight')


@pytest.mark.slow
def test_extending_a_finished_run_keeps_its_monitor_lines(tmp_path, official):
    _, out = run(tmp_path, 'e', '--config', 'float', '--max-iter', '7', data_dir=official[0])
    before = {n: _lines(out / n) for n in MONITORS}
    cifar_train.main(['--resume', str(out), '--no-progress', '--max-iter', '10'])
    for name in MONITORS:
        after = _lines(out / name)
        assert after[:len(before[name])] == before[name], name
        iterations = [int(line.split()[0]) for line in after]
        assert iterations == sorted(set(iterations)) and iterations[-1] in (9, 10), name
    assert [ln.split()[0] for ln in _lines(out / 'val_error.series.txt')] == ['5', '7', '10']


@pytest.mark.slow
def test_time_limit_stops_with_a_checkpoint_and_resume_continues_exactly(tmp_path, official):
    """--time-limit far below one iteration: every start makes one iteration, checkpoints and
    exits with TIME_LIMIT_STATUS; the resumed pieces end as a straight run."""
    argv = ['--data-dir', official[0], '--output', str(tmp_path / 't'), '--config', 'lutq4',
            '--max-iter', '4', *TINY, '--time-limit', '1e-9']
    with pytest.raises(SystemExit) as e:
        cifar_train.main(argv)
    assert e.value.code == trainer.TIME_LIMIT_STATUS == 75
    for i in range(2, 5):
        assert _iteration(tmp_path / 't') == i - 1
        nn.clear_parameters()
        resume = ['--resume', str(tmp_path / 't'), '--no-progress', '--time-limit', '1e-9']
        if i < 4:
            with pytest.raises(SystemExit, match='^75$'):
                cifar_train.main(resume)
        else:
            res = cifar_train.main(resume)
    resumed = _params()
    nn.clear_parameters()
    straight, _ = run(tmp_path, 'straight', '--config', 'lutq4', '--max-iter', '4',
                      data_dir=official[0])
    _assert_same(_params(), resumed)
    assert res['history'] == straight['history']
    _monitors_equal(tmp_path / 't', tmp_path / 'straight')


def test_checkpoint_timer_decisions():
    now = [0.0]
    t = CheckpointTimer(interval=10, time_limit=100, start=0.0, clock=lambda: now[0])
    for what, took in (('step', 2.0), ('validation', 5.0), ('checkpoint', 3.0)):
        t.begin()
        now[0] += took
        t.end(what)
    assert not t.checkpoint_due() and (t.step_s, t.validation_s, t.checkpoint_s) == (2, 5, 3)
    now[0] = 19.9  # the checkpoint ended at 10
    assert not t.checkpoint_due()
    now[0] = 20.0
    assert t.checkpoint_due()
    now[0] = 94.9  # a step and a checkpoint still fit; with a validation they do not
    assert not t.out_of_time(False) and t.out_of_time(True)
    now[0] = 95.0
    assert t.out_of_time(False)
    assert not CheckpointTimer(10, None, clock=lambda: 1e9).out_of_time(True)


#: A process that saves checkpoints 1, 2 and 3 of a small solver and, in save 3, stops at the
#: stage named by argv[2] (it writes RUN_DIR.paused and waits to be killed).
_SAVER = """
import os, sys, time
import numpy as np, nnabla as nn, nnabla.solvers as S
from examples.common.checkpoint import parameters_h5, save_checkpoint
run_dir, pause_at = sys.argv[1:3]
w = nn.parameter.get_parameter_or_create('w', (64, 64), np.zeros((64, 64), np.float32))
solver = S.Momentum(0.1, 0.9)
solver.set_parameters({'w': w})
def stage(name):
    if name == pause_at and it == 3:
        open(run_dir + '.paused', 'w').close()
        time.sleep(3600)
for it in (1, 2, 3):
    w.g = np.full((64, 64), it, np.float32)
    solver.update()
    save_checkpoint(run_dir, parameters_h5(), solver.save_states, {'iteration': it}, stage)
"""


@pytest.mark.parametrize('stage', SAVE_STAGES + ('after the save',))
def test_kill_9_at_any_stage_of_a_save_leaves_a_whole_checkpoint(tmp_path, stage):
    """A real process killed by SIGKILL while it saves checkpoint 3 at each stage of the save:
    a whole checkpoint was on disk at that instant, and the run resumes from 2 (from 3 once it
    is in place); after a save the folder holds it and the one before it, both whole."""
    from examples.common.checkpoint import complete_checkpoint, load_state, recover_checkpoint
    out = tmp_path / 'run'
    out.mkdir()
    proc = subprocess.Popen([sys.executable, '-c', _SAVER, str(out), stage], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / 'saver.log', 'w'))

    def whole():
        return {c: load_state(out / c)['iteration'] for c in ('checkpoint', 'checkpoint.old')
                if complete_checkpoint(out / c)}
    if stage in SAVE_STAGES:
        _wait(lambda: (tmp_path / 'run.paused').exists(), proc, f"the stage {stage!r}")
        seen = whole()
        proc.kill()
    assert proc.wait(HANG_S) in (0, -signal.SIGKILL), (tmp_path / 'saver.log').read_text()
    want = {'moved to old': {'checkpoint.old': 2},
            'in place': {'checkpoint': 3, 'checkpoint.old': 2},
            'after the save': {'checkpoint': 3, 'checkpoint.old': 2}}.get(stage,
                                                                           {'checkpoint': 2})
    if stage in SAVE_STAGES:
        assert seen == want  # the instant the process was killed
    assert whole() == want
    assert recover_checkpoint(str(out))
    assert load_state(out / 'checkpoint')['iteration'] == max(want.values())


# --- item 8: one owner per run folder ------------------------------------------------------

def test_a_second_writer_is_refused_and_kill_9_frees_the_folder(tmp_path, official):
    out = tmp_path / 'owned'
    proc = _start(out, '--data-dir', official[0], *TINY, '--config', 'float', '--epochs', '1000')
    _wait(lambda: _iteration(out) is not None, proc, 'a first checkpoint')
    try:
        for argv in (['--data-dir', official[0], '--output', str(out), '--config', 'float'],
                     ['--resume', str(out)]):
            with pytest.raises(SystemExit, match=f"in use by another process \\(pid {proc.pid}"
                                                 r" on .*choose another --output$"):
                cifar_train.main(argv + ['--no-progress'])
        assert proc.poll() is None  # the owner trains on
    finally:
        proc.kill()
        proc.wait()
    it = _iteration(out)
    res = cifar_train.main(['--resume', str(out), '--no-progress', '--max-iter', str(it + 1)])
    assert res['schedule']['iterations'] == it + 1
    assert not (out / 'run.lock').exists()  # removed by the owner that ended normally


# --- item 9: a full disk, the file size limit ---------------------------------------------

def _resume_cmd(out):
    return [sys.executable, '-m', 'examples.cifar10.train', '--resume', str(out), '--no-progress',
            '--checkpoint-interval', '0']


def _assert_clean_failure(r, out, before, reason):
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert lines[0].startswith(f"error: cannot write to {out} ({reason})"), lines[0]
    assert 'the checkpoint of iteration 2 is intact' in lines[0] and '--resume' in lines[0]
    assert not [f for f in os.listdir(out) if f.startswith('tmp') or f.endswith('.tmp')]
    assert {f: (out / 'checkpoint' / f).read_bytes() for f in before} == before


@pytest.mark.slow
@pytest.mark.parametrize('free_kib', [300, 2600])  # fails in params.h5 / in solver.h5
def test_a_full_disk_ends_the_run_with_one_line_and_keeps_the_checkpoint(tmp_path, official,
                                                                        free_kib):
    _, done = run(tmp_path, 'r', '--config', 'lutq4', data_dir=official[0], stop_at=2)
    with tmpfs(tmp_path / 'disk', size='20m') as disk:  # two checkpoints and the final files
        out = shutil.copytree(done, os.path.join(disk, 'r'))
        before = {f: (done / 'checkpoint' / f).read_bytes() for f in os.listdir(done /
                                                                               'checkpoint')}
        st = os.statvfs(disk)
        with open(os.path.join(disk, 'filler'), 'wb') as f:
            f.write(b'\0' * (st.f_bavail * st.f_frsize - free_kib * 1024))
        r = subprocess.run(_resume_cmd(out), cwd=ROOT, capture_output=True, text=True)
        _assert_clean_failure(r, type(done)(out), before, 'No space left on device')
        assert 'free space' in r.stderr
        os.remove(os.path.join(disk, 'filler'))
        res = cifar_train.main(['--resume', out, '--no-progress'])
        assert res['history'][-1]['iteration'] == 10


def test_a_file_size_limit_ends_the_run_with_one_line(tmp_path, official):
    _, out = run(tmp_path, 'r', '--config', 'lutq4', data_dir=official[0], stop_at=2)
    before = {f: (out / 'checkpoint' / f).read_bytes() for f in os.listdir(out / 'checkpoint')}
    r = subprocess.run(_resume_cmd(out), cwd=ROOT, capture_output=True, text=True,
                       preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE,
                                                             (2 << 20, 2 << 20)))
    _assert_clean_failure(r, out, before, 'File too large')
    assert 'ulimit -f' in r.stderr


# --- item 10: damaged caches and archives ------------------------------------------------

@pytest.mark.parametrize('damage', ['truncated', 'empty', 'garbage', 'flipped'])
def test_a_damaged_cache_file_is_decoded_again_and_replaced(tmp_path, official, damage):
    want = cifar_data.load_arrays(official[0], progress=False)
    [name] = os.listdir(tmp_path / 'cache')
    path = tmp_path / 'cache' / name
    raw = path.read_bytes()
    path.write_bytes({'truncated': raw[:len(raw) // 2], 'empty': b'', 'garbage': os.urandom(999),
                      'flipped': raw[:200] + bytes(b ^ 0xFF for b in raw[200:4000])
                      + raw[4000:]}[damage])
    got = cifar_data.load_arrays(official[0], progress=False)
    with np.load(path) as again:  # replaced by a whole file
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
            np.testing.assert_array_equal(again[k], want[k])


def test_a_read_only_cache_folder_is_found_before_the_decode(tmp_path, official, monkeypatch,
                                                            capsys):
    seen = []
    real = cifar_data._read_official
    monkeypatch.setattr(cifar_data, '_read_official',
                        lambda source: seen.append(capsys.readouterr().err) or real(source))
    with tmpfs(tmp_path / 'ro', readonly=True) as ro:
        monkeypatch.setenv('NNABLA_LUTQ_CACHE', os.path.join(ro, 'cache'))
        a = cifar_data.load_arrays(official[0], progress=False)
    assert len(a['x_train']) == 40
    assert len(seen) == 1 and seen[0].startswith('warning: the cache folder')
    assert 'NNABLA_LUTQ_CACHE' in seen[0] and len(seen[0].strip().splitlines()) == 1


@pytest.mark.parametrize('layout', ['official', 'jpeg'])
def test_a_truncated_archive_is_a_one_line_error(tmp_path, official, jpeg_tar, layout):
    folder = official[0] if layout == 'official' else jpeg_tar
    [name] = os.listdir(folder)
    cut = tmp_path / 'cut'
    cut.mkdir()
    raw = open(os.path.join(folder, name), 'rb').read()
    (cut / name).write_bytes(raw[:len(raw) // 2])
    with pytest.raises(SystemExit) as e:
        run(tmp_path, 'x', '--config', 'float', data_dir=str(cut))
    message = str(e.value)
    assert message.startswith(f"error: {cut / name}: ") and '\n' not in message
    assert 'again' in message
    assert not (tmp_path / 'x').exists()


# --- item 11: wrong inputs, damaged checkpoints, Ctrl-C outside the training loop ------------

def test_wrong_numbers_are_one_line_errors_and_create_nothing(tmp_path, official):
    cases = [(['--config', 'lutq2-pow2', '--pow2-range', '3', '1'], 'MIN is larger than MAX'),
             (['--config', 'lutq2-pow2', '--pow2-range', '0', '0'],
              r'offers 2 values .*fits 4; widen it to at least 2 exponents'),
             (['--config', 'lutq4-pow2-prune50', '--pow2-range', '-1', '0'], 'fits 15'),
             (['--seed', '-1'], '--seed -1: give an integer from 0 to 2147483647'),
             (['--seed', '99999999999'], '--seed 99999999999: give an integer'),
             (['--config', 'lutq2', '--solver', 'lc', '--lc-mu0', 'inf'],
              '--lc-mu0 inf: give a finite number'),
             (['--lr', 'nan'], '--lr nan: give a finite number'),
             (['--checkpoint-interval', '-1'], '--checkpoint-interval -1.0 is out of range'),
             (['--time-limit', '0'], '--time-limit 0.0 is out of range'),
             (['--val-images', '21'], '--val-images 21: the validation set has 20 images')]
    for extra, message in cases:
        with pytest.raises(SystemExit, match='^error: .*' + message):
            run(tmp_path, 'x', *extra, data_dir=official[0])
        assert not (tmp_path / 'x').exists(), extra
    res, _ = run(tmp_path, 'k2', '--config', 'lutq1-pow2', '--pow2-range', '0', '0',
                 '--max-iter', '1', data_dir=official[0])  # MIN == MAX: 2 values, enough for K=2
    assert list(res['layers']['pow2_range']) == [0, 0]


def test_init_with_another_models_nnp_is_a_one_line_error(tmp_path, official):
    from examples.digits.demo import train as digits_train
    digits_train('float', 1, str(tmp_path / 'digits'), progress=False)
    for config in ('float', 'lutq4'):
        nn.clear_parameters()
        with pytest.raises(SystemExit, match='^error: --init .*: its parameters do not fit this '
                                             'model .*give the model.nnp of a float run'):
            run(tmp_path, 'x', '--config', config, '--init',
                str(tmp_path / 'digits' / 'model.nnp'), data_dir=official[0])
        assert not (tmp_path / 'x').exists()


def _cut(path):
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) // 3])


@pytest.mark.slow
def test_a_damaged_checkpoint_falls_back_to_a_whole_old_one_or_is_refused(tmp_path, official,
                                                                         capsys):
    straight, _ = run(tmp_path, 'straight', '--config', 'lutq4', data_dir=official[0])
    want = _params()
    nn.clear_parameters()
    _, out = run(tmp_path, 'r', '--config', 'lutq4', data_dir=official[0], stop_at=3)
    shutil.copytree(out / 'checkpoint', out / 'checkpoint.old')
    _cut(out / 'checkpoint' / 'params.h5')
    capsys.readouterr()
    res = cifar_train.main(['--resume', str(out), '--no-progress'])
    assert 'params.h5 is truncated' in capsys.readouterr().out
    _assert_same(_params(), want)
    assert res['history'] == straight['history']
    _, out = run(tmp_path, 'r2', '--config', 'lutq4', data_dir=official[0], stop_at=3)
    ck = out / 'checkpoint'
    raw = (ck / 'solver.h5').read_bytes()
    half = len(raw) // 2  # same size, other bytes
    (ck / 'solver.h5').write_bytes(raw[:half] + bytes(b ^ 0xFF for b in raw[half:half + 64])
                                   + raw[half + 64:])
    with pytest.raises(SystemExit, match=r'no complete checkpoint there \(checkpoint: solver.h5 '
                                         'is damaged'):
        cifar_train.main(['--resume', str(out), '--no-progress'])
    state = json.loads((ck / 'state.json').read_text())
    del state['files']  # a checkpoint of an older version: no digests, the .h5 must load
    (ck / 'state.json').write_text(json.dumps(state))
    _cut(ck / 'params.h5')
    with pytest.raises(SystemExit, match=r'\(checkpoint: params.h5 cannot be read'):
        cifar_train.main(['--resume', str(out), '--no-progress'])


def _assert_interrupted(proc, out, text, sig=signal.SIGINT, console=None):
    """The run ended with the status of ``sig``, one line on its console (or the file
    ``console``), and no run folder."""
    proc.wait(HANG_S)
    console = open(console or f"{out}.log").read()
    assert proc.returncode == 128 + sig, console
    line = f"train.py: {text}" if sig == signal.SIGINT else text  # SIGINT: console.py's line
    assert console.strip().splitlines() == [line], console
    assert not out.exists()


#: What a run stopped before its training loop prints (train.py, or the trainer for SIGTERM).
BEFORE = {signal.SIGINT: 'interrupted (Ctrl-C) before training started; nothing was changed',
          signal.SIGTERM: 'terminated (SIGTERM) before training started; nothing was changed'}


def test_ctrl_c_during_the_imports_is_one_line(tmp_path, official, monkeypatch):
    """A real SIGINT, sent by the process to itself when it starts importing nnabla."""
    hook = tmp_path / 'hook'
    hook.mkdir()
    (hook / 'sitecustomize.py').write_text(
        "import os, signal, sys\n"
        "class Finder:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'nnabla':\n"
        "            sys.meta_path.remove(self)\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "sys.meta_path.insert(0, Finder())\n")
    monkeypatch.setenv('PYTHONPATH', str(hook))
    out = tmp_path / 'r'
    proc = _start(out, '--data-dir', official[0], *TINY)
    _assert_interrupted(proc, out, 'interrupted (Ctrl-C) before training started; nothing was '
                                   'changed')


def _reader_of(fifos, proc):
    """A writing end of whichever pipe the process opened for reading (it waits for data)."""
    fd = []

    def opened():
        for p in fifos:
            try:
                fd.append(os.open(p, os.O_WRONLY | os.O_NONBLOCK))  # ENXIO: no reader yet
                return True
            except OSError:
                pass
        return False
    _wait(opened, proc, 'the decode')
    return fd[0]


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_the_image_decode_is_one_line(tmp_path, sig):
    """The decode blocks reading an image that is a pipe; the signal arrives while it waits, in
    the run folder the run has made (it holds the run's lock): the folder goes."""
    tree = tmp_path / 'tree'
    fifos = [tree / split / 'cat' / '0.png' for split in ('train', 'test')]
    for p in fifos:
        p.parent.mkdir(parents=True)
        os.mkfifo(p)
    out = tmp_path / 'r'
    proc = _start(out, '--data-dir', str(tree), *TINY)
    fd = _reader_of(fifos, proc)
    assert (out / 'run.lock').exists()
    proc.send_signal(sig)
    try:
        _assert_interrupted(proc, out, BEFORE[sig], sig)
    finally:
        os.close(fd)
    assert os.listdir(tmp_path / 'cache') == []  # no half-written cache file


#: sitecustomize.py that sends the process $LUTQ_SIGNAL when the trainer calls $LUTQ_PHASE (a
#: function or class of examples.common.trainer): a real signal at that point of a real run.
_PHASE_HOOK = """
import importlib.machinery, os, signal, sys
PHASE, SIG = os.environ['LUTQ_PHASE'], getattr(signal, os.environ['LUTQ_SIGNAL'])
class Finder:
    def find_spec(self, name, path=None, target=None):
        if name != 'examples.common.trainer':
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        load = spec.loader.exec_module
        def exec_module(module):
            load(module)
            real = getattr(module, PHASE)
            def phase(*a, **k):
                os.kill(os.getpid(), SIG)
                return real(*a, **k)
            setattr(module, PHASE, phase)
        spec.loader.exec_module = exec_module
        return spec
sys.meta_path.insert(0, Finder())
"""


def _signal_at(tmp_path, monkeypatch, phase, sig):
    hook = tmp_path / 'hook'
    hook.mkdir(exist_ok=True)
    (hook / 'sitecustomize.py').write_text(_PHASE_HOOK)
    monkeypatch.setenv('PYTHONPATH', str(hook))
    monkeypatch.setenv('LUTQ_PHASE', phase)
    monkeypatch.setenv('LUTQ_SIGNAL', signal.Signals(sig).name)


@pytest.mark.parametrize('phase, sig', [
    ('_load_data', signal.SIGTERM),  # the folder holds the lock only
    ('_Loop', signal.SIGTERM),  # args.json written
    ('CheckpointTimer', signal.SIGTERM),  # args.json and the monitor files written
    ('CheckpointTimer', signal.SIGINT)])
def test_a_signal_before_the_training_loop_removes_the_new_run(tmp_path, official, monkeypatch,
                                                              phase, sig):
    _signal_at(tmp_path, monkeypatch, phase, sig)
    out = tmp_path / 'r'
    proc = _start(out, '--data-dir', official[0], *TINY, '--config', 'float', '--max-iter', '2',
                  err=tmp_path / 'stderr')
    _assert_interrupted(proc, out, BEFORE[sig], sig, console=tmp_path / 'stderr')


def test_a_signal_before_the_loop_keeps_an_existing_folder_as_it_was(tmp_path, official,
                                                                     monkeypatch):
    out = tmp_path / 'r'
    out.mkdir()
    (out / 'notes.txt').write_text('mine')
    _signal_at(tmp_path, monkeypatch, 'CheckpointTimer', signal.SIGTERM)
    proc = _start(out, '--data-dir', official[0], *TINY, '--config', 'float', '--max-iter', '2')
    assert proc.wait(HANG_S) == 143
    assert os.listdir(out) == ['notes.txt'] and (out / 'notes.txt').read_text() == 'mine'


@pytest.mark.parametrize('phase, sig', [('_Loop', signal.SIGTERM), ('_finish', signal.SIGINT)])
def test_a_signal_outside_the_loop_of_a_run_with_a_checkpoint_keeps_it(tmp_path, official,
                                                                       monkeypatch, phase, sig):
    """Resuming (before the loop) or writing the final files (after it): one line that says how
    to continue, the status of the signal, the checkpoint unchanged; --resume then finishes."""
    out = tmp_path / 'r'
    argv = ['--output', str(out), '--data-dir', official[0], *TINY, '--config', 'float',
            '--max-iter', '2']
    before = None
    if phase == '_Loop':
        run(tmp_path, 'r', '--config', 'float', '--max-iter', '2', data_dir=official[0],
            stop_at=1)
        before = {f: (out / 'checkpoint' / f).read_bytes() for f in os.listdir(out /
                                                                               'checkpoint')}
        argv = ['--resume', str(out), '--no-progress']
    _signal_at(tmp_path, monkeypatch, phase, sig)
    proc = subprocess.Popen([sys.executable, '-m', 'examples.cifar10.train', *argv], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)
    stderr = proc.communicate(timeout=HANG_S)[1]
    assert proc.returncode == 128 + sig, stderr
    what = 'interrupted (Ctrl-C)' if sig == signal.SIGINT else 'terminated (SIGTERM)'
    prefix = 'train.py: ' if sig == signal.SIGINT else ''
    assert stderr.strip().splitlines() == [
        f"{prefix}{what} outside the training loop; the run's checkpoint is whole: continue "
        f"with --resume {out}"]
    assert not (out / 'run.lock').exists() and not (out / 'results.json').exists()
    if before is not None:
        assert {f: (out / 'checkpoint' / f).read_bytes() for f in before} == before
    nn.clear_parameters()
    res = cifar_train.main(['--resume', str(out), '--no-progress'])
    assert res['history'][-1]['iteration'] == 2


# --- item 12: decode workers die with the ImageNet run ---------------------------------------

def _children(pid):
    """Processes whose parent is ``pid``."""
    out = []
    for d in os.listdir('/proc'):
        try:
            with open(f'/proc/{d}/stat') as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat[stat.rindex(')') + 2:].split()[1]) == pid:
            out.append(int(d))
    return out


def _alive(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(')') + 2] != 'Z'  # a zombie has ended


def _until(condition, what):
    limit = time.monotonic() + HANG_S
    while not condition():
        assert time.monotonic() < limit, f"still {what} after {HANG_S} s"
        time.sleep(0.05)


def test_kill_9_of_an_imagenet_run_ends_its_workers_and_frees_shared_memory(tmp_path, folder):
    out = tmp_path / 'run'
    proc = _start(out, '--data-dir', str(folder), '--arch', 'resnet18', '--image-size', '32',
                  '--epochs', '1000', '--batch-size', '4', '--val-batch-size', '4',
                  '--workers', '2', '--no-progress', module='examples.imagenet.train')
    _wait(lambda: _iteration(out) is not None and len(_children(proc.pid)) >= 3, proc,
          'a checkpoint with two decode workers and the shared-memory tracker')
    kids = _children(proc.pid)
    proc.kill()
    proc.wait()
    _until(lambda: not any(_alive(k) for k in kids), 'decode workers alive')
    _until(lambda: not [f for f in os.listdir('/dev/shm') if f.startswith(f'lutq{proc.pid}_')],
           'shared memory left')
    assert open(f"{out}.log").read().count('[nnabla][INFO]') == 0  # item 14


def _worker_then_wait(parent, ready):
    from examples.imagenet.data import _worker_start
    _worker_start(parent)
    ready.set()
    time.sleep(HANG_S)


def test_a_decode_worker_ends_on_sigterm_and_leaves_ctrl_c_to_the_trainer():
    """Forked while the trainer's SIGTERM handler only sets a flag, a worker still ends on
    SIGTERM; a Ctrl-C (SIGINT to the whole process group) does not end it."""
    import multiprocessing
    ctx = multiprocessing.get_context('fork')
    ready = ctx.Event()
    old = signal.signal(signal.SIGTERM, lambda *a: None)  # as the trainer's, inherited
    try:
        p = ctx.Process(target=_worker_then_wait, args=(os.getpid(), ready))
        p.start()
    finally:
        signal.signal(signal.SIGTERM, old)
    assert ready.wait(HANG_S)
    os.kill(p.pid, signal.SIGINT)
    os.kill(p.pid, signal.SIGTERM)
    p.join(HANG_S)
    assert p.exitcode == -signal.SIGTERM


# --- item 14: the demo's console, the command line -----------------------------------------

def test_an_interrupted_demo_prints_one_line_and_a_second_demo_leaves_it_alone(tmp_path):
    from examples.digits import demo
    out = tmp_path / 'demo'
    log = open(tmp_path / 'demo.log', 'w')
    proc = subprocess.Popen([sys.executable, '-m', 'examples.digits.demo', '--output', str(out),
                             '--epochs', '1000', '--no-progress'], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT)
    _wait(lambda: _iteration(out / 'float') is not None, proc, "the float run's checkpoint")
    with pytest.raises(SystemExit, match=r'^error: --output .*: the run folder is in use by '
                                         f'another process \\(pid {proc.pid} '):
        demo.main(['--output', str(out), '--epochs', '1', '--no-progress'])
    assert _iteration(out / 'float') is not None and proc.poll() is None
    proc.send_signal(signal.SIGINT)
    assert proc.wait(HANG_S) == 130
    lines = (tmp_path / 'demo.log').read_text().strip().splitlines()
    assert lines[0].startswith('digits: ') and lines[1:] == [
        'demo: interrupted while training float; run it again to start over'], lines


def test_pack_refuses_an_output_name_that_info_refuses(tmp_path, rng, capsys):
    from test_deployment import _exported
    from nnabla_lutq.cli.main import main as cli
    _, _, model = _exported(tmp_path, rng)
    for name in ('out.bin', 'out', 'out.nnp'):
        assert cli(['info', str(tmp_path / name)]) == 1  # info refuses these names
        capsys.readouterr()
        assert cli(['pack', str(model), str(tmp_path / name)]) == 1
        assert capsys.readouterr().err == (f"nnabla-lutq: error: {tmp_path / name}: the file name "
                                           "must end with .lutq\n")
        assert not (tmp_path / name).exists()
    assert cli(['pack', str(model), str(tmp_path / 'out.lutq')]) == 0
    assert cli(['info', str(tmp_path / 'out.lutq')]) == 0


def test_plot_refuses_a_resolution_that_would_fill_the_memory(tmp_path, capsys):
    from nnabla_lutq.cli.main import main as cli
    with pytest.raises(SystemExit) as e:
        cli(['plot', str(tmp_path / 'm.nnp'), '-o', str(tmp_path / 'p.png'), '--dpi', '20000'])
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        'argument --dpi: expected an integer from 1 to 1200, got 20000')
    assert os.listdir(tmp_path) == []
