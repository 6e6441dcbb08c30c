"""``LUTQSolver``: any nnabla solver plus the per-minibatch LUT-Q k-means step."""
import numpy as np
import nnabla as nn
import nnabla.functions as F

from .dictionary import kmeans_step
from .kmeans_graph import KMeansGraph
from .parametric_functions import find_lutq_layer

__all__ = ['LUTQSolver', 'check_layers', 'on_host']


def on_host(ctx=None):
    """Whether a context computes on the host CPU (then the exact numpy step is used).

    Args:
        ctx (~nnabla.Context): the context; the current one by default.

    Returns:
        bool: True for ``cpu`` contexts.
    """
    ctx = ctx or nn.get_current_context()
    return all(b.split(':')[0] == 'cpu' for b in ctx.backend)


def check_layers(layers):
    """Validate LUT-Q parameters on the host before anything changes.

    Args:
        layers (list): :class:`~nnabla_lutq.parametric_functions.LUTQLayer` records.

    Returns:
        list: ``(w, d)`` flat float32 host views, one pair per layer.

    Raises:
        ValueError: naming the layer, for non-finite ``W``, a ``d`` or ``A`` of the wrong shape or
            dtype, or a ``d`` that is not in the LUT-Q layout.
    """
    out = []
    for s in layers:
        cfg = s.config
        if s.d.shape != (cfg.n_values,) or s.A.shape != s.W.shape:
            raise ValueError(
                f"{s.name}: d has shape {s.d.shape} and A {s.A.shape}, expected ({cfg.n_values},) "
                f"and {s.W.shape}; rebuild the layer or load a matching parameter file")
        if s.A.data.dtype != np.int32:
            raise ValueError(
                f"{s.name}: A has dtype {np.dtype(s.A.data.dtype).name}, it must stay int32; write "
                "it with A.data.cast(numpy.int32)[...] = ... or call nnabla_lutq.initialize()")
        w = s.W.data.cast(np.float32).ravel()
        if not np.all(np.isfinite(w)):
            raise ValueError(
                f"{s.name}: W has non-finite values after the solver update (diverged training: "
                "lower the learning rate or check the loss); d and A were left unchanged")
        d = s.d.data.cast(np.float32)
        v = d[cfg.first_free:]
        if not np.all(np.isfinite(d)) or np.any(v[1:] < v[:-1]) or (cfg.pruned and d[0] != 0):
            raise ValueError(
                f"{s.name}: d = {d.tolist()} is not a LUT-Q dictionary (finite, sorted ascending, "
                "d[0] = 0 with pruning); call nnabla_lutq.initialize() after editing or loading it")
        out.append((w, d))
    return out


