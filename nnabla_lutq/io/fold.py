# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Constant folding of an .nnp at the protobuf level: :func:`fold_constants` replaces every
subgraph that depends on parameters only (for example the power-of-two scale ``a`` and bias ``b``
of multiplier-less BN, or with ``dense=True`` the tied weights ``d[A]``, one table or grouped) by
a stored parameter with the values nnabla computes for it. Used on files (ONNX and NNB export);
:func:`nnabla_lutq.export_nnp` folds the live graph instead."""
import os
import tempfile

import numpy as np
import nnabla as nn

from .lookup import find_lookups, inner_outputs, proto_facts
from .nnp import loaded_network, sync_executor_parameters, write_nnp

__all__ = ['fold_constants', 'common_prefix', 'folded_use', 'folded_name']


def _consumers(net):
    cons = {}
    for f in net.function:
        for i in f.input:
            cons.setdefault(i, []).append(f)
    return cons


def common_prefix(names):
    """The scope (without the last component) that every name in ``names`` shares."""
    parts = [n.split('/')[:-1] for n in names]
    prefix = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        prefix.append(level[0])
    return '/'.join(prefix)


def _evaluate(nnp, net_name, names):
    """Values of variables ``names`` of a network, computed by nnabla (batch size 1) in float32
    whatever the current type config: what is folded into stored parameters (e.g. the ±2^k scale
    of multiplier-less BN) is then exactly what :func:`nnabla_lutq.fold_mlbn` computes."""
    from ..nn.functions import float32_context
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, 'eval.nnp')
        write_nnp(path, nnp)
        with nn.context_scope(float32_context()), loaded_network(path, net_name) as net:
            values = {}
            for n in names:
                v = net.variables[n]
                v.forward()
                values[n] = v.d.copy()
    return values


def folded_use(consumers):
    """How data uses a folded value, from the types of the functions that read it with data:
    ``'a'`` multiplied (``Mul2``/``Div2``), ``'b'`` added (``Add2``/``Sub2``), ``'c'`` otherwise
    (multiplier-less BN becomes ``x * a + b``)."""
    return 'a' if consumers & {'Mul2', 'Div2'} else 'b' if consumers & {'Add2', 'Sub2'} else 'c'


def folded_name(sources, consumers, used, table_a=None):
    """The stored name of a folded value (the one naming rule of file and live-graph folding).

    Args:
        sources (set): names of the parameters it is computed from.
        consumers (set): types of the functions that read it with data (:func:`folded_use`).
        used (set): names taken so far; the new name is added.
        table_a (str or None): for the tied weights ``d[A]`` of a look-up table, the name of
            ``A``.

    Returns:
        str: ``<layer>/W`` for the tied weights of ``<layer>/A``; else the common scope of the
        sources (``folded`` if none) plus ``/a``, ``/b`` or ``/c``; ``_1``, ``_2``, ... appended
        to a name already taken.
    """
    if table_a is not None and table_a.endswith('/A'):
        name = table_a[:-2] + '/W'
    else:
        name = f"{common_prefix(sorted(sources)) or 'folded'}/{folded_use(consumers)}"
    base, k = name, 1
    while name in used:
        name, k = f"{base}_{k}", k + 1
    used.add(name)
    return name


def fold_constants(nnp, dense=False):
    """Replace subgraphs that depend on parameters only by stored parameters.

    A variable computed only from parameters and read by a function that also depends on data is
    evaluated with nnabla and stored as a parameter; the functions that computed it (and the
    parameters only they read) are removed. Names: the tied weights ``d[A]`` of a look-up table
    (one table or grouped, :mod:`nnabla_lutq.io.lookup`) become ``<layer>/W`` (``A`` =
    ``<layer>/A``); other values take the common scope of the parameters
    they come from plus ``/a`` when multiplied with data, ``/b`` when added (multiplier-less BN
    becomes ``x * a + b`` with ``a`` a power of two), ``/c`` otherwise.

    Args:
        nnp (Nnp): the model (not modified).
        dense (bool or collection): fold the look-up tables too (``d[A]`` stored as float
            weights); a collection of function types (e.g. ``{'Affine'}``) folds only the tables
            those functions read. By default every look-up (``Embed(A, d)``, the ``Gather`` of
            grouped tables and the functions in front of it) is kept.

    Returns:
        Nnp: the rewritten model.
    """
    out = nnp.copy()
    used_names = set(out.params)
    for net in out.proto.network:
        params = out.params
        facts = proto_facts(net)
        lookups = find_lookups(facts, lambda n: (params[n].dtype, params[n].shape)
                               if n in params else None)
        table_of = {lk.output: lk.a for lk in lookups}
        if dense is not True and dense is not False:  # fold only the tables the types read
            readers = _consumers(net)
            lookups = [lk for lk in lookups
                       if not any(g.type in dense for g in readers.get(lk.output, []))]
        keep = set() if dense is True else inner_outputs(lookups, facts)
        const = {v.name for v in net.variable if v.type == 'Parameter' and v.name in params}
        sources = {n: {n} for n in const}
        producer = {}
        for f in net.function:  # functions are stored in topological order
            for o in f.output:
                producer[o] = f
            if f.input and all(i in const for i in f.input) and f.output[0] not in keep:
                src = set().union(*(sources[i] for i in f.input))
                for o in f.output:
                    const.add(o)
                    sources[o] = src
        cons = _consumers(net)
        frontier = [v for v in const if v in producer and any(
            not all(i in const for i in g.input) or g.output[0] in keep for g in cons.get(v, []))]
        if not frontier:
            continue
        values = _evaluate(out, net.name, sorted(frontier))
        rename = {}
        for v in sorted(frontier):
            f = producer[v]
            table_a = table_of.get(v)
            uses = {g.type for g in cons[v] if not all(i in const for i in g.input)}
            name = folded_name(sources[v], uses, used_names, table_a)
            rename[v] = name
            out.params[name] = values[v].astype(np.float32)
            out.need_grad[name] = False
        # drop the functions whose outputs are all constant, then unused variables/parameters
        dropped = [f for f in net.function if all(o in const for o in f.output)]
        for f in dropped:
            net.function.remove(f)
        for f in net.function:
            for j, i in enumerate(f.input):
                if i in rename:
                    f.input[j] = rename[i]
        for v in net.variable:
            if v.name in rename:
                v.name = rename[v.name]
                v.type = 'Parameter'
        read = {i for f in net.function for i in f.input} | {o for f in net.function
                                                               for o in f.output}
        for v in [v for v in net.variable if v.name not in read]:
            net.variable.remove(v)
    live = {v.name for net in out.proto.network for v in net.variable if v.type == 'Parameter'}
    for k in [k for k in out.params if k not in live]:
        del out.params[k]
    sync_executor_parameters(out)
    return out
