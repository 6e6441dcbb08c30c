# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""End to end on real data shipped with scikit-learn (8x8 handwritten digits)."""
import json
import os
import subprocess
import sys

import pytest

from examples.digits import demo
from reference import assert_tables_fitted

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
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


@pytest.mark.slow
def test_demo_runs_reports_exports_and_reloads(tmp_path):
    """The demo as a user starts it (``python -m examples.digits.demo``, with its progress bar):
    a console of progress and results only, and every file and number it reports."""
    r = subprocess.run([sys.executable, '-m', 'examples.digits.demo', '--epochs', '1',
                        '--output', str(tmp_path)], cwd=ROOT, capture_output=True,
                       encoding='utf-8')  # the progress bar's blocks, whatever the locale
    assert r.returncode == 0, r.stderr[-2000:]
    assert '[nnabla]' not in r.stdout + r.stderr
    out = r.stdout
    assert 'accuracy' in out and 'outputs identical = True' in out and 'total' in out
    for name in ('float/train_loss', 'float/val_error', 'lutq4/train_loss'):
        lines = (tmp_path / f'{name}.series.txt').read_text().splitlines()
        assert lines and all(len(line.split()) == 2 for line in lines), name
    for f in ('lutq4/model.nnp', 'float/model.nnp', 'lutq4.lutq', 'results.json',
              'lutq4/train_loss.series.txt'):
        assert os.path.isfile(tmp_path / f), f
    saved = json.load(open(tmp_path / 'results.json'))  # the summary demo.main returns
    assert set(saved) >= {'float', 'lutq4', 'lutq2-pow2-mlbn', 'lutq4-prune50'}
    assert saved['lutq4_report']['totals']['compression'] > 5
    run = json.load(open(tmp_path / 'lutq4' / 'results.json'))  # the shared trainer's run
    assert run['schedule']['init'].endswith(os.path.join('float', 'params.h5'))
    assert abs(saved['lutq4']['accuracy'] - (1 - run['final_val_error'])) < 1e-12
    # a second demo into the same folder replaces its runs; a foreign folder is never touched
    demo.main(['--epochs', '1', '--output', str(tmp_path), '--configs', 'float', '--no-progress'])
    (tmp_path / 'lutq4' / 'args.json').unlink()
    with pytest.raises(SystemExit, match='not a run folder of the demo'):
        demo.main(['--epochs', '1', '--output', str(tmp_path), '--configs', 'lutq4'])
    assert (tmp_path / 'lutq4' / 'model.nnp').exists()
    assert (tmp_path / 'float' / 'model.nnp').exists()  # refused before anything was removed