class LUTQSolver(object):
    """A solver wrapper that keeps every LUT-Q layer's look-up table fitted.

    ``update()`` runs the wrapped solver's update of the full-precision weights (with the
    straight-through gradients of the tied weights) and then ``kmeans_iters`` iterations of the
    LUT-Q k-means step for every LUT-Q layer whose ``W`` was passed to :meth:`set_parameters`.
    When it returns, each layer's ``d`` holds the new means and ``A`` (int32) the last assignment,
    made before the means were recomputed -- exactly the paper's per-minibatch step 4.

    In a ``cpu`` context the step runs in numpy on the parameters' host memory: exact (float64
    cluster sums) and deterministic. In other contexts (``cudnn``) all layers' steps run as one
    nnabla graph on the device, without copying weights to the host (see
    :mod:`nnabla_lutq.kmeans_graph` for its float32 caveats).

    Every other solver method (``zero_grad``, ``weight_decay``, ``set_learning_rate``,
    ``save_states``, ``load_states``, ...) is the wrapped solver's.

    Args:
        solver (~nnabla.solvers.Solver): e.g. ``S.Momentum(0.1, 0.9)``.
        kmeans_iters (int): M, k-means iterations per update (>= 1).
        check_finite (bool): verify that the weights are finite before each k-means step
            (on a device this reads one number back per step).

    Example:
        >>> solver = nnabla_lutq.LUTQSolver(S.Momentum(0.1, 0.9))
        >>> solver.set_parameters(nn.get_parameters())
        >>> ...; solver.zero_grad(); loss.backward(); solver.update()
    """

    def __init__(self, solver, kmeans_iters=1, check_finite=True):
        for m in ('set_parameters', 'update', 'zero_grad'):
            if not hasattr(solver, m):
                raise ValueError(f"LUTQSolver wraps an nnabla solver such as S.Momentum(0.1, 0.9); "
                                 f"got {type(solver).__name__}, which has no {m}()")
        if isinstance(kmeans_iters, bool) or not isinstance(kmeans_iters, (int, np.integer)) \
                or kmeans_iters < 1:
            raise ValueError(f"kmeans_iters must be an integer >= 1, got {kmeans_iters!r}")
        self.solver = solver
        self.kmeans_iters = int(kmeans_iters)
        self.check_finite = check_finite
        self._layers = []
        self._graphs = {}

    @property
    def layers(self):
        """list: the LUT-Q layers this solver refits."""
        return list(self._layers)

    def set_parameters(self, param_dict, reset=True, retain_state=False):
        """Set the parameters to optimize (as ``Solver.set_parameters``) and find the LUT-Q layers.

        Args:
            param_dict (dict): name -> Variable, usually ``nn.get_parameters()``.
            reset (bool): forget previously set parameters.
            retain_state (bool): keep solver states of parameters set again.
        """
        self.solver.set_parameters(param_dict, reset=reset, retain_state=retain_state)
        found = [] if reset else list(self._layers)
        for v in param_dict.values():
            s = find_lutq_layer(v)
            if s is not None and s.W.data == v.data and all(s is not f for f in found):
                found.append(s)
        self._layers = found
        self._graphs = {}

    def update(self, update_pre_hook=None, update_post_hook=None):
        """The wrapped solver's update of ``W``, then the k-means step of every LUT-Q layer.

        Args:
            update_pre_hook (callable): passed to the wrapped solver's ``update``.
            update_post_hook (callable): passed to the wrapped solver's ``update``.

        Raises:
            ValueError: if a layer's weights became non-finite (d and A are then unchanged).
        """
        self.solver.update(update_pre_hook=update_pre_hook, update_post_hook=update_post_hook)
        self.kmeans_step()

    def kmeans_step(self):
        """Run only the k-means step (M iterations) on every LUT-Q layer."""
        if not self._layers:
            return
        if on_host():
            views = check_layers(self._layers)
            for s, (w, d) in zip(self._layers, views):
                for _ in range(self.kmeans_iters):
                    d, a = kmeans_step(w, d, s.config)
                s.d.data.cast(np.float32)[...] = d
                s.A.data.cast(np.int32)[...] = a.reshape(s.A.shape)
            return
        ctx = nn.get_current_context()
        key = str(ctx)
        if key not in self._graphs:
            g = KMeansGraph(self._layers, self.kmeans_iters)
            finite = None
            if self.check_finite:
                bad = [F.sum(F.logical_or(F.isnan(s.W), F.isinf(s.W))) for s in self._layers]
                finite = F.add_n(*bad) if len(bad) > 1 else bad[0]
            self._graphs[key] = (g, finite)
        g, finite = self._graphs[key]
        if finite is not None:
            finite.forward()
            if float(finite.d) != 0:
                bad = [s.name for s in self._layers if not np.all(np.isfinite(s.W.d))]
                raise ValueError(f"{', '.join(bad)}: W has non-finite values after the solver "
                                 "update (diverged training: lower the learning rate or check the "
                                 "loss); d and A were left unchanged")
        g.run()

    def __getattr__(self, name):
        if name == 'solver':
            raise AttributeError(name)
        return getattr(self.solver, name)
