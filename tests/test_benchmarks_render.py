# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""BENCHMARKS.md is generated from the benchmark records (benchmarks/results/*.jsonl): per
benchmark its latest table on top, earlier runs below under History, newest first."""
import importlib.util
import json
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, 'benchmarks')


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCH, name + '.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _load('render')


def rec(title, date, value, context='cpu', notes=''):
    return {'title': title, 'date': date, 'machine': f'test machine, context {context}',
            'context': context, 'commit': 'abcdef0123456789', 'dirty': False,
            'table': ['| x | value |', '|---|---:|', f'| a | {value} |'], 'notes': notes}


def headings(text, level):
    return re.findall(rf'^{level} (.*)$', text, flags=re.M)


@pytest.fixture
def results(tmp_path):
    folder = tmp_path / 'results'
    # the step benchmark: three runs, written out of date order; one GPU run
    for r in (rec('Step', '2026-01-02', 2), rec('Step', '2026-01-01', 1),
              rec('Step', '2026-01-03T10:00:00Z', 3, notes='median of 5'),
              rec('Step', '2026-01-01', 10, context='cudnn')):
        render.add('step', r, str(folder))
    # two titles from one script, one run each; one run of a second title on the same day
    render.add('fit', rec('Fit quality', '2026-01-02', 5), str(folder))
    render.add('fit', rec('Fit time', '2026-01-02', 6), str(folder))
    render.add('fit', rec('Fit time', '2026-01-02', 7), str(folder))  # later line: newer
    return str(folder)


def test_latest_table_per_benchmark_on_top_history_below(results):
    text = render.render(results)
    top, history = text.split('\n# History\n')
    assert text.startswith('# Benchmarks\n')
    # one section per benchmark (a title in one context), each once, in a fixed order
    assert headings(top, '##') == ['Fit quality', 'Fit time', 'Step', 'Step (cudnn)']
    sections = dict(zip(headings(top, '##'), re.split(r'^## .*$', top, flags=re.M)[1:]))
    assert '| a | 3 |' in sections['Step'] and 'median of 5' in sections['Step']
    assert '2026-01-03 - test machine, context cpu - commit abcdef0123' in sections['Step']
    assert '| a | 7 |' in sections['Fit time'] and '| a | 6 |' not in sections['Fit time']
    assert '| a | 10 |' in sections['Step (cudnn)']
    assert 'GPU results: Step (cudnn).' in top
    # history: each benchmark with earlier runs once, its runs newest first
    assert headings(history, '##') == ['Fit time, earlier runs', 'Step, earlier runs']
    run = ' - test machine, context cpu - commit abcdef0123'
    assert headings(history, '###') == ['2026-01-02' + run, '2026-01-02' + run, '2026-01-01' + run]
    step = history.split('## Step, earlier runs')[1]
    assert step.index('| a | 2 |') < step.index('| a | 1 |')
    assert '| a | 3 |' not in history and '| a | 10 |' not in history
    assert len(set(headings(text, '##'))) == len(headings(text, '##'))


def test_rendering_is_deterministic_and_depends_on_the_records_only(results, tmp_path):
    out = tmp_path / 'BENCHMARKS.md'
    first = render.write(results, str(out))
    assert out.read_text() == first == render.render(results)
    render.write(results, str(out))
    assert out.read_text() == first
    render.add('step', rec('Step', '2026-02-01', 4), results)
    text = render.render(results)
    assert text != first and '| a | 4 |' in text.split('# History')[0]
    assert '| a | 3 |' in text.split('# History')[1]  # the previous latest run moved down


def test_records_are_json_lines_with_date_machine_commit(tmp_path):
    r = render.make_record('Step', '| x |\n|---|\n| 1 |\n', 'a machine, context cpu',
                           notes=' how ')
    assert r['table'] == ['| x |', '|---|', '| 1 |'] and r['notes'] == 'how'
    assert re.fullmatch(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ', r['date'])
    if os.path.isdir(os.path.join(ROOT, '.git')):
        assert re.fullmatch('[0-9a-f]{40}', r['commit']) and isinstance(r['dirty'], bool)
    path = render.add('step', r, str(tmp_path))
    assert [json.loads(line) for line in open(path)] == [r]
    (tmp_path / 'bad.jsonl').write_text('{"title": \n')
    with pytest.raises(ValueError, match='bad.jsonl:1: not a JSON record'):
        render.load(str(tmp_path))


def test_a_benchmark_run_writes_a_record_not_prose(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(BENCH)
    common = _load('_common')
    monkeypatch.setattr(common.render, 'RESULTS', str(tmp_path / 'results'))
    monkeypatch.setattr(common.render, 'OUTPUT', str(tmp_path / 'BENCHMARKS.md'))
    for n in (1, 2):
        common.append('Step', f'| x |\n|---|\n| {n} |', notes='notes', benchmark='step')
    records = [json.loads(line) for line in open(tmp_path / 'results' / 'step.jsonl')]
    assert [r['table'][-1] for r in records] == ['| 1 |', '| 2 |']
    text = (tmp_path / 'BENCHMARKS.md').read_text()
    assert text == common.render.render(str(tmp_path / 'results'))
    assert headings(text.split('# History')[0], '##') == ['Step']
    assert '| 1 |' in text.split('# History')[1]
    assert 'recorded in' in capsys.readouterr().out


def test_the_repository_benchmarks_md_is_generated_from_its_records():
    with open(os.path.join(ROOT, 'BENCHMARKS.md'), encoding='utf-8') as f:
        assert f.read() == render.render(), 'run python benchmarks/render.py'
