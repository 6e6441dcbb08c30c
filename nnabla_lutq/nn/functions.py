# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Graph (nnabla function) forms of the package's rules, for layers and device backends.

* :func:`pow2_round_graph`: the power-of-two rounding of :mod:`nnabla_lutq.core.pow2` with
  nnabla functions, equal to :func:`nnabla_lutq.core.pow2.pow2_round` for every float32 input;
* :func:`pow2_round_lookup`: the same rule as two functions (a search in a sorted table of the
  rule's exact float32 boundaries and a look-up), for per-channel values in training graphs;
* :func:`mlbn_scale`: the multiplier-less BN scale ``pow2(gamma / sqrt(var + eps))``, used by the
  layer's inference graph and by :func:`nnabla_lutq.fold_mlbn`, so the folded export, the graph
  and the host agree to the bit;
* :func:`batch_variance`: the per-channel (biased) batch variance from two contiguous reductions
  each of ``x`` and ``x·x``, single-output functions that graph converters can copy;
* :func:`mlbn_batch_gamma`: the training form of that scale, computed once per layer from the
  batch variance: the scale ``γ̂`` a batch normalization multiplies with;
* :func:`channel_scale`: ``x·w + b`` per channel as one depthwise convolution (one product per
  value, no broadcasting arithmetic);
* :func:`shared_constant`: a constant as a generator function shared by the layers;
* :func:`float32_context`: the same context computing in float32 (for the k-means step, which
  must not run in half precision whatever the training context).
"""
import math

import numpy as np
import nnabla as nn
import nnabla.functions as F

from ..core.pow2 import SQRT2_ABOVE

__all__ = ['pow2_round_graph', 'pow2_round_lookup', 'mlbn_scale', 'batch_variance',
           'mlbn_batch_gamma', 'channel_scale', 'shared_constant', 'float32_context', 'detached']

_UP = float(SQRT2_ABOVE)          # |x| >= _UP * 2**k    <=>  the rule's exponent is > k
_DOWN = float(SQRT2_ABOVE / 2)    # |x| <  _DOWN * 2**k  <=>  the rule's exponent is < k


def pow2_round_graph(x, pow2_range=None):
    """``sign(x) * 2**k`` by the rule of :mod:`nnabla_lutq.core.pow2`, as nnabla functions.

    A logarithm gives an estimate of ``k`` that is off by at most one near ``2**(k + 1/2)``; two
    exact comparisons with ``SQRT2_ABOVE * 2**k`` correct it (products with powers of two are
    exact), so the result equals the host rule for every float32 value. 0 stays 0.

    Args:
        x (~nnabla.Variable): N-D array.
        pow2_range (tuple or None): ``(min_exp, max_exp)`` clipping the exponent.

    Returns:
        ~nnabla.Variable: powers of two with the signs of ``x``.
    """
    ax = F.abs(x)
    k = F.round(F.log(ax) * (1.0 / math.log(2.0)))  # log(0) = -inf: a zero stays zero below
    p = F.r_pow_scalar(k, 2.0)
    k = k + F.greater_equal(ax, p * _UP) - F.less(ax, p * _DOWN)
    if pow2_range is not None:
        k = F.clip_by_value(k, float(pow2_range[0]), float(pow2_range[1]))
    return F.sign(x, alpha=0.0) * F.r_pow_scalar(k, 2.0)  # nnabla's sign(0) is 1 by default


_S = float(SQRT2_ABOVE)                                       # r >= _S * 2**e: exponent > e
_S_BELOW = float(np.nextafter(SQRT2_ABOVE, np.float32(0)))  # -r > _S_BELOW * 2**e: same
_MIN_NORMAL = 2.0 ** -126                                    # the smallest normal float32
_TABLES = {}  # (context, what) -> graph nodes of constants, shared by layers


def _context_key():
    ctx = nn.get_current_context()
    return tuple(ctx.backend), ctx.array_class, ctx.device_id


def shared_constant(value, shape):
    """``F.constant(value, shape)``, one graph node per value, shape and context, shared by the
    layers that ask for it (a generator function: no constant leaf in the graph, which exporters
    would refuse as an unregistered input).

    Args:
        value (float): the value.
        shape (tuple of int): the shape.

    Returns:
        ~nnabla.Variable: the constant (computed in every forward pass of a graph using it).
    """
    key = (_context_key(), 'constant', float(value), tuple(shape))
    if key not in _TABLES:
        _TABLES[key] = F.constant(float(value), tuple(shape))
    return _TABLES[key]


def _pow2_tables(lead):
    """The rule's boundaries (broadcast to ``lead + (510,)``) and the 511 interval values, built
    by generator functions (``F.arange``; no constant leaves, so exporters and converters see
    only functions and parameters) and shared by every layer of that shape and context.

    Boundaries, ascending: ``-S_BELOW·2**e`` (e = 127 ... -126; a negative ``r`` at or above it
    has ``|r| < S·2**e``), 0, ``2**-126``, ``S·2**e`` (e = -126 ... 127; at or above it the
    exponent exceeds ``e``). Values: ``-2**e`` (e = 128 ... -126), 0, ``2**e`` (e = -126 ...
    128); ``2**128`` is inf, as the host rule gives for ``|r| >= S·2**127``. Powers of two from
    integer exponents and their products with float32 constants are exact; no boundary is
    subnormal (flushing subnormals to zero changes nothing).
    """
    key = (_context_key(), tuple(lead))
    if key not in _TABLES:
        base = _TABLES.get((key[0], None))
        if base is None:
            def pow2(start, stop, step):
                return F.r_pow_scalar(F.arange(start, stop, step), 2.0)
            bounds = F.concatenate(F.mul_scalar(pow2(127, -127, -1), -_S_BELOW),
                                   F.mul_scalar(F.arange(0, 2, 1), _MIN_NORMAL),
                                   F.mul_scalar(pow2(-126, 128, 1), _S), axis=0)
            values = F.concatenate(F.mul_scalar(pow2(128, -127, -1), -1.0), F.arange(0, 1, 1),
                                   pow2(-126, 129, 1), axis=0)
            base = _TABLES[(key[0], None)] = (bounds, values)
        bounds, values = base
        seq = F.broadcast(F.reshape(bounds, (1,) * len(lead) + bounds.shape),
                          tuple(lead) + bounds.shape)
        _TABLES[key] = (seq, values)
    return _TABLES[key]


def pow2_round_lookup(x):
    """``sign(x) * 2**k`` by the rule of :mod:`nnabla_lutq.core.pow2`, as two nnabla functions.

    A search (``F.searchsorted``) of ``x`` among the rule's float32 boundaries and a look-up
    (``F.embed``) of the interval's power of two. Equal to
    :func:`~nnabla_lutq.core.pow2.pow2_round` for 0 and every float32 value of magnitude at
    least ``2**-126`` when computed in float32 (use :func:`float32_context` under a
    half-precision context); subnormal values give 0 (positive) or ``-2**-126`` (negative),
    where the host rule gives a subnormal power of two. The tables are built in
    the graph by a few generator functions, once per shape and context (shared by the layers).
    For small arrays (one value per channel); no gradient flows through it.

    Args:
        x (~nnabla.Variable): N-D array (``need_grad`` is ignored).

    Returns:
        ~nnabla.Variable: powers of two (0 stays 0) with the signs of ``x``, shape of ``x``.
    """
    seq, values = _pow2_tables(x.shape[:-1])
    idx = F.searchsorted(seq, x, right=True)
    idx.need_grad = False
    return F.embed(idx, values)


def mlbn_scale(gamma, var, eps):
    """The multiplier-less BN scale ``pow2(gamma / sqrt(var + eps))`` as nnabla functions.

    The inference form (running statistics; :func:`nnabla_lutq.fold_mlbn` computes the same),
    built from functions every exporter knows; training uses :func:`mlbn_batch_gamma`.

    Args:
        gamma (~nnabla.Variable or None): scale parameter; None for ``gamma = 1`` (``no_scale``),
            computed as ``1 / std`` without a constant input in the graph.
        var (~nnabla.Variable): (running or batch) variance.
        eps (float): epsilon.

    Returns:
        tuple: ``(a, std)`` with ``a`` exactly 0 or ``±2**k`` and ``std = sqrt(var + eps)``.
    """
    std = F.pow_scalar(var + eps, 0.5)
    return pow2_round_graph(F.r_div_scalar(std, 1.0) if gamma is None else gamma / std), std


def _channel_mean(x, axes):
    """Mean over every axis but ``axes`` (kept as 1): the contiguous trailing axes first (one fast
    pass), then the others on the small result."""
    trailing = tuple(range(max(axes) + 1, x.ndim))
    rest = tuple(i for i in range(max(axes) + 1) if i not in axes)
    h = F.mean(x, axis=trailing, keepdims=True) if trailing else x
    return F.mean(h, axis=rest, keepdims=True) if rest else h


def batch_variance(x, axes=(1,)):
    """The biased batch variance per channel, ``E[x²] - E[x]²``, as batch normalization computes
    it on CPU (one pass), in float32 whatever the context.

    Each mean is taken over the contiguous trailing axes first, then over the rest (nnabla
    reduces that way about 20x faster than over ``(0, 2, 3)`` at once), ``x·x`` by ``F.mul_n``.
    Every function has one output, so converters that rebuild a graph function by function
    (nnabla's ``GraphConverter``, :func:`nnabla_lutq.convert`) copy it; they drop the batch
    statistics of ``F.batch_normalization(..., output_stat=True)``.

    Args:
        x (~nnabla.Variable): N-D array.
        axes (tuple of int): the channel axes (kept).

    Returns:
        ~nnabla.Variable: the variance, shape of ``x`` with 1 outside ``axes``.
    """
    axes = tuple(a % x.ndim for a in axes)
    with nn.context_scope(float32_context()):  # x·x would overflow half precision from |x| = 256
        mean = _channel_mean(x, axes)
        return _channel_mean(F.mul_n(x, x), axes) - F.mul_n(mean, mean)


def mlbn_batch_gamma(gamma, var, eps):
    """The scale ``γ̂`` of multiplier-less BN in training, from the batch variance.

    ``γ̂ = pow2(γ / √(σ²_B + ε)) · √(σ²_B + ε)``, so that a batch normalization with ``γ̂``
    computes ``pow2(γ/σ) · (x - μ_B)`` (the product with the power of two is exact). Forward
    ``γ̂``, backward ``∂L/∂γ = ∂L/∂γ̂`` (straight through the rounding; nothing flows into
    ``σ²_B``). The per-channel arithmetic runs in float32 whatever the context, so the rounding
    is the rule of :mod:`nnabla_lutq.core.pow2` exactly (:func:`pow2_round_lookup`).

    Args:
        gamma (~nnabla.Variable or None): the scale parameter; None for ``γ = 1`` (``no_scale``:
            ``γ̂ = pow2(1/σ)·σ``, no gradient).
        var (~nnabla.Variable): the batch variance ``σ²_B`` (:func:`batch_variance`), shape of
            ``gamma``.
        eps (float): epsilon.

    Returns:
        ~nnabla.Variable: ``γ̂``, shape of ``var``.
    """
    with nn.context_scope(float32_context()):
        std = F.pow_scalar(F.add_scalar(var, eps), 0.5)
        std.need_grad = False  # the scale is straight through: no gradient into the statistics
        g = None if gamma is None else detached(gamma)
        ratio = F.r_div_scalar(std, 1.0) if g is None else g / std
        target = pow2_round_lookup(ratio) * std
        if gamma is None:
            return target
        delta = target - g
        delta.need_grad = False
    return gamma + delta


def channel_scale(x, w, b=None):
    """``x·w + b`` per channel (axis 1) as one depthwise convolution with a 1x1 kernel.

    Each output is ``fl(fl(x·w) + b)``, one product and one sum, the same rounding as the
    element-wise arithmetic, without broadcasting arithmetic (which nnabla's CPU backend runs
    an order of magnitude slower). Gradients flow to ``x``, ``w`` and ``b`` as for any product.
    Inputs of other than 3 or 4 dimensions are viewed as ``(N, C, rest)``.

    Args:
        x (~nnabla.Variable): ``(N, C, ...)`` array, at least 2-D.
        w (~nnabla.Variable): ``C`` values, any shape (e.g. ``(1, C, 1, 1)`` or ``(C, 1, 1)``).
        b (~nnabla.Variable or None): ``C`` values, any shape.

    Returns:
        ~nnabla.Variable: shape of ``x``.
    """
    c = x.shape[1]
    h = x if x.ndim in (3, 4) else F.reshape(x, (x.shape[0], c, int(np.prod(x.shape[2:]))))
    kernel = (c,) + (1,) * (h.ndim - 2)
    w = w if w.shape == kernel else F.reshape(w, kernel)
    if b is not None and b.shape != (c,):
        b = F.reshape(b, (c,))
    y = F.depthwise_convolution(h, w, b)
    return y if h is x else F.reshape(y, x.shape)


def float32_context(ctx=None):
    """The context ``ctx`` (default: the current one) with every backend computing in float32.

    Args:
        ctx (~nnabla.Context): e.g. ``cudnn:half``.

    Returns:
        ~nnabla.Context: e.g. ``cudnn:float``, same array class and device.
    """
    ctx = ctx or nn.get_current_context()
    backends = []
    for b in ctx.backend:
        name = b.split(':')[0] + ':float'
        if name not in backends:
            backends.append(name)
    return nn.Context(backend=backends, array_class=ctx.array_class, device_id=ctx.device_id)


def detached(v):
    """A variable that shares ``v``'s data but neither its gradient nor its graph.

    ``(W - detached(W)) + Q`` is exactly ``Q`` forward and passes ``Q``'s gradient to ``W`` (the
    layers write it as :func:`nnabla_lutq.nn.layers.tie`). Unlike
    ``W.get_unlinked_variable(need_grad=False)``, the copy has a gradient array of its own, so
    gradient packing for data-parallel all-reduce sees ``W.grad`` once.

    Args:
        v (~nnabla.Variable): e.g. a parameter.

    Returns:
        ~nnabla.Variable: ``need_grad=False``, ``.data`` is ``v.data``.
    """
    out = nn.Variable(v.shape, need_grad=False)
    out.data = v.data
    return out
