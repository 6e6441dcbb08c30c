# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The k-means backend for data-parallel training: identical tables on every rank by construction.

In data-parallel training every rank holds the same ``W`` after each update (the gradients are
all-reduced and the solver is the same), but a device k-means step is not bit-deterministic: GPU
atomics add the cluster sums in any order, so two ranks can compute means that differ in the last
bit and then drift apart. :class:`SyncKMeans` makes the tables identical by construction:

* it runs the wrapped backend one iteration at a time;
* after each iteration it broadcasts every layer's ``d`` from rank 0 (K numbers per layer, or
  the ``(n_groups, K)`` array of a layer with grouped tables, sent as it is);
* the assignment ``A`` of an iteration is a deterministic function of ``W`` and the previous
  ``d`` (midpoints and a binary search; no atomics), both identical on every rank, so it needs no
  communication.

The communicator is nnabla's (``nnabla.communicators.MultiProcessDataParalellCommunicator`` from
``nnabla.ext_utils``/``C.MultiProcessCommunicator``); only its ``bcast(data, src, inplace)`` and
``rank`` are used, so a stand-in with those works for tests.
"""
from . import base

__all__ = ['SyncKMeans']


class SyncKMeans(base.KMeansBackend):
    """Wrap a backend so that ``d`` and ``A`` are identical on every data-parallel rank.

    Args:
        layers (list): :class:`~nnabla_lutq.nn.state.LUTQLayer` records.
        iters (int): M, k-means iterations per step.
        check_finite (bool): refuse non-finite weights.
        comm: nnabla data-parallel communicator (``bcast(list of NdArray, src, inplace)``).
        inner (str or type): the backend that computes on each rank (``'auto'``: host in cpu
            contexts, graph elsewhere).
    """
    name = 'sync'

    def __init__(self, layers, iters=1, check_finite=True, comm=None, inner='auto'):
        super().__init__(layers, iters, check_finite)
        if comm is None or not hasattr(comm, 'bcast'):
            raise ValueError("SyncKMeans needs an nnabla communicator (comm=...) with bcast(); "
                             "create it with nnabla's data-parallel communicator")
        from . import backend_for
        self.comm = comm
        self.inner = backend_for(layers, 1, inner, check_finite=False)

    def _validate(self):
        self.inner._validate()

    def nonfinite(self):
        return self.inner.nonfinite()

    def _run(self):
        tables = [s.d.data for s in self.layers]
        for _ in range(self.iters):
            self.inner._run()
            self.comm.bcast(tables, src=0, inplace=False)  # results land in the same arrays
