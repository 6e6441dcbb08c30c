# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The package's import surface: what ``import nnabla_lutq`` loads, every public name, the
``python -m nnabla_lutq.cli`` command."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code):
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def _json_of(code):
    """Run ``code`` in a fresh interpreter; the JSON its last output line prints."""
    r = _python(code)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


def test_import_loads_only_what_layers_and_solvers_need():
    out = _json_of('import sys, json, nnabla_lutq, nnabla.parametric_functions as PF\n'
                   'print(json.dumps({"modules": sorted(m for m in sys.modules '
                   'if m.startswith("nnabla_lutq")), '
                   '"pf": [getattr(PF, n) is getattr(nnabla_lutq, n) for n in '
                   '("lutq_affine", "lutq_convolution", "lutq_depthwise_convolution", "mlbn")]}))')
    assert out['pf'] == [True] * 4
    loaded = set(out['modules'])
    for heavy in ('nnabla_lutq.io', 'nnabla_lutq.io.onnx', 'nnabla_lutq.io.export',
                  'nnabla_lutq.integer', 'nnabla_lutq.nn.convert', 'nnabla_lutq.analysis',
                  'nnabla_lutq.cli'):
        assert heavy not in loaded, heavy
    for needed in ('nnabla_lutq.nn.layers', 'nnabla_lutq.training.solver',
                   'nnabla_lutq.training.lc', 'nnabla_lutq.kmeans', 'nnabla_lutq.core'):
        assert needed in loaded, needed


def test_every_public_name_resolves_and_lazy_names_are_the_submodules_objects():
    out = _json_of(
        'import importlib, json, nnabla_lutq as L\n'
        'bad = [n for n in L.__all__ if getattr(L, n, None) is None]\n'
        'lazy = {n: getattr(importlib.import_module("nnabla_lutq." + m), n) is getattr(L, n)\n'
        '        for n, m in L._LAZY.items()}\n'
        'subs = [getattr(L, s).__name__ for s in ("io", "integer", "analysis", "cli")]\n'
        'print(json.dumps({"bad": bad, "lazy": lazy, "subs": subs, "dir": sorted(dir(L))}))')
    assert out['bad'] == []
    assert all(out['lazy'].values()), out['lazy']
    assert out['subs'] == ['nnabla_lutq.io', 'nnabla_lutq.integer', 'nnabla_lutq.analysis',
                           'nnabla_lutq.cli']
    assert {'export_nnp', 'convert', 'verify_int', 'report', 'LUTQSolver', 'io'} <= set(out['dir'])


def test_unknown_attribute_is_an_attribute_error():
    import nnabla_lutq
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        nnabla_lutq.nope
    assert not hasattr(nnabla_lutq, 'nope')


def test_names_of_the_previous_namespace_are_all_there():
    import nnabla_lutq
    for name in ('LUTQConfig', 'make_config', 'kmeans_step', 'init_dictionary', 'pow2_round',
                 'lutq_affine', 'lutq_convolution', 'lutq_depthwise_convolution', 'mlbn',
                 'fold_mlbn', 'inference_mode', 'weight_mode', 'WeightMode', 'lutq_layers',
                 'mlbn_layers', 'LUTQLayer', 'MLBNLayer', 'STATE', 'LUTQSolver',
                 'initialize', 'load_float_parameters', 'LCSolver', 'lc_schedule', 'report',
                 'Report', 'LayerRecord', 'footprint', 'export_nnp', 'pack', 'unpack',
                 'quantize_nnp', 'export_onnx', 'LayerConfig', 'LUTQModifier', 'convert',
                 'IntegerNetwork', 'verify_int', '__version__'):
        assert name in dir(nnabla_lutq), name
        assert name == '__version__' or name in nnabla_lutq.__all__, name


def _cli(*argv):
    return subprocess.run([sys.executable, '-m', 'nnabla_lutq.cli', *argv], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


def test_python_dash_m_cli_runs_without_nnabla_s_log():
    r = _cli('--help')
    assert r.returncode == 0 and r.stderr == ''
    assert r.stdout.startswith('usage: nnabla-lutq')
    for command in ('info', 'plot', 'pack', 'unpack', 'convert', 'verify-int', 'onnx'):
        assert command in r.stdout, command
    r = _cli('--version')
    assert r.returncode == 0 and r.stdout.startswith('nnabla-lutq ') and r.stderr == ''


def test_python_dash_m_cli_error_is_one_line(tmp_path):
    r = _cli('info', str(tmp_path / 'missing.nnp'))
    assert r.returncode == 1 and r.stdout == ''
    assert r.stderr.strip().splitlines() == [
        f"nnabla-lutq: error: {tmp_path / 'missing.nnp'}: no such file"]


def test_library_import_keeps_nnabla_s_logging_as_it_is():
    """Only the command quiets nnabla's INFO lines; a library user's import changes nothing."""
    r = _python('import logging, nnabla_lutq; print(logging.getLogger().level)')
    assert r.returncode == 0 and r.stdout.split()[-1] == str(20)  # nnabla's INFO


def test_the_cli_docstring_lists_every_command():
    import argparse
    import importlib
    cli_main = importlib.import_module('nnabla_lutq.cli.main')
    sub = next(a for a in cli_main._parser()._actions
               if isinstance(a, argparse._SubParsersAction))
    assert sub.choices
    for c in sub.choices:
        assert f'nnabla-lutq {c} ' in cli_main.__doc__, c


def test_console_script_entry_point_is_in_the_package():
    with open(os.path.join(ROOT, 'setup.py')) as f:
        setup = f.read()
    assert "'nnabla-lutq = nnabla_lutq.cli:main'" in setup
    assert not os.path.exists(os.path.join(ROOT, 'nnabla_lutq_cli.py'))
