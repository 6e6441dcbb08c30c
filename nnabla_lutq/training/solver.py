"""``LUTQSolver``: any nnabla solver plus the per-minibatch LUT-Q k-means step."""
import hashlib
import json
import os
import shutil
import tempfile

import h5py
import numpy as np
import nnabla as nn

from ..kmeans import backend_for
from ..nn.state import STATE, LUTQLayer

__all__ = ['LUTQSolver', 'WrappingSolver']

_STATE_ATTR = 'nnabla_lutq'  # where nnabla-lutq 0.1 kept LUTQSolver's settings in an .h5


def _state_files(path, suffix):
    """``(nnabla's state file, the file of the wrapper's own state)`` for a state path."""
    path = os.fspath(path)
    if path.endswith('.h5'):
        return path, path
    if path.endswith('.protobuf'):
        return path, path + suffix
    raise ValueError(f"{path}: solver states are saved in nnabla's formats; name the file "
                     "*.h5 or *.protobuf")


def _sha256(path):
    with open(path, 'rb') as f:  # nnabla reads a .protobuf state file whole too
        return hashlib.sha256(f.read()).hexdigest()


def _differences(saved, mine):
    """What differs between two settings dicts, as short texts (layers one by one)."""
    out = []
    for k in sorted(set(saved) | set(mine)):
        a, b = saved.get(k), mine.get(k)
        if a == b:
            continue
        if k == 'layers' and isinstance(a, dict) and isinstance(b, dict):
            out += [f"layer {n}: saved {a.get(n)}, now {b.get(n)}"
                    for n in sorted(set(a) | set(b)) if a.get(n) != b.get(n)]
        else:
            out.append(f"{k}: saved {a!r}, now {b!r}")
    return out


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

    # -- states: the wrapped solver's file plus the wrapper's own state ------------------------
    #: the .h5 group that holds the wrapper's own state
    _STATE_GROUP = 'nnabla_lutq'
    #: beside a ``.protobuf`` state file, the own state is the .h5 file ``<path><suffix>``
    _STATE_SUFFIX = '.lutq.h5'

    def _own_state(self):
        """dict: the settings that states must have been saved with to load (JSON values)."""
        return {}

    def _save_own(self, group):
        """Write what the wrapper keeps beyond its settings into the h5 ``group``."""

    def _read_own(self, group):
        """Read what :meth:`_save_own` wrote (before anything is loaded)."""
        return None

    def _restore_own(self, saved):
        """Restore what :meth:`_read_own` read (after the wrapped solver's states loaded)."""

    def save_states(self, path):
        """Save the wrapped solver's states plus this wrapper's settings and state.

        The wrapper's part is a group ``nnabla_lutq`` (:class:`LUTQSolver`) or ``nnabla_lutq_lc``
        (:class:`~nnabla_lutq.LCSolver`) in an ``.h5`` file; beside a ``.protobuf`` file it is
        the file ``<path>.lutq.h5`` (``<path>.lc.h5``), which records a checksum of the states
        it belongs to.

        Args:
            path (str): an ``.h5`` or ``.protobuf`` file (nnabla's solver-state formats).

        Raises:
            ValueError: for another file name (nothing is written).
        """
        path, own = _state_files(path, self._STATE_SUFFIX)
        self.solver.save_states(path)
        with h5py.File(own, 'a' if own == path else 'w') as f:
            if self._STATE_GROUP in f:
                del f[self._STATE_GROUP]
            g = f.create_group(self._STATE_GROUP)
            g.attrs['settings'] = json.dumps(self._own_state())
            if own != path:
                g.attrs['states_sha256'] = _sha256(path)
            self._save_own(g)

    def _saved_state(self, path, own):
        """``(settings, own state)`` stored with the states at ``path``, or None (a plain
        solver's file, or a ``.protobuf`` rewritten since its own-state file was written)."""
        if not os.path.isfile(own):
            return None
        try:
            with h5py.File(own, 'r') as f:
                g = f.get(self._STATE_GROUP)
                if isinstance(g, h5py.Group):
                    digest = g.attrs.get('states_sha256')  # None: written before it was kept
                    if own != path and digest is not None and digest != _sha256(path):
                        return None
                    return json.loads(g.attrs['settings']), self._read_own(g)
                if self._STATE_GROUP == _STATE_ATTR and _STATE_ATTR in f.attrs:  # 0.1 files
                    legacy = json.loads(f.attrs[_STATE_ATTR])
                    return {k: legacy.get(k) for k in self._own_state()}, None
        except (OSError, KeyError, ValueError) as e:
            raise ValueError(f"{own}: not a readable solver-state file ({e}); save the states "
                             "again or resume from another checkpoint") from None
        return None

    def load_states(self, path):
        """Load states saved by :meth:`save_states` (or by the plain wrapped solver).

        The settings stored with the states are checked first, for both formats.

        Args:
            path (str): an ``.h5`` or ``.protobuf`` file.

        Raises:
            ValueError: for another file name, a missing or unreadable file, or states saved
                for other LUT-Q layers or settings (nothing is loaded then).
        """
        path, own = _state_files(path, self._STATE_SUFFIX)
        if not os.path.isfile(path):
            raise ValueError(f"{path}: no such solver-state file")
        saved = self._saved_state(path, own)
        if saved is not None:
            diff = _differences(saved[0], self._own_state())
            if diff:
                raise ValueError(
                    f"{path}: the solver states were saved for other LUT-Q layers or settings "
                    f"({'; '.join(diff[:3])}); build the network and the solver with the "
                    "settings of that run")
        if saved is not None and own == path:
            with tempfile.TemporaryDirectory() as tmp:  # nnabla reads every dataset as a state
                inner = os.path.join(tmp, 'states.h5')
                shutil.copyfile(path, inner)
                with h5py.File(inner, 'a') as f:
                    del f[self._STATE_GROUP]
                self.solver.load_states(inner)
        else:
            self.solver.load_states(path)
        if saved is not None:
            self._restore_own(saved[1])


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
        return {'layers': {s.name: s.config.settings() for s in self._layers}}


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
