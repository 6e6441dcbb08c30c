# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The one recognizer of look-up tables in a graph: the functions that compute the tied weights
``d[A]`` of a LUT-Q layer from a stored integer ``A`` and a stored float table ``d``.

Every reader uses it: export and folding (on the live graph and on a file), packing, the ONNX
and NNB writers, the description of a file written without one and the integer executor. The
graphs it recognizes are the ones the LUT-Q layers build (:mod:`nnabla_lutq.nn.layers`), as
:func:`nnabla_lutq.export_nnp` stores them:

* one table, ``d`` of shape ``(K,)``: ``Embed(A, d)``;
* grouped tables, ``d`` of shape ``(G, K)``, one per ``gs`` output channels (``O = G·gs``):
  the table with one row per output channel, ``T = d`` when ``gs = 1``, else
  ``Reshape(Broadcast(Reshape(d, (G, 1, K)), (G, gs, K)), (O, K))``; then
  ``Gather(T, A, axis=1, batch_dims=1)`` when the output axis of ``W`` is 0 (convolutions),
  or ``Transpose(Gather(T, Transpose(A, p), axis=1, batch_dims=1), p⁻¹)`` with ``p[0]`` the
  output axis (affine layers: the last axis).

A graph is read as :class:`Fact` records (type, inputs, outputs, arguments), so one rule serves
files (:func:`proto_facts`) and live nnabla graphs (:func:`graph_facts`).
"""
from collections import namedtuple

import numpy as np

from ..core.config import LUTQConfig, group_ids

__all__ = ['Fact', 'TableLookup', 'find_lookups', 'proto_facts', 'graph_facts',
           'table_lookups', 'inner_outputs', 'group_ids']

#: one function of a graph: its type, input and output keys (names in a file, Variables in a live
#: graph) and its arguments (``axis``, ``batch_dims``, ``axes``, ``shape`` where it has them)
Fact = namedtuple('Fact', 'type inputs outputs args')

#: the protobuf parameter fields whose arguments the recognizer reads
_PROTO_ARGS = {'Gather': ('gather_param', ('axis', 'batch_dims')),
               'Transpose': ('transpose_param', ('axes',)),
               'Reshape': ('reshape_param', ('shape',)),
               'Broadcast': ('broadcast_param', ('shape',))}


class TableLookup(namedtuple('TableLookup', 'output a d out_axis group_size n_groups n_values '
                                            'shape functions')):
    """One look-up ``Q = d[A]`` of a graph.

    Attributes:
        output: the key (name or Variable) holding ``d[A]`` (shape of ``A``).
        a, d: the keys of the stored indices and table.
        out_axis (int): the output-channel axis of ``A`` (0 for ``Embed``).
        group_size (int or None): output channels per table; None for one table (``Embed``).
        n_groups (int): G, the number of tables (1 for ``Embed``).
        n_values (int): K.
        shape (tuple): the shape of ``A``.
        functions (tuple): indices (into the facts) of the functions computing ``d[A]``, in
            order; the last one produces :attr:`output`.
    """
    __slots__ = ()

    @property
    def grouped(self):
        """bool: ``d`` has one row per group (``(G, K)``)."""
        return self.group_size is not None

    @property
    def config(self):
        """LUTQConfig: the table layout (K, groups, shape, output axis) for
        :meth:`~nnabla_lutq.core.config.LUTQConfig.lookup` and ``group_view`` (the dictionary
        kind is not known from the graph and reads ``'free'``)."""
        n = int(np.prod(self.shape, dtype=np.int64))
        if not self.grouped:
            return LUTQConfig(self.n_values, 'free', None, 0.0, None, n, 0)
        return LUTQConfig(self.n_values, 'free', None, 0.0, None, n, 0, self.group_size,
                          tuple(self.shape), self.out_axis)

    def values(self, d, a):
        """The tied weights ``d[A]`` on the host (float32, shape of ``A``)."""
        return self.config.lookup(d, a)

    def group_ids(self):
        """numpy.ndarray: the group (table row) of every weight, shape of ``A`` (int64)."""
        return group_ids(self.shape, self.out_axis, self.group_size)


def _arg_list(v):
    return tuple(int(x) for x in v)


def proto_facts(net):
    """The :class:`Fact` records of a protobuf network (names as keys)."""
    out = []
    for f in net.function:
        args = {}
        field, names = _PROTO_ARGS.get(f.type, (None, ()))
        if field is not None:
            p = getattr(f, field)
            for n in names:
                v = getattr(p, n)
                args[n] = _arg_list(v.dim) if n == 'shape' else (
                    _arg_list(v) if n == 'axes' else int(v))
        out.append(Fact(f.type, list(f.input), list(f.output), args))
    return out


def graph_facts(functions):
    """The :class:`Fact` records of live nnabla functions (Variables as keys)."""
    return [Fact(f.info.type_name, list(f.inputs), list(f.outputs), dict(f.info.args))
            for f in functions]


def _shape_arg(fact):
    return tuple(int(x) for x in fact.args.get('shape', ()))


def find_lookups(facts, spec):
    """The look-up tables of a graph (see the module documentation for the forms).

    Args:
        facts (list): :class:`Fact` of every function, inputs before consumers.
        spec (callable): key -> ``(numpy dtype, shape)`` of a stored parameter, None for any
            other key.

    Returns:
        list: :class:`TableLookup`, in the order of the functions that produce them.
    """
    producer = {o: i for i, f in enumerate(facts) for o in f.outputs}
    readers = {}
    for i, f in enumerate(facts):
        for k in f.inputs:
            readers.setdefault(k, []).append(i)

    def stored(key, kind):
        s = spec(key)
        return s if s is not None and np.issubdtype(np.dtype(s[0]), kind) else None

    def made_by(key, type_name):
        i = producer.get(key)
        return (i, facts[i]) if i is not None and facts[i].type == type_name \
            and len(facts[i].inputs) == 1 else (None, None)

    out = []
    for i, f in enumerate(facts):
        if f.type == 'Embed' and len(f.inputs) == 2:
            a, d = f.inputs
            sa, sd = stored(a, np.integer), spec(d)
            if sa is not None and sd is not None and len(sd[1]) == 1:
                out.append(TableLookup(f.outputs[0], a, d, 0, None, 1, int(sd[1][0]),
                                       tuple(sa[1]), (i,)))
        elif f.type == 'Gather' and len(f.inputs) == 2 and f.args.get('axis') == 1 \
                and f.args.get('batch_dims') == 1:
            found = _grouped(i, f, facts, stored, made_by, readers)
            if found is not None:
                out.append(found)
    return out


def _grouped(i, f, facts, stored, made_by, readers):
    """The grouped :class:`TableLookup` whose ``Gather`` is ``facts[i]``, or None."""
    table, idx = f.inputs
    chain, perm = [], None
    a, sa = idx, stored(idx, np.integer)
    if sa is None:
        j, t = made_by(idx, 'Transpose')
        if t is None or stored(t.inputs[0], np.integer) is None:
            return None
        a, sa = t.inputs[0], stored(t.inputs[0], np.integer)
        perm = tuple(t.args.get('axes', ()))
        if sorted(perm) != list(range(len(sa[1]))):
            return None
        chain.append(j)
    shape = tuple(int(n) for n in sa[1])
    if not shape:
        return None
    axis = perm[0] if perm else 0
    n_out = shape[axis]
    sd = stored(table, np.floating)
    if sd is not None and len(sd[1]) == 2:
        d, (g, k), gs = table, sd[1], 1
    else:
        j2, r2 = made_by(table, 'Reshape')
        j1, b = made_by(r2.inputs[0], 'Broadcast') if r2 else (None, None)
        j0, r1 = made_by(b.inputs[0], 'Reshape') if b else (None, None)
        sd = stored(r1.inputs[0], np.floating) if r1 else None
        if sd is None or len(sd[1]) != 2:
            return None
        d, (g, k) = r1.inputs[0], sd[1]
        gs = _shape_arg(b)[1] if len(_shape_arg(b)) == 3 else 0
        if (_shape_arg(r1), _shape_arg(b), _shape_arg(r2)) != ((g, 1, k), (g, gs, k),
                                                                (g * gs, k)):
            return None
        chain += [j0, j1, j2]
    if g * gs != n_out or g < 1:
        return None
    chain.append(i)
    output = f.outputs[0]
    if perm is not None and perm != tuple(range(len(perm))):
        back = tuple(int(x) for x in np.argsort(perm))
        users = readers.get(output, [])
        if len(users) != 1 or facts[users[0]].type != 'Transpose' or \
                tuple(facts[users[0]].args.get('axes', ())) != back:
            return None
        chain.append(users[0])
        output = facts[users[0]].outputs[0]
    return TableLookup(output, a, d, int(axis), int(gs), int(g), int(k), shape,
                       tuple(sorted(chain)))


def table_lookups(net, params):
    """The look-up tables of a network of a file (:func:`find_lookups` with names as keys).

    Args:
        net: a network of the protobuf.
        params (dict): parameter name -> array.

    Returns:
        list: :class:`TableLookup` (``functions`` index ``net.function``).
    """
    def spec(name):
        v = params.get(name)
        return None if v is None else (v.dtype, v.shape)
    return find_lookups(proto_facts(net), spec)


def inner_outputs(lookups, facts):
    """The keys computed inside the look-ups (the tied weights included): the outputs of every
    function of every look-up, what folding keeps as it is to keep the tables.

    Args:
        lookups (list): :class:`TableLookup` of ``facts``.
        facts (list): the graph's :class:`Fact` records.

    Returns:
        set: the keys.
    """
    return {o for lk in lookups for i in lk.functions for o in facts[i].outputs}
