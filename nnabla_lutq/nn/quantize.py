# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""A quantized ReLU with a tracked range (nnabla's min-max quantization) whose training graph
is a few cheap functions.

:func:`quantized_relu` is ``ReLU`` followed by uniform quantization to the levels ``k·s``,
``k = 0 ... 2**n_bits - 1``, ``s = (r_max - r_min) / (2**n_bits - 1)``, of nnabla's
``PF.min_max_quantize(ql_min=0, ql_max=2**n_bits - 1, x_min_max=True, ema=True)``: during
training ``r_max`` follows the exponential moving average of the minibatch maximum (updated in
place in every forward pass, as nnabla does); the gradient passes straight through inside
``[0, r_max - r_min]`` (where the ReLU passes it) and is zero above. The inference graph
(``track_range=False``) is exactly nnabla's (``ReLU`` then ``MinMaxQuantize`` reading the stored
range), the one exporters and :mod:`nnabla_lutq.integer` read. A fixed power-of-two step needs
no range: :func:`fixed_step_relu` is ``F.fixed_point_quantize(F.relu(x), sign=False, n=n_bits,
delta=2**-k)``, two cheap functions (one host function in training on a float32 CPU context).

Why a training graph of its own: nnabla's ``MinMaxQuantize`` runs about twenty broadcast
sub-functions per call (ResNet-20 trained 3.2x slower than float with 8-bit activations on CPU).
Here the range is one value per layer and the quantization is done in units of the step ``s``:
one reduction (the maximum), eleven functions on one value (the moving average, persisted with
``F.assign``; ``s`` and ``1/s``; in float32 whatever the context) and six on the activations:
the product by ``1/s``, the clip to ``[0, 2**n_bits - 1]`` (which is also the ReLU), rounding as
``floor(v + 1/2)`` and the product by ``s`` (products as 1x1 depthwise convolutions: one
multiplication per value, no broadcasting arithmetic). About 1.2x float on the same network.
In a float32 CPU context the same computation runs as one function
(:func:`nnabla_lutq.nn.host.quantized_relu_host`, numpy on two threads, the same bits).

Differences from ``PF.min_max_quantize`` in training (none in inference):

* ``r_min`` is read, not tracked: after a ReLU the minibatch minimum is 0 unless no unit of the
  whole batch is inactive, so nnabla's moving average of it stays at its initial 0;
* the quotient is ``x·(1/s)`` rather than ``x/s``: where ``x/s`` lies within about one ulp of a
  rounding boundary (``k + 1/2``, or the top of the range) the code can differ by one level and
  the gradient there by its mask (about one value in two million on ReLU outputs); ``floor(v +
  1/2)`` equals nnabla's ``round(v)`` for every ``v`` in ``[0, 2**n_bits)`` but ``0.5 - 2**-25``;
* the gradient is ``dy·s·(1/s)`` rounded (within an ulp of ``dy``), and it passes at ``x/s`` equal
  to the top code as nnabla's does;
* the range nudge for ``r_max - r_min < eps`` is ``r_max = max(r_max, r_min + eps)``, the same as
  nnabla's when ``r_min = 0``.
