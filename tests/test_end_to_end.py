"""End to end on real data shipped with scikit-learn (8x8 handwritten digits)."""
import json
import os

import numpy as np

from examples.digits import demo
from examples.common.models import Layers


def test_lutq4_is_within_1_5_points_of_float(tmp_path):
    data = demo.load_digits_data(0)
    r_float = demo.train(Layers(), data, epochs=20, progress=False)
    import nnabla as nn
    nn.save_parameters(str(tmp_path / 'float.h5'))
    r_lutq = demo.train(Layers(lutq=True, n_values=16), data, epochs=20, progress=False,
                        init=str(tmp_path / 'float.h5'))
    assert r_float['accuracy'] > 0.95
    assert r_lutq['accuracy'] >= r_float['accuracy'] - 0.015
    # the trained 4-bit network really computes with at most 16 distinct weight values per layer
    import nnabla_lutq
    for s in nnabla_lutq.lutq_layers():
        q = s.d.d[s.A.d]
        assert len(np.unique(q)) <= 16


def test_demo_runs_reports_exports_and_reloads(tmp_path, capsys):
    summary = demo.main(['--epochs', '1', '--output', str(tmp_path)])
    out = capsys.readouterr().out
    assert set(summary) >= {'float', 'lutq4', 'lutq2-pow2-mlbn', 'lutq4-prune50'}
    assert 'outputs identical = True' in out and 'total' in out
    assert os.path.isfile(tmp_path / 'lutq4.nnp') and os.path.isfile(tmp_path / 'results.json')
    saved = json.load(open(tmp_path / 'results.json'))
    assert saved['lutq4_report']['totals']['compression'] > 5
