# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Networks built from one function that takes the layer choice (float or LUT-Q).

The same model function builds the float network (``PF.convolution`` / ``PF.affine`` /
``PF.batch_normalization``) and its LUT-Q twin (``PF.lutq_*`` / ``PF.mlbn``) with matching scope
names, so a float checkpoint loads into the LUT-Q network with
:func:`nnabla_lutq.load_float_parameters`. Shared by the digits demo, the benchmarks and the examples (it is example code, not part of
the library).
"""
import math
from dataclasses import dataclass
from typing import Optional, Tuple, Union, Sequence

import numpy as np
import nnabla.functions as F
import nnabla.parametric_functions as PF

from nnabla_lutq.core.config import pruned_count
from nnabla_lutq.nn import layers as LPF
from nnabla_lutq.nn.quantize import fixed_step_relu, quantized_relu

__all__ = ['Layers', 'digits_cnn', 'resnet20']


@dataclass
class Layers:
    """Layer choice for a model: float, or LUT-Q with the given settings.

    Attributes:
        lutq (bool): use LUT-Q layers.
        n_values (int): K of every LUT-Q layer.
        dictionary (str or list): ``'free'``, ``'pow2'`` or fixed values.
        prune_ratio (float): pruning ratio of every LUT-Q layer.
        pow2_range (tuple or None): exponent range for ``'pow2'``.
        mlbn (bool): multiplier-less batch normalization instead of ``PF.batch_normalization``.
        quantize_first_last (bool): quantize the first and the last layer too (the paper does).
        act_bits (int or None): quantize every ReLU output to ``2**act_bits`` uniform levels over
            ``[0, r]`` (``None``: float activations). ``r`` is per layer and *tracked*, not
            learned by gradient: during training it follows the exponential moving average
            (decay ``act_decay``) of the minibatch maximum (nnabla's ``PF.min_max_quantize`` with
            ``x_min_max=True, ema=True``); the inference graph uses the stored ``r``. The
            gradient is straight-through inside ``[0, r]`` and zero above ``r``. This is
            ``act_quant='ema'`` (:func:`nnabla_lutq.nn.quantize.quantized_relu`: nnabla's graph
            for inference, a cheaper one for training); its step ``r / (2**act_bits - 1)`` is in
            general not a power of two.
        act_decay (float): decay of that moving average.
        act_quant (str): ``'ema'`` (default, the tracked range above) or ``'pow2'``: the
            integer-friendly choice, nnabla's fixed-point quantization
            (``F.fixed_point_quantize(sign=False, n=act_bits, delta=act_max / 2**act_bits)``):
            a fixed power-of-two step, codes ``0 ... 2**act_bits - 1``, range
            ``[0, act_max - step]``, straight-through gradient inside it. Integer executors then
            requantize by shifts (:mod:`nnabla_lutq.integer`).
        act_max (float): for ``act_quant='pow2'``, the power of two that bounds the range
            (default 8: step 2^-5 for 8 bits).
        group_size (int or None): one look-up table per ``group_size`` output channels of every
            LUT-Q layer (None: one per layer); a layer whose channels it does not divide, or
            whose groups would hold fewer than K weights, gets the nearest size that works
            (:func:`fitting_group_size`).
    """
    lutq: bool = False
    n_values: int = 16
    dictionary: Union[str, Sequence[float]] = 'free'
    prune_ratio: float = 0.0
    pow2_range: Optional[Tuple[int, int]] = None
    mlbn: bool = False
    quantize_first_last: bool = True
    act_bits: Optional[int] = None
    act_decay: float = 0.99
    act_quant: str = 'ema'
    act_max: float = 8.0
    group_size: Optional[int] = None

    def _q(self, edge):
        return self.lutq and (self.quantize_first_last or not edge)

    def _kw(self, n_out, per_channel):
        k = len(self.dictionary) if not isinstance(self.dictionary, str) else self.n_values
        return dict(n_values=self.n_values, dictionary=self.dictionary,
                    prune_ratio=self.prune_ratio, pow2_range=self.pow2_range,
                    group_size=fitting_group_size(self.group_size, n_out, per_channel, k,
                                                  self.prune_ratio))

    def conv(self, x, outmaps, kernel, name, pad=None, stride=None, with_bias=False, edge=False):
        """Convolution (LUT-Q or float) in scope ``name``."""
        if self._q(edge):
            per = x.shape[1] * int(np.prod(kernel))
            return LPF.lutq_convolution(x, outmaps, kernel, pad=pad, stride=stride,
                                        with_bias=with_bias, name=name, **self._kw(outmaps, per))
        return PF.convolution(x, outmaps, kernel, pad=pad, stride=stride, with_bias=with_bias,
                              name=name)

    def affine(self, x, n_outmaps, name, edge=False):
        """Affine (LUT-Q or float) in scope ``name``."""
        if self._q(edge):
            per = int(np.prod(x.shape[1:]))
            return LPF.lutq_affine(x, n_outmaps, name=name, **self._kw(n_outmaps, per))
        return PF.affine(x, n_outmaps, name=name)

    def bn(self, x, test, name):
        """Batch normalization (multiplier-less or float) in scope ``name``."""
        if self.lutq and self.mlbn:
            return LPF.mlbn(x, batch_stat=not test, name=name)
        return PF.batch_normalization(x, batch_stat=not test, name=name)


    def act_step(self):
        """The power-of-two activation step of ``act_quant='pow2'`` (None otherwise).

        Raises:
            ValueError: for an unknown ``act_quant`` or an ``act_max`` that is not a power of two.
        """
        if self.act_quant not in ('ema', 'pow2'):
            raise ValueError(f"act_quant must be 'ema' or 'pow2' (got {self.act_quant!r})")
        if self.act_quant == 'ema' or not self.act_bits:
            return None
        mant, _ = math.frexp(self.act_max) if self.act_max > 0 else (0, 0)
        if mant != 0.5:
            raise ValueError(f"act_max must be a power of two such as 4, 8 or 16 for "
                             f"act_quant='pow2' (got {self.act_max!r})")
        return self.act_max / 2 ** self.act_bits

    def act(self, x, test, name):
        """ReLU, followed by uniform ``act_bits`` quantization in scope ``name`` if enabled: the
        tracked range by :func:`nnabla_lutq.nn.quantize.quantized_relu` (nnabla's
        ``MinMaxQuantize`` in the inference graph, one host function in training on a CPU), the
        power-of-two step by :func:`nnabla_lutq.nn.quantize.fixed_step_relu` (``ReLU`` and
        ``FixedPointQuantize``; one host function in training on a CPU)."""
        step = self.act_step()  # validates act_quant / act_max
        if not self.act_bits:
            return F.relu(x)
        if step is not None:
            return fixed_step_relu(x, self.act_bits, step, training=not test)
        return quantized_relu(x, self.act_bits, track_range=not test, decay=self.act_decay,
                              qr_max_init=6.0, name=name)


def fitting_group_size(group_size, n_out, per_channel, k, prune_ratio=0.0):
    """The group size a layer gets for the requested one: the largest divisor of its ``n_out``
    output channels not above ``group_size`` whose groups leave at least ``k`` weights to fit
    (``per_channel`` each; with pruning, ``k - 1`` after the ``ceil(p·N_g)`` pruned ones), else
    the smallest that does; None when that is the whole layer (one table), nothing was requested
    or no size works (the layer then reports its own error).

    Args:
        group_size (int or None): the requested output channels per table.
        n_out (int): the layer's output channels.
        per_channel (int): weights per output channel.
        k (int): values per table.
        prune_ratio (float): the layer's pruning ratio.

    Returns:
        int or None: the layer's ``group_size``.
    """
    if group_size is None:
        return None

    def fits(s):
        n = s * per_channel
        pruned = pruned_count(prune_ratio, n) if prune_ratio > 0 else 0
        return n >= k and (not pruned or n - pruned >= k - 1)
    ok = [s for s in range(1, n_out + 1) if n_out % s == 0 and fits(s)]
    if not ok:
        return None
    below = [s for s in ok if s <= group_size]
    s = max(below) if below else min(ok)
    return None if s == n_out else s


def digits_cnn(x, layers, test=False):
    """A small CNN for 8x8 images (scikit-learn's handwritten digits), 10 classes.

    Args:
        x (~nnabla.Variable): images, shape (B, 1, 8, 8).
        layers (Layers): the layer choice.
        test (bool): build the inference graph (running BN statistics).

    Returns:
        ~nnabla.Variable: logits (B, 10).
    """
    h = layers.act(layers.bn(layers.conv(x, 16, (3, 3), 'conv1', pad=(1, 1), edge=True), test,
                             'bn1'), test, 'act1')
    h = layers.act(layers.bn(layers.conv(h, 32, (3, 3), 'conv2', pad=(1, 1), stride=(2, 2)),
                             test, 'bn2'), test, 'act2')
    h = layers.act(layers.bn(layers.conv(h, 32, (3, 3), 'conv3', pad=(1, 1)), test, 'bn3'),
                   test, 'act3')
    h = F.average_pooling(h, (2, 2))
    return layers.affine(h, 10, 'fc', edge=True)


def resnet20(x, layers, test=False, n_classes=10):
    """ResNet-20 for CIFAR-10 (3 stages x 3 basic blocks, 16/32/64 maps).

    Args:
        x (~nnabla.Variable): images, shape (B, 3, 32, 32).
        layers (Layers): the layer choice.
        test (bool): build the inference graph.
        n_classes (int): outputs of the final affine layer.

    Returns:
        ~nnabla.Variable: logits (B, n_classes).
    """
    h = layers.act(layers.bn(layers.conv(x, 16, (3, 3), 'conv0', pad=(1, 1), edge=True), test,
                             'bn0'), test, 'act0')
    for stage, maps in enumerate((16, 32, 64)):
        for block in range(3):
            name = f's{stage}b{block}'
            stride = (2, 2) if stage > 0 and block == 0 else (1, 1)
            r = layers.act(layers.bn(layers.conv(h, maps, (3, 3), name + '/conv1', pad=(1, 1),
                                                 stride=stride), test, name + '/bn1'),
                           test, name + '/act1')
            r = layers.bn(layers.conv(r, maps, (3, 3), name + '/conv2', pad=(1, 1)), test,
                          name + '/bn2')
            if stride != (1, 1) or h.shape[1] != maps:
                h = layers.bn(layers.conv(h, maps, (1, 1), name + '/short', stride=stride), test,
                              name + '/bn_short')
            h = layers.act(h + r, test, name + '/act_out')
    h = F.average_pooling(h, h.shape[2:])
    return layers.affine(h, n_classes, 'fc', edge=True)