"""
import numpy as np
import nnabla as nn
import nnabla.functions as F
from nnabla.initializer import ConstantInitializer
from nnabla.parameter import get_parameter_or_create
from nnabla.parametric_functions import parametric_function_api

from .functions import channel_scale, float32_context, shared_constant
from .host import check_pow2_step, fixed_step_relu_host, quantized_relu_host, use_host

__all__ = ['quantized_relu', 'fixed_step_relu']


@parametric_function_api("min_max_quantize", [
    ('ql_min', 'Minimum quantization level (0)', '(1,) * inp.ndim', False),
    ('ql_max', 'Maximum quantization level (2**n_bits - 1)', '(1,) * inp.ndim', False),
    ('qr_min', 'Minimum of the quantization range (read, stays 0 after a ReLU)',
     '(1,) * inp.ndim', False),
    ('qr_max', 'Maximum of the quantization range, tracked in training', '(1,) * inp.ndim',
     False),
])
def quantized_relu(inp, n_bits=8, track_range=True, decay=0.999, eps=0.01, qr_max_init=6.0,
                   fix_parameters=False, impl=None):
    """ReLU followed by uniform ``n_bits`` quantization over a tracked range.

    The parameters are those of nnabla's ``PF.min_max_quantize`` (the same names, shapes, types
    and flags under the scope ``min_max_quantize``), so checkpoints and graphs built with either
    share them; see the module documentation for the training graph and how it differs.

    Args:
        inp (~nnabla.Variable): pre-activation, ``(N, C, ...)``.
        n_bits (int): bits of the codes ``0 ... 2**n_bits - 1``.
        track_range (bool): training graph: update ``qr_max`` with the moving average of the
            minibatch maximum of ``relu(inp)`` in every forward pass (nnabla's ``x_min_max=True,
            ema=True``); False: inference, the stored range (``MinMaxQuantize`` with
            ``x_min_max=False``).
        decay (float): decay of the moving average.
        eps (float): the smallest range ``qr_max - qr_min`` (nnabla's ``eps``).
        qr_max_init (float): initial ``qr_max`` (``qr_min`` starts at 0).
        fix_parameters (bool): as in nnabla (the range parameters never take gradients).
        impl (str or None): the training graph: ``'graph'`` (the functions above), ``'host'``
            (one function computing the same bits with numpy,
            :func:`~nnabla_lutq.nn.host.quantized_relu_host`) or None / ``'auto'``: host in a
            float32 CPU context, graph elsewhere (:func:`~nnabla_lutq.nn.host.use_host`).

    Returns:
        ~nnabla.Variable: quantized activations, shape of ``inp``.
    """
    host = use_host(impl)  # validates impl before any parameter is made
    levels = 2 ** n_bits - 1
    ones = [1] * inp.ndim
    # created as PF.min_max_quantize creates them (need_grad False with x_min_max and ema)
    ql_min = get_parameter_or_create("ql_min", ones, np.array(0).reshape(ones), False, False)
    ql_max = get_parameter_or_create("ql_max", ones, np.array(levels).reshape(ones), False, False)
    qr_min = get_parameter_or_create("qr_min", ones, ConstantInitializer(0.0), not track_range,
                                     not fix_parameters)
    qr_max = get_parameter_or_create("qr_max", ones, ConstantInitializer(qr_max_init),
                                     not track_range, not fix_parameters)
    if not track_range:
        return F.min_max_quantize(F.relu(inp), qr_min, qr_max, ql_min, ql_max, decay, False, True,
                                  True, eps)
    if host:
        return quantized_relu_host(inp, qr_max, qr_min, levels, decay, eps)
    x_max = F.max(inp, keepdims=True)
    x_max.need_grad = False
    c = inp.shape[1]
    k = inp.ndim - 2 if inp.ndim in (3, 4) else 1
    with nn.context_scope(float32_context()):  # one value per layer: float32 in any context
        # qr_max <- decay·qr_max + (1 - decay)·max(relu(x)), in nnabla's float32 arithmetic
        one_minus = float(1.0 - np.float32(decay))  # nnabla's (float)(1.0 - decay)
        ema = F.mul_scalar(qr_max, decay) + F.maximum_scalar(F.mul_scalar(x_max, one_minus), 0.0)
        r_max = F.assign(qr_max, F.maximum2(ema, F.add_scalar(qr_min, eps)))
        # the step s, one per channel for the depthwise products: (qr_max - qr_min) / levels
        s = F.reshape(r_max - qr_min, (1,) * (k + 1)) / shared_constant(levels, (c,) + (1,) * k)
        inv = F.r_div_scalar(s, 1.0)
    u = channel_scale(inp, inv)
    top = float(np.nextafter(np.float32(levels), np.float32(np.inf)))  # u < top <=> u <= levels
    code = F.floor(F.add_scalar(F.minimum_scalar(F.maximum_scalar(u, 0.0), top), 0.5))
    return channel_scale(code, s)


def fixed_step_relu(inp, n_bits, step, training=True, impl=None):
    """ReLU followed by uniform ``n_bits`` quantization with a fixed power-of-two step.

    ``F.fixed_point_quantize(F.relu(inp), sign=False, n=n_bits, delta=step)``: codes
    ``0 ... 2**n_bits - 1``, range ``[0, (2**n_bits - 1)·step]``, the gradient straight through
    where ``0 < inp <= (2**n_bits - 1)·step``. Integer inference needs no multiplication for it
    (a shift).

    Args:
        inp (~nnabla.Variable): pre-activation.
        n_bits (int): bits of the codes.
        step (float): the step, a power of two (e.g. ``8 / 2**8``).
        training (bool): a training graph, which may use the host form; False: nnabla's two
            functions (the graph exporters and :mod:`nnabla_lutq.integer` read).
        impl (str or None): as for :func:`quantized_relu` (training only).

    Returns:
        ~nnabla.Variable: quantized activations, shape of ``inp``.

    Raises:
        ValueError: for a step that is not a power of two or an unknown ``impl``.
    """
    host = use_host(impl)  # validates impl
    check_pow2_step(step)  # in every form, before any function is built
    if training and host:
        return fixed_step_relu_host(inp, 2 ** n_bits - 1, step)
    return F.fixed_point_quantize(F.relu(inp), sign=False, n=n_bits, delta=step)
