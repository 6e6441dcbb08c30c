# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The LUT-Q state of a process: which layers are LUT-Q or multiplier-less BN, and the weight mode.

One object, :data:`STATE` (an :class:`LUTQState`), owns the records of every LUT-Q layer
(``W``, ``d``, ``A`` and the validated :class:`~nnabla_lutq.core.config.LUTQConfig`) and every
multiplier-less BN layer. Everything else (the solver, :func:`~nnabla_lutq.initialize`, export,
report, conversion) reads it through the public methods below.

* **Lifetime.** A record is held through a weak reference to the parameter-scope dictionary of its
  layer (``.../lutq_conv``): when nnabla drops that scope (``nn.clear_parameters()``, a cleared
  parent scope), the record goes with it and nothing of the layer is kept alive.
* **Names and lookups** do not depend on the current parameter scope: a record's name is its full
  path from nnabla's root scope, and :meth:`LUTQState.lutq_layers` lists the live layers wherever
  it is called.
* **Live.** A record is live while its scope is still part of nnabla's parameter tree under its
  name and holds the very parameters it was built with (a loader that registers new variables
  under the same names makes it stale until the layer is built again).
* **One setting per layer.** Building a layer again with other LUT-Q settings than its live record
  raises a ValueError naming both.
* **Weight mode** (:class:`WeightMode`): what LUT-Q layers compute with while a graph is built:
  ``TIED`` (``d[A]`` forward, straight-through gradient to ``W``; the default, LUT-Q training),
  ``FLOAT`` (``W`` itself; the L step of learning-compression) or ``TABLES`` (``F.embed(A, d)``
  only, no float ``W`` in the graph; deployment and export).
