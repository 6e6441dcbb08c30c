"""``LUTQSolver``: any nnabla solver plus the per-minibatch LUT-Q k-means step."""
import json

import h5py
import numpy as np
import nnabla as nn

from ..kmeans import backend_for
from ..nn.state import STATE, LUTQLayer

__all__ = ['LUTQSolver', 'WrappingSolver']

_STATE_ATTR = 'nnabla_lutq'


class WrappingSolver(nn.solver.Solver):
    """What :class:`LUTQSolver` and :class:`~nnabla_lutq.LCSolver` share: a wrapped nnabla
    solver, the LUT-Q layers whose ``W`` it was given, and nnabla's solver interface.

    It is an ``nn.solver.Solver`` for code that checks (nnabla-examples' checkpoint helpers), and
    every solver method a subclass does not define (``zero_grad``, ``weight_decay``,
    ``set_learning_rate``, ``get_parameters``, ...) is the wrapped solver's, which may itself be
    a wrapper such as nnabla-examples' ``MomentumNoWeightDecayBn``.

    Args:
        solver (~nnabla.solvers.Solver): e.g. ``S.Momentum(0.1, 0.9)``, or a wrapper with
            ``set_parameters``, ``update`` and ``zero_grad``.
    """
    _OWN = ('solver', '_params', '_layers')

    def __init__(self, solver):
        for m in ('set_parameters', 'update', 'zero_grad'):
            if not hasattr(solver, m):
                raise ValueError(f"{type(self).__name__} wraps an nnabla solver such as "
                                 f"S.Momentum(0.1, 0.9); got {type(solver).__name__}, which has "
                                 f"no {m}()")
        self.solver = solver
        self._params = {}
        self._layers = []

    @property
    def layers(self):
        """list: the LUT-Q layers whose ``W`` this solver was given."""
        return list(self._layers)

    def _refresh(self):
        layers = []
        for v in self._params.values():
            rec, part = STATE.part_of(v)
            if isinstance(rec, LUTQLayer) and part == 'W' and all(rec is not r for r in layers):
                layers.append(rec)
        self._layers = layers
        self._layers_changed()

    def _layers_changed(self):
        """Called when the set of layers changes (subclasses drop what they built for it)."""

    def set_parameters(self, param_dict, reset=True, retain_state=False):
        """Set the parameters to optimize (as ``Solver.set_parameters``) and find the LUT-Q layers.

        Args:
            param_dict (dict): name -> Variable, usually ``nn.get_parameters()``.
            reset (bool): forget previously set parameters.
            retain_state (bool): keep solver states of parameters set again.
        """
        if reset and not retain_state:  # wrappers may accept only the parameter dict
            self.solver.set_parameters(param_dict)
        else:
            self.solver.set_parameters(param_dict, reset=reset, retain_state=retain_state)
        self._params = dict(param_dict) if reset else dict(self._params, **param_dict)
        self._refresh()

    def remove_parameters(self, keys):
        """Remove parameters (as ``Solver.remove_parameters``); their layers leave this solver.

        Args:
            keys (list): parameter names given to :meth:`set_parameters`.
        """
        self.solver.remove_parameters(keys)
        for k in keys:
            self._params.pop(k, None)
        self._refresh()

    def clear_parameters(self):
        """Remove every parameter (as ``Solver.clear_parameters``); no layer is left."""
        self.solver.clear_parameters()
        self._params = {}
        self._refresh()

    def _inner_update(self, update_pre_hook, update_post_hook):
        if update_pre_hook is None and update_post_hook is None:
            self.solver.update()
        else:
            self.solver.update(update_pre_hook=update_pre_hook, update_post_hook=update_post_hook)

    @property
    def name(self):
        """str: the wrapped solver's name, e.g. ``'Momentum'``."""
        return getattr(self.solver, 'name', type(self.solver).__name__)

    @property
    def info(self):
        """The wrapped solver's info."""
        return self.solver.info

    def __getattr__(self, name):
        if name in type(self)._OWN:
            raise AttributeError(name)
        return getattr(self.solver, name)


