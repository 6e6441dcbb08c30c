# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The one solver-state file format of the wrapping solvers (:class:`~nnabla_lutq.LUTQSolver`,
:class:`~nnabla_lutq.LCSolver`): nnabla's own state file plus the wrapper's own state."""
import hashlib
import json
import os
from dataclasses import dataclass, field

import h5py

__all__ = ['SolverStateError', 'SavedState', 'state_files', 'read_own_state', 'write_own_state',
           'state_names', 'state_arrays', 'state_dtypes', 'differences', 'some_names',
           'one_line', 'unreadable', 'LC_GROUP_V1', 'STATE_GROUP', 'STATE_SIDECAR_SUFFIX', 'STATE_FORMAT']

# -- solver-state files ---------------------------------------------------------------------------
#
# One format for every wrapper (LUTQSolver, LCSolver): nnabla's own state file (.h5 or .protobuf,
# written and read by the wrapped solver) plus the wrapper's own state in an HDF5 group
# STATE_GROUP -- inside the .h5 file itself, or in the file <path>.lutq.h5 beside a .protobuf one,
# which records the SHA-256 of the .protobuf it belongs to. The group holds the attributes
# `format`, `solver` (the wrapper's class name), `settings` and `counters` (JSON) and one dataset
# per array (e.g. `lambda/<layer>`), stored with their dtype and shape, so a resume is exact.

#: the HDF5 group of a wrapper's own state
STATE_GROUP = 'nnabla_lutq'
#: beside ``<path>.protobuf``, the wrapper's own state is the HDF5 file ``<path>.protobuf.lutq.h5``
STATE_SIDECAR_SUFFIX = '.lutq.h5'
#: version of the group's layout
STATE_FORMAT = 2

#: earlier layouts still read: LCSolver's group / sidecar suffix, nnabla-lutq 0.1's file attribute
LC_GROUP_V1, _LC_SIDECAR_V1, _ATTR_V0 = 'nnabla_lutq_lc', '.lc.h5', 'nnabla_lutq'


class SolverStateError(ValueError):
    """A solver-state file that cannot be loaded: missing, damaged, of another kind, or saved
    for other layers or settings. The message is one line naming the file."""


def some_names(names, n=3):
    return ', '.join(names[:n]) + (', ...' if len(names) > n else '')


def one_line(e):
    return ' '.join(str(e).split()) or type(e).__name__


def unreadable(path, e):
    """The SolverStateError for a file that does not parse."""
    return SolverStateError(f"{path}: not a readable solver-state file ({type(e).__name__}: "
                            f"{one_line(e)}); save the states again or resume from another "
                            "checkpoint")


def state_files(path):
    """``(nnabla's state file, the HDF5 file of the wrapper's own state)`` for a state path.

    Args:
        path (str or os.PathLike): ``*.h5`` or ``*.protobuf``.

    Returns:
        tuple: two paths, equal for ``.h5``.

    Raises:
        ValueError: for another file name.
    """
    path = os.fspath(path)
    if path.endswith('.h5'):
        return path, path
    if path.endswith('.protobuf'):
        return path, path + STATE_SIDECAR_SUFFIX
    raise ValueError(f"{path}: solver states are saved in nnabla's formats; name the file "
                     "*.h5 or *.protobuf")


def _sha256(path):
    with open(path, 'rb') as f:  # nnabla reads a .protobuf state file whole too
        return hashlib.sha256(f.read()).hexdigest()


@dataclass
class SavedState:
    """A wrapper's own state as stored beside nnabla's solver states.

    Attributes:
        solver (str): the class that saved it, e.g. ``'LCSolver'``.
        settings (dict): the settings it must be loaded with (JSON values).
        counters (dict): scalars (JSON values), e.g. update counts.
        arrays (dict): name -> numpy array.
        file (str): the HDF5 file it was read from.
    """
    solver: str
    settings: dict
    counters: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)
    file: str = ''


def write_own_state(path, state):
    """Write ``state`` (a :class:`SavedState`) for nnabla's state file ``path``, already written.

    Args:
        path (str): the ``.h5`` or ``.protobuf`` file the wrapped solver has just saved.
        state (SavedState): what to store beside it.
    """
    path, own = state_files(path)
    with h5py.File(own, 'a' if own == path else 'w') as f:
        for name in (STATE_GROUP, LC_GROUP_V1):
            if name in f:
                del f[name]
        g = f.create_group(STATE_GROUP)
        g.attrs['format'] = STATE_FORMAT
        g.attrs['solver'] = state.solver
        g.attrs['settings'] = json.dumps(state.settings)
        g.attrs['counters'] = json.dumps(state.counters)
        if own != path:
            g.attrs['states_sha256'] = _sha256(path)
        for key, value in state.arrays.items():
            g.create_dataset(key, data=value)


def _read_group(g, solver, own):
    arrays = {}
    g.visititems(lambda k, v: arrays.__setitem__(k, v[()]) if isinstance(v, h5py.Dataset)
                 else None)
    solver = g.attrs.get('solver', solver)
    return SavedState(solver.decode() if isinstance(solver, bytes) else str(solver),
                      json.loads(g.attrs['settings']), json.loads(g.attrs.get('counters', '{}')),
                      arrays, own)


def read_own_state(path):
    """The wrapper state stored with nnabla's state file ``path``, or None if it has none.

    None means a plain solver's file: an ``.h5`` without the group, or a ``.protobuf`` without an
    own-state file or rewritten since that file was written (the recorded SHA-256 differs).
    Files of the earlier layouts (LCSolver's group ``nnabla_lutq_lc`` or file ``<path>.lc.h5``,
    nnabla-lutq 0.1's file attribute) are read too.

    Args:
        path (str): ``.h5`` or ``.protobuf``.

    Returns:
        SavedState or None.

    Raises:
        SolverStateError: the file or the own-state file is missing or unreadable.
    """
    path, own = state_files(path)
    if not os.path.isfile(path):
        raise SolverStateError(f"{path}: no such solver-state file")
    candidates = [(own, STATE_GROUP)]
    if own == path:
        candidates.append((own, LC_GROUP_V1))
    else:
        candidates.append((path + _LC_SIDECAR_V1, LC_GROUP_V1))
    for file, group in candidates:
        if not os.path.isfile(file):
            continue
        try:
            with h5py.File(file, 'r') as f:
                g = f.get(group)
                if isinstance(g, h5py.Group):
                    digest = g.attrs.get('states_sha256')
                    if file != path and digest is not None and digest != _sha256(path):
                        return None  # a plain solver rewrote the .protobuf since
                    return _read_group(g, 'LUTQSolver' if group == STATE_GROUP else 'LCSolver',
                                       file)
                if group == STATE_GROUP and _ATTR_V0 in f.attrs:  # the layers are what is kept
                    legacy = json.loads(f.attrs[_ATTR_V0])
                    return SavedState('LUTQSolver', {'layers': legacy.get('layers')}, file=file)
        except (OSError, KeyError, ValueError, TypeError) as e:
            raise unreadable(file, e) from None
    return None


def state_names(path):
    """The parameter names nnabla's state file ``path`` holds states for (parsed as nnabla's
    ``load_states`` parses it, without the wrapper's group)."""
    try:
        if path.endswith('.protobuf'):
            from nnabla.utils import nnabla_pb2
            optimizer = nnabla_pb2.Optimizer()
            with open(path, 'rb') as f:
                optimizer.MergeFromString(f.read())
            return set(optimizer.solver.states)
        names = set()
        with h5py.File(path, 'r') as f:
            def visit(name, obj):
                if isinstance(obj, h5py.Dataset) and '/' in name:
                    names.add(name[:name.rindex('/')])
            for key in f:
                if key not in (STATE_GROUP, LC_GROUP_V1):
                    f[key].visititems(lambda n, o, key=key: visit(f"{key}/{n}", o))
        return names
    except Exception as e:  # protobuf DecodeError, h5py OSError, ...
        raise unreadable(path, e) from None


def state_arrays(solver):
    """``((parameter, state name), Variable)`` of every state array of an nnabla solver (none for
    a wrapper without ``get_states``)."""
    get = getattr(solver, 'get_states', None)
    if get is None:
        return []
    return [((k, n), v) for k, st in get().items() for n, v in st.pstate.items()]


def state_dtypes(solver):
    """``(parameter, state name) -> dtype`` of the state arrays that hold data."""
    out = {}
    for k, v in state_arrays(solver):
        try:
            out[k] = v.data.dtype
        except RuntimeError:  # not initialized before the first update
            pass
    return out


def differences(saved, mine):
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
