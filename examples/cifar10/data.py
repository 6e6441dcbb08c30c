# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""CIFAR-10 from the official pickled batches or from a JPEG tree, cached after the first decode.

Looked for in ``--data-dir`` in this order:

1. ``cifar-10-python.tar.gz`` (the official file) or its extracted ``cifar-10-batches-py/``;
2. a JPEG tree ``train/<class>/*.jpg`` + ``test/<class>/*.jpg`` (the folder itself or a
   subfolder), or a ``.tar.gz`` / ``.tgz`` holding one.

``--data-dir`` may also name one of these archives itself.

Without ``--data-dir`` the folder is ``~/nnabla_data`` (where nnabla's own CIFAR-10 source keeps
it); if nothing is there, the official file is downloaded into it (short timeout). Decoded arrays
are cached in the user cache folder (see :func:`common.image_data.cache_dir`), never next to the
data.
"""
import os
import pickle
import tarfile
import urllib.request

import numpy as np

from examples.common.image_data import (ARCHIVE_ERRORS, ArrayDataset, DataError, cached,
                                        read_image_tree)

__all__ = ['CLASSES', 'OFFICIAL_URL', 'OFFICIAL_FILE', 'find_source', 'load_arrays',
           'load_cifar10']

CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
           'truck']
OFFICIAL_FILE = 'cifar-10-python.tar.gz'
OFFICIAL_URL = 'https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz'
DEFAULT_DIR = os.path.join('~', 'nnabla_data')
_BATCHES = ['data_batch_%d' % i for i in range(1, 6)] + ['test_batch']


def _read_official(source):
    """The official pickles from the .tar.gz or the extracted folder."""
    def arrays(blobs):
        out = {}
        for split, names in (('train', _BATCHES[:5]), ('test', _BATCHES[5:])):
            xs, ys = [], []
            for name in names:
                d = pickle.loads(blobs[name], encoding='bytes')
                xs.append(np.asarray(d[b'data'], np.uint8).reshape(-1, 3, 32, 32))
                ys.append(np.asarray(d[b'labels'], np.int32))
            out['x_' + split] = np.concatenate(xs)
            out['y_' + split] = np.concatenate(ys)[:, None]
        out['classes'] = np.array(CLASSES)
        return out

    if os.path.isdir(source):
        blobs = {}
        for name in _BATCHES:
            path = os.path.join(source, name)
            if not os.path.isfile(path):
                raise DataError(f"{source}: {name} is missing; re-extract {OFFICIAL_FILE}")
            with open(path, 'rb') as f:
                blobs[name] = f.read()
        return arrays(blobs)
    try:
        with tarfile.open(source) as tar:
            blobs = {}
            for m in tar.getmembers():
                base = os.path.basename(m.name)
                if m.isfile() and base in _BATCHES:
                    blobs[base] = tar.extractfile(m).read()
    except ARCHIVE_ERRORS as e:
        raise DataError(f"{source}: damaged archive ({e or type(e).__name__}); download "
                        f"{OFFICIAL_FILE} again")
    missing = [b for b in _BATCHES if b not in blobs]
    if missing:
        raise DataError(f"{source}: {', '.join(missing)} missing from the archive; download "
                        f"{OFFICIAL_FILE} again")
    try:
        return arrays(blobs)
    except (pickle.UnpicklingError, KeyError, ValueError, EOFError) as e:
        raise DataError(f"{source}: the batches cannot be read ({e})")


def _is_image_tree(folder):
    return (os.path.isdir(os.path.join(folder, 'train'))
            and os.path.isdir(os.path.join(folder, 'test')))


def find_source(data_dir):
    """The CIFAR-10 source inside ``data_dir``, in the documented order.

    Returns:
        tuple: ``(kind, path)`` with kind ``official`` or ``images``, or ``None``.
    """
    for name in (OFFICIAL_FILE, 'cifar-10-batches-py'):
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            return 'official', path
    if _is_image_tree(data_dir):
        return 'images', data_dir
    entries = sorted(os.listdir(data_dir))
    for e in entries:
        if os.path.isdir(os.path.join(data_dir, e)) and _is_image_tree(os.path.join(data_dir, e)):
            return 'images', os.path.join(data_dir, e)
    for e in entries:
        if e.endswith(('.tar.gz', '.tgz', '.tar')) and 'cifar' in e.lower():
            return 'images', os.path.join(data_dir, e)
    return None


def _download(folder, url, timeout):
    os.makedirs(folder, exist_ok=True)
    dest = os.path.join(folder, OFFICIAL_FILE)
    part = dest + '.part'
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(part, 'wb') as f:
            while True:
                chunk = r.read(1 << 20)
                if not chunk:
                    break
                f.write(chunk)
        os.replace(part, dest)
        return dest
    except (OSError, ValueError) as e:
        if os.path.exists(part):
            os.remove(part)
        return e


def load_arrays(data_dir=None, progress=True, url=OFFICIAL_URL, timeout=10):
    """CIFAR-10 as arrays (see the module docs for where it is looked for).

    Args:
        data_dir (str or None): folder with the data; ``None``: ``~/nnabla_data`` (download there
            if missing).
        progress (bool): progress bars while decoding.
        url (str): where the official file is downloaded from.
        timeout (float): download timeout in seconds.

    Returns:
        dict: ``x_train`` uint8 (50000, 3, 32, 32), ``y_train`` int32 (N, 1), ``x_test``,
        ``y_test``, ``classes``.

    Raises:
        DataError: no data found (and, without ``data_dir``, no download possible), or damaged data.
    """
    explicit = data_dir is not None
    folder = os.path.expanduser(data_dir if explicit else DEFAULT_DIR)
    found = None
    if explicit and os.path.isfile(folder):  # the archive itself: fine too
        if not folder.endswith(('.tar.gz', '.tgz', '.tar')):
            raise DataError(f"--data-dir {data_dir} is a file; give the folder that holds the data "
                            f"({OFFICIAL_FILE}, cifar-10-batches-py/ or a JPEG tree)")
        found = ('official' if os.path.basename(folder) == OFFICIAL_FILE else 'images', folder)
    elif explicit and not os.path.isdir(folder):
        raise DataError(f"--data-dir {data_dir}: no such folder")
    elif os.path.isdir(folder):
        found = find_source(folder)
    if found is None and not explicit:
        got = _download(folder, url, timeout)
        if not isinstance(got, str):
            raise DataError(
                f"CIFAR-10 is not in {folder} and cannot be downloaded ({got}). Put "
                f"{OFFICIAL_FILE} (from {OFFICIAL_URL}) or a JPEG tree train/<class>/*.jpg + "
                f"test/<class>/*.jpg there, or pass --data-dir DIR.")
        found = ('official', got)
    if found is None:
        raise DataError(
            f"--data-dir {data_dir}: no CIFAR-10 found. Expected {OFFICIAL_FILE}, "
            f"cifar-10-batches-py/, or a JPEG tree train/<class>/*.jpg + test/<class>/*.jpg "
            f"(a folder or a .tar.gz).")
    kind, path = found
    if kind == 'official':
        return cached('cifar10-official', path, lambda: _read_official(path))
    return cached('cifar10-images', path,
                  lambda: read_image_tree(path, size=(32, 32), progress=progress))


def load_cifar10(data_dir=None, progress=True, **kwargs):
    """CIFAR-10 as an :class:`~common.image_data.ArrayDataset` (pad-4 random crop + flip).

    Args:
        data_dir (str or None): see :func:`load_arrays`.
        progress (bool): progress bars while decoding.
        **kwargs: passed to :func:`load_arrays`.

    Returns:
        ~common.image_data.ArrayDataset: the dataset.
    """
    a = load_arrays(data_dir, progress=progress, **kwargs)
    if len(a['classes']) != 10:
        raise DataError(f"{data_dir}: found {len(a['classes'])} classes, CIFAR-10 has 10")
    return ArrayDataset(a['x_train'], a['y_train'], a['x_test'], a['y_test'],
                        list(a['classes']), pad=4, flip=True)
