# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The CIFAR-10 example end to end on tiny generated data (both layouts), resume, export, errors."""
import io
import json
import os
import pickle
import tarfile

import itertools
import math

import numpy as np
import pytest
import nnabla as nn
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from examples.cifar10 import data as cifar_data  # noqa: E402
from examples.cifar10 import reproduce  # noqa: E402
from examples.cifar10 import train as cifar_train  # noqa: E402
from examples.common import configs, trainer  # noqa: E402
from examples.common.image_data import ArrayDataset, DataError, read_image_tree  # noqa: E402
import nnabla_lutq  # noqa: E402
from reference import assert_tables_fitted  # noqa: E402

PER_CLASS = {'train': 4, 'test': 2}


def _images(split, seed):
    """Deterministic tiny images whose class is visible in the mean colour (learnable)."""
    rng = np.random.RandomState(seed)
    n = PER_CLASS[split]
    x = rng.randint(0, 60, (10 * n, 3, 32, 32)).astype(np.uint8)
    y = np.repeat(np.arange(10), n).astype(np.int32)
    x[:, 0] += (y * 19).astype(np.uint8)[:, None, None]
    return x, y


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv('NNABLA_LUTQ_CACHE', str(tmp_path / 'cache'))


@pytest.fixture
def official(tmp_path):
    """A tiny cifar-10-python.tar.gz with the official pickle layout."""
    folder = tmp_path / 'official'
    folder.mkdir()
    xtr, ytr = _images('train', 0)
    xte, yte = _images('test', 1)
    blobs = {}
    parts = np.array_split(np.arange(len(xtr)), 5)
    for i, idx in enumerate(parts):
        blobs[f'data_batch_{i + 1}'] = {b'data': xtr[idx].reshape(len(idx), -1),
                                        b'labels': ytr[idx].tolist()}
    blobs['test_batch'] = {b'data': xte.reshape(len(xte), -1), b'labels': yte.tolist()}
    with tarfile.open(folder / 'cifar-10-python.tar.gz', 'w:gz') as tar:
        for name, d in blobs.items():
            raw = pickle.dumps(d)
            info = tarfile.TarInfo('cifar-10-batches-py/' + name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return str(folder), (xtr, ytr, xte, yte)


def _write_tree(root):
    for split, seed in (('train', 0), ('test', 1)):
        x, y = _images(split, seed)
        for k, (img, label) in enumerate(zip(x, y)):
            d = root / split / cifar_data.CLASSES[label]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img.transpose(1, 2, 0)).save(d / f'{k:04d}.png')


@pytest.fixture
def jpeg_tar(tmp_path):
    """A .tar.gz holding cifar10/train/<class>/*.png + cifar10/test/<class>/*.png."""
    tree = tmp_path / 'tree' / 'cifar10'
    _write_tree(tree)
    folder = tmp_path / 'tarred'
    folder.mkdir()
    with tarfile.open(folder / 'cifar10-jpeg.tar.gz', 'w:gz') as tar:
        tar.add(tree, arcname='cifar10')
    return str(folder)


def run(tmp_path, name, *extra, data_dir, stop_at=None):
    out = tmp_path / name
    argv = ['--data-dir', data_dir, '--output', str(out), '--epochs', '2', '--batch-size', '8',
            '--val-batch-size', '7', '--no-progress', *extra]
    return cifar_train.main(argv, stop_at=stop_at), out


# --- data -------------------------------------------------------------------------------------

def test_official_layout_is_read_exactly(official):
    folder, (xtr, ytr, xte, yte) = official
    a = cifar_data.load_arrays(folder, progress=False)
    np.testing.assert_array_equal(a['x_train'], xtr)
    np.testing.assert_array_equal(a['y_train'][:, 0], ytr)
    np.testing.assert_array_equal(a['x_test'], xte)
    assert list(a['classes']) == cifar_data.CLASSES


def test_image_tree_folder_and_tar_give_the_same_arrays(tmp_path, jpeg_tar):
    tree = tmp_path / 'tree' / 'cifar10'
    a = read_image_tree(str(tree), progress=False)
    b = cifar_data.load_arrays(jpeg_tar, progress=False)
    for k in ('x_train', 'y_train', 'x_test', 'y_test'):
        np.testing.assert_array_equal(a[k], b[k])
    # PNG is lossless: the pixels are the generated ones, classes in the official order
    x, y = _images('train', 0)
    order = np.lexsort((np.arange(len(y)), y))
    np.testing.assert_array_equal(np.sort(a['x_train'].reshape(len(x), -1), axis=0),
                                  np.sort(x[order].reshape(len(x), -1), axis=0))
    assert list(a['classes']) == cifar_data.CLASSES


