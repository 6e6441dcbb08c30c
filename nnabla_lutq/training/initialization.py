# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""(Re)initializing look-up tables and loading float checkpoints into LUT-Q networks."""
import os

import h5py
import numpy as np
import nnabla as nn

from ..core.checks import check_finite
from ..core.fit import init_dictionary
from ..core.kinds import FLOAT_TO_LUTQ_SCOPES
from ..nn.state import STATE, LUTQLayer

__all__ = ['initialize', 'load_float_parameters', 'read_h5', 'FLOAT_TO_LUTQ_SCOPES']


def initialize(layers=None, iters=None):
    """Re-initialize ``d`` and ``A`` of LUT-Q layers from their current ``W``.

    Deterministic and near-optimal (:func:`nnabla_lutq.core.fit.init_dictionary`: the exact
    dynamic program of 1-D k-means under the layer's constraint, then Lloyd iterations). A layer
    with grouped tables (``group_size``) gets each group's table fitted to that group's weights
    (``d`` of shape ``(n_groups, K)``). Call it after loading or editing ``W``.

    Args:
        layers (list): :class:`~nnabla_lutq.nn.state.LUTQLayer` records or their names,
            relative to the current parameter scope as :func:`nnabla_lutq.convert` and
            ``nn.get_parameters()`` name them (``'fc'`` inside ``parameter_scope('net')`` is
            ``net/fc``; see :meth:`~nnabla_lutq.nn.state.LUTQState.layer`); all live LUT-Q
            layers by default (wherever it is called from).
        iters (int or None): bound on the Lloyd iterations after the dynamic program (None: to
            the fixed point).

    Returns:
        list: the names of the initialized layers.

    Raises:
        ValueError: for an unknown layer name or non-finite weights (nothing is changed then).
    """
    if layers is None:
        chosen = STATE.lutq_layers()
    else:
        chosen = []
        for x in layers:
            if isinstance(x, str):
                x = STATE.layer(x)
                if not isinstance(x, LUTQLayer):
                    raise ValueError(f"{x.name} is a multiplier-less BN layer, not a LUT-Q layer")
            chosen.append(x)
    new = []
    for s in chosen:
        w = s.W.data.get_data('r', np.float32)
        check_finite(w, f"{s.name}: W", "; cannot initialize its dictionary")
        new.append(init_dictionary(w, s.config, iters))
    for s, (d, a) in zip(chosen, new):
        s.d.data.cast(np.float32)[...] = d
        s.A.data.cast(np.int32)[...] = a
    return [s.name for s in chosen]


def read_h5(path):
    """Every dataset of a parameter file (``nn.save_parameters``' .h5) as name -> numpy array,
    without registering anything."""
    params = {}
    with h5py.File(path, 'r') as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                params[name] = obj[...]
        f.visititems(visit)
    return params


def _lutq_name(key, current):
    if key in current:
        return key
    parts = key.split('/')
    for i, p in enumerate(parts[:-1]):
        if p in FLOAT_TO_LUTQ_SCOPES:
            cand = '/'.join(parts[:i] + [FLOAT_TO_LUTQ_SCOPES[p]] + parts[i + 1:])
            if cand in current:
                return cand
    return None


def load_float_parameters(path, initialize_tables=True, iters=None):
    """Load a float parameter file into the LUT-Q network built in the current scope.

    The file is what ``nn.save_parameters('float.h5')`` wrote for the same network built with
    ``PF.convolution`` / ``PF.affine`` / ``PF.depthwise_convolution`` / ``PF.batch_normalization``.
    Scopes are mapped ``conv -> lutq_conv``, ``affine -> lutq_affine``,
    ``depthwise_conv -> lutq_depthwise_conv``, ``bn -> mlbn`` (names that exist unchanged are
    taken as they are), then every LUT-Q layer whose ``W`` was loaded gets ``d`` and ``A``
    initialized from it. Build the LUT-Q network first.

    Args:
        path (str): an nnabla ``.h5`` parameter file.
        initialize_tables (bool): initialize ``d``/``A`` of the loaded LUT-Q layers.
        iters (int or None): Lloyd iterations of that initialization (see :func:`initialize`).

    Returns:
        dict: file name -> LUT-Q parameter name of everything loaded.

    Raises:
        ValueError: if the file is missing or not .h5, or a parameter has no counterpart or
            another shape; nothing is loaded then.
    """
    if not str(path).endswith('.h5'):
        raise ValueError(f"{path}: expected an .h5 parameter file written by nn.save_parameters")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    current = nn.get_parameters(grad_only=False)
    if not current:
        raise ValueError("no parameters exist yet: build the LUT-Q network first, then load")
    try:
        data = read_h5(path)
    except OSError as e:
        raise ValueError(f"{path}: not a readable .h5 parameter file ({e})")
    mapping, problems = {}, []
    for key, arr in data.items():
        target = _lutq_name(key, current)
        if target is None:
            problems.append(f"{key} has no counterpart in the current network")
        elif current[target].shape != arr.shape:
            problems.append(f"{key} {arr.shape} does not fit {target} {current[target].shape}")
        else:
            mapping[key] = target
    if problems:
        raise ValueError(f"{path}: cannot load: " + '; '.join(problems[:10]) +
                         ('' if len(problems) <= 10 else f' (+{len(problems) - 10} more)'))
    for key, target in mapping.items():
        var = current[target]
        var.data.cast(data[key].dtype)[...] = data[key]
    if initialize_tables:
        loaded = set(mapping.values())
        loaded_data = {current[t].data for t in loaded}
        layers = [s for s in STATE.lutq_layers() if s.W.data in loaded_data]
        initialize(layers, iters)
    return mapping
