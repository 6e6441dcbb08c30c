# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Sensitivity from calibration data: bit widths per layer under a memory budget, and
sensitivity-weighted look-up tables.

The sensitivity of a weight is the diagonal of the (empirical) Fisher information,
``F_i = mean over the calibration minibatches of (dLoss/dw_i)²``, computed by nnabla on the float
weights (:func:`fisher_diagonal`). A table that replaces ``w`` by ``q(w)`` raises the loss by
about ``½ Σ_i F_i (w_i - q(w_i))²`` (second-order Taylor expansion at a trained point, Fisher for
the Hessian: HAWQ, coremltools' sensitive k-means, SqueezeLLM). From it:

* :mod:`.budget` picks K per layer under a memory budget from them;
* :func:`initialize_weighted` refits the tables of LUT-Q layers with each weight counted by its
  ``F_i`` (weighted 1-D k-means, exact weighted means at its fixed point,
  :func:`nnabla_lutq.core.fit.fit_table`). Without calibration data the fits stay unweighted.
"""
import glob
from collections.abc import Mapping

import numpy as np
import nnabla as nn

from ..core.checks import all_finite
from ..core.fit import fit_table, lloyd_bound
from ..core.kinds import BY_FUNCTION, CONVERTIBLE
from ..nn.convert import LayerConfig, conversion_plan
from ..nn.convert.settings import layer_config_of
from ..nn.graph import graph_functions
from ..nn.params import current_path, names_by_array, relative_name
from ..nn.state import STATE, LUTQLayer

__all__ = ['Fisher', 'fisher_diagonal', 'initialize_weighted']

class Fisher(Mapping):
    """The diagonal Fisher information of the weight layers of a network (layer name -> array).

    ``fisher[name]`` is ``F`` (float64, the shape of the layer's ``W``); :attr:`weights` holds a
    copy of the float ``W`` it was computed at. Layer names are those of
    :func:`nnabla_lutq.convert` (the parameter scope without ``conv``/``affine``/...).

    Args:
        layers (dict): name -> ``(W, F)`` numpy arrays of one shape (``F >= 0``).
        n_batches (int): calibration minibatches averaged.
        out_axes (dict or None): name -> the output-channel axis of the layer's ``W`` (0 for
            convolutions, -1 for affine), which grouped tables are cut along.

    Attributes:
        weights (dict): name -> float32 copy of ``W``.
        n_batches (int): minibatches averaged.
        out_axes (dict): name -> output-channel axis (the layers whose axis is known).
    """

    def __init__(self, layers, n_batches=0, out_axes=None):
        self._f, self.weights = {}, {}
        for name, (w, f) in layers.items():
            w = np.array(w, dtype=np.float32)
            f = np.array(f, dtype=np.float64)
            if f.shape != w.shape or not all_finite(f) or np.any(f < 0):
                raise ValueError(f"{name}: the Fisher diagonal must be finite, >= 0 and of the "
                                 f"shape of W {w.shape}, got {f.shape}")
            self._f[name], self.weights[name] = f, w
        self.n_batches = int(n_batches)
        self.out_axes = {k: int(v) for k, v in (out_axes or {}).items() if k in self._f}

    def __getitem__(self, name):
        return self._f[name]

    def __iter__(self):
        return iter(self._f)

    def __len__(self):
        return len(self._f)

    def trace(self, name):
        """float: ``Σ_i F_i`` of a layer."""
        return float(self._f[name].sum())

    def importance(self, name):
        """The weights of a weighted table fit of a layer: ``F``, or None (unweighted) when the
        calibration data gave the layer no gradient at all."""
        f = self._f[name]
        return f if np.any(f > 0) else None

    def __repr__(self):
        return f"Fisher({len(self)} layers, {self.n_batches} minibatches)"


def _feeds(batches, inputs):
    """``[(variable, array), ...]`` per calibration minibatch."""
    if inputs is not None:
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    for i, b in enumerate(batches):
        if isinstance(b, Mapping):
            pairs = list(b.items())
        else:
            if inputs is None:
                raise ValueError("calibration minibatches that are not {Variable: array} dicts "
                                 "need inputs=[the input Variables, in their order]")
            b = list(b) if isinstance(b, (list, tuple)) else [b]
            if len(b) != len(inputs):
                raise ValueError(f"calibration minibatch {i} has {len(b)} arrays for "
                                 f"{len(inputs)} inputs")
            pairs = list(zip(inputs, b))
        for v, a in pairs:
            if not isinstance(v, nn.Variable):
                raise ValueError(f"calibration minibatch {i}: keys must be nnabla Variables, "
                                 f"got {v!r}")
            a = np.asarray(a)
            if a.shape != v.shape:
                raise ValueError(f"calibration minibatch {i}: an array of shape {a.shape} for "
                                 f"an input of shape {v.shape} (the graph's batch size is fixed)")
        yield pairs


def _display(scope, own):
    """The name :func:`nnabla_lutq.convert` gives the layer of a parameter scope (relative to
    the current scope; ``own``, the function's scope, for a layer at the current scope)."""
    prefix = current_path()
    return relative_name(scope, prefix) if scope and scope != prefix else own


#: how many functions above a weight input the tables of a LUT-Q layer are looked for: the look-up
#: itself (``Embed``, or a grouped table's reshapes, gather and transposes) and ``apply_w``
_TABLE_DEPTH = 10


def _graph_weights(outputs):
    """``(records, by_name)``: the LUT-Q layers whose float W the graph computes with (display
    name -> record) and the graph's leaf weights by their relative parameter names.

    Raises:
        ValueError: if the graph computes with a LUT-Q layer's table (built in tied or tables
            mode): the sensitivities are taken at the float weights.
    """
    names = names_by_array()
    records, by_name = {}, {}
    for f in graph_functions(outputs):
        if f.info.type_name not in CONVERTIBLE:
            continue
        w = f.inputs[1]
        if w.parent is None:
            rec, part = STATE.part_of(w)
            if isinstance(rec, LUTQLayer) and part == 'W':
                records[_display(rec.name.rpartition('/')[0], rec.kind)] = (rec, w)
            for full in names.get(w.data, []):
                by_name.setdefault(relative_name(full), w)
            continue
        frontier = [w]
        for _ in range(_TABLE_DEPTH):
            frontier = [u for v in frontier if v.parent is not None for u in v.parent.inputs]
            for u in frontier:
                rec, part = STATE.part_of(u) if u.parent is None else (None, None)
                if isinstance(rec, LUTQLayer) and part in ('d', 'A'):
                    raise ValueError(
                        f"{relative_name(rec.name)}: the graph computes with the layer's look-up "
                        "table; sensitivities are taken at the float weights: build the graph "
                        "under nnabla_lutq.weight_mode('float')")
    return records, by_name


def fisher_diagonal(loss, batches, inputs=None):
    """The diagonal Fisher information of every weight layer of ``loss``'s graph.

    ``F_i = (1/B) Σ_b (∂loss_b/∂w_i)²`` over the B calibration minibatches, with ``loss_b`` the
    scalar ``loss`` on minibatch b (the squared minibatch gradient: an estimate of the empirical
    Fisher that is exact for minibatches of one sample). The layers are those
    :func:`nnabla_lutq.convert` can convert (``Convolution``, ``Affine``,
    ``DepthwiseConvolution`` on a stored weight), float or LUT-Q; a LUT-Q network must be built
    under ``nnabla_lutq.weight_mode('float')`` so that the gradients are taken at ``W``. Build
    ``loss`` on the inference graph (``batch_stat=False``) to measure the network as it will be
    used. The weights' gradients are zeroed before each minibatch; what ``backward`` leaves in
    the parameters' ``grad`` arrays stays there, as after any ``loss.backward()``.

    Args:
        loss (~nnabla.Variable): a scalar loss, e.g. ``F.mean(F.softmax_cross_entropy(y, t))``.
        batches (iterable): calibration minibatches: ``{Variable: array}`` dicts, or tuples of
            arrays in the order of ``inputs``.
        inputs (list or None): the input Variables of tuple minibatches.

    Returns:
        Fisher: layer name -> F.

    Raises:
        ValueError: for a loss that is not scalar, no weight layer, no minibatch, minibatches of
            the wrong shape, a LUT-Q graph not built in float weight mode, non-finite gradients.
    """
    if not isinstance(loss, nn.Variable) or loss.size != 1:
        raise ValueError(f"the loss must be a scalar nnabla Variable (reduce it with F.mean), "
                         f"got {getattr(loss, 'shape', loss)!r}")
    records, by_name = _graph_weights([loss])
    pins = [(glob.escape(n), layer_config_of(r.config)) for n, (r, _) in records.items()]
    plan = conversion_plan(loss, LayerConfig(2), pins, min_weights=2)
    layers = []
    axes = {}
    for d in plan:
        if d.action != 'lutq':
            continue
        axes[d.name] = BY_FUNCTION[d.function].out_axis
        if d.name in records:
            layers.append((d.name, records[d.name][1]))
            continue
        old = next((k for k, v in d.parameters.items() if v.endswith('/W')), None)
        if old is None or old not in by_name:
            continue
        layers.append((d.name, by_name[old]))
    if not layers:
        raise ValueError("the loss's graph has no Convolution, Affine or DepthwiseConvolution "
                         "layer on a stored weight")
    weights = {}
    for name, w in layers:  # one entry per weight array (a weight shared by functions: once)
        weights.setdefault(w.data, (name, w))
    layers = list(weights.values())
    acc = [np.zeros(w.shape, np.float64) for _, w in layers]
    saved = [w.need_grad for _, w in layers]
    n = 0
    try:
        for w in (w for _, w in layers):
            w.need_grad = True
        for pairs in _feeds(batches, inputs):
            for v, a in pairs:
                v.d = a
            loss.forward(clear_no_need_grad=True)
            for _, w in layers:
                w.grad.zero()
            loss.backward(clear_buffer=True)
            for a, (name, w) in zip(acc, layers):
                g = w.g.astype(np.float64)
                if not all_finite(g):
                    raise ValueError(f"{name}: non-finite gradients on calibration minibatch {n}")
                a += g * g
            n += 1
    finally:
        for (_, w), ng in zip(layers, saved):
            w.need_grad = ng
    if not n:
        raise ValueError("no calibration minibatch was given")
    return Fisher({name: (w.d, a / n) for a, (name, w) in zip(acc, layers)}, n, axes)


# -- the choice of K per layer --------------------------------------------------------------------
def initialize_weighted(fisher, layers=None, iters=None):
    """Refit the tables of LUT-Q layers with each weight counted by its sensitivity ``F_i``.

    Weighted 1-D k-means (SqueezeLLM's sensitivity-weighted clustering) under each layer's
    constraint, by :func:`nnabla_lutq.core.fit.fit_table`: the exact dynamic program on the
    weighted sums, then weighted Lloyd iterations, so a free table's values are the exact
    ``F``-weighted means of their clusters at the fixed point; the assignment stays the nearest
    value. A layer with grouped tables (``group_size``) gets each group's table fitted to that
    group's weights, counted by their ``F``. A layer whose ``F`` is all zero (no gradient on the
    calibration data) gets the unweighted fit. :func:`nnabla_lutq.initialize` is the unweighted
    counterpart.

    Layers are matched by name: the layer :func:`fisher_diagonal` called ``'conv1'`` is the
    LUT-Q layer ``'conv1'`` (``conv1/lutq_conv``) seen from the same parameter scope, e.g. after
    :func:`nnabla_lutq.convert` of the float network. ``W`` is the layer's current float weight.

    Args:
        fisher (Fisher): the sensitivities.
        layers (list or None): names of the layers to refit (default: every layer of ``fisher``
            that is a live LUT-Q layer).
        iters (int or None): bound on the Lloyd iterations (None: to the fixed point).

    Returns:
        list: the names refitted.

    Raises:
        ValueError: for a named layer that is not a LUT-Q layer, a shape that differs from the
            Fisher's, non-finite weights; nothing is changed then.
    """
    lloyd = lloyd_bound(iters)
    names = list(fisher) if layers is None else list(layers)
    todo = []
    for name in names:
        if name not in fisher:
            raise ValueError(f"{name}: no sensitivities for this layer; known: {list(fisher)}")
        try:
            rec = STATE.layer(name)
        except ValueError:
            if layers is None:
                continue  # a layer that stayed float
            raise
        if not isinstance(rec, LUTQLayer):
            raise ValueError(f"{name} is a multiplier-less BN layer, not a LUT-Q layer")
        if rec.W.shape != fisher[name].shape:
            raise ValueError(f"{name}: W has shape {rec.W.shape}, its sensitivities "
                             f"{fisher[name].shape}")
        todo.append((name, rec))
    new = [fit_table(rec.W.data.get_data('r', np.float32), rec.config,
                     fisher.importance(name), lloyd_iters=lloyd) for name, rec in todo]
    for (_, rec), (d, a) in zip(todo, new):
        rec.d.data.cast(np.float32)[...] = d
        rec.A.data.cast(np.int32)[...] = a
    return [name for name, _ in todo]