def test_cache_is_used_and_never_next_to_the_data(tmp_path, jpeg_tar, monkeypatch):
    cifar_data.load_arrays(jpeg_tar, progress=False)
    assert os.listdir(jpeg_tar) == ['cifar10-jpeg.tar.gz']
    assert len(os.listdir(tmp_path / 'cache')) == 1
    monkeypatch.setattr(cifar_data, 'read_image_tree',
                        lambda *a, **k: pytest.fail('decoded again instead of using the cache'))
    cifar_data.load_arrays(jpeg_tar, progress=False)


def test_no_data_gives_a_clear_error(tmp_path, monkeypatch):
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(DataError, match='no CIFAR-10 found'):
        cifar_data.load_arrays(str(empty))
    with pytest.raises(SystemExit, match='no CIFAR-10 found'):
        run(tmp_path, 'r', data_dir=str(empty))
    assert not (tmp_path / 'r').exists()
    # without --data-dir: ~/nnabla_data, download attempted, offline -> where to put the file
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    with pytest.raises(DataError, match='cannot be downloaded.*cifar-10-python.tar.gz'):
        cifar_data.load_arrays(None, url='file:///nonexistent/cifar.tar.gz')
    assert not os.listdir(tmp_path / 'home' / 'nnabla_data')  # no partial download left


def test_damaged_archive_is_reported(tmp_path):
    folder = tmp_path / 'bad'
    folder.mkdir()
    (folder / 'cifar-10-python.tar.gz').write_bytes(b'not a tar file at all')
    with pytest.raises(DataError, match='damaged archive'):
        cifar_data.load_arrays(str(folder))


def test_batches_are_deterministic_and_augmented_like_numpy():
    x = np.random.RandomState(0).randint(0, 255, (20, 3, 8, 8)).astype(np.uint8)
    y = np.arange(20) % 10
    ds = ArrayDataset(x, y, x, y, list('abcdefghij'), pad=2, flip=True)
    xb, yb = ds.train_batch(3, 1, 6, seed=5)
    xb2, _ = ds.train_batch(3, 1, 6, seed=5)
    np.testing.assert_array_equal(xb, xb2)
    # reference: same permutation, crop offsets and flips drawn in the documented order
    perm = np.random.RandomState([5, 3]).permutation(20)[6:12]
    rng = np.random.RandomState([5, 3, 1])
    oy, ox = rng.randint(0, 5, 6), rng.randint(0, 5, 6)
    flips = rng.rand(6) < 0.5
    for k, i in enumerate(perm):
        p = np.zeros((3, 12, 12), np.uint8)
        p[:, 2:10, 2:10] = x[i]
        ref = p[:, oy[k]:oy[k] + 8, ox[k]:ox[k] + 8]
        ref = ref[..., ::-1] if flips[k] else ref
        np.testing.assert_array_equal(xb[k], ref)
        assert yb[k, 0] == y[i]


# --- configurations and schedule --------------------------------------------------------------

def test_config_names_follow_one_pattern():
    c = configs.parse('lutq2-pow2-mlbn', act_bits=8)
    assert (c.lutq, c.n_values, c.dictionary, c.mlbn, c.act_bits) == (True, 4, 'pow2', True, 8)
    c = configs.parse('lutq2-prune70')
    assert (c.n_values, c.dictionary, c.prune_ratio, c.mlbn) == (4, 'free', 0.7, False)
    assert configs.parse('float').lutq is False
    for name in configs.NAMED:
        configs.parse(name)
    for bad in ('lutq', 'lutq4-mlbn-pow2', 'lutq9', 'lutq1-prune50', 'lutq2-prune0', 'fp32'):
        with pytest.raises(ValueError):
            configs.parse(bad)
    with pytest.raises(ValueError, match='act-bits'):
        configs.parse('lutq4', act_bits=1)


