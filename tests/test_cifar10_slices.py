# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The CIFAR-10 slice runner on tiny generated data in the CPU context: deadline, resume, skip,
failures, the paper160 float dependency, status, and moving run folders (pack/unpack)."""
import json
import os
import tarfile
import time

import pytest

from examples.cifar10 import reproduce, slices
import test_cifar10_example as example

# the example's fixtures: a tiny CIFAR-10 in the official layout, and a private data cache
official, _cache = example.official, example._cache

TINY = ['--batch-size', '8', '--val-batch-size', '7']  # 40 training images: 5 steps per epoch
RUN_KEYS = {'config', 'run', 'action', 'status', 'argv', 'exit', 'signal_sent', 'iteration_before',
            'iteration_after', 'target_iterations', 'started_s', 'ended_s', 'images_per_s'}


#: a deadline that a slice of these tiny runs never reaches (it only guards against a hang)
NEVER_S = 3600


def one_slice(runs, data, names, recipe='cosine30', deadline=NEVER_S, parallel=2, extra=()):
    lines = []
    rec = slices.run_slice(str(runs), recipe, names, deadline, parallel=parallel, context='cpu',
                           data_dir=data, extra=TINY + list(extra), log=lines.append)
    return rec, '\n'.join(lines)


def by_config(rec):
    return {r['config']: r for r in rec['runs']}


def state(run_dir):
    with open(os.path.join(run_dir, 'checkpoint', 'state.json')) as f:
        return json.load(f)


class _TrainingClock:
    """The slice runner's clock, for a deadline that falls while every run trains, whatever the
    machine's speed: it stands just before the deadline until each run has a checkpoint, then it
    is at least the deadline (it never goes back)."""

    def __init__(self, deadline_s, run_dirs):
        self.deadline_s, self.run_dirs = deadline_s, run_dirs
        self.t0 = None
        self.ready = False

    def time(self):
        now = time.time()
        if self.t0 is None:  # the runner's first reading is its start
            self.t0 = now
        self.ready = self.ready or all(os.path.isfile(os.path.join(d, 'checkpoint', 'state.json'))
                                       for d in self.run_dirs)
        if self.ready:
            return max(now, self.t0 + self.deadline_s)
        return min(now, self.t0 + self.deadline_s - 1e-3)

    def __getattr__(self, name):  # sleep, strftime, localtime: the real ones
        return getattr(time, name)


@pytest.mark.slow
def test_deadline_checkpoints_and_later_slices_resume_finish_and_skip(tmp_path, official,
                                                                     monkeypatch):
    runs = tmp_path / 'runs'
    data = official[0]
    # slice 1: a long schedule, stopped by the deadline with a checkpoint (once both train)
    monkeypatch.setattr(slices, 'time', _TrainingClock(10, [runs / 'cosine30' / c
                                                            for c in ('float', 'lutq4')]))
    rec, out = one_slice(runs, data, ['float', 'lutq4'], deadline=10, extra=['--epochs', '500'])
    monkeypatch.setattr(slices, 'time', time)
    assert 'deadline after' in out and 'SIGINT to float, lutq4' in out
    first = by_config(rec)
    for c, r in first.items():
        run = runs / 'cosine30' / c
        assert RUN_KEYS <= set(r)
        assert (r['action'], r['status'], r['exit'], r['signal_sent']) == \
            ('new', 'stopped', 130, 'SIGINT'), (c, out)
        st = state(run)
        assert 0 < st['iteration'] == r['iteration_after'] < 2500 and r['iteration_before'] == 0
        assert r['target_iterations'] == 2500
        assert r['images_per_s'] == pytest.approx(
            8 * st['iteration'] / (r['ended_s'] - r['started_s']))
        assert not (run / 'results.json').exists()
        assert 'SIGINT at iteration' in (run / 'train.log').read_text()
    # slice 2: float only, with a schedule that ends 3 iterations later: resumed and finished
    target = first['float']['iteration_after'] + 3
    rec2, out2 = one_slice(runs, data, ['float'], extra=['--epochs', '500', '--max-iter',
                                                         str(target)])
    r = by_config(rec2)['float']
    assert (r['action'], r['status'], r['exit']) == ('resume', 'finished', 0), out2
    assert (r['iteration_before'], r['iteration_after']) == (first['float']['iteration_after'],
                                                             target)
    res = json.load(open(runs / 'cosine30' / 'float' / 'results.json'))
    assert res['schedule']['iterations'] == target and res['schedule']['name'] == 'cosine'
    assert (res['schedule']['lr'], res['schedule']['weight_decay']) == (0.1, 5e-4)
    log = (runs / 'cosine30' / 'float' / 'train.log').read_text()
    assert f"resuming cosine30/float at iteration {first['float']['iteration_after']} of " \
        f"{target}" in log
    # status: float finished, lutq4 at its checkpoint's epoch
    lines = []
    tables = slices.status(str(runs), out=lines.append)
    rows = {row['config']: row for row in tables['cosine30']}
    assert list(rows) == ['float', 'lutq4']
    assert rows['float']['state'] == 'finished' and rows['float']['train_seconds'] > 0
    assert rows['float']['epoch'] == pytest.approx(target / 5)
    assert rows['float']['target_epochs'] == pytest.approx(target / 5)
    assert rows['float']['last_val_error'] == res['final_val_error']
    assert rows['float']['best_val_error'] == res['best_val_error']
    assert rows['lutq4']['state'] == 'checkpoint'
    assert rows['lutq4']['epoch'] == pytest.approx(first['lutq4']['iteration_after'] / 5)
    assert rows['lutq4']['target_epochs'] == 500
    text = '\n'.join(lines)
    assert f"{target / 5:8.2f} / {target / 5:<4g}" in text
    assert f"{first['lutq4']['iteration_after'] / 5:8.2f} / 500" in text
    # RESULTS.md: the finished run in the table, the unfinished one listed with its epoch
    md = tmp_path / 'RESULTS.md'
    reproduce.main(['--collect', str(runs), '--output', str(md)])
    report = md.read_text()
    assert f"| float | float | float BN | 7.4 | {100 * res['final_val_error']:.2f} |" in report
    assert '## Runs in progress' in report
    assert f"| cosine30/lutq4 | lutq4 | {first['lutq4']['iteration_after'] / 5:.2f} / 500 |" \
        in report
    # slice 3: float is skipped (unchanged), lutq4 resumes and finishes
    before = (runs / 'cosine30' / 'float' / 'results.json').read_bytes()
    target4 = first['lutq4']['iteration_after'] + 2
    rec3, out3 = one_slice(runs, data, ['float', 'lutq4'],
                           extra=['--epochs', '500', '--max-iter', str(target4)])
    third = by_config(rec3)
    assert (third['float']['action'], third['float']['status']) == ('skip', 'skipped')
    assert third['float']['started_s'] is None and third['float']['exit'] is None
    assert 'float: finished' in out3 and 'skipped' in out3
    assert (runs / 'cosine30' / 'float' / 'results.json').read_bytes() == before
    assert (third['lutq4']['action'], third['lutq4']['status']) == ('resume', 'finished')
    assert json.load(open(runs / 'cosine30' / 'lutq4' / 'results.json'))['schedule'][
        'iterations'] == target4
    assert rec3['failed'] == [] and 'float skipped, lutq4 finished' in out3


def test_a_failing_run_does_not_stop_the_others(tmp_path, official):
    runs = tmp_path / 'runs'
    broken = runs / 'cosine30' / 'lutq4' / 'checkpoint'
    broken.mkdir(parents=True)
    (broken / 'state.json').write_text('{}')  # a damaged checkpoint: the trainer refuses it
    rec, out = one_slice(runs, official[0], ['lutq4', 'lutq2'], parallel=1,
                         extra=['--max-iter', '3'])
    r = by_config(rec)
    assert (r['lutq4']['status'], r['lutq4']['exit']) == ('failed', 1)
    assert (r['lutq2']['status'], r['lutq2']['exit']) == ('finished', 0)  # started after it
    assert r['lutq2']['started_s'] >= r['lutq4']['ended_s']
    assert rec['failed'] == ['lutq4'] and 'FAILED: lutq4' in out
    assert 'last lines of' in out and 'already holds a run' in out  # the tail of its log
    assert json.load(open(runs / 'cosine30' / 'lutq2' / 'results.json'))['schedule'][
        'iterations'] == 3
    # the command line says so in its exit status; the finished run is kept
    argv = ['run', '--runs', str(runs), '--recipe', 'cosine30', '--configs', 'lutq4,lutq2',
            '--deadline-s', str(NEVER_S), '--data-dir', official[0], '--context', 'cpu', *TINY,
            '--max-iter', '3']
    assert slices.main(argv) == 1
    rows = {row['config']: row for row in slices.status(str(runs), out=lambda s: None)[
        'cosine30']}
    assert rows['lutq4']['state'] == 'no checkpoint' and rows['lutq2']['state'] == 'finished'


def test_paper160_quantized_runs_wait_for_float_then_start_from_it(tmp_path, official):
    runs = tmp_path / 'runs'
    rec, out = one_slice(runs, official[0], ['lutq2-pow2'], recipe='paper160',
                         extra=['--max-iter', '3'])
    assert 'lutq2-pow2: waits for paper160/float to finish' in out
    assert by_config(rec)['lutq2-pow2']['status'] == 'waiting'
    assert not (runs / 'paper160' / 'lutq2-pow2').exists()
    # float in the same slice: it runs first, the quantized run starts once it has finished
    rec, out = one_slice(runs, official[0], ['lutq2-pow2', 'float'], recipe='paper160',
                         extra=['--max-iter', '3'])
    r = by_config(rec)
    assert r['float']['status'] == r['lutq2-pow2']['status'] == 'finished', out
    assert r['lutq2-pow2']['started_s'] >= r['float']['ended_s']
    assert 'paper160/float has finished, lutq2-pow2 may start' in out
    q = json.load(open(runs / 'paper160' / 'lutq2-pow2' / 'args.json'))
    f = json.load(open(runs / 'paper160' / 'float' / 'args.json'))
    assert q['init'] == os.path.join('paper160', 'float', 'best.h5') and f['init'] is None
    assert (q['lr'], f['lr']) == (0.01, 0.1)
    for a in (q, f):
        assert (a['schedule'], a['epochs'], a['weight_decay'], a['momentum']) == \
            ('step', 160, 2e-4, 0.9)
    res = json.load(open(runs / 'paper160' / 'lutq2-pow2' / 'results.json'))
    assert res['schedule']['init'] == q['init'] and res['schedule']['lr'] == 0.01
    assert 'waits for float' not in '\n'.join(_status_lines(runs))


def _status_lines(runs):
    lines = []
    slices.status(str(runs), out=lines.append)
    return lines


def test_wrong_input_is_refused_before_anything_starts(tmp_path, official):
    runs = tmp_path / 'runs'
    for kwargs, message in (
            ({'recipe': 'paper999'}, "unknown recipe 'paper999'"),
            ({'names': ['float', 'lutq2-pow3']}, "unknown configuration 'lutq2-pow3'"),
            ({'names': ['float', 'float']}, 'names a configuration twice'),
            ({'parallel': 0}, '--parallel 0'),
            ({'extra': ['--output', 'x']}, '--output is set by the slice runner'),
            ({'extra': ['--lr', '-1']}, '--lr -1.0 is out of range'),
            ({'extra': ['--bogus']}, 'unrecognized arguments: --bogus')):
        args = {'recipe': 'cosine30', 'names': ['float'], 'parallel': 1, 'extra': [], **kwargs}
        with pytest.raises(slices.SliceError, match=message):
            one_slice(runs, official[0], args['names'], recipe=args['recipe'],
                      parallel=args['parallel'], extra=args['extra'])
    with pytest.raises(slices.SliceError, match='no such folder'):
        one_slice(runs, str(tmp_path / 'nodata'), ['float'])
    assert not runs.exists()
    with pytest.raises(SystemExit, match="error: unknown recipe 'x'"):
        slices.main(['run', '--runs', str(runs), '--recipe', 'x', '--configs', 'float',
                     '--deadline-s', '1'])


def _fake_run(folder, finished, size=0):
    (folder / 'checkpoint').mkdir(parents=True)
    for f in ('params.h5', 'solver.h5'):
        (folder / 'checkpoint' / f).write_bytes(os.urandom(size))
    (folder / 'checkpoint' / 'state.json').write_text(json.dumps(
        {'iteration': 10, 'epoch': 2.0, 'history': [{'iteration': 10, 'val_error': 0.5}],
         'best_val_error': 0.5}))
    (folder / 'checkpoint.old').mkdir()
    (folder / 'args.json').write_text(json.dumps({'epochs': 4, 'max_iter': None,
                                                  'batch_size': 8}))
    if finished:
        (folder / 'params.h5').write_bytes(b'p')
        (folder / 'results.json').write_text('{}')


def _archive_names(path):
    with tarfile.open(path) as tar:
        return sorted(tar.getnames())


def test_pack_and_unpack_move_run_folders(tmp_path):
    away, home = tmp_path / 'away', tmp_path / 'home'
    _fake_run(away / 'r' / 'float', finished=True)
    _fake_run(away / 'r' / 'lutq4', finished=False, size=3 << 20)  # random: 6 MiB packed
    _fake_run(away / 'r' / 'lutq2', finished=False)
    # all runs in one archive: no checkpoint of a finished run, no checkpoint.old anywhere
    (one,) = slices.pack(str(away), str(tmp_path / 'one'))
    assert os.path.basename(one) == 'runs.tar.gz'
    names = _archive_names(one)
    assert 'runs/r/float/results.json' in names and 'runs/r/lutq2/checkpoint/state.json' in names
    assert not [n for n in names if n.startswith('runs/r/float/checkpoint')
                or 'checkpoint.old' in n]
    # named runs, in parts of at most 2 MiB; a size limit refuses and writes nothing
    parts = slices.pack(str(away), str(tmp_path / 'out'), runs=['r/float', 'r/lutq4'],
                        part_mib=2)
    assert [os.path.basename(p) for p in parts] == [f'runs.tar.gz.part-0{i}' for i in range(4)]
    assert all(os.path.getsize(p) <= 2 << 20 for p in parts)
    with pytest.raises(slices.SliceError, match='more than --max-size 5 MiB'):
        slices.pack(str(away), str(tmp_path / 'big'), max_mib=5)
    assert os.listdir(tmp_path / 'big') == []
    with pytest.raises(slices.SliceError, match='no such run folder'):
        slices.pack(str(away), str(tmp_path / 'x'), runs=['r/lutq8'])
    # home: an older copy of lutq4 (a stale file); parts missing: refused, nothing changed
    (home / 'r' / 'lutq4').mkdir(parents=True)
    (home / 'r' / 'lutq4' / 'stale.txt').write_text('old')
    short = tmp_path / 'short'
    short.mkdir()
    (short / 'runs.tar.gz.part-00').write_bytes(open(parts[0], 'rb').read())
    with pytest.raises(slices.SliceError, match='not a whole archive'):
        slices.unpack(str(home), str(short))
    assert (home / 'r' / 'lutq4' / 'stale.txt').exists()
    assert slices.unpack(str(home), str(tmp_path / 'out')) == ['r/float', 'r/lutq4']
    assert not (home / 'r' / 'lutq4' / 'stale.txt').exists()
    assert (home / 'r' / 'lutq4' / 'checkpoint' / 'solver.h5').read_bytes() == \
        (away / 'r' / 'lutq4' / 'checkpoint' / 'solver.h5').read_bytes()
    assert not (home / 'r' / 'lutq4' / 'checkpoint.old').exists()
    assert (home / 'r' / 'float' / 'results.json').exists()
    assert not (home / 'r' / 'float' / 'checkpoint').exists()  # finished: not needed
    assert not (home / 'r' / 'lutq2').exists()
    # the single archive, named as a file, brings lutq2 too
    assert slices.unpack(str(home), one) == ['r/float', 'r/lutq2', 'r/lutq4']
    assert not [p for p in os.listdir(home) if p.startswith('.unpack')]
    with pytest.raises(slices.SliceError, match='no runs.tar.gz'):
        slices.unpack(str(home), str(tmp_path / 'big'))


def test_pack_and_unpack_command_line(tmp_path, capsys):
    away, home = tmp_path / 'away', tmp_path / 'home'
    _fake_run(away / 'r' / 'lutq4', finished=False, size=1 << 20)
    _fake_run(away / 'r' / 'lutq2', finished=False)
    assert slices.main(['pack', '--runs', str(away), '--output', str(tmp_path / 'out'),
                        '--part-size', '0.5', '--max-size', '4', 'r/lutq4']) == 0
    out = capsys.readouterr().out
    assert out.count('wrote ') == len(os.listdir(tmp_path / 'out')) >= 4
    assert slices.main(['unpack', '--runs', str(home), str(tmp_path / 'out')]) == 0
    assert f"updated {home / 'r' / 'lutq4'}" in capsys.readouterr().out
    assert os.listdir(home / 'r') == ['lutq4']
    with pytest.raises(SystemExit, match='more than --max-size 0.1 MiB'):
        slices.main(['pack', '--runs', str(away), '--output', str(tmp_path / 'o2'),
                     '--max-size', '0.1'])
    with pytest.raises(SystemExit):
        slices.main(['pack', '--runs', str(away), '--output', str(tmp_path / 'o3'), '--bogus'])
