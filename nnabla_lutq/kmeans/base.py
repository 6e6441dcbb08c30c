# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The k-means step interface: one validation path, interchangeable backends.

A backend runs ``M`` iterations of the LUT-Q k-means step (:func:`nnabla_lutq.core.kmeans.kmeans_step`)
on a fixed list of layers; afterwards each layer's ``d`` holds the new means and ``A`` (int32) the
last assignment, made before the means were recomputed. Backends differ only in where and how the
arithmetic runs:

* ``'host'`` (:class:`~nnabla_lutq.kmeans.host.HostKMeans`): numpy on the parameters' host
  memory; exact to the bit (midpoints resolved exactly, float64 sums), deterministic. The default
  in ``cpu`` contexts.
* ``'graph'`` (:class:`~nnabla_lutq.kmeans.graph.GraphKMeans`): one nnabla graph for all layers,
  run on the device in float32 whatever the training type config. The default elsewhere.
* ``'fused'`` (:class:`~nnabla_lutq.kmeans.fused.FusedKMeans`): the step of all layers in a few
  CUDA kernel launches (three per step with M = 1 and no pruning), deterministic (fixed-point sums):
  ``A`` equal to the host step's, ``d`` within one float32 ulp. Needs a CUDA context; chosen by
  name only (``'auto'`` never picks it).

:class:`~nnabla_lutq.kmeans.sync.SyncKMeans` is not a backend of its own: with a data-parallel
communicator of several ranks, :func:`~nnabla_lutq.kmeans.backend_for` wraps the chosen backend in
it, so that the tables stay identical on every rank.

Every backend validates through :func:`validate` and reports non-finite weights the same way.
"""
import abc

import numpy as np
import nnabla as nn

from ..core.checks import all_finite, integer_at_least

__all__ = ['KMeansBackend', 'validate', 'nonfinite_error', 'nonfinite_layers', 'on_host']


def on_host(ctx=None):
    """Whether a context computes on the host CPU.

    Args:
        ctx (~nnabla.Context): the context; the current one by default.

    Returns:
        bool: True for ``cpu`` contexts (any type config).
    """
    ctx = ctx or nn.get_current_context()
    return all(b.split(':')[0] == 'cpu' for b in ctx.backend)


def nonfinite_layers(layers):
    """Names of the LUT-Q layers among ``layers`` whose ``W`` holds a NaN or an infinity (read
    on the host)."""
    return [s.name for s in layers if not all_finite(s.W.data.get_data('r', np.float32))]


def nonfinite_error(names):
    """The ValueError for layers whose ``W`` became non-finite.

    Args:
        names (list): layer names.

    Returns:
        ValueError: the error to raise (``d`` and ``A`` are then unchanged).
    """
    return ValueError(
        f"{', '.join(names)}: W has non-finite values after the solver update (diverged "
        "training: lower the learning rate or check the loss); d and A were left unchanged")


def validate(layers, values=True):
    """Check LUT-Q parameters before a k-means step changes anything.

    Args:
        layers (list): :class:`~nnabla_lutq.nn.state.LUTQLayer` records.
        values (bool): also read ``d`` (K numbers per layer) and check its layout; a device
            backend does this once, when it is built.

    Raises:
        ValueError: naming the layer, for a ``d`` or ``A`` of the wrong shape or dtype, or a ``d``
            that is not in the LUT-Q layout (finite, sorted ascending, ``d[0] = 0`` with pruning).
    """
    for s in layers:
        cfg = s.config
        if s.d.shape != cfg.table_shape or s.A.shape != s.W.shape:
            raise ValueError(
                f"{s.name}: d has shape {s.d.shape} and A {s.A.shape}, expected "
                f"{cfg.table_shape} and {s.W.shape}; rebuild the layer or load a matching "
                "parameter file")
        if s.A.data.dtype != np.int32:
            raise ValueError(
                f"{s.name}: A has dtype {np.dtype(s.A.data.dtype).name}, it must stay int32; write "
                "it with A.data.cast(numpy.int32)[...] = ... or call nnabla_lutq.initialize()")
        if not values:
            continue
        d = s.d.data.get_data('r', np.float32).reshape(-1, cfg.n_values)
        v = d[:, cfg.first_free:]
        bad = ~np.all(np.isfinite(d), axis=1) | np.any(v[:, 1:] < v[:, :-1], axis=1)
        if cfg.pruned:
            bad |= d[:, 0] != 0
        if bad.any():
            g = int(np.flatnonzero(bad)[0])
            where = f"d[{g}]" if cfg.group_size is not None else "d"
            raise ValueError(
                f"{s.name}: {where} = {d[g].tolist()} is not a LUT-Q dictionary (finite, sorted "
                "ascending, d[0] = 0 with pruning); call nnabla_lutq.initialize() after editing "
                "or loading it")


class KMeansBackend(abc.ABC):
    """M iterations of the LUT-Q k-means step over a fixed list of layers.

    Args:
        layers (list): :class:`~nnabla_lutq.nn.state.LUTQLayer` records.
        iters (int): M, iterations per step (>= 1).
        check_finite (bool): refuse non-finite weights before changing anything.
    """
    #: the name under which :func:`nnabla_lutq.kmeans.backend_for` knows the backend
    name = None

    def __init__(self, layers, iters=1, check_finite=True):
        self.iters = integer_at_least(iters, 1, 'kmeans_iters')
        self.layers = list(layers)
        self.check_finite = check_finite

    def step(self):
        """Validate, then run the step: ``d`` <- new means, ``A`` <- the last assignment.

        Raises:
            ValueError: from :func:`validate`, or for non-finite weights; ``d`` and ``A`` are then
                unchanged.
        """
        if not self.layers:
            return
        self._validate()
        if self.check_finite:
            bad = self.nonfinite()
            if bad:
                raise nonfinite_error(bad)
        self._run()

    def _validate(self):
        validate(self.layers, values=True)

    def nonfinite(self):
        """Names of the layers whose ``W`` holds a NaN or an infinity (a backend that keeps the
        weights elsewhere checks them there first).

        Returns:
            list: layer names (empty when all are finite).
        """
        return nonfinite_layers(self.layers)

    @abc.abstractmethod
    def _run(self):
        """The step itself, on validated finite parameters."""
