# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""``LUTQSolver``: any nnabla solver plus the per-minibatch LUT-Q k-means step; ``WrappingSolver``,
its base and :class:`~nnabla_lutq.LCSolver`'s, with the one solver-state file format of both."""
import os
import shutil
import tempfile
import warnings

import h5py
import numpy as np
import nnabla as nn

from ..core.checks import integer_at_least
from ..kmeans import backend_for
from ..nn.state import STATE, LUTQLayer
from .states import (LC_GROUP_V1, STATE_GROUP, SavedState, SolverStateError, differences,
                     read_own_state, some_names, state_arrays, state_dtypes, state_files,
                     state_names, unreadable, write_own_state)

__all__ = ['LUTQSolver', 'WrappingSolver', 'SolverStateError', 'SavedState', 'state_files',
           'read_own_state', 'write_own_state']

class SolverGroup:
    """nnabla's state interface for a solver that holds other nnabla solvers (nnabla-examples'
    ``MomentumNoWeightDecayBn``: one ``S.Momentum`` for the weights, one for BN's beta and gamma)
    but has no ``save_states`` / ``get_states`` itself.

    The states of all its solvers form one nnabla state file, written and read by a temporary
    nnabla solver of the same kind holding every parameter, so the file is exactly the one a
    single solver would write (``.h5`` or ``.protobuf``).

    Args:
        solver: the holder; its attributes that are ``nn.solver.Solver`` are its solvers.

    Raises:
        ValueError: when states are asked of a holder without nnabla solvers, or with solvers of
            different kinds (nothing is read or written then).
    """

    def __init__(self, solver):
        self.parts = [v for v in vars(solver).values() if isinstance(v, nn.solver.Solver)]
        kinds = sorted({p.name for p in self.parts})
        self.problem = (
            f"{type(solver).__name__} has no save_states() and holds no nnabla solver: give it "
            "save_states/load_states/get_states, or wrap an nnabla solver" if not self.parts else
            f"{type(solver).__name__} holds solvers of different kinds {kinds}, whose states "
            "cannot form one nnabla state file: give it save_states/load_states/get_states"
            if len(kinds) > 1 else None)

    def _check(self):
        if self.problem:
            raise ValueError(self.problem)

    def get_parameters(self):
        """dict: every parameter of every held solver."""
        out = {}
        for p in self.parts:
            out.update(p.get_parameters())
        return out

    def get_states(self):
        """dict: every parameter's solver state."""
        self._check()
        out = {}
        for p in self.parts:
            out.update(p.get_states())
        return out

    def set_states(self, states):
        """Give each held solver the states of its parameters."""
        for p in self.parts:
            own = p.get_parameters()  # once per solver, not once per state
            p.set_states({k: v for k, v in states.items() if k in own})

    def _single(self):
        self._check()
        first = self.parts[0]
        one = getattr(nn.solvers, first.name)(**first.info)
        one.set_parameters(self.get_parameters())
        return one

    def save_states(self, path):
        """Write the held solvers' states as one nnabla state file."""
        one = self._single()
        one.set_states(self.get_states())
        one.save_states(path)

    def load_states(self, path):
        """Read one nnabla state file into the held solvers."""
        one = self._single()
        one.load_states(path)
        self.set_states(one.get_states())


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
    _OWN = ('solver', 'states_solver', '_params', '_layers')

    def __init__(self, solver):
        for m in ('set_parameters', 'update', 'zero_grad'):
            if not hasattr(solver, m):
                raise ValueError(f"{type(self).__name__} wraps an nnabla solver such as "
                                 f"S.Momentum(0.1, 0.9); got {type(solver).__name__}, which has "
                                 f"no {m}()")
        self.solver = solver
        #: who reads and writes the wrapped solver's states (itself, or a SolverGroup over the
        #: nnabla solvers it holds)
        self.states_solver = solver if hasattr(solver, 'save_states') else SolverGroup(solver)
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

    def get_parameters(self):
        """dict: the parameters the wrapped solver optimizes (nnabla's ``get_parameters``)."""
        return self.states_solver.get_parameters()

    def get_states(self):
        """dict: the wrapped solver's states (nnabla's ``get_states``)."""
        return self.states_solver.get_states()

    def set_states(self, states):
        """Set the wrapped solver's states (nnabla's ``set_states``)."""
        self.states_solver.set_states(states)

    # -- states: the wrapped solver's file plus the wrapper's own state ------------------------
    #: counters a saved state must hold (subclasses with counters name them)
    _COUNTERS = ()

    def _own_state(self):
        """dict: the settings that states must have been saved with to load (JSON values)."""
        return {}

    def _counters(self):
        """dict: the scalars saved with the states (JSON values)."""
        return {}

    def _own_arrays(self):
        """dict: name -> the arrays saved with the states (their shapes and dtypes are what a
        saved state must have)."""
        return {}

    def _restore_own(self, counters, arrays):
        """Restore checked counters and arrays (after the wrapped solver's states loaded)."""

    def save_states(self, path):
        """Save the wrapped solver's states plus this wrapper's settings and state.

        nnabla's file is written by the wrapped solver; this wrapper's part (settings, counters,
        arrays such as LCSolver's multipliers) goes into a group ``nnabla_lutq`` of the ``.h5``
        file, or beside a ``.protobuf`` file into ``<path>.lutq.h5``, which records a checksum
        of the states it belongs to. Both formats round-trip exactly.

        Args:
            path (str): an ``.h5`` or ``.protobuf`` file (nnabla's solver-state formats).

        Raises:
            ValueError: for another file name (nothing is written).
        """
        path, _ = state_files(path)
        self.states_solver.save_states(path)
        write_own_state(path, SavedState(type(self).__name__, self._own_state(),
                                         self._counters(), self._own_arrays()))

    def _check_saved(self, path, saved):
        """Refuse a saved state of another wrapper, other settings, or damaged contents."""
        mine = type(self).__name__
        if saved.solver != mine:
            raise SolverStateError(
                f"{path}: the solver states were saved by {saved.solver}; load them with "
                f"{saved.solver}, not {mine}")
        diff = differences(saved.settings, self._own_state())
        if diff:
            raise SolverStateError(
                f"{path}: the solver states were saved for other LUT-Q layers or settings "
                f"({'; '.join(diff[:3])}); build the network and the solver with the "
                "settings of that run")
        problems = [f"no counter {k}" for k in self._COUNTERS if k not in saved.counters]
        expected = self._own_arrays()
        for k, v in expected.items():
            got = saved.arrays.get(k)
            if got is None:
                problems.append(f"no array {k}")
            elif got.shape != v.shape or got.dtype != v.dtype:
                problems.append(f"{k} is {got.dtype}{list(got.shape)}, expected "
                                f"{v.dtype}{list(v.shape)}")
        problems += [f"unexpected array {k}" for k in saved.arrays if k not in expected]
        if problems:
            raise SolverStateError(
                f"{saved.file}: damaged or incomplete {mine} state ({'; '.join(problems[:3])}); "
                "save the states again or resume from another checkpoint")

    def load_states(self, path):
        """Load states saved by :meth:`save_states` (or by the plain wrapped solver).

        Everything is checked before anything is loaded: the wrapper that saved the states, its
        settings (the layers and their LUT-Q settings; LCSolver's schedule), its stored arrays,
        and that nnabla's file holds a state for exactly the parameters this solver was given. A
        plain solver's file (no wrapper state) loads the wrapped solver's states only, unchecked
        beyond that; :class:`~nnabla_lutq.LCSolver` then warns that its own state (multipliers,
        counters) stays as it is.

        Args:
            path (str): an ``.h5`` or ``.protobuf`` file.

        Raises:
            ValueError: for another file name. :class:`SolverStateError` (a ValueError) for a
                missing, damaged or unreadable file, or states saved by another wrapper, for
                other parameters or for other LUT-Q settings. Nothing is loaded then, and the
                message is one line naming the file.
        """
        path, own = state_files(path)
        saved = read_own_state(path)
        if saved is not None:
            self._check_saved(path, saved)
        names = state_names(path)
        missing = [k for k in self._params if k not in names]
        if missing:  # nnabla would load the others and leave these as they are, silently
            raise SolverStateError(
                f"{path}: holds no solver state for {len(missing)} of the {len(self._params)} "
                f"parameters ({some_names(missing)}); it is damaged or belongs to another network")
        extra = sorted(names - set(self._params))
        if extra:  # nnabla would fail on the first of them, after loading others
            raise SolverStateError(
                f"{path}: holds solver states for {len(extra)} parameters this solver was not "
                f"given ({some_names(extra)}); it belongs to another network, or set_parameters "
                "first")
        if saved is None and self._COUNTERS:
            warnings.warn(f"{path}: a plain solver's state file, without {type(self).__name__} "
                          "state: only the wrapped solver's states were loaded",
                          stacklevel=2)
        dtypes = state_dtypes(self.states_solver)
        try:
            if saved is not None and own == path:
                with tempfile.TemporaryDirectory() as tmp:  # nnabla reads every dataset
                    inner = os.path.join(tmp, 'states.h5')
                    shutil.copyfile(path, inner)
                    with h5py.File(inner, 'a') as f:
                        for name in (STATE_GROUP, LC_GROUP_V1):
                            if isinstance(f.get(name), h5py.Group):
                                del f[name]
                    self.states_solver.load_states(inner)
            else:
                self.states_solver.load_states(path)
        except Exception as e:  # nnabla's parsers: protobuf DecodeError, h5py, KeyError, ...
            raise unreadable(path, e) from None
        if path.endswith('.protobuf'):  # nnabla reads the float32 values back as float64
            for key, v in state_arrays(self.states_solver):
                v.data.cast(dtypes.get(key, np.float32))
        if saved is not None:
            self._restore_own(saved.counters, saved.arrays)


