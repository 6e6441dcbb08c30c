# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""LUT-Q parametric functions: ``lutq_affine``, ``lutq_convolution``,
``lutq_depthwise_convolution`` and the multiplier-less batch normalization ``mlbn``.

``import nnabla_lutq`` also makes them reachable as ``nnabla.parametric_functions.<name>``.

Every LUT-Q layer registers, in its scope, the full-precision weights ``W`` (trained), the
dictionary ``d`` (float, shape ``(K,)``) and the assignment ``A`` (int32, shape of ``W``). The
forward pass computes with exactly ``d[A]``; the backward pass gives ``W`` the gradient with
respect to those tied weights (straight-through estimator) and nothing to ``d`` or ``A``.
``d`` and ``A`` change only in :meth:`nnabla_lutq.LUTQSolver.update` (the k-means step) and in
:func:`nnabla_lutq.initialize`.
"""
import numpy as np
import nnabla as nn
import nnabla.functions as F
from nnabla.initializer import (ConstantInitializer, UniformInitializer, calc_uniform_lim_glorot)
from nnabla.parameter import get_parameter_or_create
from nnabla.parametric_functions import parametric_function_api

from ..core.config import make_config
from ..core.fit import init_dictionary
from ..core.kinds import BY_KIND
from .functions import batch_variance, detached, float32_context, mlbn_batch_gamma, mlbn_scale
from .host import mlbn_gamma_host, use_host
from .params import scope_path
from .state import STATE, LUTQLayer, MLBNLayer, WeightMode

__all__ = ['lutq_affine', 'lutq_convolution', 'lutq_depthwise_convolution', 'mlbn', 'fold_mlbn']


def _lutq_weight(kind, w_shape, w_init, fix_parameters, n_values, dictionary, prune_ratio,
                 pow2_range, group_size=None):
    """Create/get W, d and A in the current scope, register the layer and return the weight the
    layer computes with (by the current :class:`~nnabla_lutq.nn.state.WeightMode`)."""
    scope = nn.parameter.get_current_parameter_scope()
    name = scope_path(scope) or '?'
    cfg = make_config(n_values, dictionary, prune_ratio, pow2_range, int(np.prod(w_shape)), name,
                      group_size, tuple(w_shape), BY_KIND[kind].out_axis % len(w_shape))
    d_old = nn.parameter.get_parameter("d")
    a_old = nn.parameter.get_parameter("A")
    if (d_old is None) != (a_old is None):
        raise ValueError(f"{name}: only one of 'd' and 'A' exists; load both or neither")
    if d_old is not None and d_old.shape != cfg.table_shape:
        raise ValueError(
            f"{name}: the existing dictionary 'd' has shape {d_old.shape} but the layer asks for "
            f"{cfg.table_shape} ({_table_text(cfg)}); build it with "
            f"{_settings_of_table(d_old.shape)} or clear the parameters")
    if a_old is not None and a_old.shape != tuple(w_shape):
        raise ValueError(
            f"{name}: the existing assignment 'A' has shape {a_old.shape}, the weights "
            f"{tuple(w_shape)}; clear the parameters or load a matching file")
    w_old = nn.parameter.get_parameter("W")
    if w_old is not None and w_old.shape != tuple(w_shape):
        raise ValueError(f"{name}: the existing weights 'W' have shape {w_old.shape}, the layer "
                         f"asks for {tuple(w_shape)}; clear the parameters or use another name")
    if w_old is not None and d_old is not None:  # settings conflict: refuse before any change
        STATE.register(LUTQLayer(name, kind, w_old, d_old, a_old, cfg), scope)
    w = get_parameter_or_create("W", w_shape, w_init, True, not fix_parameters)
    if d_old is None:
        d_init, a_init = init_dictionary(w.d, cfg)
    else:
        d_init = a_init = None
    d = get_parameter_or_create("d", cfg.table_shape, d_init, False)
    a = get_parameter_or_create("A", tuple(w_shape), a_init, False)
    if a.data.dtype != np.int32:
        a.data.cast(np.int32)
    STATE.register(LUTQLayer(name, kind, w, d, a, cfg), scope)
    mode = STATE.mode
    if mode is WeightMode.FLOAT:
        return w
    q = F.embed(a, d) if cfg.group_size is None else grouped_lookup(a, d, cfg)
    if mode is WeightMode.TABLES or not w.need_grad:
        return q
    return tie(w, q)


#: the functions of :func:`tie` that read ``W`` (or its detached copy)
TIE_FUNCTIONS = frozenset({'MulScalar', 'Add2'})


def tie(w, q):
    """``Q`` forward, ``W`` the gradient of ``Q`` backward: ``(W + (-1)·detached(W)) + Q``.

    ``W + (-W)`` is exactly +0 (NaN for infinite ``W``, as ``W - W``), so the result is ``Q``'s
    bits; the detached copy has its own gradient array (``W.grad`` appears once in the graph).
    Written with ``MulScalar`` and ``Add2``, not ``Sub2``: nnabla's CPU ``Sub2`` takes its
    broadcasting path even for equal shapes, about 15 times slower (ResNet-18: 0.36 s of a 9 s
    step, against 0.04 s).

    Args:
        w (~nnabla.Variable): the full-precision weights (a parameter).
        q (~nnabla.Variable): the tied weights ``d[A]``, shape of ``w``.

    Returns:
        ~nnabla.Variable: ``q``'s values, gradient into ``w``.
    """
    return F.add2(F.add2(w, F.mul_scalar(detached(w), -1.0)), q)


def _table_text(cfg):
    """``K=16`` or ``K=16 per group of 2 output channels`` for messages."""
    if cfg.group_size is None:
        return f"n_values={cfg.n_values}, one table"
    return f"n_values={cfg.n_values}, group_size={cfg.group_size}"


def _settings_of_table(shape):
    """The layer arguments that give a table of ``shape``."""
    if len(shape) == 1:
        return f"n_values={shape[0]}, group_size=None"
    return f"n_values={shape[1]} and the group_size that gives {shape[0]} groups"


def grouped_lookup(a, d, cfg):
    """``Q = d[A]`` of a grouped layer as nnabla functions: each index read in its group's row.

    The ``(n_groups, K)`` table is repeated to one row per output channel (no copy for one channel
    per group) and read by ``F.gather`` with the output axis as batch axis; for a layer whose
    output axis is not the first (affine), the indices are read with that axis moved to the
    front and the result moved back. ``A`` stays int32 (gather reads indices as integers).

    Args:
        a (~nnabla.Variable): int32 indices, shape of ``W``.
        d (~nnabla.Variable): the tables, ``(n_groups, K)``.
        cfg (LUTQConfig): the layer's settings.

    Returns:
        ~nnabla.Variable: the tied weights, shape of ``W``.
    """
    g, k, gs = cfg.n_groups, cfg.n_values, cfg.group_size
    table = d
    if gs > 1:
        table = F.reshape(F.broadcast(F.reshape(d, (g, 1, k)), (g, gs, k)), (g * gs, k))
    moved = cfg.moved_axes
    if moved is None:
        return F.gather(table, a, axis=1, batch_dims=1)
    perm, back = moved
    return F.transpose(F.gather(table, F.transpose(a, perm), axis=1, batch_dims=1), back)


_LUTQ_DOC_ARGS = """
        n_values (int): K, the number of dictionary values (need not be a power of two;
            ignored for a fixed dictionary, whose length is K).
        dictionary (str or list): ``'free'`` (K values fitted by k-means), ``'pow2'`` (each
            fitted value rounded to sign(m)·2^round(log2|m|)) or a fixed list such as ``[-1, 1]``
            (binary) or ``[-1, 0, 1]`` (ternary); fixed values are used as given (not scaled).
        prune_ratio (float): p in [0, 1); a value fixed at 0 takes exactly the ceil(p·N)
            smallest-|W| weights and the other K-1 values are fitted to the rest
            (then ``d[0] = 0``).
        pow2_range (tuple of int): ``(min_exp, max_exp)`` clipping the exponents of a ``'pow2'``
            dictionary; None for no clipping.
        group_size (int or None): None: one table for the layer, ``d`` of shape ``(K,)``; an
            integer g: one table per g consecutive output channels (it must divide their
            number), ``d`` of shape ``(outmaps / g, K)``, ``A`` indices into its group's table.
            Every rule (k-means, pow-2 values, pruning) applies per group."""


_APPLY_DOC_ARGS = """
        apply_w (function): Lambda, function, or callable object applied to the weights, as in
            nnabla's layer; here to the weight the layer computes with: the tied ``d[A]``
            (``W`` under ``weight_mode('float')``). The layer then computes with
            ``apply_w(d[A])``, which need not take K values (``lambda w: w * 0.5`` gives
            ``0.5·d[A]``); ``W`` receives the gradient through it, straight through the table
            look-up, and ``d`` and ``A`` are still fitted to ``W``.
        apply_b (function): Lambda, function, or callable object applied to the bias."""


def _lutq_doc(func):
    """Insert the shared descriptions of the LUT-Q (and apply_w/apply_b) arguments into a
    layer's docstring."""
    func.__doc__ = func.__doc__.replace('\n        APPLY_ARGS', _APPLY_DOC_ARGS)
    func.__doc__ = func.__doc__.replace('\n        LUTQ_ARGS', _LUTQ_DOC_ARGS)
    return func


