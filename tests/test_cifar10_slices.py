"""The CIFAR-10 slice runner on tiny generated data in the CPU context: deadline, resume, skip,
failures, the paper160 float dependency, records, status, the trip back (pack/unpack)."""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from examples.cifar10 import reproduce, slices
import test_cifar10_example as example

# the example's fixtures: a tiny CIFAR-10 in the official layout, and a private data cache
official, _cache = example.official, example._cache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--batch-size', '8', '--val-batch-size', '7']  # 40 training images: 5 steps per epoch
RECORD_KEYS = {'recipe', 'recipe_flags', 'configs', 'parallel', 'deadline_s', 'context', 'start',
               'end', 'wall_s', 'prepare_s', 'host', 'gpu', 'images', 'images_per_s', 'runs',
               'slice', 'failed'}
RUN_KEYS = {'config', 'run', 'action', 'status', 'argv', 'iteration_before', 'epoch_before',
            'iteration_after', 'epoch_after', 'target_epochs', 'exit', 'started_s', 'ended_s',
            'wall_s', 'images', 'images_per_s', 'train_images_per_s'}


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


def _rounded_rate_ok(rate, images, wall_s):
    """``rate`` is ``round(images / wall, 2)`` where ``wall_s = round(wall, 3)``."""
    return images / (wall_s + 5e-4) - 0.005 - 1e-9 <= rate <= \
        images / max(wall_s - 5e-4, 1e-9) + 0.005 + 1e-9


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
        assert (r['action'], r['status'], r['exit'], r['signal_sent']) == \
            ('new', 'stopped', 130, 'SIGINT'), (c, out)
        st = state(run)
        assert 0 < st['iteration'] == r['iteration_after'] < 2500
        assert r['epoch_after'] == pytest.approx(st['iteration'] / 5)
        assert r['target_epochs'] == 500 and r['target_iterations'] == 2500
        assert r['images'] == 8 * st['iteration']
        assert _rounded_rate_ok(r['images_per_s'], r['images'], r['wall_s'])
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
    # status: float finished, lutq4 at its checkpoint's epoch; both with the slices they ran in
    lines = []
    tables = slices.status(str(runs), out=lines.append)
    rows = {row['config']: row for row in tables['cosine30']}
    assert rows['float']['state'] == 'finished' and rows['float']['slices'] == 2
    assert rows['float']['epoch'] == pytest.approx(target / 5)
    assert rows['float']['target_epochs'] == pytest.approx(target / 5)
    assert rows['float']['last_val_error'] == res['final_val_error']
    assert rows['float']['best_val_error'] == res['best_val_error']
    assert rows['lutq4']['state'] == 'checkpoint' and rows['lutq4']['slices'] == 1
    assert rows['lutq4']['epoch'] == pytest.approx(first['lutq4']['iteration_after'] / 5)
    assert rows['lutq4']['target_epochs'] == 500
    text = '\n'.join(lines)
    assert '2 slices' in text
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
    # one complete record per slice
    records = [json.loads(line) for line in open(runs / 'slices.jsonl')]
    assert [r['slice'] for r in records] == [1, 2, 3]
    for r in records:
        assert RECORD_KEYS <= set(r) and r['host'] == socket.gethostname()
        assert r['context'] == 'cpu' and r['recipe'] == 'cosine30' and r['end'] >= r['start']
        for run in r['runs']:
            assert RUN_KEYS <= set(run)
        ran = [run for run in r['runs'] if run['started_s'] is not None]
        assert r['images'] == sum(run['images'] for run in ran)
        assert all(0 <= run['started_s'] <= run['ended_s'] <= r['wall_s'] for run in ran)
    assert records[0]['parallel'] == 2 and records[0]['deadline_s'] == 10
    assert records[0]['images'] == 8 * (first['float']['iteration_after'] +
                                        first['lutq4']['iteration_after'])
    assert records[0]['images_per_s'] > 0


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
    assert rows['lutq4']['state'] == 'failed (slice 2)' and rows['lutq2']['state'] == 'finished'


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


