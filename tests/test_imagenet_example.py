# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The ImageNet example on tiny generated image folders: data (both validation layouts, odd JPEG
modes), models, train.py end to end for each Table-2 family, exact resume, export parity, two
data-parallel ranks, clear errors, the DALI loader (when installed) and reproduce.py."""
import json
import os

import numpy as np
import pytest
import nnabla as nn
import nnabla.functions as F
from nnabla.utils.nnp_graph import NnpLoader
from PIL import Image

from examples.common import configs, trainer
from examples.common.image_data import DataError
from examples.common.models import Layers
from examples.common.reproduce import collect
from examples.imagenet import data as inet_data
from examples.imagenet import dali_loader
from examples.imagenet import reproduce as inet_reproduce
from examples.imagenet import train as inet_train
from examples.imagenet.models import resnet


def _save(path, mode, size, seed, fmt='JPEG'):
    rng = np.random.RandomState(seed)
    bands = {'RGB': 3, 'L': 1, 'CMYK': 4}[mode]
    arr = rng.randint(0, 256, (size[1], size[0], bands)).astype(np.uint8)
    img = Image.fromarray(arr[..., 0] if bands == 1 else arr, mode)
    img.save(path, fmt)


@pytest.fixture
def folder(tmp_path):
    """train/<3 classes>/ with RGB, grayscale and CMYK JPEGs and a PNG named .JPEG; val/ both ways."""
    root = tmp_path / 'inet'
    modes = ['RGB', 'L', 'CMYK', 'RGB']
    for c, wnid in enumerate(['n001', 'n002', 'n003']):
        for split, n in (('train', 4), ('val', 2)):
            d = root / split / wnid
            d.mkdir(parents=True)
            for k in range(n):
                fmt = 'PNG' if k == 3 else 'JPEG'  # a PNG disguised as .JPEG
                _save(d / f'{wnid}_{k}.JPEG', modes[k % 4], (40 + 7 * k, 30 + 5 * c), 10 * c + k,
                      fmt)
    return root


def _flat_val(root, label_file):
    flat = root / 'val'
    names = []
    for wnid in sorted(os.listdir(flat)):
        for f in sorted(os.listdir(flat / wnid)):
            (flat / wnid / f).rename(flat / f)
            names.append((f, wnid))
        (flat / wnid).rmdir()
    if label_file == 'csv':
        with open(root / 'LOC_val_solution.csv', 'w') as fh:
            fh.write('ImageId,PredictionString\n')
            for f, wnid in names:
                fh.write(f"{os.path.splitext(f)[0]},{wnid} 1 2 3 4\n")
    else:
        classes = sorted({w for _, w in names})
        with open(root / 'val.txt', 'w') as fh:
            for f, wnid in names:
                fh.write(f"{f} {classes.index(wnid)}\n")
    return names


def test_every_image_mode_loads_and_batches_are_deterministic(folder):
    a = inet_data.ImageFolder(str(folder), image_size=32, workers=0)
    b = inet_data.ImageFolder(str(folder), image_size=32, workers=2, prefetch=2)
    assert a.classes == ['n001', 'n002', 'n003'] and a.n_train == 12 and a.n_test == 6
    assert a.image_shape == (3, 32, 32) and a.steps_per_epoch(4) == 3
    for epoch in range(2):
        for i in range(3):
            xa, ya = a.train_batch(epoch, i, 4, seed=7)
            xb, yb = b.train_batch(epoch, i, 4, seed=7)
            assert xa.shape == (4, 3, 32, 32) and xa.dtype == np.float32 and ya.shape == (4, 1)
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
    x0, _ = a.train_batch(0, 0, 4, seed=7)
    x1, _ = a.train_batch(1, 0, 4, seed=7)
    assert not np.array_equal(x0, x1)  # another epoch, other crops
    # an epoch visits every training image once (labels of the permutation)
    labels = np.concatenate([a.train_batch(0, i, 4, 7)[1][:, 0] for i in range(3)])
    assert sorted(labels.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    b.close()


def test_validation_is_resize_then_center_crop(folder):
    ds = inet_data.ImageFolder(str(folder), image_size=16, workers=0)
    xs, ys = zip(*ds.test_batches(4))
    x, y = np.concatenate(xs), np.concatenate(ys)
    assert x.shape == (6, 3, 16, 16) and y[:, 0].tolist() == [0, 0, 1, 1, 2, 2]
    path = ds.test_items[0][0]
    img = Image.open(path).convert('RGB')
    s = round(16 * 256 / 224) / min(img.size)
    w, h = max(16, round(img.size[0] * s)), max(16, round(img.size[1] * s))
    ref = np.asarray(img.resize((w, h), Image.BILINEAR), np.float32)
    top, left = (h - 16) // 2, (w - 16) // 2
    np.testing.assert_array_equal(x[0], ref[top:top + 16, left:left + 16].transpose(2, 0, 1))
    assert sum(len(b[0]) for b in ds.test_batches(4, limit=5)) == 5


def test_random_resized_crop_boxes(folder):
    rng = np.random.RandomState(0)
    for _ in range(200):
        w, h = rng.randint(20, 400, 2)
        box = inet_data.random_box(w, h, rng.rand(10, 4).tolist())
        x0, y0, x1, y1 = box
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        area = (x1 - x0) * (y1 - y0) / (w * h)
        ratio = (x1 - x0) / (y1 - y0)
        central = (x1 - x0) == (y1 - y0) == min(w, h)
        assert central or (0.06 <= area <= 1.0 and 0.7 <= ratio <= 1.45)


@pytest.mark.parametrize('label_file', ['csv', 'txt'])
def test_flat_val_folder_with_a_label_file(folder, label_file):
    names = _flat_val(folder, label_file)
    ds = inet_data.ImageFolder(str(folder), image_size=16, workers=0)
    got = {os.path.basename(p): lab for p, lab in ds.test_items}
    assert got == {f: ds.classes.index(w) for f, w in names}


def test_clear_errors(folder, tmp_path):
    with pytest.raises(DataError, match='expected the folders train/<class>/ and val/<class>/'):
        inet_data.ImageFolder(str(tmp_path / 'missing'))
    (folder / 'train' / 'n004').mkdir()
    with pytest.raises(DataError, match='n004: an empty class folder'):
        inet_data.ImageFolder(str(folder))
    (folder / 'train' / 'n004').rmdir()
    _flat_val(folder, 'txt')
    os.remove(folder / 'val.txt')
    with pytest.raises(DataError, match='no label file'):
        inet_data.ImageFolder(str(folder))


def test_an_unreadable_image_names_the_file(folder):
    bad = folder / 'train' / 'n001' / 'n001_0.JPEG'
    bad.write_bytes(b'not an image')
    ds = inet_data.ImageFolder(str(folder), image_size=16, workers=0)
    with pytest.raises(DataError, match='n001_0.JPEG: cannot decode this image'):
        for i in range(3):
            ds.train_batch(0, i, 4, 0)


@pytest.mark.parametrize('depth', [18, 50])
def test_resnet_forward_backward_float_and_lutq(depth):
    x = nn.Variable.from_numpy_array(np.random.RandomState(0).randn(2, 3, 32, 32).astype(np.float32))
    for layers in (Layers(), Layers(lutq=True, n_values=4, dictionary='pow2', mlbn=True)):
        nn.clear_parameters()
        y = resnet(x, layers, depth, n_classes=5)
        loss = F.mean(y ** 2)
        loss.forward()
        loss.backward()
        assert y.shape == (2, 5) and np.isfinite(loss.d)
        convs = [k for k in nn.get_parameters() if k.endswith('/W')]
        assert len(convs) == {18: 21, 50: 54}[depth]  # incl. projection shortcuts and fc
    with pytest.raises(ValueError, match='depth 20 is not available'):
        resnet(x, Layers(), 20)


def test_workers_leave_no_shared_memory_behind(folder):
    before = set(os.listdir('/dev/shm')) if os.path.isdir('/dev/shm') else set()
    ds = inet_data.ImageFolder(str(folder), image_size=16, workers=2, prefetch=2)
    ds.train_batch(0, 0, 4, 0)  # queues batches 1 and 2 too
    next(iter(ds.test_batches(2)))  # a consumer that stops after one batch
    ds.close()
    after = set(os.listdir('/dev/shm')) if os.path.isdir('/dev/shm') else set()
    assert after <= before


def test_shards_split_each_epoch_and_val_images_keep_every_class(folder):
    ranks = [inet_data.ImageFolder(str(folder), image_size=16, workers=0) for _ in range(2)]
    for r, ds in enumerate(ranks):
        ds.shard(r, 2)
    assert ranks[0].steps_per_epoch(2) == 3
    seen = [ds.train_batch(0, i, 2, 5)[1][:, 0].tolist() for i in range(3) for ds in ranks]
    assert sorted(sum(seen, [])) == [0] * 4 + [1] * 4 + [2] * 4  # together: the whole epoch
    labels = np.concatenate([y for _, y in ranks[0].test_batches(2, limit=3)])[:, 0]
    assert labels.tolist() == [0, 1, 2]  # --val-images: evenly spaced, not the first class only


# --- train.py end to end ------------------------------------------------------------------------

def run(tmp_path, name, *extra, data_dir, stop_at=None, comm=None, epochs=1):
    out = tmp_path / name
    argv = ['--data-dir', str(data_dir), '--output', str(out), '--arch', 'resnet18',
            '--image-size', '32', '--epochs', str(epochs), '--batch-size', '4',
            '--val-batch-size', '4', '--workers', '0', '--no-progress', *extra]
    return inet_train.main(argv, stop_at=stop_at, comm=comm), out


def _model(x, layers, test=False):
    return resnet(x, layers, 18, test, n_classes=3)


@pytest.mark.slow
@pytest.mark.parametrize('config,extra', [
    ('float', []),
    ('lutq4-pow2', ['--act-bits', '8']),             # 4-bit pow-2, 8-bit act: quasi multiplier-less
    ('lutq4-pow2-mlbn', ['--act-bits', '8']),        # fully multiplier-less
    ('lutq2-pow2', []),                              # 2-bit pow-2, float activations
    ('lutq2-pow2-mlbn', ['--act-bits', '8', '--float-first-last'])])
def test_each_table2_family_runs_end_to_end(tmp_path, folder, config, extra):
    """Train, validate, checkpoint, export; results.json with the footprint; model.nnp parity."""
    res, out = run(tmp_path, config, '--config', config, *extra, data_dir=folder)
    saved = json.load(open(out / 'results.json'))
    assert saved['config'] == config and saved['schedule']['iterations'] == 3
    assert len(saved['history']) == 1 and 0 <= saved['final_val_error'] <= 1
    for f in ('model.nnp', 'params.h5', 'args.json', 'checkpoint/state.json',
              'train_loss.series.txt', 'val_error.series.txt'):
        assert (out / f).is_file(), f
    inet = saved['imagenet']
    assert (inet['arch'], inet['image_size'], inet['n_classes'], inet['loader']) == \
        ('resnet18', 32, 3, 'pil')
    assert inet['row'] == inet_reproduce.paper.row_of(config, saved['act_bits'])
    fp = inet['footprint']
    assert fp['224']['param_mib'] == fp['run']['param_mib'] > 0
    assert fp['224']['activation_mib'] > fp['run']['activation_mib'] > 0
    assert fp['run']['act_bits'] == (8 if '--act-bits' in extra else 32)
    layers = saved['report']['layers']
    lutq = [r for r in layers if r['lutq'] and r['type'] != 'bn']
    c = configs.parse(config)
    edges = '--float-first-last' in extra
    assert len(lutq) == (0 if not c.lutq else 19 if edges else 21)
    assert all(r['n_values'] == c.n_values and r['pow2'] for r in lutq)
    assert any(r['type'] == 'bn' and r['lutq'] for r in layers) == c.mlbn
    totals = saved['report']['totals']
    assert fp['run']['param_mib'] * 8 * 2 ** 20 >= totals['memory_bits']  # + biases
    if c.lutq:  # 2 or 4 bits per weight instead of 32
        assert fp['run']['param_mib'] * 8 * 2 ** 20 < totals['float_memory_bits'] / 6
    # model.nnp (look-up tables, no float W) reloads to the outputs of the trained network
    _, _, predict = trainer.predict_fn(_model, configs.parse(config, act_bits=saved['act_bits'],
                                                             quantize_first_last=not edges),
                                       1, (3, 32, 32))
    with nn.parameter_scope('loaded'):
        net = NnpLoader(str(out / 'model.nnp')).get_network('lutq', batch_size=1)
    xi, yo = list(net.inputs.values())[0], list(net.outputs.values())[0]
    assert not any(n.endswith('/W') and 'lutq' in n for n in net.variables)
    ds = inet_data.ImageFolder(str(folder), image_size=32, workers=0)
    for xb, _ in ds.test_batches(1, limit=3):
        xi.d = xb
        yo.forward()
        np.testing.assert_array_equal(yo.d, predict(xb))


@pytest.mark.slow
def test_float_then_lutq_init_and_flat_val(tmp_path, folder):
    _flat_val(folder, 'csv')  # the other validation layout
    _, fout = run(tmp_path, 'float', '--config', 'float', data_dir=folder)
    res, out = run(tmp_path, 'q', '--config', 'lutq2-pow2', '--act-bits', '8', '--init',
                   str(fout / 'params.h5'), data_dir=folder)
    assert res['schedule']['init'].endswith('params.h5') and res['n_val'] == 6
    # or from the float run's model.nnp (converted to LUT-Q; first/last layer kept float here)
    res, _ = run(tmp_path, 'q_nnp', '--config', 'lutq2-pow2', '--float-first-last', '--init',
                 str(fout / 'model.nnp'), data_dir=folder)
    lutq = [r for r in res['report']['layers'] if r['lutq'] and r['type'] != 'bn']
    assert len(lutq) == 19 and res['schedule']['init'].endswith('model.nnp')
    with pytest.raises(SystemExit, match='no such file'):
        run(tmp_path, 'q2', '--config', 'lutq4', '--init', str(tmp_path / 'nope.h5'),
            data_dir=folder)
    assert not (tmp_path / 'q2').exists()


@pytest.mark.slow
def test_resume_continues_exactly(tmp_path, folder):
    """Stopped mid-epoch with worker processes, resumed without: a straight run's parameters."""
    common = ['--config', 'lutq2-pow2-mlbn', '--act-bits', '8']
    run(tmp_path, 'straight', *common, data_dir=folder, epochs=2)
    straight = {k: v.d.copy() for k, v in nn.get_parameters(grad_only=False).items()}
    state, out = run(tmp_path, 'split', *common, '--workers', '2', data_dir=folder, epochs=2,
                     stop_at=4)
    assert state['iteration'] == 4 and not (out / 'results.json').exists()
    res = inet_train.main(['--resume', str(out), '--no-progress', '--workers', '0'])
    resumed = {k: v.d.copy() for k, v in nn.get_parameters(grad_only=False).items()}
    assert straight.keys() == resumed.keys()
    for k in straight:
        np.testing.assert_array_equal(straight[k], resumed[k], err_msg=k)
    a = json.load(open(tmp_path / 'straight' / 'results.json'))
    assert [h['val_error'] for h in res['history']] == [h['val_error'] for h in a['history']]
    assert res['imagenet'] == {**a['imagenet'], 'workers': 0}
    with pytest.raises(SystemExit, match='--image-size cannot change when resuming'):
        inet_train.main(['--resume', str(out), '--image-size', '64'])


