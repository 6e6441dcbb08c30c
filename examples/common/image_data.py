# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Image-classification data shared by the examples.

* :func:`read_image_tree`: a ``train/<class>/*.jpg`` + ``test/<class>/*.jpg`` tree, as a folder or
  inside a ``.tar.gz`` (read without extracting), decoded with Pillow.
* :func:`cached`: decoded arrays cached as ``.npz`` in a user cache folder (never next to the
  data, which may be read-only), keyed by the source's path, size and modification time; a
  damaged cache file is decoded again and replaced, and a cache folder that cannot be written is
  found before the decode (the data is then decoded without a cache, with a warning).
* :class:`ArrayDataset`: in-memory uint8 images with deterministic, random-access minibatches
  (pad-and-crop + horizontal flip), so a resumed run sees exactly the batches it would have seen.
"""
import hashlib
import io
import os
import sys
import tarfile
import tempfile
import zipfile
import zlib

import numpy as np
from PIL import Image
from tqdm import tqdm

from nnabla_lutq.io.nnp import atomic_output

__all__ = ['DataError', 'ARCHIVE_ERRORS', 'cache_dir', 'cached', 'read_image_tree',
           'ArrayDataset']

_IMAGE_EXT = ('.jpg', '.jpeg', '.png', '.bmp')


class DataError(RuntimeError):
    """The data is missing or malformed; the message says what to do."""


def cache_dir():
    """The cache folder: ``$NNABLA_LUTQ_CACHE``, else ``$XDG_CACHE_HOME/nnabla_lutq``, else
    ``~/.cache/nnabla_lutq``."""
    if os.environ.get('NNABLA_LUTQ_CACHE'):
        return os.environ['NNABLA_LUTQ_CACHE']
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(base, 'nnabla_lutq')


def cached(kind, source, build):
    """Arrays built from ``source`` once, then read from the cache.

    A cache file that cannot be read whole (truncated, overwritten, another format) is built
    again and replaced. A cache folder that cannot be written is found before ``build`` runs:
    the arrays are then built without a cache, and a warning line on stderr names the folder
    and the remedy (as does a cache file that cannot be saved, e.g. on a full disk).

    Args:
        kind (str): a label that is part of the cache file name.
        source (str): the file or folder the arrays come from (its path, size and mtime key the
            cache, so a changed source is decoded again).
        build (callable): ``build() -> dict`` of numpy arrays.

    Returns:
        dict: name -> numpy array.
    """
    st = os.stat(source)
    size = st.st_size if os.path.isfile(source) else sum(
        os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(source) for f in fs)
    key = hashlib.sha1(f"{os.path.abspath(source)}|{size}|{st.st_mtime_ns}|v1".encode())
    path = os.path.join(cache_dir(), f"{kind}-{key.hexdigest()[:16]}.npz")
    if os.path.isfile(path):
        try:
            with np.load(path) as f:
                return {k: f[k] for k in f.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError):
            pass  # a damaged cache file is built again and replaced below
    problem = _unwritable(os.path.dirname(path))
    if problem:
        _warn(f"the cache folder {os.path.dirname(path)} cannot be written ({problem}); "
              "decoding without a cache (set NNABLA_LUTQ_CACHE to a writable folder to keep "
              "the decoded arrays)")
        return build()
    arrays = build()
    try:
        with atomic_output(path, '.npz') as tmp:
            np.savez(tmp, **arrays)
    except OSError as e:
        _warn(f"the decoded data cannot be cached in {path} ({e.strerror or e}); continuing "
              "without a cache")
    return arrays


def _unwritable(folder):
    """Why no file can be created in ``folder`` (created if missing), or None."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        return e.strerror or str(e)
    return None


def _warn(text):
    print(f"warning: {text}", file=sys.stderr)


#: What reading a damaged or truncated (gzip-compressed) tar archive raises.
ARCHIVE_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error)


def _decode(data, size):
    img = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data).convert('RGB')
    if size is not None and img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def _split_class(path):
    """``(split, class)`` of a ``.../<split>/<class>/<file>`` image path, else ``None``."""
    parts = path.replace('\\', '/').split('/')
    if len(parts) < 3 or not parts[-1].lower().endswith(_IMAGE_EXT):
        return None
    if parts[-3] not in ('train', 'test'):
        return None
    return parts[-3], parts[-2]


def read_image_tree(source, size=None, progress=True):
    """Decode a ``train/<class>/*`` + ``test/<class>/*`` image tree (folder or ``.tar.gz``).

    Classes are numbered in sorted order of their folder names (for CIFAR-10 this is the official
    label order).

    Args:
        source (str): a folder holding ``train/`` and ``test/`` (possibly one level down), or a
            ``.tar.gz`` / ``.tgz`` / ``.tar`` holding such a tree.
        size (tuple or None): ``(height, width)`` to resize to; ``None`` keeps the size (all images
            must then have the same size).
        progress (bool): show a progress bar.

    Returns:
        dict: ``x_train`` uint8 (N, 3, H, W), ``y_train`` int32 (N, 1), ``x_test``, ``y_test``,
        ``classes`` (str array).

    Raises:
        DataError: if the tree has no images, misses a split, or the two splits' classes differ.
    """
    items = []  # (split, class, key)
    if os.path.isdir(source):
        for root, _, files in os.walk(source):
            for f in files:
                p = os.path.join(root, f)
                sc = _split_class(os.path.relpath(p, source))
                if sc:
                    items.append((sc[0], sc[1], p))
        opener = None
    else:
        try:
            tar = tarfile.open(source)
            members = tar.getmembers()
        except ARCHIVE_ERRORS as e:
            raise DataError(f"{source}: not a readable tar archive ({e or type(e).__name__}); "
                            "it may be truncated: copy or download it again")
        for m in members:
            sc = _split_class(m.name) if m.isfile() else None
            if sc:
                items.append((sc[0], sc[1], m))
        opener = tar
    splits = {s: sorted({c for sp, c, _ in items if sp == s}) for s in ('train', 'test')}
    if not items or not splits['train'] or not splits['test']:
        raise DataError(f"{source}: expected images in train/<class>/ and test/<class>/ "
                        f"(found {len(items)} images)")
    if splits['train'] != splits['test']:
        raise DataError(f"{source}: train classes {splits['train']} differ from test classes "
                        f"{splits['test']}")
    classes = splits['train']
    index = {c: i for i, c in enumerate(classes)}
    # decode in storage order (a compressed archive is read front to back once), then order the
    # images by (split, class, file name) so the arrays do not depend on the storage order
    decoded = []
    for split, cls, key in tqdm(items, desc=f'decoding {os.path.basename(source)}',
                                disable=not progress, ncols=80, leave=False):
        try:
            data = opener.extractfile(key).read() if opener is not None else key
        except ARCHIVE_ERRORS as e:
            raise DataError(f"{source}: damaged archive at {key.name} ({e or type(e).__name__}); "
                            "copy or download it again")
        name = key if opener is None else key.name
        try:
            decoded.append((split, cls, name, _decode(data, size)))
        except (OSError, ValueError) as e:
            raise DataError(f"{name}: cannot decode this image ({e})")
    if opener is not None:
        opener.close()
    decoded.sort(key=lambda t: t[:3])
    out = {'train': ([], []), 'test': ([], [])}
    for split, cls, _, img in decoded:
        out[split][0].append(img)
        out[split][1].append(index[cls])
    shapes = {a.shape for a in out['train'][0] + out['test'][0]}
    if len(shapes) != 1:
        raise DataError(f"{source}: images have different sizes {sorted(shapes)[:4]}; pass size=")
    return {'x_train': np.stack(out['train'][0]),
            'y_train': np.array(out['train'][1], np.int32)[:, None],
            'x_test': np.stack(out['test'][0]),
            'y_test': np.array(out['test'][1], np.int32)[:, None],
            'classes': np.array(classes)}


def evenly_spaced(n, limit):
    """Indices of ``limit`` of ``n`` items, evenly spaced (all of them when ``limit`` is None or
    not smaller): a validation subset that keeps every class's share of a class-sorted set.

    Args:
        n (int): number of items.
        limit (int or None): how many to take.

    Returns:
        numpy.ndarray: increasing int indices.
    """
    if limit is None or limit >= n:
        return np.arange(n)
    return np.linspace(0, n - 1, limit).round().astype(int)


class ArrayDataset:
    """In-memory images with deterministic random-access training minibatches.

    Minibatch ``i`` of epoch ``e`` depends only on ``(seed, e, i)``: the epoch's permutation comes
    from ``RandomState(seed, e)`` and the batch's crops and flips from ``RandomState(seed, e, i)``.
    A run resumed at any iteration therefore continues with exactly the same data.

    Args:
        x_train (numpy.ndarray): uint8 (N, C, H, W).
        y_train (numpy.ndarray): int (N, 1) labels.
        x_test (numpy.ndarray): uint8 (M, C, H, W).
        y_test (numpy.ndarray): int (M, 1) labels.
        classes (list): class names.
        pad (int): zero padding before the random crop (0: no crop).
        flip (bool): random horizontal flips.
    """

    def __init__(self, x_train, y_train, x_test, y_test, classes, pad=4, flip=True):
        self.x_train, self.y_train = x_train, np.asarray(y_train, np.int32).reshape(-1, 1)
        self.x_test, self.y_test = x_test, np.asarray(y_test, np.int32).reshape(-1, 1)
        self.classes = [str(c) for c in classes]
        self.pad, self.flip = pad, flip

    rank, size = 0, 1

    @property
    def image_shape(self):
        """tuple: (C, H, W)."""
        return self.x_train.shape[1:]

    @property
    def n_train(self):
        """int: training images."""
        return len(self.x_train)

    @property
    def n_test(self):
        """int: validation images."""
        return len(self.x_test)

    def shard(self, rank, size):
        """Read only this data-parallel rank's minibatches: ``rank, rank + size, ...`` of each
        epoch's sequence, so the ranks together see every image once per epoch."""
        self.rank, self.size = int(rank), int(size)

    def steps_per_epoch(self, batch_size):
        """Full minibatches per epoch and rank (the remainder of the permutation is dropped)."""
        return len(self.x_train) // (batch_size * self.size)

    def train_batch(self, epoch, index, batch_size, seed):
        """Minibatch ``index`` of ``epoch``: float32 pixels (B, C, H, W) in [0, 255], int32 (B, 1).
        """
        perm = np.random.RandomState([seed, epoch]).permutation(len(self.x_train))
        index = index * self.size + self.rank
        idx = perm[index * batch_size:(index + 1) * batch_size]
        x = self.x_train[idx]
        rng = np.random.RandomState([seed, epoch, index])
        if self.pad:
            p = self.pad
            h, w = x.shape[2:]
            padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
            oy = rng.randint(0, 2 * p + 1, len(x))
            ox = rng.randint(0, 2 * p + 1, len(x))
            x = np.stack([padded[k, :, oy[k]:oy[k] + h, ox[k]:ox[k] + w] for k in range(len(x))])
        if self.flip:
            flips = rng.rand(len(x)) < 0.5
            x = np.where(flips[:, None, None, None], x[..., ::-1], x)
        return x.astype(np.float32), self.y_train[idx]

    def test_batches(self, batch_size, limit=None):
        """Yield the test set in order: float32 pixels and int32 labels (last batch may be short).

        Args:
            batch_size (int): images per batch.
            limit (int or None): only ``limit`` images, evenly spaced over the test set (a JPEG
                tree is read class by class: every class keeps its share; ``--val-images``).
        """
        idx = evenly_spaced(len(self.x_test), limit)
        for i in range(0, len(idx), batch_size):
            j = idx[i:i + batch_size]
            yield self.x_test[j].astype(np.float32), self.y_test[j]
