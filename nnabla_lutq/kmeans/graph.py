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

Grouped tables (``group_size``, ``d`` of shape ``(n_groups, K)``) are built into the same graph
with the same functions, without a loop over groups: ``W`` is viewed as ``(n_groups, N_g)`` rows
in the order of :meth:`~nnabla_lutq.core.config.LUTQConfig.group_view` (a transposition puts the
output axis first), the thresholds of all groups form one ``(n_groups, K - 1)`` sorted sequence
for ``searchsorted``, the sums and counts of all groups come from one ``scatter_add`` each over
the flat indices ``a + g·K``, and pruning sorts |W| along the rows; ``A`` is written back in the
layer's shape. A layer without groups is the one-row case.
"""
import numpy as np
import nnabla as nn
import nnabla.functions as F

from ..nn.functions import float32_context, pow2_round_graph
from .base import KMeansBackend, validate

__all__ = ['GraphKMeans']


def _const(value):
    return nn.Variable.from_numpy_array(np.asarray(value, dtype=np.float32))


def _rows(w, cfg):
    """``W`` as ``(n_groups, N_g)`` rows in the order of :meth:`LUTQConfig.group_view`."""
    moved = cfg.moved_axes
    if moved is not None:
        w = F.transpose(w, moved[0])
    return F.reshape(w, (cfg.n_groups, cfg.group_weights), inplace=False)


def _layer_order(rows, spec):
    """The inverse of :func:`_rows`: ``(n_groups, N_g)`` back to the shape of ``A``."""
    moved = spec.config.moved_axes
    if moved is None:
        return F.reshape(rows, spec.A.shape)
    perm, back = moved
    return F.transpose(F.reshape(rows, tuple(spec.A.shape[i] for i in perm)), back)


def _pruned_rows(w, cfg):
    """1 where a weight is among the ``n_pruned`` smallest |W| of its row (``(G, N_g)``)."""
    g, m, p = cfg.n_groups, cfg.group_weights, cfg.n_pruned
    order = F.sort(F.abs(w), axis=1, only_index=True)
    smallest = F.reshape(F.slice(order, (0, 0), (g, p)), (1, g * p))
    if g == 1:
        return F.reshape(F.scatter_nd(_const(np.ones(p)), smallest, shape=(m,)), (1, m))
    # (row, column) of each row's smallest: column indices stay below N_g (exact in float32)
    where = F.concatenate(_const(np.repeat(np.arange(g), p)[None, :]), smallest, axis=0)
    return F.scatter_nd(_const(np.ones(g * p)), where, shape=(g, m))


def _layer_step(spec, iters):
    """Build the graph of ``iters`` k-means iterations for one layer; returns its sink inputs.

    Every group is a row of one ``(n_groups, N_g)`` array (one row without groups): one sorted
    search of all rows, one ``scatter_add`` of the sums and one of the counts over the flat
    indices ``a + g·K``, one sort of |W| per row for pruning."""
    cfg = spec.config
    g, m, k, first = cfg.n_groups, cfg.group_weights, cfg.n_values, cfg.first_free
    shape = cfg.table_shape
    w = _rows(spec.W, cfg)
    w_flat = F.reshape(w, (g * m,), inplace=False)
    ones = _const(np.ones(g * m))
    zeros_k = _const(np.zeros(g * k))
    zeros_d = _const(np.zeros(shape))
    keep_first = _const(np.broadcast_to(np.arange(k) < first, shape))  # the fixed zeros
    offsets = _const(np.arange(g)[:, None] * k) if g > 1 else None
    if first:
        pruned = _pruned_rows(w, cfg)
    d = spec.d
    kk = k - first
    idx = None
    for _ in range(iters):
        rows = d if len(shape) == 2 else F.reshape(d, (1, k), inplace=False)
        vals = F.slice(rows, (0, first), (g, k)) if first else rows
        if kk > 1:
            mid = (F.slice(vals, (0, 0), (g, kk - 1)) + F.slice(vals, (0, 1), (g, kk))) * 0.5
            idx = F.searchsorted(mid, w)
        else:  # one free value (K = 2 with pruning): every unpruned weight takes it
            idx = F.constant(0.0, (g, m))
        if first:
            idx = F.where(pruned, F.constant(0.0, (g, m)), idx + 1.0)
        if cfg.kind == 'fixed':
            continue
        i_flat = F.reshape(idx if offsets is None else idx + offsets, (g * m,))
        sums = F.reshape(F.scatter_add(zeros_k, i_flat, w_flat, axis=0), shape)
        counts = F.reshape(F.scatter_add(zeros_k, i_flat, ones, axis=0), shape)
        mean = sums / F.maximum_scalar(counts, 1.0)
        if cfg.kind == 'pow2':
            mean = pow2_round_graph(mean, cfg.pow2_range)
        empty = F.less_scalar(counts, 0.5)
        d = F.where(empty, d, mean)
        if first:
            d = F.where(keep_first, zeros_d, d)
    outs = [F.identity(_layer_order(idx, spec), outputs=[spec.A.data])]
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
