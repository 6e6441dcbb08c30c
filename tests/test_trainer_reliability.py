# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Training runs survive what happens to real runs: signals, deaths between renames, a resume with
other flags, wrong inputs (each a one-line error), read-only output folders and quick runs."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import nnabla as nn

from faults import tmpfs
from test_cifar10_example import ROOT, _cache, jpeg_tar, official, run  # noqa: F401 (fixtures)
from examples.cifar10 import train as cifar_train
from examples.common import trainer

#: 40 training images at batch 8: 5 iterations per epoch; 40 iterations in all.
LONG = ('--epochs', '8', '--max-iter', '40')


def _params():
    return {k: v.d.copy() for k, v in nn.get_parameters(grad_only=False).items()}


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _results(out):
    with open(os.path.join(out, 'results.json')) as f:
        return json.load(f)


def _signal_mid_run(tmp_path, official, sig, *flags):
    """Send ``sig`` to a real training process while it trains (after its first monitor line);
    it exits 128+signum with a checkpoint at an iteration boundary in the middle of the run.

    Returns:
        int: the checkpoint's iteration.
    """
    argv = ['--data-dir', official[0], '--output', str(tmp_path / 'sig'), '--batch-size', '8',
            '--val-batch-size', '7', '--no-progress', *flags, *LONG]
    proc = subprocess.Popen([sys.executable, '-m', 'examples.cifar10.train', *argv], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    series = tmp_path / 'sig' / 'train_loss.series.txt'
    deadline = time.time() + 600  # a hang guard, not a speed assumption
    while (not series.exists() or not series.read_text().strip()) and proc.poll() is None \
            and time.time() < deadline:
        time.sleep(0.02)  # the first monitor line: 5 iterations done, the run is training
    assert proc.poll() is None, proc.communicate()[0]
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 128 + sig, output
    assert f"{signal.Signals(sig).name} at iteration" in output and 'Traceback' not in output
    with open(tmp_path / 'sig' / 'checkpoint' / 'state.json') as f:
        stopped = json.load(f)['iteration']
    assert 5 <= stopped < 40, output  # really stopped in the middle
    assert not (tmp_path / 'sig' / 'results.json').exists()
    return stopped


@pytest.mark.slow
def test_a_real_signal_mid_run_checkpoints_and_resume_is_bit_identical(tmp_path, official):
    """Ctrl-C (SIGINT) sent to a real training process while it trains: exit 130 with a
    checkpoint at an iteration boundary, from which --resume ends bit-identical to a straight run
    (batch-norm running statistics and quantized activations included): the parameters, the
    validation history and the monitor files. The one resume-exactness test of the trainer with
    a whole network; the other interruptions below check what is particular to them."""
    config = ['--config', 'lutq2-pow2-mlbn', '--act-bits', '8']
    _signal_mid_run(tmp_path, official, signal.SIGINT, *config)
    res = cifar_train.main(['--resume', str(tmp_path / 'sig'), '--no-progress'])
    resumed = _params()
    nn.clear_parameters()
    straight, _ = run(tmp_path, 'straight', *config, *LONG, data_dir=official[0])
    _assert_same(_params(), resumed)
    assert res['history'] == straight['history']
    assert res['final_val_error'] == straight['final_val_error']
    assert any('mean' in k for k in resumed)  # BN running statistics are part of the check
    from test_reliability_runs import _monitors_equal
    _monitors_equal(tmp_path / 'sig', tmp_path / 'straight')


@pytest.mark.slow
def test_sigterm_mid_run_checkpoints_like_ctrl_c(tmp_path, official):
    """SIGTERM (a scheduler's stop, ``timeout``): exit 143 with a checkpoint at an iteration
    boundary, through the same flag as Ctrl-C; --resume finishes the run."""
    stopped = _signal_mid_run(tmp_path, official, signal.SIGTERM, '--config', 'lutq4')
    res = cifar_train.main(['--resume', str(tmp_path / 'sig'), '--no-progress'])
    assert [h['iteration'] for h in res['history']] == list(range(5, 41, 5))
    assert stopped < res['schedule']['iterations'] == 40


@pytest.mark.slow
def test_ctrl_c_during_the_final_validation_leaves_a_resumable_run(tmp_path, official,
                                                                   monkeypatch):
    """SIGINT while the last validation runs: the validation completes, the checkpoint holds the
    whole history, and --resume writes the results (it used to die on an empty history)."""
    real = trainer._evaluate
    calls = []

    def evaluate_and_interrupt(*a, **k):
        calls.append(1)
        if len(calls) == 2:  # the final validation of a 2-epoch run
            os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **k)

    monkeypatch.setattr(trainer, '_evaluate', evaluate_and_interrupt)
    with pytest.raises(SystemExit) as e:
        run(tmp_path, 'r', '--config', 'lutq4', data_dir=official[0])
    assert e.value.code == 130
    with open(tmp_path / 'r' / 'checkpoint' / 'state.json') as f:
        state = json.load(f)
    assert state['iteration'] == 10 and [h['iteration'] for h in state['history']] == [5, 10]
    monkeypatch.setattr(trainer, '_evaluate', real)
    res = cifar_train.main(['--resume', str(tmp_path / 'r'), '--no-progress'])
    assert res['final_val_error'] == state['history'][-1]['val_error']
    assert (tmp_path / 'r' / 'model.nnp').exists()


