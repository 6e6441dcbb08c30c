# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The k-means backend ``'graph'``: the LUT-Q step as one nnabla graph, for devices (cudnn).

On a GPU the weights must not travel to the host each minibatch, so the step of
:func:`nnabla_lutq.core.kmeans.kmeans_step` is expressed with nnabla functions that have device
kernels (``searchsorted``, ``scatter_add``, ``sort``, ``where``, ``assign``) and all layers' steps
are gathered under one ``F.sink``: one ``forward`` call per minibatch runs every layer's step.

Differences from the host step, documented rather than hidden:

* midpoints between neighbouring values are computed in float32, so a weight within one ulp of a
  midpoint may go to the other neighbour (the host step is exact);
* cluster sums use float32 atomics on the GPU, so the means may differ from the float64 host means
  in the last bits and between runs (the host step is deterministic);
* with pruning, ties in |W| at the threshold are broken by the device sort's order.
"""
import numpy as np
import nnabla as nn
import nnabla.functions as F

from ..nn.functions import float32_context, pow2_round_graph
from .base import KMeansBackend, validate

__all__ = ['GraphKMeans']


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
            mean = pow2_round_graph(mean, cfg.pow2_range)
        empty = F.less_scalar(counts, 0.5)
        d = F.where(empty, d, mean)
        if first:
            d = F.where(keep_first, zeros_k, d)
    outs = [F.identity(F.reshape(idx, spec.A.shape), outputs=[spec.A.data])]
    if cfg.kind != 'fixed':
        outs.append(F.assign(spec.d, d))
    return outs


class GraphKMeans(KMeansBackend):
    """All layers' k-means steps as one nnabla graph on the device, computed in float32.

    The graph is built on the first step in the float32 version of the current context (see
    :func:`~nnabla_lutq.nn.functions.float32_context`: a ``half`` type config would give wrong
    means), together with a small graph that counts non-finite weights. ``d`` is validated when the
    graph is built; each step then validates shapes and dtypes only, and reads back one number for
    the finiteness check (``check_finite=False`` skips it).
    """
    name = 'graph'

    def __init__(self, layers, iters=1, check_finite=True):
        super().__init__(layers, iters, check_finite)
        self._ctx = None
        self._sink = self._finite = None

    def _build(self):
        ctx = float32_context()
        validate(self.layers, values=True)
        with nn.context_scope(ctx):
            outs = []
            for spec in self.layers:
                outs.extend(_layer_step(spec, self.iters))
            self._sink = F.sink(*outs)
            bad = [F.sum(F.logical_or(F.isnan(s.W), F.isinf(s.W))) for s in self.layers]
            self._finite = F.add_n(*bad) if len(bad) > 1 else bad[0]
        self._ctx = ctx

    def _validate(self):
        if self._sink is None:
            self._build()
        else:
            validate(self.layers, values=False)

    def nonfinite(self):
        if self._sink is None:
            self._build()
        with nn.context_scope(self._ctx):
            self._finite.forward()
        if float(self._finite.d) == 0:
            return []
        return super().nonfinite()

    def _run(self):
        with nn.context_scope(self._ctx):
            self._sink.forward(clear_no_need_grad=True)
        for spec in self.layers:
            # restore the int32 dtype in place, where the array lives (no host copy on a device)
            if self._ctx.array_class:
                spec.A.data.cast(np.int32, self._ctx)
            else:
                spec.A.data.cast(np.int32)
