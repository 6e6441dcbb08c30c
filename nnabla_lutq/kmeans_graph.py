"""The LUT-Q k-means step as one nnabla graph, for devices (cudnn context).

On a GPU the weights must not travel to the host each minibatch, so the step of
:func:`nnabla_lutq.dictionary.kmeans_step` is expressed with nnabla functions that have device
kernels (``searchsorted``, ``scatter_add``, ``sort``, ``where``, ``assign``) and all layers' steps
are gathered under one ``F.sink``: one ``forward`` call per minibatch runs every layer's step.

Differences from the host step, documented rather than hidden:

* midpoints between neighbouring values are computed in float32, so a weight within one ulp of a
  midpoint may go to the other neighbour (the host step is exact);
* cluster sums use float32 atomics on the GPU, so the means may differ from the float64 host means
  in the last bits and between runs (the host step is deterministic);
* with pruning, ties in |W| at the threshold are broken by the device sort's order.
"""
import math

import numpy as np
import nnabla as nn
import nnabla.functions as F

__all__ = ['KMeansGraph', 'pow2_scale']


def pow2_scale(x, pow2_range=None):
    """sign(x)·2^round(log2|x|) as nnabla functions (0 stays 0); used by the step and by mlbn.

    Args:
        x (~nnabla.Variable): N-D array.
        pow2_range (tuple or None): ``(min_exp, max_exp)`` clipping the exponent.

    Returns:
        ~nnabla.Variable: powers of two with the signs of ``x``.
    """
    e = F.round(F.log(F.abs(x)) * (1.0 / math.log(2.0)))
    if pow2_range is not None:
        e = F.clip_by_value(e, float(pow2_range[0]), float(pow2_range[1]))
    # log(0) = -inf -> exponent -inf -> 2^-inf = 0, so a zero mean stays zero.
    return F.sign(x) * F.r_pow_scalar(e, 2.0)


def _const(value):
    return nn.Variable.from_numpy_array(np.asarray(value, dtype=np.float32))


def _layer_step(spec, iters):
    """Build the graph of ``iters`` k-means iterations for one layer; returns its sink inputs."""
    cfg = spec.config
    n, k, first = cfg.n_weights, cfg.n_values, cfg.first_free
    w = F.reshape(spec.W, (1, n), inplace=False)
    w_flat = F.reshape(spec.W, (n,), inplace=False)
    ones = _const(np.ones(n))
    zeros_k = _const(np.zeros(k))
    keep_first = _const(np.arange(k) < first)  # 1 where the fixed zero sits
    if first:
        order = F.sort(F.abs(w), axis=1, only_index=True)
        smallest = F.slice(order, (0, 0), (1, cfg.n_pruned))
        pruned = F.scatter_nd(_const(np.ones(cfg.n_pruned)), smallest, shape=(n,))
        pruned = F.reshape(pruned, (1, n))
    d = spec.d
    idx = None
    for _ in range(iters):
        vals = F.slice(d, (first,), (k,)) if first else d
        kk = k - first
        mid = (F.slice(vals, (0,), (kk - 1,)) + F.slice(vals, (1,), (kk,))) * 0.5
        idx = F.searchsorted(F.reshape(mid, (1, kk - 1)), w)
        if first:
            idx = F.where(pruned, F.constant(0.0, (1, n)), idx + 1.0)
        if cfg.kind == 'fixed':
            continue
        i_flat = F.reshape(idx, (n,))
        sums = F.scatter_add(zeros_k, i_flat, w_flat, axis=0)
        counts = F.scatter_add(zeros_k, i_flat, ones, axis=0)
        mean = sums / F.maximum_scalar(counts, 1.0)
        if cfg.kind == 'pow2':
            mean = pow2_scale(mean, cfg.pow2_range)
        empty = F.less_scalar(counts, 0.5)
        d = F.where(empty, d, mean)
        if first:
            d = F.where(keep_first, zeros_k, d)
    outs = [F.identity(F.reshape(idx, spec.A.shape), outputs=[spec.A.data])]
    if cfg.kind != 'fixed':
        outs.append(F.assign(spec.d, d))
    return outs


class KMeansGraph(object):
    """All layers' k-means steps as one nnabla graph, built in the current context.

    Args:
        specs (list): the layers' :class:`~nnabla_lutq.parametric_functions.LUTQLayer` records.
        iters (int): M, k-means iterations per step.
    """

    def __init__(self, specs, iters):
        self.specs = list(specs)
        outs = []
        for spec in self.specs:
            outs.extend(_layer_step(spec, iters))
        self.sink = F.sink(*outs)

    def run(self):
        """Run the step on the device: ``d`` gets the new means, ``A`` (int32) the last assignment."""
        self.sink.forward(clear_no_need_grad=True)
        ctx = nn.get_current_context()
        for spec in self.specs:
            # restore the int32 dtype in place, where the array lives (no host copy on a device)
            if ctx.array_class:
                spec.A.data.cast(np.int32, ctx)
            else:
                spec.A.data.cast(np.int32)