class PipeComm:
    """nnabla's data-parallel communicator for two processes joined by a pipe (the part the trainer
    and the LUT-Q solver use: rank, size, local_rank, bcast, all_reduce)."""

    def __init__(self, rank, conn):
        self.rank, self.size, self.local_rank, self.conn = rank, 2, 0, conn
        self.calls = []

    def _exchange(self, arrays):
        if self.rank == 0:  # one side sends first: a pipe holds only so much
            self.conn.send(arrays)
            return self.conn.recv()
        other = self.conn.recv()
        self.conn.send(arrays)
        return other

    def bcast(self, data, src=0, inplace=False):
        self.calls.append('bcast')
        mine = [a.get_data('r').copy() for a in data]
        theirs = self._exchange(mine)
        if self.rank != src:
            for a, v in zip(data, theirs):
                a.cast(v.dtype)[...] = v

    def all_reduce(self, data, division=False, inplace=False):
        self.calls.append('all_reduce')
        mine = [a.get_data('r').copy() for a in data]
        theirs = self._exchange(mine)
        for a, m, t in zip(data, mine, theirs):
            total = m + t if self.rank == 0 else t + m  # the same sum on both ranks
            a.cast(m.dtype)[...] = total / 2 if division else total


def _rank_main(rank, conn, argv, result):
    try:
        comm = PipeComm(rank, conn)
        res = inet_train.main(argv, comm=comm)
        np.savez(result, finished=np.array('final_val_error' in res),
                 calls=np.array(sorted(set(comm.calls))),
                 **{k.replace('/', '|'): v.d
                    for k, v in nn.get_parameters(grad_only=False).items()})
        os._exit(0)
    except BaseException as e:
        print(f"rank {rank}: {e!r}", flush=True)
        os._exit(1)


