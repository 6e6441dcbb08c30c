"""Graph (nnabla function) forms of the package's rules, for layers and device backends.

* :func:`pow2_round_graph`: the power-of-two rounding of :mod:`nnabla_lutq.core.pow2` with
  nnabla functions, equal to :func:`nnabla_lutq.core.pow2.pow2_round` for every float32 input;
* :func:`mlbn_scale`: the multiplier-less BN scale ``pow2(gamma / sqrt(var + eps))``, used by the
  layer in both modes and by :func:`nnabla_lutq.fold_mlbn`, so the folded export, the graph and
  the host agree to the bit;
* :func:`float32_context`: the same context computing in float32 (for the k-means step, which
  must not run in half precision whatever the training context).
"""
import math

import nnabla as nn
import nnabla.functions as F

from ..core.pow2 import SQRT2_ABOVE

__all__ = ['pow2_round_graph', 'mlbn_scale', 'float32_context', 'detached']

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


def mlbn_scale(gamma, var, eps):
    """The multiplier-less BN scale ``pow2(gamma / sqrt(var + eps))`` as nnabla functions.

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

    ``(W - detached(W)) + Q`` is exactly ``Q`` forward and passes ``Q``'s gradient to ``W``. Unlike
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