@pytest.mark.slow
def test_a_checkpoint_written_without_its_final_validation_is_completed_on_resume(tmp_path,
                                                                                   official):
    """Older versions checkpointed an interrupted final validation with an empty history."""
    _, out = run(tmp_path, 'r', '--config', 'float', '--max-iter', '4', data_dir=official[0],
                 stop_at=4)
    state_file = out / 'checkpoint' / 'state.json'
    state = json.loads(state_file.read_text())
    assert state['iteration'] == 4
    state['history'], state['best_val_error'] = [], None
    state_file.write_text(json.dumps(state))
    res = cifar_train.main(['--resume', str(out), '--no-progress'])
    assert [h['iteration'] for h in res['history']] == [4]
    assert res['final_val_error'] == res['best_val_error']


@pytest.mark.slow
def test_a_death_between_the_checkpoint_renames_is_recovered(tmp_path, official):
    """Killed after ``checkpoint -> checkpoint.old`` and before ``checkpoint.tmp -> checkpoint``:
    --resume continues from checkpoint.old, bit-identically."""
    straight, _ = run(tmp_path, 'straight', '--config', 'lutq4', data_dir=official[0])
    want = _params()
    nn.clear_parameters()
    _, out = run(tmp_path, 'r', '--config', 'lutq4', data_dir=official[0], stop_at=3)
    os.replace(out / 'checkpoint', out / 'checkpoint.old')
    (out / 'checkpoint.tmp').mkdir()
    (out / 'checkpoint.tmp' / 'params.h5').write_bytes(b'half written')
    res = cifar_train.main(['--resume', str(out), '--no-progress'])
    _assert_same(_params(), want)
    assert res['history'] == straight['history']
    from examples.common.checkpoint import complete_checkpoint, load_state
    assert complete_checkpoint(out / 'checkpoint.old')  # the one before the last, kept
    assert load_state(out / 'checkpoint.old')['iteration'] == 5
    assert not (out / 'checkpoint.tmp').exists()


@pytest.mark.slow
def test_resume_applies_a_longer_run_and_refuses_other_changes(tmp_path, official, capsys):
    _, out = run(tmp_path, 'r', '--config', 'float', '--max-iter', '4', data_dir=official[0],
                 stop_at=2)
    before = (out / 'checkpoint' / 'params.h5').read_bytes()
    for bad, flag in ((['--lr', '0.5'], '--lr'), (['--config', 'lutq4'], '--config'),
                      (['--batch-size', '4'], '--batch-size')):
        with pytest.raises(SystemExit, match=f'error: {flag} cannot change when resuming'):
            cifar_train.main(['--resume', str(out), '--no-progress', *bad])
    assert (out / 'checkpoint' / 'params.h5').read_bytes() == before
    res = cifar_train.main(['--resume', str(out), '--no-progress', '--max-iter', '7'])
    assert res['schedule']['iterations'] == 7 and res['history'][-1]['iteration'] == 7
    assert json.load(open(out / 'checkpoint' / 'state.json'))['iteration'] == 7
    assert json.load(open(out / 'args.json'))['max_iter'] == 7  # the run's length from now on
    again = cifar_train.main(['--resume', str(out), '--no-progress'])
    assert again['final_val_error'] == res['final_val_error']
    with pytest.raises(SystemExit, match='beyond the 5 iterations'):
        cifar_train.main(['--resume', str(out), '--no-progress', '--max-iter', '5'])


