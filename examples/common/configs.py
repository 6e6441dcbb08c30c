# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Named LUT-Q configurations: one naming pattern shared by every example.

A name is ``float``, ``lutq<B>[-pow2][-mlbn][-prune<P>][-g<G>]`` or
``lutq-binary|ternary[-mlbn][-g<G>]``:

* ``lutq<B>``: every convolution/affine layer is LUT-Q with ``K = 2**B`` values (``B`` bits per
  weight index), a free (k-means) dictionary;
* ``-pow2``: dictionary values rounded to ±2^k (multiplier-less weights);
* ``-mlbn``: multiplier-less batch normalization (``PF.mlbn``) instead of float BN; with
  ``-pow2`` this is the paper's "fully multiplier-less" network, without it "quasi";
* ``-prune<P>``: a value fixed at 0 that takes the ``P`` % smallest-magnitude weights;
* ``lutq-binary`` / ``lutq-ternary``: the fixed dictionaries ``{-1, 1}`` / ``{-1, 0, 1}`` (used as
  given by LUT-Q; ``--solver lc --lc-learn-scale`` fits a scale ``a·c``);
* ``-g<G>``: one look-up table per ``G`` output channels of every layer (``-g1``: per channel;
  see ``group_size`` of :class:`~examples.common.models.Layers`).