def test_pack_and_unpack_bring_the_changed_runs_back(tmp_path):
    device, home = tmp_path / 'device', tmp_path / 'home'
    _fake_run(device / 'r' / 'float', finished=True)
    _fake_run(device / 'r' / 'lutq4', finished=False, size=3 << 20)  # random: 6 MiB packed
    _fake_run(device / 'r' / 'lutq2', finished=False)  # not in the last slice: stays home
    old = json.dumps({'recipe': 'r', 'runs': []})
    last = json.dumps({'recipe': 'r', 'runs': [{'run': 'r/float', 'started_s': 0.0},
                                               {'run': 'r/lutq4', 'started_s': 1.0}]})
    (device / 'slices.jsonl').write_text(old + '\n' + last + '\n')
    parts = slices.pack(str(device), str(tmp_path / 'out'), part_mib=2, max_parts=4)
    assert [os.path.basename(p) for p in parts] == [f'runs.tar.gz.part-0{i}' for i in range(4)]
    assert all(os.path.getsize(p) <= 2 << 20 for p in parts)
    with pytest.raises(slices.SliceError, match='more than 3 parts'):
        slices.pack(str(device), str(tmp_path / 'out2'), part_mib=2, max_parts=3)
    # home: an older copy of lutq4 (a stale file), the first record only
    (home / 'r' / 'lutq4').mkdir(parents=True)
    (home / 'r' / 'lutq4' / 'stale.txt').write_text('old')
    (home / 'slices.jsonl').write_text(old + '\n')
    with pytest.raises(slices.SliceError, match='whole archive'):
        short = tmp_path / 'short'
        short.mkdir()
        (short / 'runs.tar.gz.part-00').write_bytes(open(parts[0], 'rb').read())
        slices.unpack(str(home), str(short))
    assert sorted(slices.unpack(str(home), str(tmp_path / 'out'))) == ['r/float', 'r/lutq4']
    assert not (home / 'r' / 'lutq4' / 'stale.txt').exists()
    assert (home / 'r' / 'lutq4' / 'checkpoint' / 'solver.h5').read_bytes() == \
        (device / 'r' / 'lutq4' / 'checkpoint' / 'solver.h5').read_bytes()
    assert not (home / 'r' / 'lutq4' / 'checkpoint.old').exists()
    assert (home / 'r' / 'float' / 'results.json').exists()
    assert not (home / 'r' / 'float' / 'checkpoint').exists()  # finished: not needed
    assert not (home / 'r' / 'lutq2').exists()
    assert (home / 'slices.jsonl').read_text().splitlines() == [old, last]
    slices.unpack(str(home), str(tmp_path / 'out'))  # again: the records are not doubled
    assert len((home / 'slices.jsonl').read_text().splitlines()) == 2
    assert not [p for p in os.listdir(home) if p.startswith('.unpack')]


def test_device_script_runs_a_slice_and_packs_it(tmp_path, official):
    """benchmarks/gpu_cifar_slice.sh with this Python as the kit and the CPU context."""
    env_sh = tmp_path / 'env.sh'
    env_sh.write_text(f"export PY={sys.executable} PYTHONPATH={ROOT}\n")
    runs, out = tmp_path / 'runs', tmp_path / 'out'
    env = dict(os.environ, KIT_ENV=str(env_sh), OUT=str(out), RUNS=str(runs),
               RECIPE='cosine30', CONFIGS='float', PARALLEL='1', DEADLINE_S=str(NEVER_S),
               CONTEXT='cpu', DATA=os.path.join(official[0], 'cifar-10-python.tar.gz'),
               EXTRA=' '.join(TINY + ['--max-iter', '2']),
               PATH=os.pathsep.join(p for p in os.environ['PATH'].split(os.pathsep)
                                    if not os.path.exists(os.path.join(p, 'nvidia-smi'))))
    r = subprocess.run(['bash', os.path.join(ROOT, 'benchmarks', 'gpu_cifar_slice.sh')],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=2 * NEVER_S)
    assert r.returncode == 0, r.stdout + r.stderr
    log = (out / 'slice.log').read_text()
    assert 'float: finished at epoch 0.40/0.4' in log and 'slice rc=0' in log
    assert sorted(os.listdir(out)) == ['runs.tar.gz.part-00', 'slice.log']
    home = tmp_path / 'home'
    assert slices.unpack(str(home), str(out)) == ['cosine30/float']
    assert json.load(open(home / 'cosine30' / 'float' / 'results.json'))['schedule'][
        'iterations'] == 2
    assert json.loads((home / 'slices.jsonl').read_text())['runs'][0]['status'] == 'finished'