def test_wrong_inputs_are_one_line_errors_and_create_nothing(tmp_path, official):
    (tmp_path / 'notes.txt').write_text('x')
    cases = [(['--kmeans-iters', '0'], '--kmeans-iters 0 is out of range'),
             (['--val-images', '0'], '--val-images 0 is out of range'),
             (['--init', str(tmp_path / 'notes.txt')], "expected a float run's params.h5"),
             (['--init', str(tmp_path / 'none.h5')], 'no such file'),
             (['--init', str(tmp_path / 'notes.txt') + '.nnp'], 'no such file')]
    if __import__('importlib').util.find_spec('nnabla_ext.cuda') is None:
        cases.append((['--context', 'cudnn'], "pip install 'nnabla-ext-cuda120"))
    for extra, message in cases:
        with pytest.raises(SystemExit, match='error: .*' + message.replace('.', r'\.')):
            run(tmp_path, 'x', '--config', 'lutq4', *extra, data_dir=official[0])
        assert not (tmp_path / 'x').exists(), extra
    bad_nnp = tmp_path / 'bad.nnp'
    bad_nnp.write_bytes(b'not a zip')
    with pytest.raises(SystemExit, match='not a readable float .nnp'):
        run(tmp_path, 'x', '--config', 'lutq4', '--init', str(bad_nnp), data_dir=official[0])


def test_a_read_only_output_folder_is_a_clear_error(tmp_path, official):
    with tmpfs(tmp_path / 'ro', readonly=True) as ro:
        with pytest.raises(SystemExit, match='cannot write there'):
            run(tmp_path, os.path.join(ro, 'run'), '--config', 'float', '--max-iter', '1',
                data_dir=official[0])


def test_data_dir_may_name_the_archive_itself(tmp_path, jpeg_tar, official):
    res, _ = run(tmp_path, 'a', '--config', 'float', '--max-iter', '1',
                 data_dir=os.path.join(jpeg_tar, 'cifar10-jpeg.tar.gz'))
    assert res['n_train'] == 40
    res, _ = run(tmp_path, 'b', '--config', 'float', '--max-iter', '1',
                 data_dir=os.path.join(official[0], 'cifar-10-python.tar.gz'))
    assert res['n_train'] == 40
    (tmp_path / 'x.zip').write_bytes(b'')
    with pytest.raises(SystemExit, match='give the folder that holds the data'):
        run(tmp_path, 'c', '--config', 'float', data_dir=str(tmp_path / 'x.zip'))


def test_a_short_run_writes_its_monitors_and_can_validate_on_fewer_images(tmp_path, official):
    res, out = run(tmp_path, 'short', '--config', 'lutq4', '--max-iter', '3', '--val-images',
                   '6', data_dir=official[0])
    for name in ('train_loss', 'train_error'):
        lines = (out / f'{name}.series.txt').read_text().split('\n')
        assert len([ln for ln in lines if ln.strip()]) == 1, name  # 3 iterations, 1 mean line
    assert res['val_images'] == 6
    # a class-sorted test set (as a JPEG tree is read): the subset keeps every class's share
    from examples.common.image_data import ArrayDataset
    y = np.repeat(np.arange(10), 20)
    ds = ArrayDataset(np.zeros((40, 1, 2, 2), np.uint8), np.zeros(40), np.zeros((200, 1, 2, 2),
                      np.uint8), y, [str(i) for i in range(10)])
    seen = np.concatenate([t[:, 0] for _, t in ds.test_batches(7, limit=50)])
    assert len(seen) == 50 and np.array_equal(np.bincount(seen), [5] * 10)
    # the error is counted over 6 images: a multiple of 1/6
    assert abs(res['final_val_error'] * 6 - round(res['final_val_error'] * 6)) < 1e-9


# --- the examples' trainer with --solver lc -------------------------------------------------------

LC = ('--solver', 'lc', '--lc-steps', '5', '--bn-recal', '3')


