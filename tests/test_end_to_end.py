"""End to end on real data shipped with scikit-learn (8x8 handwritten digits)."""
import json
import os

import numpy as np

from examples.digits import demo
from examples.common.models import Layers
from reference import assert_tables_fitted


def test_lutq4_is_within_1_5_points_of_float(tmp_path):
    data = demo.load_digits_data(0)
    r_float = demo.train(Layers(), data, epochs=20, progress=False)
    import nnabla as nn
    nn.save_parameters(str(tmp_path / 'float.h5'))
    r_lutq = demo.train(Layers(lutq=True, n_values=16), data, epochs=20, progress=False,
                        init=str(tmp_path / 'float.h5'))
    assert r_float['accuracy'] > 0.95
    assert r_lutq['accuracy'] >= r_float['accuracy'] - 0.015
    # the trained 4-bit network's tables are fitted to its weights: every value is the mean of
    # the weights assigned to it
    import nnabla_lutq
    assert_tables_fitted(nnabla_lutq.lutq_layers())
    assert all(s.d.d.size == 16 for s in nnabla_lutq.lutq_layers())


def test_demo_runs_reports_exports_and_reloads(tmp_path, capsys):
    summary = demo.main(['--epochs', '1', '--output', str(tmp_path)])
    out = capsys.readouterr().out
    assert set(summary) >= {'float', 'lutq4', 'lutq2-pow2-mlbn', 'lutq4-prune50'}
    assert 'outputs identical = True' in out and 'total' in out
    assert os.path.isfile(tmp_path / 'lutq4.nnp') and os.path.isfile(tmp_path / 'results.json')
    saved = json.load(open(tmp_path / 'results.json'))
    assert saved['lutq4_report']['totals']['compression'] > 5