@pytest.mark.slow
def test_two_ranks_train_one_network(tmp_path, folder):
    """Two data-parallel processes (what mpirun -n 2 starts): same weights and LUT-Q tables on both
    ranks after training, each rank read its own shard, only rank 0 wrote files."""
    import multiprocessing
    mp = multiprocessing.get_context('fork')
    out = tmp_path / 'dp'
    argv = ['--data-dir', str(folder), '--output', str(out), '--arch', 'resnet18',
            '--image-size', '32', '--epochs', '2', '--batch-size', '3', '--val-batch-size', '3',
            '--lr', '0.01', '--workers', '0', '--no-progress', '--config', 'lutq2-pow2',
            '--act-bits', '8']
    a, b = mp.Pipe()
    procs = [mp.Process(target=_rank_main, args=(r, c, argv, str(tmp_path / f'rank{r}.npz')))
             for r, c in enumerate((a, b))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0, 0]
    r0, r1 = (dict(np.load(tmp_path / f'rank{r}.npz')) for r in range(2))
    assert r0.pop('finished') and not r1.pop('finished')  # rank 0 finished the run and wrote it
    assert list(r0.pop('calls')) == list(r1.pop('calls')) == ['all_reduce', 'bcast']
    assert r0.keys() == r1.keys()
    trained = [k for k in r0 if k.endswith(('|W', '|b', '|beta', '|gamma', '|d', '|A'))]
    assert any(k.endswith('|d') for k in trained) and len(trained) > 40
    for k in trained:  # all-reduced gradients, broadcast start, synchronized k-means
        np.testing.assert_array_equal(r0[k], r1[k], err_msg=k)
    # batch statistics are each rank's own (its shard): BN running means differ
    means = [k for k in r0 if k.endswith('|mean')]
    assert any(not np.array_equal(r0[k], r1[k]) for k in means)
    saved = json.load(open(out / 'results.json'))
    assert saved['schedule']['processes'] == 2 and saved['schedule']['iterations'] == 4