def test_group_size_suffix_gives_grouped_tables_that_fit_every_layer():
    """``-g<G>``: one table per G output channels; a layer whose channels G does not divide, or
    whose groups would hold fewer than K weights, gets the nearest size that works."""
    import nnabla as nn
    import nnabla_lutq
    from examples.common.models import digits_cnn, fitting_group_size
    c = configs.parse('lutq4-pow2-g8')
    assert (c.n_values, c.dictionary, c.group_size) == (16, 'pow2', 8)
    assert configs.parse('lutq-ternary-mlbn-g1').group_size == 1
    assert 'one table per 8 channels' in configs.describe(c)
    with pytest.raises(ValueError, match='at least 1'):
        configs.parse('lutq4-g0')
    # brute force: the largest divisor <= G whose groups hold >= K weights, else the smallest
    for n_out, per, k, g, p in itertools.product((6, 10, 16), (1, 9, 48), (2, 4, 16),
                                                  (1, 4, 8, 32), (0.0, 0.7)):
        def pruned(n):  # ceil(p·n), p·n within rounding of an integer counting as it
            return round(p * n) if abs(p * n - round(p * n)) < 1e-9 * n else math.ceil(p * n)
        ok = [s for s in range(1, n_out + 1) if n_out % s == 0 and s * per >= k
              and (p == 0 or s * per - pruned(s * per) >= k - 1)]
        want = max([s for s in ok if s <= g], default=min(ok)) if ok else n_out
        assert fitting_group_size(g, n_out, per, k, p) == (None if want == n_out else want)
    digits_cnn(nn.Variable((2, 1, 8, 8)), configs.parse('lutq2-prune70-g1'))  # builds
    nn.clear_parameters()
    nn.clear_parameters()
    digits_cnn(nn.Variable((2, 1, 8, 8)), c)
    shapes = {r.name.split('/')[0]: (r.config.group_size, r.d.shape)
              for r in nnabla_lutq.lutq_layers()}
    # conv1: 16 channels of 9 weights, K = 16 needs 2 channels per group; fc: 10 outputs -> 5
    assert shapes == {'conv1': (8, (2, 16)), 'conv2': (8, (4, 16)), 'conv3': (8, (4, 16)),
                      'fc': (5, (2, 16))}
    nn.clear_parameters()


def test_learning_rate_schedules():
    lrs = [trainer.learning_rate('step', 0.1, i, 8) for i in range(8)]
    np.testing.assert_allclose(lrs, [0.1] * 4 + [0.01] * 2 + [0.001] * 2)
    assert trainer.learning_rate('cosine', 0.1, 0, 10) == pytest.approx(0.1)
    assert trainer.learning_rate('cosine', 0.1, 5, 10) == pytest.approx(0.05)


# --- training runs ----------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize('config,extra', [
    ('lutq4', []), ('lutq2-pow2', ['--schedule', 'cosine']), ('lutq2-pow2-mlbn', []),
    ('lutq2-prune70', []), ('lutq4', ['--act-bits', '8', '--float-first-last'])])
def test_each_config_family_runs_end_to_end(tmp_path, official, config, extra):
    res, out = run(tmp_path, config, '--config', config, *extra, data_dir=official[0])
    saved = json.load(open(out / 'results.json'))
    assert saved['config'] == config and saved['schedule']['iterations'] == 2 * 5
    errors = [h['val_error'] for h in saved['history']]
    assert [h['iteration'] for h in saved['history']] == [5, 10]
    assert saved['final_val_error'] == errors[-1] and saved['best_val_error'] == min(errors)
    assert all(abs(e * 20 - round(e * 20)) < 1e-9 for e in errors)  # over the 20 test images
    for f in ('model.nnp', 'params.h5', 'train_loss.series.txt', 'val_error.series.txt'):
        assert (out / f).is_file(), f
    layers = saved['report']['layers']
    lutq = [r for r in layers if r['lutq'] and r['type'] != 'bn']
    c = configs.parse(config)
    assert len(lutq) == (20 if '--float-first-last' in extra else 22)
    assert all(r['n_values'] == c.n_values for r in lutq)
    if 'pow2' in config:
        assert all(r['pow2'] for r in lutq)
    if 'prune' in config:
        for r in lutq:
            assert r['sparsity'] >= 0.7
    assert any(r['type'] == 'bn' and r['lutq'] for r in layers) == ('mlbn' in config)
    # the solver kept every table consistent with its weights: each value is the (pow-2) mean
    # of the weights assigned to it, the pruned ones are the smallest |W|
    assert_tables_fitted(nnabla_lutq.lutq_layers())


