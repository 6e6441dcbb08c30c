# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""``LCSolver``: the learning-compression (LC) algorithm for LUT-Q layers.

Carreira-Perpiñán & Idelbayev, "Model compression as constrained optimization, with application
to neural nets. Part II: quantization" (arXiv:1707.04319), on the same ``PF.lutq_*`` layers as
LUT-Q. Each layer's float weights ``W`` are constrained to ``d[A]`` (``d`` its look-up table,
``A`` the int32 assignment) and the constrained problem is solved by alternating

* the **L step**: a number of minibatch updates of ``W`` on
  ``loss(W) + (mu/2)·||W - d[A] - lambda/mu||²``, with the network computing with ``W`` itself
  (the training graph is built under ``nnabla_lutq.weight_mode('float')``);
* the **C step**: the best ``(d, A)`` for ``W - lambda/mu`` -- exact 1-D k-means to convergence,
  warm-started from the current ``d``, with the layer's constraints (power-of-two values, pruning
  with ``d[0] = 0``), or the nearest values of a fixed codebook (binary, ternary), optionally
  with a learned scale (numpy, :func:`nnabla_lutq.core.lc.c_step`); then the multiplier step
  ``lambda <- lambda - mu·(W - d[A])``;
* ``mu`` grows geometrically, ``mu_j = mu0·a^j`` for the ``j``-th LC step.

Layers with grouped tables (``group_size``: ``d`` of shape ``(n_groups, K)``) are constrained to
``d[A]`` read in each weight's group's table: the C step runs on each group's weights as a layer of
its own (one learned scale per group of a fixed set), the penalty and the multipliers stay those
of the whole ``W``.

When the schedule ends, :meth:`LCSolver.finalize` leaves the layers computing with ``d[A]``; the
tied, inference and export paths of the package are unchanged.