def test_clear_errors_before_anything_is_written(tmp_path, folder):
    with pytest.raises(SystemExit, match='expected the folders train/<class>/ and val/<class>/'):
        run(tmp_path, 'r', data_dir=tmp_path / 'missing')
    with pytest.raises(SystemExit, match='--data-dir: give the ImageNet folder'):
        inet_train.main(['--output', str(tmp_path / 'r'), '--no-progress'])
    with pytest.raises(SystemExit, match='--image-size 16: the ResNets need at least 32'):
        run(tmp_path, 'r', '--image-size', '16', data_dir=folder)
    (folder / 'train' / 'n004').mkdir()
    with pytest.raises(SystemExit, match='n004: an empty class folder'):
        run(tmp_path, 'r', data_dir=folder)
    (folder / 'train' / 'n004').rmdir()
    if not inet_train.resolve_loader('auto', 'cudnn') == 'dali':
        with pytest.raises(SystemExit, match='--loader dali needs NVIDIA DALI'):
            run(tmp_path, 'r', '--loader', 'dali', data_dir=folder)
    assert not (tmp_path / 'r').exists()
    (folder / 'train' / 'n002' / 'n002_1.JPEG').write_bytes(b'\xff\xd8 truncated')
    with pytest.raises(SystemExit, match='n002_1.JPEG: cannot decode this image'):
        run(tmp_path, 'r', '--epochs', '2', data_dir=folder)


