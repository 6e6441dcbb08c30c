# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Host (CPU) forms of three training-graph pieces, one nnabla function each.

In nnabla's CPU backend every function of a graph is a pass over its arrays on one thread, so a
rule written as a chain of small functions costs a chain of passes (and on a GPU a chain of
kernel launches). Three chains of the training graphs have a host form, a
:class:`~nnabla.function.PythonFunction` that computes the same values with numpy in one
function, in two halves on the package's two threads for large arrays
(:mod:`nnabla_lutq.core.threads`):

* :func:`quantized_relu_host`: the tracked-range 8-bit activation quantizer of
  :func:`nnabla_lutq.nn.quantize.quantized_relu` (the moving average of the minibatch maximum,
  persisted in ``qr_max``, and the quantization in units of the step), replacing 18 functions.
  Forward values, gradients and the range are bit-identical to the graph form.
* :func:`fixed_step_relu_host`: the same with a fixed power-of-two step, replacing ``ReLU`` and
  ``FixedPointQuantize`` (:func:`nnabla_lutq.nn.quantize.fixed_step_relu`), bit-identical.
* :func:`mlbn_gamma_host`: the scale ``γ̂`` of multiplier-less BN in training
  (:func:`nnabla_lutq.nn.functions.mlbn_batch_gamma` of the batch variance,
  :func:`nnabla_lutq.nn.functions.batch_variance`), replacing 15 functions. The power-of-two
  rounding is :func:`nnabla_lutq.core.pow2.pow2_round` itself; the batch variance is summed in
  float64 (the graph form sums in float32), so ``γ̂`` agrees with the graph form to float
  rounding, its power of two exactly except where ``γ/σ`` lies within that rounding of a
  rounding boundary.