@pytest.mark.slow
def test_trainer_solver_lc_runs_resumes_exactly_and_exports_the_tables(tmp_path, official):
    from nnabla.utils.nnp_graph import NnpLoader
    res, out = run(tmp_path, 'lc', '--config', 'lutq2-pow2', *LC, data_dir=official[0])
    straight = _params()
    assert res['solver'] == 'lc' and res['lc']['lc_steps'] == 5
    assert res['lc']['steps_per_lc'] == 2 and res['lc']['bn_recal'] == 3  # 10 updates / 5 LC steps
    for name, p in nn.get_parameters(grad_only=False).items():  # finalize: W = d[A]
        if name.endswith('lutq_conv/W') or name.endswith('lutq_affine/W'):
            base = name[:-1]
            d, a = (nn.get_parameters(grad_only=False)[base + k].d for k in ('d', 'A'))
            np.testing.assert_array_equal(p.d, d[a.astype(int)], err_msg=name)
            assert np.all(np.abs(d[d != 0]) == 2.0 ** np.round(np.log2(np.abs(d[d != 0]))))
    x = np.asarray(official[1][2][:3], np.float32)
    with nn.parameter_scope('loaded'):
        net = NnpLoader(str(out / 'model.nnp')).get_network('lutq', batch_size=3)
    xi, yo = list(net.inputs.values())[0], list(net.outputs.values())[0]
    xi.d = x
    yo.forward()
    _, _, predict = trainer.predict_fn(cifar_train.resnet20, trainer.configs.parse('lutq2-pow2'),
                                       3, x.shape[1:])
    np.testing.assert_array_equal(yo.d, predict(x))
    nn.clear_parameters()
    _, out2 = run(tmp_path, 'lc-split', '--config', 'lutq2-pow2', *LC, data_dir=official[0],
                  stop_at=3)  # in the middle of the second L step
    res2 = cifar_train.main(['--resume', str(out2), '--no-progress'])
    _assert_same(_params(), straight)
    assert res2['history'] == res['history'] and res2['lc'] == res['lc']
    with pytest.raises(SystemExit, match='cannot change when resuming an LC run'):
        cifar_train.main(['--resume', str(out2), '--no-progress', '--max-iter', '20'])


def test_trainer_solver_lc_refuses_what_it_cannot_do(tmp_path, official):
    for extra, message in ((['--config', 'float'], '--solver lc trains LUT-Q layers'),
                           (['--config', 'lutq2', '--lc-steps', '0'], '--lc-steps 0 is out'),
                           (['--config', 'lutq2', '--lc-mu0', '0'], '--lc-mu0 0.0 is out'),
                           (['--config', 'lutq2', '--lc-mu-growth', '0.5'], '--lc-mu-growth 0.5')):
        with pytest.raises(SystemExit, match='error: ' + message):
            run(tmp_path, 'x', '--solver', 'lc', *extra, data_dir=official[0])
        assert not (tmp_path / 'x').exists()


class _Stop(Exception):
    pass


class _FakeComm:
    """A data-parallel communicator stand-in that stops the run at its first barrier."""

    def __init__(self, rank, log):
        self.rank, self.size, self.local_rank, self.log = rank, 2, 0, log

    def barrier(self):
        self.log.append(('barrier', self.rank))
        raise _Stop


@pytest.mark.parametrize('rank', [0, 1])
def test_under_mpirun_only_rank_0_recovers_a_checkpoint_then_all_ranks_meet(tmp_path, official,
                                                                            rank, monkeypatch):
    _, out = run(tmp_path, 'r', '--config', 'float', data_dir=official[0], stop_at=3)
    os.replace(out / 'checkpoint', out / 'checkpoint.old')
    log = []
    real = trainer.recover_checkpoint
    monkeypatch.setattr(trainer, 'recover_checkpoint',
                        lambda d, log_fn=None: log.append(('recover', rank)) or real(d))
    args = trainer.parse_args(cifar_train.parser(), ['--resume', str(out), '--no-progress'])
    with pytest.raises(_Stop):
        trainer.train(args, cifar_train.dataset, cifar_train.resnet20,
                      comm=_FakeComm(rank, log))
    assert log == ([('recover', 0), ('barrier', 0)] if rank == 0 else [('barrier', 1)])
    assert (out / 'checkpoint').exists() == (rank == 0)


def _rank_until_stopped(rank, conn, argv, log_path):
    """One data-parallel rank of a CIFAR-10 run (a forked process); its exit status is the
    trainer's, its log lines go to ``log_path``."""
    from test_imagenet_example import PipeComm
    code = 99
    with open(log_path, 'w', buffering=1) as log:
        try:
            args = trainer.parse_args(cifar_train.parser(), argv)
            trainer.train(args, cifar_train.dataset, cifar_train.resnet20,
                          comm=PipeComm(rank, conn), log=lambda line: print(line, file=log))
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 98
        except BaseException as e:
            print(repr(e), file=log)
    os._exit(code)