@pytest.mark.skipif(not dali_loader.available(), reason='NVIDIA DALI is not installed')
def test_dali_loader_matches_the_pillow_loader(tmp_path, folder):
    a = inet_data.ImageFolder(str(folder), image_size=32, workers=0)
    b = dali_loader.DaliImageFolder(str(folder), image_size=32, workers=1, device='cpu')
    for i in range(3):
        (xa, ya), (xb, yb) = a.train_batch(0, i, 4, 3), b.train_batch(0, i, 4, 3)
        np.testing.assert_array_equal(ya, yb)
        assert xb.shape == xa.shape and xb.dtype == np.float32
        assert np.abs(xa - xb).mean() < 4  # another decoder and resampler, the same crops
    np.testing.assert_array_equal(b.train_batch(1, 2, 4, 3)[0], b.train_batch(1, 2, 4, 3)[0])
    (va, la), (vb, lb) = next(a.test_batches(6)), next(b.test_batches(6))
    np.testing.assert_array_equal(la, lb)
    assert np.abs(va - vb).mean() < 1
    b.close()
    res, _ = run(tmp_path, 'dali', '--loader', 'dali', '--config', 'lutq4-pow2', '--workers', '1',
                 data_dir=folder)
    assert res['imagenet']['loader'] == 'dali' and res['schedule']['iterations'] == 3


