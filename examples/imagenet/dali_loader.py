# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""NVIDIA DALI decoding for the ImageNet example: used when installed, never required.

:class:`DaliImageFolder` is :class:`~examples.imagenet.data.ImageFolder` (same folders, same
labels, same random numbers per minibatch, same crop boxes, so the same exact ``--resume``) whose
JPEG decoding, cropping and resizing run in a DALI pipeline: on the GPU (nvJPEG, ``mixed``
decoder) in a ``cudnn`` context, else on DALI's CPU threads. The main process only reads each
file's header (Pillow, no decoding) to place the crops exactly as the Pillow loader does (the
training box is decoded alone; validation resizes the whole image, then crops its center).

Pixels differ slightly from the Pillow loader's (another JPEG decoder and resampler): a run keeps
its loader (``--loader`` cannot change on ``--resume``). The minibatch comes back to host memory
as the trainer's ``x.d = ...`` expects; the decoding work is what moves off the CPU.

Install: ``pip install nvidia-dali-cuda120`` (checked with DALI 2.4 on the CPU; the GPU
pipeline differs only in ``device='mixed'`` decoding and has not been run by this project).
"""
import concurrent.futures

import numpy as np
from PIL import Image

from examples.common.image_data import DataError

from .data import ImageFolder, random_box

__all__ = ['available', 'DaliImageFolder']


def available():
    """bool: whether ``nvidia.dali`` can be imported."""
    try:
        import nvidia.dali  # noqa: F401
    except Exception:  # not installed, or a broken install (missing CUDA libraries)
        return False
    return True


def _geometry(task):
    """What the DALI pipeline needs to crop an ImageFolder task as Pillow does.

    Training: the random-resized-crop box ``(x0, y0, width, height)`` in source pixels.
    Validation: the resized size ``(width, height)`` and the central crop's corner ``(left,
    top)`` in it.
    """
    path, size, crop, _ = task
    try:
        with Image.open(path) as im:  # reads the header only
            w, h = im.size
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{path}: cannot decode this image ({e}); remove or replace it")
    if crop[0] == 'train':
        x0, y0, x1, y1 = random_box(w, h, crop[1])
        return (x0, y0), (x1 - x0, y1 - y0)
    s = crop[1] / min(w, h)
    rw, rh = max(size, round(w * s)), max(size, round(h * s))
    return (rw, rh), ((rw - size) // 2, (rh - size) // 2)


class DaliImageFolder(ImageFolder):
    """:class:`~examples.imagenet.data.ImageFolder` decoded by an NVIDIA DALI pipeline.

    Args:
        root (str): the data folder (see :mod:`examples.imagenet.data`).
        image_size (int): side of the network input.
        workers (int): DALI CPU threads; with ``workers > 0`` one minibatch ahead is decoded
            while the trainer computes (``prefetch`` of them).
        prefetch (int): minibatches decoded ahead.
        device (str): ``'gpu'`` (decode on the GPU of nnabla's current context) or ``'cpu'``.

    Raises:
        DataError: as ImageFolder; also when DALI is not installed.
    """

    def __init__(self, root, image_size=224, workers=4, prefetch=2, device='cpu'):
        if not available():
            raise DataError("--loader dali needs NVIDIA DALI: pip install nvidia-dali-cuda120 "
                            "(or use --loader pil)")
        super().__init__(root, image_size, workers=workers, prefetch=prefetch)
        self.device = device
        self._pipes = {}
        self._thread = None

    def _pipeline(self, kind, batch):
        """The DALI pipeline for ``kind`` (``'train'``/``'val'``) minibatches of ``batch`` or
        fewer images (built on first use, in the thread that runs it)."""
        pipe, built = self._pipes.get(kind, (None, 0))
        if pipe is not None and batch <= built:
            return pipe
        import nnabla as nn
        from nvidia.dali import fn, pipeline_def, types
        gpu = self.device == 'gpu'
        size = self.image_size

        @pipeline_def(batch_size=batch, num_threads=max(1, self.workers), prefetch_queue_depth=1,
                      device_id=int(nn.get_current_context().device_id or 0) if gpu else None,
                      exec_dynamic=True)
        def define():
            data = fn.external_source(name='data', dtype=types.UINT8)
            a = fn.external_source(name='a', dtype=types.FLOAT)
            b = fn.external_source(name='b', dtype=types.FLOAT)
            decode = dict(device='mixed' if gpu else 'cpu', output_type=types.RGB,
                          adjust_orientation=False)
            if kind == 'train':  # decode the box only (a: corner, b: size), scale, flip
                flip = fn.external_source(name='flip', dtype=types.INT32)
                img = fn.decoders.image_slice(data, a, b, normalized_anchor=False,
                                              normalized_shape=False, axis_names='WH', **decode)
                img = fn.resize(img, resize_x=size, resize_y=size,
                                interp_type=types.INTERP_LINEAR)
                img = fn.flip(img, horizontal=flip)  # argument inputs live on the CPU
            else:  # resize to a (the shorter side to image_size * 256 / 224), crop at b
                img = fn.decoders.image(data, **decode)
                img = fn.resize(img, resize_x=a[0], resize_y=a[1],
                                interp_type=types.INTERP_LINEAR)
                img = fn.slice(img, b, np.array([size, size], np.float32), axis_names='WH',
                               normalized_anchor=False, normalized_shape=False)
            return fn.transpose(img, perm=[2, 0, 1])
        pipe = define()
        pipe.build()
        self._pipes[kind] = (pipe, batch)
        return pipe

    def _decode_batch(self, tasks):
        kind = tasks[0][2][0]
        geometry = [_geometry(t) for t in tasks]
        pipe = self._pipeline(kind, len(tasks))
        pipe.feed_input('data', [np.fromfile(t[0], np.uint8) for t in tasks])
        pipe.feed_input('a', [np.array(g[0], np.float32) for g in geometry])
        pipe.feed_input('b', [np.array(g[1], np.float32) for g in geometry])
        if kind == 'train':
            pipe.feed_input('flip', [np.array(int(t[3]), np.int32) for t in tasks])
        out, = pipe.run()
        if self.device == 'gpu':
            out = out.as_cpu()
        return np.stack([np.asarray(out[i]) for i in range(len(tasks))])

    # the ImageFolder queue, with one DALI thread instead of worker processes
    def _submit(self, tasks_labels):
        tasks, labels = tasks_labels
        if self.workers <= 0:
            return None, [self._decode_batch(tasks)], labels
        if self._thread is None:
            self._thread = concurrent.futures.ThreadPoolExecutor(1)
        return None, [self._thread.submit(self._decode_batch, tasks)], labels

    def _collect(self, pending):
        _, (x,), labels = pending
        x = x.result() if isinstance(x, concurrent.futures.Future) else x
        return x.astype(np.float32), np.asarray(labels, np.int32).reshape(-1, 1)

    def _release(self, pending):
        concurrent.futures.wait([c for c in pending[1]
                                 if isinstance(c, concurrent.futures.Future)])

    def close(self):
        """Free the queued minibatches and stop the DALI thread."""
        super().close()
        if self._thread is not None:
            self._thread.shutdown()
            self._thread = None
        self._pipes = {}