@pytest.mark.slow
@pytest.mark.parametrize('signaled, sig', [(1, signal.SIGINT), (0, signal.SIGTERM)])
def test_a_signal_to_one_rank_stops_every_rank_at_the_same_iteration(tmp_path, official,
                                                                     signaled, sig):
    """Two data-parallel processes; a real signal reaches one of them only. Both stop at the
    same iteration with the status of that signal, rank 0 having written the checkpoint (before,
    the signaled rank stopped alone and the other waited in its next all-reduce for ever)."""
    import multiprocessing
    mp = multiprocessing.get_context('fork')
    out = tmp_path / 'dp'
    argv = ['--data-dir', official[0], '--output', str(out), '--config', 'float',
            '--epochs', '1000', '--batch-size', '4', '--val-batch-size', '7', '--no-progress']
    logs = [tmp_path / f'rank{r}.log' for r in range(2)]
    a, b = mp.Pipe()
    procs = [mp.Process(target=_rank_until_stopped, args=(r, c, argv, str(logs[r])))
             for r, c in enumerate((a, b))]
    for p in procs:
        p.start()
    try:
        state = out / 'checkpoint' / 'state.json'
        deadline = time.monotonic() + 300  # a hang guard, not a speed assumption
        while not state.exists():
            assert all(p.is_alive() for p in procs), [f.read_text() for f in logs]
            assert time.monotonic() < deadline, 'no checkpoint'
            time.sleep(0.05)
        os.kill(procs[signaled].pid, sig)
        for p in procs:
            p.join(300)
        assert [p.exitcode for p in procs] == [128 + sig] * 2, [f.read_text() for f in logs]
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    stopped = json.loads(state.read_text())['iteration']
    for f in logs:
        assert f.read_text().strip().splitlines()[-1] == (
            f"{signal.Signals(sig).name} at iteration {stopped}: checkpoint written; continue "
            f"with --resume {out}")


def test_barrier_of_a_communicator_without_one_is_an_all_reduce():
    from examples.common.distributed import Distributed
    calls = []

    class Comm:
        rank, size, local_rank = 0, 2, 0

        def all_reduce(self, data, division=False, inplace=False):
            calls.append([d.shape for d in data])
    Distributed(Comm()).barrier()
    Distributed(None).barrier()  # one process: nothing to wait for
    assert calls == [[(1,)]]


def test_non_finite_weights_end_the_run_with_a_one_line_error(tmp_path, official):
    with pytest.raises(SystemExit, match=r'error: iteration \d+: .*W has non-finite values.*lower the learning rate.*\(--lr\)$'):
        run(tmp_path, 'nan', '--config', 'lutq4', '--lr', '1e30', '--max-iter', '3',
            data_dir=official[0])


def test_parse_args_tells_given_flags_from_defaults_of_either_kind():
    import argparse
    p = argparse.ArgumentParser()
    trainer.add_arguments(p)
    p.set_defaults(batch_size=64, lr=0.025)  # an example's own defaults
    args = trainer.parse_args(p, ['--lr', '0.5', '--config', 'lutq4'])
    assert args.explicit == ['config', 'lr'] and args.batch_size == 64 and args.lr == 0.5
    assert trainer.parse_args(p, []).batch_size == 64  # the parser keeps its defaults


@pytest.mark.slow
def test_integer_friendly_flags_reach_the_layers(tmp_path, official):
    """--act-quant pow2 / --act-max / --pow2-range: the run's activations use a power-of-two
    step and its tables powers of two within the range; lutq-ternary uses {-1, 0, 1}."""
    import nnabla_lutq
    res, out = run(tmp_path, 'int', '--config', 'lutq2-pow2-mlbn', '--act-bits', '8',
                   '--act-quant', 'pow2', '--act-max', '8', '--pow2-range', '-6', '0',
                   '--max-iter', '2', data_dir=official[0])
    assert res['layers']['act_quant'] == 'pow2' and list(res['layers']['pow2_range']) == [-6, 0]
    assert 'step 2^-5' in res['settings']
    for s in nnabla_lutq.lutq_layers():
        d = s.d.d[s.d.d != 0]
        assert np.all((np.abs(d) >= 2.0 ** -6) & (np.abs(d) <= 1)), s.name
    from nnabla_lutq.io.nnp import read_nnp  # the exported graph quantizes by fixed point
    types = [f.type for f in read_nnp(str(out / 'model.nnp')).proto.network[0].function]
    assert 'FixedPointQuantize' in types and 'MinMaxQuantize' not in types
    for bad, message in ((['--act-max', '6'], 'act_max must be a power of two'),
                         (['--config', 'lutq2', '--pow2-range', '-2', '0'],
                          'pow2_range needs a -pow2 configuration')):
        with pytest.raises(SystemExit, match=message):
            run(tmp_path, 'bad', '--act-bits', '8', '--act-quant', 'pow2', *bad,
                data_dir=official[0])
    nn.clear_parameters()
    run(tmp_path, 'tern', '--config', 'lutq-ternary', '--max-iter', '2', data_dir=official[0])
    for s in nnabla_lutq.lutq_layers():
        np.testing.assert_array_equal(s.d.d, [-1, 0, 1])