# --- reproduce.py -------------------------------------------------------------------------------

@pytest.mark.slow
def test_reproduce_runs_then_writes_a_table2_report(tmp_path, folder):
    runs, md = tmp_path / 'runs', tmp_path / 'R.md'
    argv = ['--run', 'float', 'lutq2-pow2-a8', '--init-from-float', '--runs', str(runs),
            '--output', str(md), '--footprint-archs', '--data-dir', str(folder),
            '--image-size', '32', '--max-iter', '2', '--batch-size', '4', '--workers', '0',
            '--no-progress']
    inet_reproduce.main(argv)
    assert sorted(os.listdir(runs / 'resnet18')) == ['float', 'lutq2-pow2-a8']
    q = json.load(open(runs / 'resnet18' / 'lutq2-pow2-a8' / 'results.json'))
    assert q['schedule']['init'].endswith(os.path.join('resnet18', 'float', 'params.h5'))
    text = md.read_text()
    assert '| lutq2-pow2-mlbn-a8 | 2-bit pow-2 | 8-bit | multiplier-less BN (fully ' \
           'multiplier-less) | 43.2 | 35.2 | 29.8 |' in text  # the paper's Table 2
    assert '29.42 | 26.44 | 23.27' in text and 'Schedule 1: pipeline check' in text
    assert f"{100 * q['final_val_error']:.2f}†" in text
    assert 'Memory footprint' not in text
    before = (runs / 'resnet18' / 'float' / 'results.json').read_bytes()
    inet_reproduce.main(argv)  # finished runs are kept
    assert (runs / 'resnet18' / 'float' / 'results.json').read_bytes() == before
    for bad in (['--run', 'lutq2-pow3'], ['--run', 'lutq4-a1'],
                ['--run', 'lutq4', '--init-from-float', '--runs', str(tmp_path / 'none')]):
        with pytest.raises(SystemExit):
            inet_reproduce.main(bad)

    # ImageNet results (1000 classes) get the paper's numbers beside ours, per network
    rs = collect(str(runs))
    for r in rs:
        r['imagenet']['n_classes'] = 1000
    rs.append(json.loads(json.dumps(rs[0])))
    rs[-1]['imagenet']['arch'], rs[-1]['run'] = 'resnet50', 'resnet50/float'
    text = inet_reproduce.write_report(rs, str(md), footprint_archs=())
    f18 = 100 * json.load(open(runs / 'resnet18' / 'float' / 'results.json'))['final_val_error']
    assert '| ResNet-18 paper | ours | ResNet-50 paper | ours |' in text
    assert f'| float | float | float | float BN | 31.0 | {f18:.2f} | 25.9 | {f18:.2f} |' in text
    assert f"| 35.8 | {100 * q['final_val_error']:.2f}† | 26.9 | — |" in text


def test_footprint_table_counts_bits():
    lines = inet_reproduce.footprint_table(['resnet18'])
    rows = [line.split('|') for line in lines[2:]]
    assert [r[2].strip() + '/' + r[3].strip() for r in rows] == \
        ['float/float', '4-bit/8-bit', '2-bit/float', '2-bit/8-bit']
    params = [float(r[4]) for r in rows]
    acts = [float(r[5]) for r in rows]
    assert 42 < params[0] < 45  # 11.7 M float weights
    assert params[0] / params[1] > 7 and params[2] == params[3] and params[0] / params[3] > 14
    assert acts[0] == acts[2] and acts[1] == acts[3] and abs(acts[0] - 4 * acts[1]) < 0.05