:func:`use_host` says where they apply: a context computing on the CPU in float32 (in any other
context, e.g. ``cudnn``, the graph forms run, whose functions have device kernels). The
training graphs that hold them are not saved (a PythonFunction is not serialized); the
inference graphs never use them. Graph converters built on
:class:`nnabla_lutq.nn.graph.GraphModifier` (:func:`nnabla_lutq.convert` among them) copy them
(:func:`copy_host_function`); nnabla's own modifiers know only ``nnabla.functions``: build with
``impl='graph'`` for those.
"""
import sys
import weakref

import numpy as np
import nnabla as nn
from nnabla.function import PythonFunction

from ..core.pow2 import pow2_round
from ..core.threads import run_parts

__all__ = ['use_host', 'check_pow2_step', 'quantized_relu_host', 'fixed_step_relu_host',
           'mlbn_gamma_host', 'copy_host_function']

#: from this many values on, a pass runs in two halves on the two threads (below, the threads'
#: hand-over costs more than they gain: measured on 2 cores, 0.5 M values 10 % slower, 2 M
#: values 12 % faster)
PARALLEL_MIN = 1 << 20

# nnabla's PythonFunction callbacks import `nnabla` and `nnabla_ext` relative to the package
# first (`nnabla.nnabla`, `nnabla.nnabla_ext`: modules that do not exist), then absolutely. Each
# call searched the file system for the relative names (29 failed look-ups, about 0.3 ms per
# forward pass of a function). Recorded as absent (None), they fail at once, as they failed
# before, and the absolute imports follow. (Recording the real modules under those names would
# be faster still but makes nnabla's own `nnabla.utils.converter` imports fail.)
for _absent in ('nnabla.nnabla', 'nnabla.nnabla_ext'):
    sys.modules.setdefault(_absent, None)


def use_host(impl=None):
    """Whether a layer builds the host form of its training graph.

    Args:
        impl (str or None): ``'host'``, ``'graph'`` or None / ``'auto'``: the host form when the
            current context computes on the CPU in float32 only.

    Returns:
        bool: True for the host form.

    Raises:
        ValueError: for another ``impl``.
    """
    if impl in (None, 'auto'):
        ctx = nn.get_current_context()
        return all(b == 'cpu:float' for b in ctx.backend)
    if impl not in ('host', 'graph'):
        raise ValueError(f"impl must be 'auto', 'host' or 'graph' (got {impl!r})")
    return impl == 'host'


#: the host functions of live graphs, by the graph function's hash (nnabla's graph walkers hand
#: out wrappers, not the PythonFunction objects); weak, so a graph's end ends its entry
_LIVE = weakref.WeakValueDictionary()


def _call(fn, *inputs):
    """``fn(*inputs)``, recording ``fn`` for :func:`copy_host_function`."""
    out = fn(*inputs)
    _LIVE[hash(out.parent)] = fn
    return out


def copy_host_function(f, inputs):
    """A copy of a host function of a graph on new inputs, for graph converters (nnabla's
    ``FunctionModifier`` rebuilds functions by their type name from ``nnabla.functions``, where
    these have none).

    Args:
        f (~nnabla.function.Function): a function of a graph (e.g. from ``Variable.visit``).
        inputs (list of ~nnabla.Variable): its new inputs.

    Returns:
        ~nnabla.Variable or None: the copy's output; None when ``f`` is not a host function.
    """
    fn = _LIVE.get(hash(f))
    if fn is None or fn.name != f.info.type_name:
        return None
    return _call(fn.copy(nn.get_current_context()), *inputs)


def _parts(n, size=None):
    """Slices of ``range(n)``: two halves for the two threads when the pass covers at least
    :data:`PARALLEL_MIN` values (``size``, default ``n``), else one."""
    if n < 2 or (n if size is None else size) < PARALLEL_MIN:
        return [slice(0, n)]
    return [slice(0, n // 2), slice(n // 2, n)]


def _write(grad, value, accum):
    """``grad += value`` or ``grad = value`` (an NdArray and a numpy array)."""
    g = grad.cast(np.float32)
    if accum:
        g += value.reshape(g.shape)
    else:
        g[...] = value.reshape(g.shape)


class _HostFunction(PythonFunction):
    """One output; the backward pass reads no input or output data (what it needs, it keeps)."""

    def min_outputs(self):
        return 1

    def grad_depends_output_data(self, i, o):
        return False

    def grad_depends_input_data(self, i, j):
        return False


#: the one float32 code value ``u`` in [0, 255] where ``floor(fl32(u + 1/2))`` (the graph form of
#: the tracked range) and ``floor(u + 1/2)`` (nnabla's FixedPointQuantize) differ: 1 against 0
_BELOW_HALF = np.nextafter(np.float32(0.5), np.float32(0))


class _QuantizedReLU(_HostFunction):
    """``y = s·floor(min(max(x/s, 0), levels) + 1/2)``: with the range tracked (inputs ``x``,
    ``qr_max`` updated in place, ``qr_min``; see :func:`quantized_relu_host`) or a fixed step
    ``s`` (input ``x``; see :func:`fixed_step_relu_host`)."""

    def __init__(self, ctx, levels, decay=None, eps=None, step=None):
        super().__init__(ctx)
        self.levels, self.decay, self.eps, self.step = levels, decay, eps, step
        self.top = np.nextafter(np.float32(levels), np.float32(np.inf))  # u < top <=> u <= levels
        self.mask = self.below = None  # where the gradient passes (last forward pass), scratch
        self.scales = None  # (s, 1/s) of the last forward pass

    @property
    def name(self):
        return 'QuantizedReLUHost'

    def copy(self, ctx):
        return _QuantizedReLU(ctx, self.levels, self.decay, self.eps, self.step)

    def setup_impl(self, inputs, outputs):
        outputs[0].reset_shape(inputs[0].shape, True)

    def _tracked_step(self, inputs, x, parts):
        """The step from the range after this minibatch's update (``qr_max`` written), in the
        graph form's float32 arithmetic, value by value."""
        f32 = np.float32
        x_max = max(run_parts(lambda s: x[s].max(), parts))
        qr_max = inputs[1].data.cast(np.float32)
        qr_min = f32(inputs[2].data.cast(np.float32).reshape(-1)[0])
        ema = qr_max.reshape(-1)[0] * f32(self.decay) + max(x_max * f32(1.0 - f32(self.decay)),
                                                            f32(0))
        r_max = max(f32(ema), qr_min + f32(self.eps))
        qr_max[...] = r_max
        return f32(f32(r_max - qr_min) / f32(self.levels))

    def forward_impl(self, inputs, outputs):
        f32 = np.float32
        x = inputs[0].data.cast(np.float32).reshape(-1)
        y = outputs[0].data.cast(np.float32).reshape(-1)
        parts = _parts(x.size)
        s = f32(self.step) if self.step is not None else self._tracked_step(inputs, x, parts)
        inv = f32(f32(1) / s)
        self.scales = (s, inv)
        if self.mask is None or self.mask.size != x.size:
            self.mask = np.empty(x.size, bool)
            self.below = np.empty(x.size, bool)
        mask, below, top = self.mask, self.below, self.top
        exact_half = self.step is not None

        def part(c):
            u, m, b = y[c], mask[c], below[c]
            np.multiply(x[c], inv, out=u)
            np.greater(u, 0, out=m)
            np.less(u, top, out=b)
            m &= b
            if exact_half:  # FixedPointQuantize adds 1/2 exactly (in double): 0.5 - 2**-25 -> 0
                np.equal(u, _BELOW_HALF, out=b)
                np.copyto(u, 0, where=b)
            np.maximum(u, 0, out=u)
            np.minimum(u, top, out=u)
            u += f32(0.5)
            np.floor(u, out=u)
            u *= s
        run_parts(part, parts)

    def backward_impl(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        dy = outputs[0].grad.cast(np.float32).reshape(-1)
        s, inv = self.scales
        mask = self.mask
        grad = inputs[0].grad.cast(np.float32).reshape(-1)
        dx = np.empty(dy.size, np.float32) if accum[0] else grad

        def part(c):
            g = dx[c]
            np.multiply(dy[c], s, out=g)
            g *= inv
            g *= mask[c]
            g += np.float32(0)  # -0 -> +0, as the graph form's accumulation gives
            if accum[0]:
                grad[c] += g
        run_parts(part, _parts(dy.size))


def check_pow2_step(step):
    """Refuse an activation step that is not a positive power of two.

    Raises:
        ValueError: naming the step.
    """
    if not (np.isfinite(step) and step > 0 and np.frexp(step)[0] == 0.5):
        raise ValueError(f"the step must be a power of two such as 2**-4 (got {step!r})")


def fixed_step_relu_host(inp, levels, step):
    """``F.fixed_point_quantize(F.relu(inp), sign=False, n=n_bits, delta=step)`` as one
    function, for a power-of-two ``step``: codes ``floor(x/step + 1/2)`` clipped to
    ``[0, levels]`` (``x/step + 1/2`` exact, as nnabla adds it in double precision); the gradient
    passes where ``0 < x <= levels·step`` (ReLU's and FixedPointQuantize's masks). Products with
    a power of two and its reciprocal are exact, so values and gradients are the graph form's
    bits.

    Args:
        inp (~nnabla.Variable): pre-activation.
        levels (int): the top code ``2**n_bits - 1``.
        step (float): the step, a power of two.

    Returns:
        ~nnabla.Variable: quantized activations, shape of ``inp``.
    """
    check_pow2_step(step)
    return _call(_QuantizedReLU(nn.get_current_context(), levels, step=float(step)), inp)


def quantized_relu_host(inp, qr_max, qr_min, levels, decay, eps):
    """The training graph of :func:`nnabla_lutq.nn.quantize.quantized_relu` as one function.

    Forward: ``qr_max <- max(decay·qr_max + max((1 - decay)·max(inp), 0), qr_min + eps)`` (in
    place), ``s = (qr_max - qr_min) / levels``, ``y = s·floor(min(max(inp·(1/s), 0), levels) +
    1/2)``. Backward: ``dy·s·(1/s)`` where ``0 < inp·(1/s) <= levels``, else 0. Each step
    rounds in float32 as the graph form does, so values, range and gradients are the same bits.

    Args:
        inp (~nnabla.Variable): pre-activation.
        qr_max, qr_min (~nnabla.Variable): the range parameters (one value each).
        levels (int): the top code ``2**n_bits - 1``.
        decay (float): decay of the moving average.
        eps (float): the smallest range.

    Returns:
        ~nnabla.Variable: quantized activations, shape of ``inp``.
    """
    return _call(_QuantizedReLU(nn.get_current_context(), levels, decay, eps), inp, qr_max,
                 qr_min)


class _MLBNGamma(_HostFunction):
    """``γ̂ = γ + (pow2(γ/σ_B)·σ_B - γ)`` from ``x`` and ``γ`` (or ``pow2(1/σ_B)·σ_B``); see
    :func:`mlbn_gamma_host`."""

    def __init__(self, ctx, axis, eps):
        super().__init__(ctx)
        self.axis, self.eps = axis, eps

    @property
    def name(self):
        return 'MLBNGammaHost'

    def copy(self, ctx):
        return _MLBNGamma(ctx, self.axis, self.eps)

    def setup_impl(self, inputs, outputs):
        shape = [1] * len(inputs[0].shape)
        shape[self.axis] = inputs[0].shape[self.axis]
        outputs[0].reset_shape(shape, True)

    def _variance(self, x):
        """The biased variance per channel of ``x`` viewed as ``(pre, C, post)``: rows of
        ``post`` values summed in float32 (pairwise), the rows' sums in float64."""
        pre, c = int(np.prod(x.shape[:self.axis])), x.shape[self.axis]
        rows = x.reshape(pre, c, -1)
        block = max(1, (1 << 18) // (c * rows.shape[2]))  # x·x of 1 MiB at a time

        def part(h):
            s1 = np.zeros(c, np.float64)
            s2 = np.zeros(c, np.float64)
            for i in range(h.start, h.stop, block):
                r = rows[i:min(i + block, h.stop)]
                s1 += r.sum(axis=2).sum(axis=0, dtype=np.float64)
                s2 += np.square(r).sum(axis=2).sum(axis=0, dtype=np.float64)
            return s1, s2
        sums = run_parts(part, _parts(pre, x.size))
        n = x.size // c
        mean = sum(s[0] for s in sums) / n
        return np.maximum(sum(s[1] for s in sums) / n - mean * mean, 0.0).astype(np.float32)

    def forward_impl(self, inputs, outputs):
        f32 = np.float32
        var = self._variance(inputs[0].data.cast(np.float32))
        std = np.sqrt(var + f32(self.eps))
        if len(inputs) == 1:  # no_scale: γ = 1
            g = None
            ratio = f32(1) / std
        else:
            g = inputs[1].data.cast(np.float32).reshape(-1)
            ratio = g / std
        target = pow2_round(ratio) * std
        out = outputs[0].data.cast(np.float32)
        out[...] = (target if g is None else g + (target - g)).reshape(out.shape)

    def backward_impl(self, inputs, outputs, propagate_down, accum):
        # nothing flows into the batch statistics (x); BN's own backward writes x's gradient
        # first (it consumes γ̂), so here x's gradient is only ever accumulated into
        if propagate_down[0] and not accum[0]:
            inputs[0].grad.zero()
        if len(inputs) > 1 and propagate_down[1]:
            _write(inputs[1].grad, outputs[0].grad.cast(np.float32), accum[1])


def mlbn_gamma_host(inp, gamma, axis, eps):
    """The training scale ``γ̂`` of :func:`nnabla_lutq.mlbn` from the minibatch, as one
    function.

    ``γ̂ = pow2(γ/σ_B)·σ_B`` with ``σ_B = √(σ²_B + ε)`` and ``σ²_B`` the biased batch variance
    of ``inp`` per channel, so that ``F.batch_normalization`` with ``γ̂`` computes
    ``pow2(γ/σ_B)·(x - μ_B) + β``. Backward: ``∂L/∂γ = ∂L/∂γ̂`` (straight through the
    rounding), nothing into ``inp``.

    Args:
        inp (~nnabla.Variable): the layer's input.
        gamma (~nnabla.Variable or None): the scale parameter (None: ``γ = 1``).
        axis (int): the channel axis.
        eps (float): epsilon.

    Returns:
        ~nnabla.Variable: ``γ̂``, shape of the statistics (1 but on ``axis``).
    """
    fn = _MLBNGamma(nn.get_current_context(), axis % inp.ndim, eps)
    return _call(fn, inp) if gamma is None else _call(fn, inp, gamma)