@pytest.mark.slow
def test_float_then_lutq_init(tmp_path, official):
    _, fout = run(tmp_path, 'float', '--config', 'float', data_dir=official[0])
    res, out = run(tmp_path, 'q', '--config', 'lutq4', '--init', str(fout / 'params.h5'),
                   data_dir=official[0])
    assert res['schedule']['init'].endswith('params.h5')
    from_h5 = {k: v.d.copy() for k, v in nn.get_parameters(grad_only=False).items()}
    # the float run's model.nnp (converted with nnabla_lutq.convert) starts the same run
    nn.clear_parameters()
    res2, _ = run(tmp_path, 'q-nnp', '--config', 'lutq4', '--init', str(fout / 'model.nnp'),
                  data_dir=official[0])
    from_nnp = {k: v.d.copy() for k, v in nn.get_parameters(grad_only=False).items()}
    assert from_h5.keys() == from_nnp.keys()
    for k in from_h5:
        np.testing.assert_array_equal(from_h5[k], from_nnp[k], err_msg=k)
    assert res2['history'] == res['history']
    with pytest.raises(SystemExit, match='no such file'):
        run(tmp_path, 'q2', '--config', 'lutq4', '--init', str(tmp_path / 'nope.h5'),
            data_dir=official[0])
    assert not (tmp_path / 'q2').exists()


def test_existing_run_is_not_overwritten_and_resume_needs_a_checkpoint(tmp_path, official):
    _, out = run(tmp_path, 'r', '--config', 'lutq4', '--max-iter', '2', data_dir=official[0])
    before = (out / 'params.h5').read_bytes()
    with pytest.raises(SystemExit, match='already holds a run'):
        run(tmp_path, 'r', '--config', 'lutq4', data_dir=official[0])
    assert (out / 'params.h5').read_bytes() == before
    with pytest.raises(SystemExit, match='no complete checkpoint'):
        cifar_train.main(['--resume', str(tmp_path / 'nothing')])
    broken = tmp_path / 'broken' / 'checkpoint'
    broken.mkdir(parents=True)
    (broken / 'state.json').write_text('{}')  # a damaged checkpoint
    with pytest.raises(SystemExit, match='no complete checkpoint'):
        cifar_train.main(['--resume', str(tmp_path / 'broken')])
    import shutil
    shutil.rmtree(broken)
    shutil.copytree(out / 'checkpoint', broken)  # a whole checkpoint, but no args.json
    with pytest.raises(SystemExit, match='args.json cannot be read'):
        cifar_train.main(['--resume', str(tmp_path / 'broken')])
    for bad in (['--epochs', '0'], ['--lr', '-1'], ['--config', 'lutq2-pow3']):
        with pytest.raises(SystemExit, match='error'):
            run(tmp_path, 'x', *bad, data_dir=official[0])
    assert not (tmp_path / 'x').exists()


def _h5_arrays(path):
    import h5py
    out = {}
    with h5py.File(path, 'r') as f:
        f.visititems(lambda k, v: out.__setitem__(k, v[()]) if isinstance(v, h5py.Dataset)
                     else None)
    return out


@pytest.mark.slow
def test_best_parameters_are_kept_and_resume_keeps_them(tmp_path, official, monkeypatch):
    """best.h5 holds the parameters at the lowest validation error (here made to be the second of
    four validations): those of a run stopped there. A run stopped after it and resumed writes
    the same best.h5 as an uninterrupted run."""
    scripted = {5: 0.5, 10: 0.3, 15: 0.4, 20: 0.3}  # iteration -> validation error
    calls = []

    def fake_evaluate(predict, dataset, batch_size, limit=None):
        calls.append(None)
        return scripted[5 * (len(calls) - calls_before[0])]
    calls_before = [0]
    monkeypatch.setattr(trainer, '_evaluate', fake_evaluate)
    common = ['--config', 'lutq4', '--epochs', '4']
    res, out = run(tmp_path, 'straight', *common, data_dir=official[0])
    assert [h['val_error'] for h in res['history']] == list(scripted.values())
    assert (res['best_params'], res['best_val_error'], res['best_iteration']) == \
        ('best.h5', 0.3, 10)  # the first of two equal errors
    nn.clear_parameters()
    calls_before[0] = len(calls)
    _, at10 = run(tmp_path, 'at10', *common, data_dir=official[0], stop_at=10)
    best, ten = _h5_arrays(out / 'best.h5'), _h5_arrays(at10 / 'checkpoint' / 'params.h5')
    final = _h5_arrays(out / 'params.h5')
    assert best.keys() == ten.keys() == final.keys() and best
    for k in best:
        np.testing.assert_array_equal(best[k], ten[k], err_msg=k)
    assert any(not np.array_equal(best[k], final[k]) for k in best)
    nn.clear_parameters()
    calls_before[0] = len(calls)
    _, split = run(tmp_path, 'split', *common, data_dir=official[0], stop_at=13)
    cifar_train.main(['--resume', str(split), '--no-progress'])
    again = _h5_arrays(split / 'best.h5')
    for k in best:
        np.testing.assert_array_equal(best[k], again[k], err_msg=k)