def _applied(apply, v):
    """``apply(v)``, or ``v`` for no function (nnabla's apply_w/apply_b)."""
    return v if apply is None else apply(v)


def _bias(shape, b_init, fix_parameters, with_bias, apply_b):
    """The bias ``b`` as nnabla's layers create it (None without bias), with ``apply_b``."""
    if not with_bias:
        return None
    return _applied(apply_b, get_parameter_or_create("b", shape, b_init, True,
                                                     not fix_parameters))


@parametric_function_api("lutq_affine", [
    ('W', 'Weight matrix in float (trained)', '(inmaps, outmaps)', True),
    ('b', 'Bias vector', '(outmaps,)', True),
    ('d', 'Dictionary (look-up table)', '(n_values,), or (n_groups, n_values)', False),
    ('A', 'Assignment, int32 indices into d', '(inmaps, outmaps)', False),
])
@_lutq_doc
def lutq_affine(inp, n_outmaps, base_axis=1, w_init=None, b_init=None, fix_parameters=False,
                rng=None, with_bias=True, apply_w=None, apply_b=None, n_values=16,
                dictionary='free', prune_ratio=0.0, pow2_range=None, group_size=None):
    """LUT-Q affine layer: ``F.affine`` with the tied weights ``d[A]``.

    The forward pass computes with exactly ``d[A]``; ``W`` receives the gradient of the tied
    weights (straight-through). ``d`` and ``A`` are initialized from ``W`` when first created and
    are refitted by :class:`nnabla_lutq.LUTQSolver` after every solver update.

    Args:
        inp (~nnabla.Variable): Input N-D array with shape (:math:`M_0 \\times \\ldots \\times M_{B-1} \\times D_B \\times \\ldots \\times D_N`).
        n_outmaps (:obj:`int` or :obj:`tuple` of :obj:`int`): Number of output neurons per data.
        base_axis (int): Dimensions up to `base_axis` are treated as the sample dimensions.
        w_init (:obj:`nnabla.initializer.BaseInitializer` or :obj:`numpy.ndarray`): Initializer for
            the float weights ``W``. Glorot uniform by default.
        b_init (:obj:`nnabla.initializer.BaseInitializer` or :obj:`numpy.ndarray`): Initializer for
            the bias. Zeros by default.
        fix_parameters (bool): When True, ``W`` and ``b`` are not updated.
        rng (numpy.random.RandomState): Random generator for the initializer.
        with_bias (bool): Whether to include the bias term.
        APPLY_ARGS
        LUTQ_ARGS

    Returns:
        ~nnabla.Variable: N-D array.

    Raises:
        ValueError: on invalid LUT-Q arguments (naming the layer), before anything is created.
    """
    if not hasattr(n_outmaps, '__iter__'):
        n_outmaps = [n_outmaps]
    n_outmaps = list(n_outmaps)
    n_outmap = int(np.prod(n_outmaps))
    inmaps = int(np.prod(inp.shape[base_axis:]))
    if w_init is None:
        w_init = UniformInitializer(calc_uniform_lim_glorot(inmaps, n_outmap), rng=rng)
    if with_bias and b_init is None:
        b_init = ConstantInitializer()
    q = _lutq_weight('affine', [inmaps] + n_outmaps, w_init, fix_parameters, n_values,
                     dictionary, prune_ratio, pow2_range, group_size)
    b = _bias(n_outmaps, b_init, fix_parameters, with_bias, apply_b)
    return F.affine(inp, _applied(apply_w, q), b, base_axis)