"""
import contextlib
import enum
import itertools
import weakref
from dataclasses import dataclass

import nnabla as nn

from ..core.config import LUTQConfig
from .params import all_parameters, current_path, relative_name, scope_at, scope_path

__all__ = ['WeightMode', 'LUTQLayer', 'MLBNLayer', 'LUTQState', 'STATE', 'weight_mode',
           'inference_mode', 'lutq_layers', 'mlbn_layers', 'all_parameters']


class WeightMode(enum.Enum):
    """What LUT-Q layers compute with while a graph is built."""
    #: ``d[A]`` forward, ``W`` receives the gradient of the tied weights (LUT-Q training).
    TIED = 'tied'
    #: the float weights ``W`` (the L step of learning-compression training).
    FLOAT = 'float'
    #: ``F.embed(A, d)`` only; the graph holds no float ``W`` (deployment, export).
    TABLES = 'tables'


@dataclass(eq=False)
class LUTQLayer:
    """Record of one LUT-Q layer.

    Attributes:
        name (str): the layer's full parameter prefix from the root scope, e.g.
            ``'net/conv1/lutq_conv'``.
        kind (str): ``'affine'``, ``'conv'`` or ``'depthwise_conv'``.
        W (~nnabla.Variable): full-precision weights.
        d (~nnabla.Variable): dictionary, shape ``(K,)``.
        A (~nnabla.Variable): int32 assignment, shape of ``W``.
        config (~nnabla_lutq.core.config.LUTQConfig): validated settings.
    """
    name: str
    kind: str
    W: nn.Variable
    d: nn.Variable
    A: nn.Variable
    config: LUTQConfig

    #: parameter names of the record, in the order of the layer's scope
    PARTS = ('W', 'd', 'A')


@dataclass(eq=False)
class MLBNLayer:
    """Record of one multiplier-less batch normalization layer.

    Attributes:
        name (str): the full parameter prefix, e.g. ``'net/bn1/mlbn'``.
        beta, gamma, mean, var (~nnabla.Variable): the parameters, as in
            ``PF.batch_normalization``.
        eps (float): the epsilon the layer was built with.
        axes (tuple): the channel axes.
    """
    name: str
    beta: nn.Variable
    gamma: nn.Variable
    mean: nn.Variable
    var: nn.Variable
    eps: float
    axes: tuple = (1,)

    PARTS = ('beta', 'gamma', 'mean', 'var')


class _Entry:
    __slots__ = ('ref', 'record', 'serial')

    def __init__(self, ref, record, serial):
        self.ref, self.record, self.serial = ref, record, serial


class LUTQState:
    """Records of the LUT-Q and multiplier-less BN layers, and the current weight mode.

    Use the process's instance :data:`STATE`; layers register themselves when built.
    """

    def __init__(self):
        self._entries = {}  # id(scope dict) -> _Entry
        self._serial = itertools.count()
        self._modes = [WeightMode.TIED]
        self._index = None  # NdArray -> record, rebuilt on demand
        self._notes = {}  # layer name -> (weak reference to the layer's scope dict, note)

    # -- registration (used by the layers) ------------------------------------------------
    def _forget(self, key):
        self._entries.pop(key, None)
        self._index = None

    def register(self, record, scope=None):
        """Register (or rebind) the record of the layer built in ``scope``.

        Args:
            record (LUTQLayer or MLBNLayer): the new record; its ``name`` is replaced by the
                scope's full path.
            scope (dict): the layer's parameter-scope dict (the current one by default).

        Returns:
            the registered record.

        Raises:
            ValueError: if a live record of that scope has other settings (nothing changes).
        """
        scope = nn.parameter.get_current_parameter_scope() if scope is None else scope
        key = id(scope)
        old = self._entries.get(key)
        if old is not None and old.ref() is scope and self._is_live(old):
            self._check_same(old.record, record)
        path = scope_path(scope)
        if path is not None:
            record.name = path
        if old is not None and old.ref() is scope:
            old.record = record
        else:
            ref = weakref.ref(scope, lambda _, key=key: self._forget(key))
            self._entries[key] = _Entry(ref, record, next(self._serial))
        self._index = None
        return record

    @staticmethod
    def _check_same(old, new):
        if type(old) is not type(new):
            raise ValueError(f"{old.name}: this scope already holds a {type(old).__name__}; "
                             "give the new layer another name")
        if isinstance(old, LUTQLayer):
            if old.config.settings() != new.config.settings() or old.kind != new.kind:
                raise ValueError(
                    f"{old.name}: the layer exists with {old.config.describe()} ({old.kind}); it "
                    f"cannot be rebuilt with {new.config.describe()} ({new.kind}). Build it with "
                    "the same settings, give it another name, or clear its parameters first "
                    "(nn.clear_parameters())")
        elif old.eps != new.eps or tuple(old.axes) != tuple(new.axes):
            raise ValueError(
                f"{old.name}: the layer exists with eps={old.eps}, axes={list(old.axes)}; it "
                f"cannot be rebuilt with eps={new.eps}, axes={list(new.axes)}")

    def _is_live(self, entry):
        scope = entry.ref()
        if scope is None:
            return False
        rec = entry.record
        if scope_at(rec.name) is not scope:  # still attached to nnabla's tree under its name?
            return False
        for part in rec.PARTS:
            v = scope.get(part)
            if not isinstance(v, nn.Variable) or v.data != getattr(rec, part).data:
                return False
        return True

    def _records(self, cls, live=True):
        entries = sorted(self._entries.values(), key=lambda e: e.serial)
        return [e.record for e in entries if isinstance(e.record, cls)
                and (self._is_live(e) if live else e.ref() is not None)]

    # -- queries ----------------------------------------------------------------------------
    def lutq_layers(self, live=True):
        """LUT-Q layers in creation order.

        Args:
            live (bool): only layers whose scope still holds their parameters; False also lists
                stale ones (a loader replaced their parameters) while their scope exists.

        Returns:
            list: :class:`LUTQLayer` records.
        """
        return self._records(LUTQLayer, live)

    def mlbn_layers(self, live=True):
        """Multiplier-less BN layers in creation order (see :meth:`lutq_layers`).

        Returns:
            list: :class:`MLBNLayer` records.
        """
        return self._records(MLBNLayer, live)

    def find(self, variable):
        """The record (live or stale) one of whose parameters is ``variable``, or None.

        Args:
            variable (~nnabla.Variable): a parameter (or an unlinked copy sharing its data).

        Returns:
            LUTQLayer or MLBNLayer or None.
        """
        if self._index is None:
            index = {}
            for e in self._entries.values():
                if e.ref() is not None:
                    for part in e.record.PARTS:
                        index[getattr(e.record, part).data] = e.record
            self._index = index
        return self._index.get(variable.data)

    def part_of(self, variable):
        """``(record, part name)`` for a parameter of a LUT-Q/mlbn layer, else ``(None, None)``.

        Args:
            variable (~nnabla.Variable): a variable.

        Returns:
            tuple: e.g. ``(LUTQLayer, 'W')``.
        """
        rec = self.find(variable)
        if rec is None:
            return None, None
        for part in rec.PARTS:
            if getattr(rec, part).data == variable.data:
                return rec, part
        return None, None

    def layer(self, name):
        """The live LUT-Q or mlbn layer called ``name`` from the current parameter scope.

        Names follow one rule, that of ``nn.get_parameters()`` and :func:`nnabla_lutq.convert`:
        relative to the current parameter scope (inside ``nn.parameter_scope('net')``, ``'fc'``
        is the layer ``net/fc``), a layer outside it by its full name; with or without the
        function's own scope (``'fc/lutq_affine'`` or ``'fc'``).

        Args:
            name (str): e.g. ``'conv1'`` or ``'conv1/lutq_conv'``.

        Returns:
            LUTQLayer or MLBNLayer.

        Raises:
            ValueError: naming the known layers as seen from the current scope, if there is none.
        """
        prefix = current_path()

        def shown(full):
            return relative_name(full, prefix)
        known = self.lutq_layers() + self.mlbn_layers()
        for r in known:
            if name in (shown(r.name), shown(r.name).rsplit('/', 1)[0]):
                return r
        where = f" in the current parameter scope {prefix!r}" if prefix else ""
        raise ValueError(f"no LUT-Q or mlbn layer named {name!r}{where} (names are relative to "
                         f"it, as nn.get_parameters() shows them); known: "
                         f"{[shown(r.name) for r in known]}")

    # -- conversion notes -----------------------------------------------------------------
    def note_conversion(self, name, note):
        """Record what a conversion decided for a layer; the note lives as long as the layer.

        The note is held through a weak reference to the layer's parameter-scope dict: once
        nnabla drops that scope (``nn.clear_parameters()``) or another scope takes its name, the
        note is gone from :attr:`conversion_notes`. A layer without a parameter scope (a name
        the conversion made up) is not noted.

        Args:
            name (str): the layer's full name from the root scope, e.g. ``'net/fc'``.
            note (dict): ``function``, ``action`` and ``reason``.
        """
        scope = scope_at(name)
        if scope is None:
            return

        def forget(ref, name=name):
            if self._notes.get(name, (None,))[0] is ref:
                del self._notes[name]
        self._notes[name] = (weakref.ref(scope, forget), dict(note))

    @property
    def conversion_notes(self):
        """dict: full layer name -> what the last :func:`nnabla_lutq.convert` decided for it
        (``function``, ``action``, ``reason``), for the layers that still exist under that name;
        export writes the reasons of layers that stayed float."""
        return {name: note for name, (ref, note) in self._notes.items()
                if ref() is not None and scope_at(name) is ref()}

    # -- weight mode ----------------------------------------------------------------------
    @property
    def mode(self):
        """WeightMode: what LUT-Q layers built now compute with."""
        return self._modes[-1]

    @contextlib.contextmanager
    def weight_mode(self, mode):
        """Build graphs with the given :class:`WeightMode` inside the block.

        Args:
            mode (WeightMode or str): ``'tied'``, ``'float'`` or ``'tables'``.
        """
        try:
            mode = WeightMode(mode)
        except ValueError:
            raise ValueError(f"unknown weight mode {mode!r}; use one of "
                             f"{[m.value for m in WeightMode]}")
        self._modes.append(mode)
        try:
            yield mode
        finally:
            self._modes.pop()


#: The process's LUT-Q state.
STATE = LUTQState()


def weight_mode(mode):
    """Context manager: LUT-Q layers built inside compute with ``mode`` (see :class:`WeightMode`).

    Args:
        mode (WeightMode or str): ``'tied'``, ``'float'`` or ``'tables'``.
    """
    return STATE.weight_mode(mode)


def inference_mode():
    """Build deployment graphs: LUT-Q layers compute ``F.embed(A, d)`` without referencing ``W``.

    Graphs built inside this context contain no float weights, so they can be saved to .nnp with
    only ``d``, ``A`` and the other parameters (see :func:`nnabla_lutq.export_nnp`). Their outputs
    are identical to those of the training graph in test mode. Same as
    ``weight_mode(WeightMode.TABLES)``.

    Example:
        >>> with nnabla_lutq.inference_mode():
        ...     y = model(x, test=True)
    """
    return STATE.weight_mode(WeightMode.TABLES)


def lutq_layers():
    """Live LUT-Q layers, in creation order, wherever it is called from.

    Returns:
        list: :class:`LUTQLayer` records.
    """
    return STATE.lutq_layers()


def mlbn_layers():
    """Live multiplier-less BN layers, in creation order.

    Returns:
        list: :class:`MLBNLayer` records.
    """
    return STATE.mlbn_layers()