Defaults come from the authors' toolkit (UCMerced-ML/LC-model-compression,
``examples/lenet300/lenet300.py``, quantization experiments): ``mu_j = 9e-5·1.1^j`` for 40 LC
steps (see :data:`TOOLKIT_SCHEDULE`).
"""
import numpy as np
import nnabla as nn
import nnabla.functions as F

from ..core.fit import fit_table
from ..core.lc import c_step
from ..core.checks import integer_at_least, positive_number
from ..kmeans import validate, nonfinite_error, nonfinite_layers
from ..nn.functions import detached, float32_context
from ..nn.layers import grouped_lookup
from .solver import WrappingSolver

__all__ = ['LCSolver', 'c_step', 'lc_schedule', 'TOOLKIT_SCHEDULE']

#: The schedule of the LC toolkit's quantization example (UCMerced-ML/LC-model-compression,
#: ``examples/lenet300/lenet300.py``, experiments ``quantize_all``): ``mu_j = mu0·mu_growth^j``
#: for ``n_lc_steps`` LC steps; each L step is ``epochs_per_l_step`` epochs (twice that for the
#: first) of SGD with Nesterov momentum restarted at ``lr·lr_decay_per_lc_step^j``. LCSolver's
#: defaults take ``mu0`` and ``mu_growth``; the L-step length and learning rate are the training
#: script's.
TOOLKIT_SCHEDULE = {'mu0': 9e-5, 'mu_growth': 1.1, 'n_lc_steps': 40, 'epochs_per_l_step': 20,
                    'lr': 0.09, 'lr_decay_per_lc_step': 0.98, 'momentum': 0.9, 'nesterov': True}


def lc_schedule(total_updates, n_lc_steps=TOOLKIT_SCHEDULE['n_lc_steps'],
                mu0=TOOLKIT_SCHEDULE['mu0'], mu_growth=TOOLKIT_SCHEDULE['mu_growth']):
    """:class:`LCSolver` keyword arguments spreading ``n_lc_steps`` LC steps over a run.

    Args:
        total_updates (int): solver updates of the whole run.
        n_lc_steps (int): LC steps (L step + C step) in the run; the toolkit uses 40.
        mu0 (float): the penalty weight of the first L step.
        mu_growth (float): the factor ``a`` of ``mu_j = mu0·a^j``.

    Returns:
        dict: ``mu0``, ``mu_growth`` and ``steps_per_lc = max(1, total_updates // n_lc_steps)``.

    Example:
        >>> solver = nnabla_lutq.LCSolver(S.Momentum(0.1, 0.9), **lc_schedule(max_iter))
    """
    if int(total_updates) < 1 or int(n_lc_steps) < 1:
        raise ValueError(f"total_updates and n_lc_steps must be >= 1, got {total_updates}, "
                         f"{n_lc_steps}")
    return {'mu0': float(mu0), 'mu_growth': float(mu_growth),
            'steps_per_lc': max(1, int(total_updates) // int(n_lc_steps))}


def _tied(s):
    """``d[A]`` of a layer on the host (float32, shape of ``W``; grouped tables read per group)."""
    return s.config.lookup(s.d.data.get_data('r', np.float32), s.A.data.get_data('r', np.int32))


def _lookup_graph(s):
    """``d[A]`` of a layer as an nnabla function on detached copies of ``d`` and ``A``."""
    if s.config.group_size is None:
        return F.embed(detached(s.A), detached(s.d))
    return grouped_lookup(detached(s.A), detached(s.d), s.config)


# -- the solver ----------------------------------------------------------------------------------

class LCSolver(WrappingSolver):
    """A solver wrapper that trains LUT-Q layers by the learning-compression (LC) algorithm.

    Build the training graph with ``nnabla_lutq.weight_mode('float')`` (LUT-Q layers compute with
    their float ``W``), then use it like any nnabla solver. Each :meth:`update`:

    1. (first call only) :meth:`direct_compression`: the C step on ``W`` itself with
       ``lambda = 0`` -- the quantization of the reference weights the LC algorithm starts from;
    2. adds the penalty gradient ``mu·(W - d[A]) - lambda`` (= ``mu·(W - d[A] - lambda/mu)``,
       the gradient of ``(mu/2)·||W - d[A] - lambda/mu||²``) to ``W.grad`` of every LUT-Q layer
       (:meth:`add_penalty_gradient`; one small nnabla graph, no change to the training graph);
    3. runs the wrapped solver's update (all parameters);
    4. every ``steps_per_lc`` updates, :meth:`lc_step`: C step, multiplier step, ``mu`` growth.

    After the last update call :meth:`finalize`. ``save_states``/``load_states`` keep the
    multipliers, ``mu``, the counters and the tables, so a stopped run resumes exactly.

    The other solver methods (``zero_grad``, ``weight_decay``, ``set_learning_rate``, ...) are the
    wrapped solver's; weight decay and gradient all-reduce act on the loss gradient as usual (the
    penalty is added inside :meth:`update`, after them). On several data-parallel ranks the C step
    needs no communication: it is a deterministic function of ``W`` and ``lambda``, which are
    identical on every rank.

    Args:
        solver (~nnabla.solvers.Solver): e.g. ``S.Momentum(0.1, 0.9)``.
        mu0 (float): ``mu`` of the first L step (toolkit default 9e-5).
        mu_growth (float): ``a`` in ``mu_j = mu0·a^j`` (toolkit default 1.1).
        steps_per_lc (int): updates per L step (required; see :func:`lc_schedule`).
        augmented_lagrangian (bool): keep the multipliers ``lambda``; False is the quadratic
            penalty method (``lambda = 0`` throughout).
        learn_scale (bool): fixed dictionaries (e.g. ``[-1, 1]``, ``[-1, 0, 1]``) become
            ``a·c`` with a scale ``a`` fitted in each C step.
        max_kmeans_iters (int): bound on the Lloyd iterations of one C step.
        check_finite (bool): refuse a C step on non-finite weights (tables unchanged then).

    Example:
        >>> with nnabla_lutq.weight_mode('float'):
        ...     loss = F.mean(F.softmax_cross_entropy(model(x), t))
        >>> solver = nnabla_lutq.LCSolver(S.Momentum(0.1, 0.9), **lc_schedule(max_iter))
        >>> solver.set_parameters(nn.get_parameters())
        >>> for i in range(max_iter):
        ...     loss.forward(); solver.zero_grad(); loss.backward(); solver.update()
        >>> solver.finalize()  # now every graph computes with d[A]
    """

    _OWN = WrappingSolver._OWN + ('_lam', '_graph')

    def __init__(self, solver, mu0=TOOLKIT_SCHEDULE['mu0'], mu_growth=TOOLKIT_SCHEDULE['mu_growth'],
                 steps_per_lc=None, augmented_lagrangian=True, learn_scale=False,
                 max_kmeans_iters=10000, check_finite=True):
        WrappingSolver.__init__(self, solver)
        positive_number(mu0, 'mu0')
        if positive_number(mu_growth, 'mu_growth') < 1:
            raise ValueError(f"mu_growth must be a number >= 1, got {mu_growth!r}")
        try:
            integer_at_least(steps_per_lc, 1, 'steps_per_lc (updates per L step)')
        except ValueError as e:
            raise ValueError(f"{e}; e.g. LCSolver(solver, **lc_schedule(total_updates)) spreads "
                             f"{TOOLKIT_SCHEDULE['n_lc_steps']} LC steps over a run") from None
        self.mu0 = float(mu0)
        self.mu_growth = float(mu_growth)
        self.steps_per_lc = int(steps_per_lc)
        self.augmented_lagrangian = bool(augmented_lagrangian)
        self.learn_scale = bool(learn_scale)
        self.max_kmeans_iters = int(max_kmeans_iters)
        self.check_finite = check_finite
        self.updates = 0          # solver updates done
        self.lc_steps = 0         # LC steps done (j)
        self.started = False      # direct compression done
        self.finalized = False    # finalize() ran after the last update
        self.converged = {}       # layer name -> whether its last C step reached a fixed point
        self._lam = {}            # layer name -> nn.Variable (shape of W)
        self._graph = None        # (context key, mu Variable, sink, [(grad Variable, W)])

    # -- schedule -----------------------------------------------------------------------------
    def mu_at(self, j):
        """``mu`` of the ``j``-th L step: ``mu0·mu_growth^j``.

        Args:
            j (int): the LC step index (0 for the first L step).

        Returns:
            float: the penalty weight.
        """
        return self.mu0 * self.mu_growth ** int(j)

    @property
    def mu(self):
        """float: the penalty weight of the current L step."""
        return self.mu_at(self.lc_steps)

    def multipliers(self, layer):
        """The Lagrange multipliers ``lambda`` of a layer (a copy).

        Args:
            layer (str or LUTQLayer): the layer or its full name.

        Returns:
            numpy.ndarray: float32, shape of ``W``.
        """
        name = layer if isinstance(layer, str) else layer.name
        return self._lam[name].d.astype(np.float32).copy()

    # -- parameters ---------------------------------------------------------------------------
    def _layers_changed(self):
        lam = {}
        for s in self._layers:
            old = self._lam.get(s.name)
            if old is None or old.shape != s.W.shape:
                old = nn.Variable.from_numpy_array(np.zeros(s.W.shape, np.float32))
            lam[s.name] = old
        self._lam = lam
        self._graph = None

    # -- L step -------------------------------------------------------------------------------
    def _penalty_graph(self):
        key = str(nn.get_current_context())
        if self._graph is not None and self._graph[0] == key:
            return self._graph
        with nn.context_scope(float32_context()):
            mu = nn.Variable(())
            outs, grads = [], []
            for s in self._layers:
                w = detached(s.W)
                q = _lookup_graph(s)
                g = nn.Variable(s.W.shape, need_grad=False)
                pen = F.reshape(mu, (1,) * len(s.W.shape)) * (w - q)
                if self.augmented_lagrangian:
                    pen = pen - detached(self._lam[s.name])
                outs.append(F.assign(g, g + pen))
                grads.append((g, s.W))
            sink = F.sink(*outs) if outs else None
        self._graph = (key, mu, sink, grads)
        return self._graph

    def add_penalty_gradient(self):
        """Add ``mu·(W - d[A]) - lambda`` to ``W.grad`` of every LUT-Q layer.

        That is the gradient of ``(mu/2)·||W - d[A] - lambda/mu||²`` (without the multipliers in
        the quadratic-penalty variant). :meth:`update` calls it; call it yourself only when
        running the wrapped solver directly.
        """
        if not self._layers:
            return
        _, mu, sink, grads = self._penalty_graph()
        for g, w in grads:
            g.data = w.grad  # follow the parameter's gradient array, wherever it lives now
        mu.d = self.mu
        sink.forward(clear_buffer=True)

    def penalty(self):
        """The penalty ``sum over layers (mu/2)·||W - d[A] - lambda/mu||²`` (host, float64).

        Returns:
            float: its current value (for monitoring).
        """
        total = 0.0
        for s in self._layers:
            r = self._residual(s) - self._lam[s.name].d.astype(np.float64) / self.mu
            total += 0.5 * self.mu * float(np.dot(r.ravel(), r.ravel()))
        return total

    @staticmethod
    def _residual(s):
        """``W - d[A]`` of a layer in float64."""
        w = s.W.data.get_data('r', np.float32).astype(np.float64)
        return w - _tied(s).astype(np.float64)

    def update(self, update_pre_hook=None, update_post_hook=None):
        """One L-step update; every ``steps_per_lc`` updates also :meth:`lc_step`.

        Args:
            update_pre_hook (callable): passed to the wrapped solver's ``update``.
            update_post_hook (callable): passed to the wrapped solver's ``update``.
        """
        if not self.started:
            self.direct_compression()
        self.add_penalty_gradient()
        self._inner_update(update_pre_hook, update_post_hook)
        self.updates += 1
        self.finalized = False
        if self.updates % self.steps_per_lc == 0:
            self.lc_step()

    # -- C step -------------------------------------------------------------------------------
    def _check(self):
        validate(self._layers, values=True)
        if self.check_finite:
            bad = nonfinite_layers(self._layers)
            if bad:
                raise nonfinite_error(bad)

    def c_step(self, fresh=False):
        """The C step of every layer: ``(d, A)`` <- best quantization of ``W - lambda/mu``.

        Args:
            fresh (bool): start from the near-optimal table of
                :func:`~nnabla_lutq.core.fit.fit_table` instead of the current ``d``.

        Raises:
            ValueError: for non-finite weights or invalid tables (nothing is changed then).
        """
        self._check()
        new = []
        for s in self._layers:
            w = s.W.data.get_data('r', np.float32)
            if self.augmented_lagrangian and self.started:
                v = (w.astype(np.float64)
                     - self._lam[s.name].d.astype(np.float64) / self.mu).astype(np.float32)
            else:
                v = w
            d = fit_table(v, s.config)[0] if fresh else s.d.data.get_data('r', np.float32)
            new.append(c_step(v, d, s.config, self.learn_scale, self.max_kmeans_iters))
        for s, (d, a, ok) in zip(self._layers, new):
            s.d.data.cast(np.float32)[...] = d
            s.A.data.cast(np.int32)[...] = a
            self.converged[s.name] = ok

    def direct_compression(self):
        """The LC algorithm's start: C step on the current ``W`` with ``lambda = 0``.

        It starts from the near-optimal table of :func:`~nnabla_lutq.core.fit.fit_table` (not
        from the layer's current ``d``), so the reference is compressed as well as it can be.
        :meth:`update` runs it before the first update; call it earlier to evaluate the directly
        compressed network.
        """
        for lam in self._lam.values():
            lam.data.zero()
        self.started = False
        self.c_step(fresh=True)
        self.started = True

    def lc_step(self):
        """End the current L step: C step, multiplier step, then ``mu`` grows.

        ``lambda <- lambda - mu·(W - d[A])`` with the new tables (augmented Lagrangian only);
        then ``mu`` becomes ``mu0·a^(j+1)``.
        """
        if not self.started:
            self.direct_compression()
        self.c_step()
        if self.augmented_lagrangian:
            for s in self._layers:
                lam = self._lam[s.name]
                lam.d = (lam.d.astype(np.float64) - self.mu * self._residual(s)).astype(np.float32)
        self.lc_steps += 1

    def finalize(self, set_weights=True):
        """Leave every layer computing with ``d[A]``.

        Runs a last C step if updates were made since the previous one (the multipliers and
        ``mu`` are then left as they are), and with ``set_weights`` copies ``d[A]`` into ``W``,
        so that graphs built in any weight mode -- including the float L-step graph -- compute the
        compressed network. The tied and inference graphs use ``d`` and ``A`` in any case.
        Calling it again before another :meth:`update` changes nothing.

        Args:
            set_weights (bool): overwrite ``W`` with ``d[A]``.

        Returns:
            dict: layer name -> ``||W - d[A]||² / N`` before ``W`` was overwritten (how far the
            float weights were from satisfying the constraint).
        """
        if not self.started:
            self.direct_compression()
        elif self.updates % self.steps_per_lc and not self.finalized:
            self.c_step()
        self.finalized = True
        out = {}
        for s in self._layers:
            r = self._residual(s)
            out[s.name] = float(np.mean(r ** 2))
            if set_weights:
                s.W.d = _tied(s)
        return out

    # -- states -------------------------------------------------------------------------------
    def _own_state(self):
        return {'mu0': self.mu0, 'mu_growth': self.mu_growth, 'steps_per_lc': self.steps_per_lc,
                'augmented_lagrangian': self.augmented_lagrangian,
                'learn_scale': self.learn_scale,
                'layers': {s.name: s.config.settings() for s in self._layers}}

    def _counters(self):
        return {'updates': self.updates, 'lc_steps': self.lc_steps, 'started': self.started,
                'finalized': self.finalized}

    # save_states / load_states: WrappingSolver's; the LC state is the settings above, these
    # counters and, per layer, the multipliers, d and A
    _COUNTERS = ('updates', 'lc_steps', 'started')

    def _own_arrays(self):
        out = {}
        for s in self._layers:
            out[f"lambda/{s.name}"] = self._lam[s.name].d.astype(np.float32)
            out[f"d/{s.name}"] = s.d.data.get_data('r', np.float32).copy()
            out[f"A/{s.name}"] = s.A.data.get_data('r', np.int32).copy()
        return out

    def _restore_own(self, counters, arrays):
        for s in self._layers:
            self._lam[s.name].d = arrays[f"lambda/{s.name}"]
            s.d.data.cast(np.float32)[...] = arrays[f"d/{s.name}"]
            s.A.data.cast(np.int32)[...] = arrays[f"A/{s.name}"]
        self.updates = int(counters['updates'])
        self.lc_steps = int(counters['lc_steps'])
        self.started = bool(counters['started'])
        self.finalized = bool(counters.get('finalized', False))