class LUTQSolver(WrappingSolver):
    """A solver wrapper that keeps every LUT-Q layer's look-up table fitted.

    ``update()`` runs the wrapped solver's update of the full-precision weights (with the
    straight-through gradients of the tied weights) and then ``kmeans_iters`` iterations of the
    LUT-Q k-means step for every LUT-Q layer whose ``W`` was passed to :meth:`set_parameters`.
    When it returns, each layer's ``d`` holds the new means and ``A`` (int32) the last assignment,
    made before the means were recomputed -- exactly the paper's per-minibatch step 4.

    The step runs on a backend of :mod:`nnabla_lutq.kmeans` chosen per context: exact numpy on
    the host in ``cpu`` contexts, one nnabla graph on the device (float32) elsewhere.

    It is an ``nn.solver.Solver`` for code that checks (nnabla-examples' checkpoint helpers), and
    every other solver method (``zero_grad``, ``weight_decay``, ``set_learning_rate``,
    ``get_parameters``, ...) is the wrapped solver's, which may itself be a wrapper such as
    nnabla-examples' ``MomentumNoWeightDecayBn``. ``save_states``/``load_states`` add the LUT-Q
    settings to the wrapped solver's file and check them on load.

    Args:
        solver (~nnabla.solvers.Solver): e.g. ``S.Momentum(0.1, 0.9)``, or a wrapper with
            ``set_parameters``, ``update`` and ``zero_grad``.
        kmeans_iters (int): M, k-means iterations per update (>= 1).
        check_finite (bool): verify that the weights are finite before each k-means step
            (on a device this reads one number back per step).
        backend (str): k-means backend, ``'auto'``, ``'host'``, ``'graph'`` or ``'fused'``
            (CUDA kernels; see :class:`~nnabla_lutq.kmeans.FusedKMeans`).
        comm: nnabla's data-parallel communicator, for multi-GPU training: the k-means step then
            keeps the tables identical on every rank (:class:`~nnabla_lutq.kmeans.SyncKMeans`).
            Gradients are all-reduced by the training script, as for any nnabla solver.

    Example:
        >>> solver = nnabla_lutq.LUTQSolver(S.Momentum(0.1, 0.9))
        >>> solver.set_parameters(nn.get_parameters())
        >>> ...; solver.zero_grad(); loss.backward(); solver.update()
    """

    _OWN = WrappingSolver._OWN + ('_backends', 'comm')

    def __init__(self, solver, kmeans_iters=1, check_finite=True, backend='auto', comm=None):
        WrappingSolver.__init__(self, solver)
        if isinstance(kmeans_iters, bool) or not isinstance(kmeans_iters, (int, np.integer)) \
                or kmeans_iters < 1:
            raise ValueError(f"kmeans_iters must be an integer >= 1, got {kmeans_iters!r}")
        backend_for([], 1, backend)  # an unknown backend name fails here, not at the first step
        self.kmeans_iters = int(kmeans_iters)
        self.check_finite = check_finite
        self.backend = backend
        self.comm = comm
        self._backends = {}

    def _layers_changed(self):
        self._backends = {}

    # -- the step -----------------------------------------------------------------------
    def update(self, update_pre_hook=None, update_post_hook=None):
        """The wrapped solver's update of ``W``, then the k-means step of every LUT-Q layer.

        Args:
            update_pre_hook (callable): passed to the wrapped solver's ``update``.
            update_post_hook (callable): passed to the wrapped solver's ``update``.

        Raises:
            ValueError: if a layer's weights became non-finite (d and A are then unchanged).
        """
        self._inner_update(update_pre_hook, update_post_hook)
        self.kmeans_step()

    def kmeans_step(self):
        """Run only the k-means step (M iterations) on every LUT-Q layer."""
        if not self._layers:
            return
        key = str(nn.get_current_context())
        b = self._backends.get(key)
        if b is None:
            b = self._backends[key] = backend_for(self._layers, self.kmeans_iters, self.backend,
                                                  self.check_finite, comm=self.comm)
        b.step()

    # -- states -------------------------------------------------------------------------
    def _own_state(self):
        return {'kmeans_iters': self.kmeans_iters,
                'layers': {s.name: s.config.settings() for s in self._layers}}

    def save_states(self, path):
        """Save the wrapped solver's states plus the LUT-Q settings (``.h5``).

        Args:
            path (str): an ``.h5`` file (nnabla's solver-state format).
        """
        self.solver.save_states(path)
        if str(path).endswith('.h5'):
            with h5py.File(path, 'a') as f:
                f.attrs[_STATE_ATTR] = json.dumps(self._own_state())

    def load_states(self, path):
        """Load states saved by :meth:`save_states` (or by the plain wrapped solver).

        Args:
            path (str): the file.

        Raises:
            ValueError: if the file was saved with other LUT-Q settings (nothing is loaded).
        """
        saved = None
        if str(path).endswith('.h5'):
            with h5py.File(path, 'r') as f:
                if _STATE_ATTR in f.attrs:
                    saved = json.loads(f.attrs[_STATE_ATTR])
        if saved is not None:
            mine = self._own_state()
            if saved['layers'] != mine['layers']:
                diff = sorted(set(saved['layers']) ^ set(mine['layers'])) or [
                    k for k in mine['layers'] if saved['layers'][k] != mine['layers'][k]]
                raise ValueError(
                    f"{path}: the solver states were saved for other LUT-Q layers or settings "
                    f"(first difference: {diff[:3]}); build the network with the settings of that "
                    "run")
        self.solver.load_states(path)


def _delegate(name):
    def method(self, *args, **kwargs):
        return getattr(self.solver, name)(*args, **kwargs)
    method.__name__ = name
    method.__doc__ = f"The wrapped solver's ``{name}``."
    return method


for _name in ('check_inf_grad', 'check_inf_or_nan_grad', 'check_nan_grad', 'clip_grad_by_norm',
              'get_parameters', 'get_states', 'learning_rate', 'scale_grad', 'set_learning_rate',
              'set_states', 'set_states_from_protobuf', 'set_states_to_protobuf', 'setup',
              'weight_decay', 'weight_decay_is_fused', 'zero_grad'):
    setattr(WrappingSolver, _name, _delegate(_name))
del _name
