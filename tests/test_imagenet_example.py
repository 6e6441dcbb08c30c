"""The ImageNet example's data and models on tiny generated image folders."""
import os

import numpy as np
import pytest
import nnabla as nn
import nnabla.functions as F
from PIL import Image

from examples.common.image_data import DataError
from examples.common.models import Layers
from examples.imagenet import data as inet_data
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
        box = inet_data._random_box(w, h, rng.rand(10, 4).tolist())
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