Activation quantization is not part of the name: it is the ``--act-bits`` flag, with a
power-of-two step by default for the fully multiplier-less configurations (``-pow2-mlbn``,
``lutq-binary|ternary-mlbn``: then the integer network needs no multiplication at all, the
residual sums included) and a tracked range otherwise (``act_quant`` of :func:`parse`, see
:class:`~examples.common.models.Layers`).
"""
import math
import re

from .models import Layers

__all__ = ['NAMED', 'PRUNING_SWEEP', 'parse', 'describe']

#: The pruning ratios of the paper's Fig. 2 (combined with free 2-bit LUT-Q).
PRUNING_SWEEP = (30, 50, 70, 80, 90)

#: The configurations ``--list-configs`` shows (any name that follows the pattern is accepted).
NAMED = (['float', 'lutq4', 'lutq2', 'lutq4-pow2', 'lutq2-pow2', 'lutq4-pow2-mlbn',
          'lutq2-pow2-mlbn'] + [f'lutq2-prune{p}' for p in PRUNING_SWEEP] +
         ['lutq-binary', 'lutq-ternary'])

_PATTERN = re.compile(r'^lutq(?P<bits>\d+)(?P<pow2>-pow2)?(?P<mlbn>-mlbn)?'
                      r'(?:-prune(?P<prune>\d+))?(?:-g(?P<group>\d+))?$')
_FIXED = re.compile(r'^lutq-(?P<fixed>binary|ternary)(?P<mlbn>-mlbn)?(?:-g(?P<group>\d+))?$')
#: the fixed dictionaries of ``lutq-binary`` / ``lutq-ternary``
FIXED = {'binary': (-1.0, 1.0), 'ternary': (-1.0, 0.0, 1.0)}


def parse(name, act_bits=None, quantize_first_last=True, act_quant=None, pow2_range=None,
          act_max=8.0):
    """The :class:`~examples.common.models.Layers` of a configuration name.

    Args:
        name (str): ``float`` or ``lutq<B>[-pow2][-mlbn][-prune<P>][-g<G>]`` (see the module
            docs).
        act_bits (int or None): bits of the uniform activation quantization (``None``: float).
        quantize_first_last (bool): quantize the first convolution and the last affine layer.
        act_quant (str or None): ``'ema'`` (tracked range) or ``'pow2'`` (fixed power-of-two
            step, integer-friendly; see :class:`~examples.common.models.Layers`); None: ``'pow2'``
            for a fully multiplier-less configuration (power-of-two or ±1/0 weights and
            multiplier-less BN), ``'ema'`` otherwise.
        pow2_range (tuple or None): ``(min, max)`` exponents of ``-pow2`` dictionaries; a bounded
            span ``R = max - min`` keeps integer accumulators provably small (int32 needs
            ``fan_in * 255 * 2**R < 2**31``).
        act_max (float): the range bound of ``act_quant='pow2'`` (a power of two; step
            ``act_max / 2**act_bits``).

    Returns:
        ~examples.common.models.Layers: the layer choice.

    Raises:
        ValueError: for a name that does not follow the pattern or out-of-range numbers.
    """
    if act_bits is not None and not (isinstance(act_bits, int) and 2 <= act_bits <= 16):
        raise ValueError(f"--act-bits must be an integer in [2, 16] (got {act_bits!r})")
    if act_quant is None:
        act_quant = 'pow2' if _multiplier_less(name) else 'ema'
    if act_quant not in ('ema', 'pow2'):
        raise ValueError(f"act_quant must be 'ema' or 'pow2' (got {act_quant!r})")
    if name == 'float':
        return Layers(act_bits=act_bits, act_quant=act_quant, act_max=act_max)
    f = _FIXED.match(name)
    if f is not None:
        if pow2_range is not None:
            raise ValueError(f"{name}: pow2_range needs a -pow2 configuration")
        values = FIXED[f['fixed']]
        return Layers(lutq=True, n_values=len(values), dictionary=list(values),
                      mlbn=bool(f['mlbn']), quantize_first_last=quantize_first_last,
                      act_bits=act_bits, act_quant=act_quant, act_max=act_max,
                      group_size=_group(name, f['group']))
    m = _PATTERN.match(name)
    if m is None:
        raise ValueError(
            f"unknown configuration {name!r}: use 'float', "
            "'lutq<B>[-pow2][-mlbn][-prune<P>][-g<G>]' "
            f"such as {', '.join(NAMED[1:4])}, or lutq-binary / lutq-ternary (see --list-configs)")
    bits = int(m['bits'])
    if not 1 <= bits <= 8:
        raise ValueError(f"{name}: bits must be in 1..8 (K = 2**bits values)")
    prune = int(m['prune']) if m['prune'] else 0
    if not 0 < prune < 100 and m['prune']:
        raise ValueError(f"{name}: the pruning percentage must be in 1..99")
    if prune and bits == 1:
        raise ValueError(f"{name}: pruning needs at least 2 bits (one value is the fixed 0)")
    if pow2_range is not None and not m['pow2']:
        raise ValueError(f"{name}: pow2_range needs a -pow2 configuration")
    return Layers(lutq=True, n_values=2 ** bits, dictionary='pow2' if m['pow2'] else 'free',
                  prune_ratio=prune / 100.0, mlbn=bool(m['mlbn']),
                  pow2_range=tuple(pow2_range) if pow2_range is not None else None,
                  quantize_first_last=quantize_first_last, act_bits=act_bits,
                  act_quant=act_quant, act_max=act_max, group_size=_group(name, m['group']))


def _group(name, text):
    """The ``-g<G>`` group size of a name (None without it)."""
    if text is None:
        return None
    if int(text) < 1:
        raise ValueError(f"{name}: the group size of -g<G> must be at least 1 (-g1: per channel)")
    return int(text)


def _multiplier_less(name):
    """Whether a configuration name is fully multiplier-less (weights and BN)."""
    m, f = _PATTERN.match(name), _FIXED.match(name)
    return bool((m and m['pow2'] and m['mlbn']) or (f and f['mlbn']))


def describe(layers):
    """One line with the settings of a :class:`~examples.common.models.Layers`."""
    act = 'float'
    if layers.act_bits:
        step = layers.act_step()
        act = (f"{layers.act_bits}-bit uniform, step 2^{int(math.log2(step))}" if step else
               f"{layers.act_bits}-bit uniform")
    if not layers.lutq:
        return f"float weights, float BN, activations {act}"
    bn = 'multiplier-less BN (mlbn)' if layers.mlbn else 'float BN'
    edges = 'all layers' if layers.quantize_first_last else 'first/last layers float'
    tables = ('' if layers.group_size is None else
              'one table per channel, ' if layers.group_size == 1 else
              f'one table per {layers.group_size} channels, ')
    return (f"K={layers.n_values} ({(layers.n_values - 1).bit_length()}-bit), dictionary "
            f"{layers.dictionary}, pruning {layers.prune_ratio:.0%}, {bn}, {tables}{edges}, "
            f"activations {act}")
