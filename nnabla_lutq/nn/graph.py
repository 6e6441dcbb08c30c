# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Walking and rebuilding nnabla graphs: the function order, the outputs a ``GraphConverter``
visits, and the base of this package's graph modifiers."""
from nnabla.experimental.graph_converters import FunctionModifier

from .host import copy_host_function

__all__ = ['graph_functions', 'terminal_outputs', 'GraphModifier', 'follow_unlinked']


def graph_functions(outputs):
    """Functions computing ``outputs``, each once, inputs before consumers."""
    order, seen = [], set()
    stack = [(o.parent, False) for o in reversed(outputs) if o.parent is not None]
    while stack:
        f, expanded = stack.pop()
        if expanded:
            order.append(f)
            continue
        if f in seen:
            continue
        seen.add(f)
        stack.append((f, True))
        for v in reversed(f.inputs):
            p = v.parent
            if p is not None and p not in seen:
                stack.append((p, False))
    return order


def terminal_outputs(first):
    """Outputs of the graph that ``GraphConverter`` is visiting, found from its first function:
    the inputs of the sinks (else the unconsumed variables) reachable from it."""
    seen, stack, sinks, ends = set(), [first], [], []
    while stack:
        f = stack.pop()
        if f in seen:
            continue
        seen.add(f)
        consumed = False
        for o in f.outputs:
            refs = o.function_references
            if refs:
                consumed = True
                stack.extend(refs)
            else:
                ends.append(o)
        if not consumed and f.info.type_name == 'Sink':
            sinks.append(f)
    if sinks:
        return [v for s in sinks for v in s.inputs]
    return ends


class GraphModifier(FunctionModifier):
    """nnabla's ``FunctionModifier`` with what every rewrite here needs.

    * The graph's own input variables are kept (nnabla copies them unlinked), so data set on
      them and the names export gives them work as before.
    * Functions without inputs (``F.constant``, random generators) are rebuilt as they are
      (nnabla's base class indexes their first input and fails).
    * The host functions of training graphs (:mod:`nnabla_lutq.nn.host`) are copied with their
      settings (nnabla's base class looks functions up in ``nnabla.functions`` by name).
    * :attr:`replaced` maps the array of every variable of the visited graph to the variable
      that replaces it, so variables sharing that array (``get_unlinked_variable()`` copies)
      can follow (:func:`follow_unlinked`).
    """

    def __init__(self):
        super().__init__()
        self.replaced = {}

    def _copy_inputs(self, inputs):
        return list(inputs)

    def _modify_as_same(self, f, inputs):
        return copy_host_function(f, inputs) or super()._modify_as_same(f, inputs)

    def __call__(self, f):
        if not f.inputs and f not in self._map_func_inputs:
            self._map_func_inputs[f] = []
            o = self.modify(f, []) or self._modify_as_same(f, [])
            self.outputs = list(o) if isinstance(o, (list, tuple)) else [o]
            self._link(f)
            return
        super().__call__(f)
        self._link(f)

    def _link(self, f):
        for old, new in zip(f.outputs, self.outputs):
            if new is not None and old.data != new.data:
                self.replaced[old.data] = new
            if not f.inputs:  # the base class links the consumers of functions with inputs
                for func in old.function_references:
                    if len(self._map_func_inputs[func]) == 0:
                        self._map_func_inputs[func] = [None] * len(func.inputs)
                    for i, inp in enumerate(func.inputs):
                        if old == inp:
                            self._map_func_inputs[func][i] = new

    def __finish__(self):
        self.outputs = None  # do not keep the converter's sink (and the graph) alive


def follow_unlinked(outputs, replaced, parameters=()):
    """Make the leaves of the graphs of ``outputs`` that share an array with a replaced variable
    (``v.get_unlinked_variable()`` of a variable a rewrite replaced, the GAN idiom) read the
    replacement: they would otherwise read the old graph's array, which nothing computes any
    more.

    Args:
        outputs (list): the rewritten graph's outputs.
        replaced (dict): old array -> new variable (:attr:`GraphModifier.replaced`).
        parameters (collection): arrays of parameters (never rebound).

    Returns:
        int: how many leaves now follow.
    """
    n = 0
    for f in graph_functions(outputs):
        for v in f.inputs:
            if v.parent is None and v.data in replaced and v.data not in parameters:
                new = replaced[v.data]
                while new.data in replaced and replaced[new.data] is not new:
                    new = replaced[new.data]
                if new.shape == v.shape:
                    v.data = new.data
                    n += 1
    return n
