# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""ImageNet-style image folders, decoded in parallel worker processes.

Layout (``--data-dir``)::

    train/<class>/*.JPEG          one folder per class (ImageNet: the WordNet id, n01440764 ...)
    val/<class>/*.JPEG            the same classes; or a flat val/ with a label file (below)

``test/`` is accepted instead of ``val/`` (so the CIFAR-10 JPEG tree works as a small check). A
flat ``val/`` needs one of these files in the data folder: ``LOC_val_solution.csv`` (Kaggle's
``ImageId,PredictionString`` with the class id first), or ``val.txt`` / ``val_labels.txt``
with lines ``<file name> <class>``, where ``<class>`` is the folder name or its index in sorted
order. Classes are numbered in sorted order of their folder names (any number of classes).

Every file is opened by content, not by extension, and converted to RGB: real ImageNet has
grayscale and CMYK JPEGs and a few PNGs named .JPEG, and all load. A file that cannot be decoded
stops the run with its name (real ImageNet has none; remove or replace such a file).

Augmentation (the standard ImageNet recipe): training takes a random-resized crop (area 8-100 %
of the image, aspect ratio 3/4-4/3, up to 10 tries, else the central crop) scaled to
``image_size`` plus a random horizontal flip; validation resizes the shorter side to
``image_size * 256 / 224`` and takes the central ``image_size`` square. The random numbers of
minibatch ``i`` of epoch ``e`` come from ``RandomState([seed, e, i])`` in the main process, so a
resumed run sees exactly the same data whatever the number of workers.

Decoding runs in ``workers`` processes with at most ``prefetch`` minibatches in flight ahead of
the one the trainer asks for (a bounded queue): the accelerator is not starved and memory stays
bounded. ``benchmarks/bench_loader.py`` measures images/s of the loader alone. The workers die
with the training process, however it ends (``kill -9`` included: Linux's parent-death signal,
and a watchdog that checks the parent), leave SIGINT to it and end on SIGTERM; the minibatches'
shared-memory blocks (``/dev/shm/lutq<pid>_*``) are then removed by multiprocessing's resource
tracker.
"""
import concurrent.futures
import csv
import ctypes
import math
import multiprocessing
import os
import secrets
import signal
import sys
import threading
import time
from multiprocessing import shared_memory

import numpy as np
from PIL import Image

from examples.common.image_data import DataError, evenly_spaced

__all__ = ['ImageFolder', 'find_split', 'read_val_labels']

_IMAGE_EXT = ('.jpeg', '.jpg', '.png', '.bmp', '.webp')
_TRIES = 10
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _worker_start(parent):
    """Initializer of a decoding worker: its signals, and death with its ``parent``.

    The worker is forked from the trainer while the trainer's SIGTERM handler only sets a flag:
    the default action is restored, so SIGTERM ends it. SIGINT (a Ctrl-C reaches the whole
    process group) is ignored: the trainer stops cleanly and then ends its workers.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith('linux'):
        try:  # the kernel kills this process when the parent dies
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _watch_parent(parent, every_s=1.0):
    """End the worker once its parent is gone (where there is no parent-death signal)."""
    while True:
        time.sleep(every_s)
        if os.getppid() != parent:
            os._exit(1)


def _images(folder):
    return sorted(f for f in os.listdir(folder)
                  if f.lower().endswith(_IMAGE_EXT) and os.path.isfile(os.path.join(folder, f)))


def find_split(root, names):
    """The first of ``names`` that is a folder under ``root``, or None."""
    for n in names:
        p = os.path.join(root, n)
        if os.path.isdir(p):
            return p
    return None


def read_val_labels(root, files, classes):
    """Labels of a flat validation folder from the label file in ``root``.

    Args:
        root (str): the data folder.
        files (list): image file names in the flat folder.
        classes (list): class folder names of the training set, sorted.

    Returns:
        list: class index per file.

    Raises:
        DataError: without a usable label file, or for files or classes it does not know.
    """
    index = {c: i for i, c in enumerate(classes)}
    labels = {}
    sol = os.path.join(root, 'LOC_val_solution.csv')
    txt = [os.path.join(root, n) for n in ('val.txt', 'val_labels.txt')
           if os.path.isfile(os.path.join(root, n))]
    if os.path.isfile(sol):
        with open(sol) as f:
            for row in csv.DictReader(f):
                labels[row['ImageId']] = row['PredictionString'].split()[0]
    elif txt:
        with open(txt[0]) as f:
            for n, line in enumerate(f, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 2:
                    raise DataError(f"{txt[0]}:{n}: expected '<file> <class>', got {line.strip()!r}")
                labels[os.path.splitext(os.path.basename(parts[0]))[0]] = parts[1]
    else:
        raise DataError(f"{root}/val holds images without class folders, and no label file "
                        "(LOC_val_solution.csv, val.txt or val_labels.txt) is there; add one or "
                        "sort the images into val/<class>/")
    out = []
    for f in files:
        key = os.path.splitext(f)[0]
        if key not in labels:
            raise DataError(f"val/{f}: no label in the label file")
        lab = labels[key]
        if lab in index:
            out.append(index[lab])
        elif lab.isdigit() and int(lab) < len(classes):
            out.append(int(lab))
        else:
            raise DataError(f"val/{f}: label {lab!r} is not a training class")
    return out


def _index_tree(folder, classes=None):
    """``(items, classes)``: (path, label) of every image under ``folder/<class>/``."""
    found = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    if classes is None:
        classes = found
    elif sorted(set(found) - set(classes)):
        raise DataError(f"{folder}: classes {sorted(set(found) - set(classes))[:5]} are not in "
                        "train/")
    index = {c: i for i, c in enumerate(classes)}
    items = []
    for c in found:
        files = _images(os.path.join(folder, c))
        if not files:
            raise DataError(f"{folder}/{c}: an empty class folder (no images); remove it or add "
                            "its images")
        items += [(os.path.join(folder, c, f), index[c]) for f in files]
    return items, classes


def _decode(task):
    """Decode one image (in a worker): ``task = (path, size, crop, flip)``.

    ``crop`` is ``('train', randoms)`` (random-resized crop from the per-image random numbers)
    or ``('val', resize)`` (shorter side to ``resize``, central square).
    """
    path, size, crop, flip = task
    try:
        with Image.open(path) as im:
            img = im.convert('RGB')
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{path}: cannot decode this image ({e}); remove or replace it")
    w, h = img.size
    if crop[0] == 'train':
        box = random_box(w, h, crop[1])
        img = img.resize((size, size), Image.BILINEAR, box=box)
    else:
        s = crop[1] / min(w, h)
        rw, rh = max(size, round(w * s)), max(size, round(h * s))
        img = img.resize((rw, rh), Image.BILINEAR)
        left, top = (rw - size) // 2, (rh - size) // 2
        img = img.crop((left, top, left + size, top + size))
    a = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    return a[:, :, ::-1] if flip else a


def _decode_many(tasks, shm_name=None, offset=0):
    """Decode a chunk of images: uint8 (n, 3, S, S), or written into shared memory.

    Args:
        tasks (list): ``_decode`` tasks.
        shm_name (str or None): a ``multiprocessing.shared_memory`` block holding the minibatch;
            the images go to positions ``offset, offset + 1, ...`` (no pickling of pixels).
        offset (int): position of the first image of the chunk in the minibatch.
    """
    if shm_name is None:
        return np.stack([_decode(t) for t in tasks])
    size = tasks[0][1]
    shm = shared_memory.SharedMemory(name=shm_name)
    try:
        out = np.ndarray((offset + len(tasks), 3, size, size), np.uint8, buffer=shm.buf)
        for k, t in enumerate(tasks):
            out[offset + k] = _decode(t)
        del out
    finally:
        shm.close()
    return None


def random_box(w, h, r):
    """The random-resized-crop box of a ``w x h`` image from ``r`` (``_TRIES x 4`` uniforms)."""
    area = w * h
    for u_area, u_ratio, u_x, u_y in r:
        target = area * (0.08 + u_area * (1.0 - 0.08))
        ratio = math.exp(math.log(3 / 4) + u_ratio * (math.log(4 / 3) - math.log(3 / 4)))
        cw = int(round(math.sqrt(target * ratio)))
        ch = int(round(math.sqrt(target / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            x0 = int(u_x * (w - cw + 1))
            y0 = int(u_y * (h - ch + 1))
            return (x0, y0, x0 + cw, y0 + ch)
    side = min(w, h)  # the central square
    return ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)


class ImageFolder:
    """Training and validation images of an ImageNet-style folder, with parallel decoding.

    It offers the dataset interface of :mod:`examples.common.trainer`: ``image_shape``,
    ``steps_per_epoch(batch)``, ``train_batch(epoch, index, batch, seed)`` (random access,
    deterministic), ``test_batches(batch)``, ``n_train`` / ``n_test``.

    Args:
        root (str): the data folder (see the module docs).
        image_size (int): side of the square network input (224 for ImageNet).
        workers (int): decoding processes (0: decode in the main process).
        prefetch (int): minibatches decoded ahead of the one asked for.
        shard (tuple): ``(rank, size)``: this process reads training minibatch indices
            ``rank, rank + size, ...`` of the epoch's permutation (data parallelism), so the
            ranks together see each image once per epoch.

    Raises:
        DataError: a missing folder, an empty class, validation classes unknown to train/, a
            flat val/ without labels.
    """

    def __init__(self, root, image_size=224, workers=4, prefetch=4, shard=(0, 1)):
        root = os.path.expanduser(root)
        if os.path.isfile(root):
            raise DataError(f"{root} is a file; give the folder that holds train/ and val/ "
                            "(extract an archive first)")
        train = find_split(root, ('train',))
        val = find_split(root, ('val', 'test'))
        if train is None or val is None:
            raise DataError(f"{root}: expected the folders train/<class>/ and val/<class>/ (or a "
                            "flat val/ with a label file); found "
                            f"{sorted(os.listdir(root)) if os.path.isdir(root) else 'no folder'}")
        self.train_items, self.classes = _index_tree(train)
        if not self.train_items:
            raise DataError(f"{train}: no class folders with images")
        flat = _images(val)
        if flat:
            self.test_items = list(zip((os.path.join(val, f) for f in flat),
                                       read_val_labels(root, flat, self.classes)))
        else:
            self.test_items, _ = _index_tree(val, self.classes)
        if not self.test_items:
            raise DataError(f"{val}: no validation images")
        self.image_size = int(image_size)
        self.resize = int(round(self.image_size * 256 / 224))
        self.prefetch = max(1, int(prefetch))
        self.rank, self.size = shard
        self.workers = int(workers)
        self._pool = None
        self._pending = {}

    # -- the dataset interface --------------------------------------------------------------
    @property
    def image_shape(self):
        """tuple: (3, image_size, image_size)."""
        return (3, self.image_size, self.image_size)

    @property
    def n_train(self):
        """int: training images."""
        return len(self.train_items)

    @property
    def n_test(self):
        """int: validation images."""
        return len(self.test_items)

    def shard(self, rank, size):
        """Read only this data-parallel rank's minibatches (see ``shard`` of the constructor)."""
        self.rank, self.size = int(rank), int(size)

    def steps_per_epoch(self, batch_size):
        """Minibatches of this rank per epoch (full batches only)."""
        return len(self.train_items) // (batch_size * self.size)

    def train_batch(self, epoch, index, batch_size, seed):
        """Minibatch ``index`` of ``epoch``: float32 pixels (B, 3, S, S) in [0, 255], int32 (B, 1).

        The next ``prefetch`` minibatches are queued for decoding before this one is awaited.
        """
        steps = self.steps_per_epoch(batch_size)
        for ahead in range(self.prefetch + 1 if self.workers > 0 else 1):  # no workers: lazily
            i = index + ahead
            if i < steps and (epoch, i, batch_size, seed) not in self._pending:
                self._pending[(epoch, i, batch_size, seed)] = self._submit(
                    self._train_tasks(epoch, i, batch_size, seed))
        for key in [k for k in self._pending if k[:2] < (epoch, index)]:  # skipped ones
            self._release(self._pending.pop(key))
        tasks_labels = self._pending.pop((epoch, index, batch_size, seed))
        return self._collect(tasks_labels)

    def test_batches(self, batch_size, limit=None):
        """Yield validation images in order: float32 pixels and int32 labels.

        Args:
            batch_size (int): images per batch (the last one may be short).
            limit (int or None): only ``limit`` images, evenly spaced over the validation set
                (which is sorted by class, so every class keeps its share; ``--val-images``).
        """
        items = self.test_items
        items = [items[i] for i in evenly_spaced(len(items), limit or None)]
        starts = list(range(0, len(items), batch_size))
        queue = []
        try:
            for k in range(len(starts)):
                while len(queue) <= (self.prefetch if self.workers > 0 else 0) and \
                        k + len(queue) < len(starts):
                    t = starts[k + len(queue)]
                    chunk = items[t:t + batch_size]
                    queue.append(self._submit(
                        ([(p, self.image_size, ('val', self.resize), False) for p, _ in chunk],
                         [lab for _, lab in chunk])))
                yield self._collect(queue.pop(0))
        finally:  # a consumer that stops early: free what was queued
            for pending in queue:
                self._release(pending)

    def close(self):
        """Stop the worker processes and free the queued minibatches."""
        for pending in self._pending.values():
            self._release(pending)
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    # -- internals -----------------------------------------------------------------------------
    def _train_tasks(self, epoch, index, batch_size, seed):
        perm = np.random.RandomState([seed, epoch]).permutation(len(self.train_items))
        start = (index * self.size + self.rank) * batch_size
        chosen = perm[start:start + batch_size]
        rng = np.random.RandomState([seed, epoch, index * self.size + self.rank])
        randoms = rng.rand(len(chosen), _TRIES, 4)
        flips = rng.rand(len(chosen)) < 0.5
        tasks = [(self.train_items[j][0], self.image_size, ('train', randoms[k].tolist()),
                  bool(flips[k])) for k, j in enumerate(chosen)]
        return tasks, [self.train_items[j][1] for j in chosen]

    def _submit(self, tasks_labels):
        tasks, labels = tasks_labels
        if self.workers <= 0:
            return None, [_decode_many(tasks)], labels
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context('fork'),
                initializer=_worker_start, initargs=(os.getpid(),))
        # the workers write the pixels into one shared block per minibatch, a few chunks per
        # worker: one small message per chunk, no pickled images
        shm = shared_memory.SharedMemory(
            name=f"lutq{os.getpid()}_{secrets.token_hex(6)}", create=True,
            size=max(1, len(tasks) * 3 * self.image_size ** 2))
        n = max(1, min(len(tasks), 2 * self.workers))
        bounds = np.linspace(0, len(tasks), n + 1).astype(int)
        return shm, [self._pool.submit(_decode_many, tasks[a:b], shm.name, a)
                     for a, b in zip(bounds[:-1], bounds[1:]) if b > a], labels

    def _collect(self, pending):
        shm, chunks, labels = pending
        if shm is None:
            x = np.concatenate(chunks).astype(np.float32)
        else:
            try:
                for c in chunks:
                    c.result()
                s = self.image_size
                x = np.ndarray((len(labels), 3, s, s), np.uint8, buffer=shm.buf).astype(np.float32)
            finally:
                shm.close()
                shm.unlink()
        return x, np.asarray(labels, np.int32).reshape(-1, 1)

    def _release(self, pending):
        """Drop a queued minibatch that will not be asked for (wait for it, free its memory)."""
        shm, chunks, _ = pending
        if shm is not None:
            concurrent.futures.wait(chunks)
            shm.close()
            shm.unlink()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
