# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The LUT-Q k-means step behind one interface (see :mod:`nnabla_lutq.kmeans.base`).

``backend_for(layers, iters)`` picks the backend for the current context: ``'host'`` (exact numpy)
in ``cpu`` contexts, ``'graph'`` (one nnabla graph on the device, float32) elsewhere; with a
data-parallel communicator of several ranks it wraps that backend in :class:`SyncKMeans`, which
keeps the tables identical on every rank. ``'fused'`` (:class:`FusedKMeans`) runs the step of all
layers in three CUDA kernel launches, deterministically; it is chosen by name until it has been
measured on a GPU (``benchmarks/gpu_checks.sh``), and ``'auto'`` keeps choosing ``'graph'``.
"""
from .base import KMeansBackend, validate, nonfinite_error, nonfinite_layers, on_host
from .host import HostKMeans
from .graph import GraphKMeans
from .sync import SyncKMeans
from .fused import FusedKMeans

__all__ = ['KMeansBackend', 'HostKMeans', 'GraphKMeans', 'SyncKMeans', 'FusedKMeans', 'BACKENDS',
           'backend_for', 'validate', 'nonfinite_error', 'nonfinite_layers', 'on_host']

#: name -> backend class
BACKENDS = {'host': HostKMeans, 'graph': GraphKMeans, 'fused': FusedKMeans}


def backend_for(layers, iters=1, backend='auto', check_finite=True, ctx=None, comm=None):
    """A k-means backend for these layers.

    Args:
        layers (list): :class:`~nnabla_lutq.nn.state.LUTQLayer` records.
        iters (int): M, k-means iterations per step.
        backend (str or type): ``'auto'`` (host in cpu contexts, graph elsewhere), a name in
            :data:`BACKENDS`, or a :class:`KMeansBackend` subclass.
        check_finite (bool): refuse non-finite weights.
        ctx (~nnabla.Context): the context ``'auto'`` decides by (the current one by default).
        comm: a data-parallel communicator; with one of more than one rank the chosen backend is
            wrapped in :class:`SyncKMeans` (tables identical on every rank).

    Returns:
        KMeansBackend: ready to ``step()``.

    Raises:
        ValueError: for an unknown backend name.
    """
    if isinstance(backend, type) and issubclass(backend, KMeansBackend):
        cls = backend
    elif backend == 'auto':
        cls = HostKMeans if on_host(ctx) else GraphKMeans
    elif backend in BACKENDS:
        cls = BACKENDS[backend]
    else:
        raise ValueError(f"unknown k-means backend {backend!r}; use 'auto' or one of "
                         f"{sorted(BACKENDS)}")
    if comm is not None and getattr(comm, 'size', 1) > 1:
        return SyncKMeans(layers, iters, check_finite, comm=comm, inner=cls)
    return cls(layers, iters, check_finite)
