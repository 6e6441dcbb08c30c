# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The exact host k-means backend: numpy on the parameters' host memory."""
import numpy as np

from ..core.kmeans import kmeans_step
from .base import KMeansBackend

__all__ = ['HostKMeans']


class HostKMeans(KMeansBackend):
    """The k-means step in numpy, exact to the bit and deterministic (see
    :func:`nnabla_lutq.core.kmeans.kmeans_step`). Works in any context (the weights are read where
    nnabla keeps them on the host; on a GPU that is a copy per step)."""
    name = 'host'

    def _weights(self, s):
        return s.W.data.get_data('r', np.float32).ravel()

    def _run(self):
        for s in self.layers:
            w = self._weights(s)
            d = s.d.data.get_data('r', np.float32)
            for _ in range(self.iters):
                d, a = kmeans_step(w, d, s.config)
            s.d.data.cast(np.float32)[...] = d
            s.A.data.cast(np.int32)[...] = a.reshape(s.A.shape)