@pytest.mark.slow
def test_exported_nnp_reproduces_the_network(tmp_path, jpeg_tar):
    from nnabla.utils.nnp_graph import NnpLoader
    res, out = run(tmp_path, 'e', '--config', 'lutq2-pow2-mlbn', '--act-bits', '8',
                   '--max-iter', '3', data_dir=jpeg_tar)
    ds = cifar_data.load_cifar10(jpeg_tar, progress=False)
    _, _, predict = trainer.predict_fn(cifar_train.resnet20, configs.parse(
        'lutq2-pow2-mlbn', act_bits=8), 1, ds.image_shape)
    with nn.parameter_scope('loaded'):
        net = NnpLoader(str(out / 'model.nnp')).get_network('lutq', batch_size=1)
    xi, yo = list(net.inputs.values())[0], list(net.outputs.values())[0]
    names = set(nn.get_parameters(grad_only=False))
    assert not any(n.endswith('/W') and 'lutq' in n for n in net.variables if n not in names)
    for img in ds.x_test[:5].astype(np.float32):
        xi.d = img[None]
        yo.forward()
        np.testing.assert_array_equal(yo.d, predict(img[None]))
    # deployment of the trained ResNet-20: pack, unpack, same outputs; the report reads it
    from nnabla_lutq import pack, unpack
    from nnabla_lutq import cli
    st = pack(str(out / 'model.nnp'), str(tmp_path / 'm.lutq'))
    assert len(st['layers']) == 22 and st['overhead'] <= 4096
    unpack(str(tmp_path / 'm.lutq'), str(tmp_path / 'back.nnp'))
    with nn.parameter_scope('back'):
        net2 = NnpLoader(str(tmp_path / 'back.nnp')).get_network('lutq', batch_size=1)
    xi2, yo2 = list(net2.inputs.values())[0], list(net2.outputs.values())[0]
    xi2.d = ds.x_test[:1].astype(np.float32)
    yo2.forward()
    np.testing.assert_array_equal(yo2.d, predict(ds.x_test[:1].astype(np.float32)))
    assert cli.main(['info', str(tmp_path / 'm.lutq')]) == 0


# --- reproduction table -----------------------------------------------------------------------

def test_reproduce_collects_runs_into_results_md(tmp_path, official):
    runs = tmp_path / 'runs'
    for config in ('float', 'lutq4-pow2', 'lutq2-prune70'):
        run(runs, config, '--config', config, '--max-iter', '3', data_dir=official[0])
    md = tmp_path / 'RESULTS.md'
    lc, grouped = reproduce.KEPT_SECTIONS
    (tmp_path / lc).write_text('## LUT-Q vs LC\n\n| a | b |\n')
    (tmp_path / grouped).write_text('## Grouped\n\n| c |\n')
    reproduce.main(['--collect', str(runs), '--output', str(md)])
    text = md.read_text()
    assert text.rstrip().endswith('## LUT-Q vs LC\n\n| a | b |\n\n\n## Grouped\n\n| c |')  # kept
    assert '| float' in text and '7.4' in text and 'lutq4-pow2' in text
    assert (tmp_path / 'fig2_pruning.png').stat().st_size > 1000
    errors = {json.load(open(runs / c / 'results.json'))['config']:
              json.load(open(runs / c / 'results.json'))['final_val_error'] for c in os.listdir(runs)}
    assert f"{100 * errors['lutq4-pow2']:.2f}" in text