@parametric_function_api("lutq_conv", [
    ('W', 'Filter weights in float (trained)',
     '(outmaps, inmaps // group, *kernel); channel-last: (outmaps, *kernel, inmaps // group)',
     True),
    ('b', 'Bias vector', '(outmaps,)', True),
    ('d', 'Dictionary (look-up table)', '(n_values,), or (n_groups, n_values)', False),
    ('A', 'Assignment, int32 indices into d', 'the shape of W', False),
])
@_lutq_doc
def lutq_convolution(inp, outmaps, kernel, pad=None, stride=None, dilation=None, group=1,
                     channel_last=False, w_init=None, b_init=None, base_axis=1,
                     fix_parameters=False, rng=None, with_bias=True, apply_w=None, apply_b=None,
                     n_values=16, dictionary='free', prune_ratio=0.0, pow2_range=None,
                     group_size=None):
    """LUT-Q N-D convolution: ``F.convolution`` with the tied weights ``d[A]``.

    The forward pass computes with exactly ``d[A]``; ``W`` receives the gradient of the tied
    weights (straight-through). ``d`` and ``A`` are initialized from ``W`` when first created and
    are refitted by :class:`nnabla_lutq.LUTQSolver` after every solver update.

    Args:
        inp (~nnabla.Variable): N-D array.
        outmaps (int): Number of convolution kernels (output channels).
        kernel (:obj:`tuple` of :obj:`int`): Convolution kernel size, e.g. (3, 3).
        pad (:obj:`tuple` of :obj:`int`): Padding sizes for dimensions.
        stride (:obj:`tuple` of :obj:`int`): Stride sizes for dimensions.
        dilation (:obj:`tuple` of :obj:`int`): Dilation sizes for dimensions.
        group (int): Number of groups of channels.
        channel_last (bool): channels are the last axis of ``inp`` (NHWC) and of ``W``, as in
            ``PF.convolution`` (not computable by nnabla's CPU backend; cudnn computes it).
        w_init (:obj:`nnabla.initializer.BaseInitializer` or :obj:`numpy.ndarray`): Initializer for
            ``W``. Glorot uniform by default.
        b_init (:obj:`nnabla.initializer.BaseInitializer` or :obj:`numpy.ndarray`): Initializer for
            the bias. Zeros by default.
        base_axis (int): Dimensions up to `base_axis` are treated as the sample dimensions.
        fix_parameters (bool): When True, ``W`` and ``b`` are not updated.
        rng (numpy.random.RandomState): Random generator for the initializer.
        with_bias (bool): Whether to include the bias term.
        APPLY_ARGS
        LUTQ_ARGS

    Returns:
        ~nnabla.Variable: N-D array.

    Raises:
        ValueError: on invalid LUT-Q arguments (naming the layer), before anything is created.
    """
    kernel = tuple(kernel)
    inmaps = inp.shape[-1] if channel_last else inp.shape[base_axis]
    if inmaps % group:
        raise ValueError(f"lutq_convolution: {inmaps} input channels are not divisible by group={group}")
    if w_init is None:
        w_init = UniformInitializer(calc_uniform_lim_glorot(inmaps, outmaps, kernel), rng=rng)
    if with_bias and b_init is None:
        b_init = ConstantInitializer()
    w_shape = ((outmaps,) + kernel + (inmaps // group,) if channel_last
               else (outmaps, inmaps // group) + kernel)
    q = _lutq_weight('conv', w_shape, w_init, fix_parameters, n_values, dictionary, prune_ratio,
                     pow2_range, group_size)
    b = _bias((outmaps,), b_init, fix_parameters, with_bias, apply_b)
    return F.convolution(inp, _applied(apply_w, q), b, base_axis, pad, stride, dilation, group,
                         channel_last)


@parametric_function_api("lutq_depthwise_conv", [
    ('W', 'Filter weights in float (trained)', '(inmaps * multiplier, *kernel)', True),
    ('b', 'Bias vector', '(inmaps * multiplier,)', True),
    ('d', 'Dictionary (look-up table)', '(n_values,), or (n_groups, n_values)', False),
    ('A', 'Assignment, int32 indices into d', '(inmaps * multiplier, *kernel)', False),
])
@_lutq_doc
def lutq_depthwise_convolution(inp, kernel, pad=None, stride=None, dilation=None, multiplier=1,
                               w_init=None, b_init=None, base_axis=1, fix_parameters=False,
                               rng=None, with_bias=True, n_values=16, dictionary='free',
                               prune_ratio=0.0, pow2_range=None, group_size=None):
    """LUT-Q depthwise convolution: ``F.depthwise_convolution`` with the tied weights ``d[A]``.

    Args:
        inp (~nnabla.Variable): N-D array.
        kernel (:obj:`tuple` of :obj:`int`): Convolution kernel size, e.g. (3, 3).
        pad (:obj:`tuple` of :obj:`int`): Padding sizes for dimensions.
        stride (:obj:`tuple` of :obj:`int`): Stride sizes for dimensions.
        dilation (:obj:`tuple` of :obj:`int`): Dilation sizes for dimensions.
        multiplier (int): Number of output feature maps per input feature map.
        w_init (:obj:`nnabla.initializer.BaseInitializer` or :obj:`numpy.ndarray`): Initializer for
            ``W``. Glorot uniform by default.
        b_init (:obj:`nnabla.initializer.BaseInitializer` or :obj:`numpy.ndarray`): Initializer for
            the bias. Zeros by default.
        base_axis (int): Dimensions up to `base_axis` are treated as the sample dimensions.
        fix_parameters (bool): When True, ``W`` and ``b`` are not updated.
        rng (numpy.random.RandomState): Random generator for the initializer.
        with_bias (bool): Whether to include the bias term.
        LUTQ_ARGS

    Returns:
        ~nnabla.Variable: N-D array.

    Raises:
        ValueError: on invalid LUT-Q arguments (naming the layer), before anything is created.
    """
    kernel = tuple(kernel)
    inmaps = inp.shape[base_axis]
    if w_init is None:
        w_init = UniformInitializer(
            calc_uniform_lim_glorot(inmaps, inmaps, kernel), rng=rng)
    if with_bias and b_init is None:
        b_init = ConstantInitializer()
    q = _lutq_weight('depthwise_conv', (inmaps * multiplier,) + kernel, w_init, fix_parameters,
                     n_values, dictionary, prune_ratio, pow2_range, group_size)
    b = _bias((inmaps * multiplier,), b_init, fix_parameters, with_bias, None)
    return F.depthwise_convolution(inp, q, b, base_axis, pad, stride, dilation, multiplier)


@parametric_function_api("mlbn", [
    ('beta', 'Trainable bias (not with no_bias)', '<see above>', True),
    ('gamma', 'Trainable full-precision scale (not with no_scale); the layer computes with a '
              'power-of-two scale', '<see above>', True),
    ('mean', 'Moving average of batch mean', '<see above>', False),
    ('var', 'Moving average of batch variance', '<see above>', False),
])
def mlbn(inp, axes=[1], decay_rate=0.9, eps=1e-5, batch_stat=True, output_stat=False,
         fix_parameters=False, param_init=None, no_scale=False, no_bias=False, impl=None):
    """Multiplier-less batch normalization.

    The per-channel scale :math:`a = \\gamma / \\sqrt{\\sigma^2 + \\epsilon}` is rounded to
    :math:`\\pm 2^k` (in the log domain), so the layer needs a shift instead of a multiplication.

    * Inference (``batch_stat=False``): ``y = a·x + b`` with ``a = pow2(γ/√(var+ε))`` (exactly
      ``±2^k``) and ``b = β - a·mean`` from the running statistics (see :func:`fold_mlbn`).
    * Training (``batch_stat=True``): batch normalization with
      ``γ̂ = pow2(γ/√(σ²_B+ε))·√(σ²_B+ε)``, where σ²_B is the (biased) batch variance (the one
      the pass normalizes with, to float rounding), so ``y = pow2(γ/σ_B)·(x - μ_B) + β``; the
      backward pass is batch normalization's with ``γ̂`` and updates the full-precision ``γ``
      straight through (∂L/∂γ = ∂L/∂γ̂). Running statistics are updated exactly as by
      ``PF.batch_normalization``. The graph: ``F.batch_normalization`` with ``γ̂`` computed
      once from σ²_B (:func:`~nnabla_lutq.nn.functions.batch_variance`: 7 functions, two fast
      reductions each of ``x`` and ``x·x``; :func:`~nnabla_lutq.nn.functions.mlbn_batch_gamma`:
      8 functions on one value per channel, the rounding exact).

    Args:
        inp (~nnabla.Variable): N-D array of input.
        axes (:obj:`tuple` of :obj:`int`): Axes of the mean and variance (the channel axis).
        decay_rate (float): Decay rate of running mean and variance.
        eps (float): Tiny value to avoid zero division by std.
        batch_stat (bool): Use mini-batch statistics rather than running ones.
        output_stat (bool): Output batch mean and variance (training only).
        fix_parameters (bool): When True, ``beta`` and ``gamma`` are not updated.
        param_init (dict): Initializers for ``'beta'``, ``'gamma'``, ``'mean'``, ``'var'``.
        no_scale (bool): If True, the scale term is omitted, as in ``PF.batch_normalization``:
            no ``gamma`` parameter, ``γ = 1``; the scale is still a power of two,
            ``a = pow2(1/√(var+ε))``.
        no_bias (bool): If True, the bias term is omitted: no ``beta`` parameter, ``β = 0``.
        impl (str or None): how training computes ``γ̂``: ``'graph'`` (the functions above),
            ``'host'`` (one function, :func:`~nnabla_lutq.nn.host.mlbn_gamma_host`: the batch
            variance summed in float64 with numpy, the same rounding rule; one channel axis
            only) or None / ``'auto'``: host in a float32 CPU context with one channel axis,
            graph elsewhere.

    Returns:
        ~nnabla.Variable: N-D array (with ``output_stat``: also batch mean and variance).
    """
    axes = list(axes)
    host = use_host(impl) and len(axes) == 1  # validates impl before any parameter is made
    if impl == 'host' and len(axes) != 1:
        raise ValueError(f"mlbn: impl='host' needs one channel axis (got axes={axes}); use "
                         "impl='graph'")
    shape_stat = [1 for _ in inp.shape]
    for a in axes:
        shape_stat[a] = inp.shape[a]
    param_init = dict(param_init or {})
    unknown = set(param_init) - {'beta', 'gamma', 'mean', 'var'}
    if unknown:
        raise ValueError(f"mlbn: unknown param_init keys {sorted(unknown)}; use beta, gamma, mean, var")
    scope = nn.parameter.get_current_parameter_scope()
    name = scope_path(scope) or '?'
    used = [p for p, omit in zip(MLBNLayer.PARTS, (no_bias, no_scale, False, False)) if not omit]
    existing = {p: nn.parameter.get_parameter(p) for p in used}
    if all(v is not None for v in existing.values()):  # settings conflict: refuse before any change
        STATE.register(_mlbn_record(name, existing, shape_stat, eps, axes), scope)
    params = {}
    for part, init in (('beta', 0), ('gamma', 1)):
        if part in used:
            params[part] = get_parameter_or_create(
                part, shape_stat, param_init.get(part, ConstantInitializer(init)), True,
                not fix_parameters)
    for part, init in (('mean', 0), ('var', 1)):
        params[part] = get_parameter_or_create(
            part, shape_stat, param_init.get(part, ConstantInitializer(init)), False)
    STATE.register(_mlbn_record(name, params, shape_stat, eps, axes), scope)
    beta, gamma, mean, var = (params.get(p) for p in MLBNLayer.PARTS)
    if not batch_stat:
        a, _ = mlbn_scale(gamma, var, eps)
        return inp * a + _mlbn_bias(a, beta, mean)
    if host:
        gamma_hat = mlbn_gamma_host(inp, gamma, axes[0], eps)
    else:
        gamma_hat = mlbn_batch_gamma(gamma, batch_variance(inp, axes), eps)
    return F.batch_normalization(inp, beta, gamma_hat, mean, var, axes, decay_rate, eps,
                                 batch_stat, output_stat)


def _mlbn_record(name, params, shape, eps, axes):
    """The :class:`MLBNLayer` of an mlbn layer with the parameters ``params`` (part -> Variable).

    Without ``gamma`` (no_scale) or ``beta`` (no_bias) the record holds the constant ``1`` or
    ``0`` there, a variable that is not a parameter, and lists only the layer's parameters as
    its ``PARTS``.
    """
    full = dict(params)
    for part, value in (('beta', 0.0), ('gamma', 1.0)):
        if part not in full:
            full[part] = nn.Variable.from_numpy_array(np.full(shape, value, np.float32),
                                                      need_grad=False)
    rec = MLBNLayer(name, *(full[p] for p in MLBNLayer.PARTS), float(eps), tuple(axes))
    if len(params) < len(MLBNLayer.PARTS):
        rec.PARTS = tuple(p for p in MLBNLayer.PARTS if p in params)
    return rec


def _mlbn_bias(a, beta, mean):
    """``beta - a·mean`` (``-(a·mean)`` without beta) as nnabla functions."""
    am = a * mean
    return F.mul_scalar(am, -1.0) if beta is None else beta - am


def fold_mlbn(layer):
    """The inference scale and bias ``(a, b)`` of a multiplier-less BN layer, for export.

    Computed with the same nnabla functions as the layer's inference graph (in float32), so the
    values equal what the graph and the exported file use.

    Args:
        layer (str or MLBNLayer): the layer's parameter prefix (e.g. ``'bn1/mlbn'`` or ``'bn1'``)
            or record.

    Returns:
        tuple: ``(a, b)`` float32 arrays of the shape of ``gamma``; every ``a`` is 0 or ``±2^k``
        and the layer computes ``a·x + b`` at inference.

    Raises:
        ValueError: if no multiplier-less BN layer has that name.
    """
    if isinstance(layer, str):
        layer = STATE.layer(layer)
        if not isinstance(layer, MLBNLayer):
            raise ValueError(f"{layer.name} is a LUT-Q layer, not a multiplier-less BN layer")
    parts = {p: detached(getattr(layer, p)) if p in layer.PARTS else None
             for p in MLBNLayer.PARTS}
    with nn.context_scope(float32_context()):
        a, _ = mlbn_scale(parts['gamma'], parts['var'], layer.eps)
        b = _mlbn_bias(a, parts['beta'], parts['mean'])
        F.sink(a, b).forward()
    return a.d.astype(np.float32).copy(), b.d.astype(np.float32).copy()
