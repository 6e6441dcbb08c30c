# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""scikit-learn's 8x8 handwritten digits: real data that ships with a package (no download).

1797 grayscale 8x8 images of the digits 0-9; a stratified 80/20 split gives 1437 training and 360
test images. :func:`digits_dataset` serves them to the examples' trainer
(:func:`examples.common.trainer.train`) as raw pixels in [0, 255], like every example's data.
"""
import numpy as np

from examples.common.image_data import ArrayDataset

__all__ = ['load_digits_data', 'digits_dataset', 'CLASSES']

CLASSES = [str(i) for i in range(10)]


def load_digits_data(seed=0, test_fraction=0.2):
    """The digits, split into training and test images.

    Args:
        seed (int): seed of the stratified split.
        test_fraction (float): fraction of images held out.

    Returns:
        tuple: ``(x_train, y_train, x_test, y_test)``; images float32 (B, 1, 8, 8) in [0, 1],
        labels int32 (B, 1).
    """
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise ImportError("the digits data comes with scikit-learn: pip install scikit-learn (in a "
                          "clone: pip install '.[demo]')") from None
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int32)[:, None]
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_fraction, random_state=seed,
                                          stratify=d.target)
    return xtr, ytr, xte, yte


def digits_dataset(seed=0):
    """The digits as an :class:`~examples.common.image_data.ArrayDataset` for the trainer.

    Pixels are uint8 in [0, 255] (the 17 gray levels 0..16 scaled by 255/16 and rounded); no
    crop or flip augmentation (flipped digits are other digits).

    Args:
        seed (int): seed of the split.

    Returns:
        ~examples.common.image_data.ArrayDataset: 1437 training and 360 test images (1, 8, 8).
    """
    xtr, ytr, xte, yte = load_digits_data(seed)
    to_uint8 = lambda x: np.round(x * 255).astype(np.uint8)  # noqa: E731
    return ArrayDataset(to_uint8(xtr), ytr, to_uint8(xte), yte, CLASSES, pad=0, flip=False)