@pytest.mark.slow
def test_reproduce_pairs_finetuned_runs_with_their_float_run(tmp_path, official):
    """A LUT-Q run fine-tuned from a collected float run at another lr (the paper160 recipe)
    shares that run's table and gets its Δ; a run from a float run elsewhere does not."""
    runs = tmp_path / 'runs'
    common = ['--max-iter', '3']
    _, fl = run(runs / 'r', 'float', '--config', 'float', *common, data_dir=official[0])
    run(runs / 'r', 'lutq4', '--config', 'lutq4', '--init', str(fl / 'best.h5'), '--lr', '0.01',
        *common, data_dir=official[0])
    _, other = run(tmp_path / 'elsewhere', 'float', '--config', 'float', *common,
                   data_dir=official[0])
    run(runs / 'r', 'lutq2', '--config', 'lutq2', '--init', str(other / 'params.h5'), '--lr',
        '0.01', *common, data_dir=official[0])
    md = tmp_path / 'R.md'
    reproduce.main(['--collect', str(runs), '--output', str(md)])
    text = md.read_text()
    res = {c: json.load(open(runs / 'r' / c / 'results.json')) for c in ('float', 'lutq4')}
    delta = 100 * (res['lutq4']['final_val_error'] - res['float']['final_val_error'])
    tables = text.split('## Schedule ')[1:]
    assert len(tables) == 2  # float + the fine-tuned lutq4; the unpaired lutq2 alone
    first = next(t for t in tables if '| float |' in t)
    assert "| lutq4 † |" in first and f"| {delta:+.2f} |" in first
    assert f"† fine-tuned from this table's float run (`--init {fl / 'best.h5'}`) at lr 0.01" \
        in first
    second = next(t for t in tables if '| lutq2' in t)
    assert '| lutq2 |' in second and 'n/a' in second and '†' not in second


def test_reproduce_checks_gaps_against_the_prototype(tmp_path):
    """At the prototype's 12-epoch schedule the table gets the gap check: our gap, its gap, the
    excess and whether it is within 0.3 points. Stored results (tests/data), chosen on both sides
    of the tolerance and for both bit widths; other schedules get no check."""
    with open(os.path.join(ROOT, 'tests', 'data', 'cifar10_prototype_runs.json')) as f:
        stored = json.load(f)['runs']
    runs = tmp_path / 'runs'
    for folder, results in stored.items():
        (runs / folder).mkdir(parents=True)
        (runs / folder / 'results.json').write_text(json.dumps(results))
    md = tmp_path / 'R.md'
    reproduce.main(['--collect', str(runs), '--output', str(md)])
    text = md.read_text()
    assert text.count('Against the prototype') == 1  # not for the 0.05 lr or 7-iteration tables
    assert ('Against the prototype at this schedule (12 epochs; float 17.2 % there, 20.00 % '
            'here; it trained on the 50,000 JPEG images, this table on 40): our gap to float may '
            'exceed its gap by at most 0.3 points.') in text
    no = '**no**: find out why before recording'
    rows = ['| configuration | our gap | prototype gap | excess | within |',
            '|---|---:|---:|---:|---|',
            '| lutq4-pow2 | +0.30 | +0.00 | +0.30 | yes |',  # exactly at the tolerance
            f'| lutq4 | +0.31 | +0.00 | +0.31 | {no} |',
            f'| lutq2-pow2 | +1.50 | +0.90 | +0.60 | {no} |',
            '| lutq2 | +1.00 | +0.90 | +0.10 | yes |']
    assert '\n'.join(rows) + '\n' in text
    check = text.index('Against the prototype')
    table = text.rindex('## Schedule ', 0, check)
    assert 'cosine lr 0.1, wd 0.0005' in text[table:check] and '12 epochs' in text[table:check]


@pytest.mark.slow
def test_reproduce_runs_configs_then_reports(tmp_path, official):
    runs, md = tmp_path / 'runs', tmp_path / 'R.md'
    argv = ['--run', 'float', 'lutq2-pow2-mlbn', '--runs', str(runs), '--output', str(md),
            '--data-dir', official[0], '--max-iter', '2', '--batch-size', '8', '--no-progress']
    reproduce.main(argv)
    assert sorted(os.listdir(runs)) == ['float', 'lutq2-pow2-mlbn']
    text = md.read_text()
    assert '| lutq2-pow2-mlbn | 2-bit pow-2 (fully multiplier-less) | multiplier-less BN | 9.0 |' \
        in text
    before = (runs / 'float' / 'results.json').read_bytes()
    reproduce.main(argv)  # finished runs are kept, not retrained
    assert (runs / 'float' / 'results.json').read_bytes() == before
    with pytest.raises(SystemExit):
        reproduce.main(['--run', 'lutq2-pow3', '--runs', str(runs)])
