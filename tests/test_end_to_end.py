"""End to end on real data shipped with scikit-learn (8x8 handwritten digits)."""
import json
import os

from examples.digits import demo
from reference import assert_tables_fitted


def test_lutq4_is_within_1_5_points_of_float(tmp_path):
    r_float = demo.train('float', 20, str(tmp_path / 'float'), progress=False)
    r_lutq = demo.train('lutq4', 20, str(tmp_path / 'lutq4'), progress=False,
                        init=str(tmp_path / 'float' / 'params.h5'))
    assert r_float['accuracy'] > 0.95
    assert r_lutq['accuracy'] >= r_float['accuracy'] - 0.015
    # the trained 4-bit network's tables are fitted to its weights: every value is the mean of
    # the weights assigned to it
    import nnabla_lutq
    assert_tables_fitted(nnabla_lutq.lutq_layers())
    assert all(s.d.d.size == 16 for s in nnabla_lutq.lutq_layers())


def test_demo_runs_reports_exports_and_reloads(tmp_path, capsys):
    summary = demo.main(['--epochs', '1', '--output', str(tmp_path), '--no-progress'])
    out = capsys.readouterr().out
    assert set(summary) >= {'float', 'lutq4', 'lutq2-pow2-mlbn', 'lutq4-prune50'}
    assert 'outputs identical = True' in out and 'total' in out
    for f in ('lutq4/model.nnp', 'float/model.nnp', 'lutq4.lutq', 'results.json',
              'lutq4/train_loss.series.txt'):
        assert os.path.isfile(tmp_path / f), f
    saved = json.load(open(tmp_path / 'results.json'))
    assert saved['lutq4_report']['totals']['compression'] > 5
    run = json.load(open(tmp_path / 'lutq4' / 'results.json'))  # the shared trainer's run
    assert run['schedule']['init'].endswith(os.path.join('float', 'params.h5'))
    assert abs(saved['lutq4']['accuracy'] - (1 - run['final_val_error'])) < 1e-12
    # a second demo into the same folder replaces its runs; a foreign folder is never touched
    demo.main(['--epochs', '1', '--output', str(tmp_path), '--configs', 'float', '--no-progress'])
    (tmp_path / 'lutq4' / 'args.json').unlink()
    import pytest
    with pytest.raises(SystemExit, match='not a run folder of the demo'):
        demo.main(['--epochs', '1', '--output', str(tmp_path), '--configs', 'lutq4'])
    assert (tmp_path / 'lutq4' / 'model.nnp').exists()
    assert (tmp_path / 'float' / 'model.nnp').exists()  # refused before anything was removed