class LUTQSolver(WrappingSolver):
    """A solver wrapper that keeps every LUT-Q layer's look-up table fitted.

    ``update()`` runs the wrapped solver's update of the full-precision weights (with the
    straight-through gradients of the tied weights) and then ``kmeans_iters`` iterations of the
    LUT-Q k-means step for every LUT-Q layer whose ``W`` was passed to :meth:`set_parameters`.
    When it returns, each layer's ``d`` holds the new means and ``A`` (int32) the last assignment,
    made before the means were recomputed -- exactly the paper's per-minibatch step 4.

    The step runs on a backend of :mod:`nnabla_lutq.kmeans` chosen per context: exact numpy on
    the host in ``cpu`` contexts, one nnabla graph on the device (float32) elsewhere. Layers with
    grouped tables (``group_size``) are stepped by every backend, each group's table on its own
    weights (the ``'fused'`` backend hands them to the graph backend in the same step).

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
        self.kmeans_iters = integer_at_least(kmeans_iters, 1, 'kmeans_iters')
        backend_for([], 1, backend)  # an unknown backend name fails here, not at the first step
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
              'learning_rate', 'scale_grad', 'set_learning_rate', 'set_states_from_protobuf',
              'set_states_to_protobuf', 'setup', 'weight_decay', 'weight_decay_is_fused',
              'zero_grad'):
    setattr(WrappingSolver, _name, _delegate(_name))
del _name
