# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The planner: finds the layers of a graph and decides what a conversion does with each, before
anything changes (every error is raised here; the decisions themselves: :mod:`.decide`)."""
import inspect
from collections import OrderedDict

import nnabla.parametric_functions as PF

from ...core.kinds import BN_FUNCTIONS, BY_FUNCTION, BY_KIND, LAYER_SCOPES, MLBN_SCOPE
from .. import layers
from ..params import current_path, names_by_array, relative_name
from ..state import STATE, LUTQLayer, MLBNLayer
from ..graph import graph_functions
from .decide import GROUPS, Decisions
from .plan import ConversionPlan, LayerDecision

__all__ = ['Planner', 'make_plan']

_BN_PARTS = MLBNLayer.PARTS  # beta, gamma, mean, var
#: the BN functions PF.mlbn replaces (a fused one: mlbn, then + z, then ReLU)
_MLBN_FUNCTIONS = ('BatchNormalization', 'FusedBatchNormalization')
#: scopes of nnabla's parametric functions and ours (stripped from the names of float layers)
_PF_SCOPES = frozenset(getattr(getattr(PF, n), '__scope_name__', None) for n in dir(PF)) \
    - {None} | LAYER_SCOPES
#: how far above a computed weight the LUT-Q parameters of an existing layer are looked for
_SEARCH_DEPTH = 6


def _accepts(func, arg):
    return arg in inspect.signature(func).parameters


def _split(name):
    scope, _, last = name.rpartition('/')
    return scope, last


def _join(*parts):
    return '/'.join(p for p in parts if p)


def _non_singleton_dims(shape):
    return sum(1 for s in shape if s > 1)


class _Layer:
    """A layer found in the graph while planning (internal)."""

    def __init__(self, name, function, group, n_weights, shape=None):
        self.name = name            # display name (relative to the current parameter scope)
        self.function = function
        self.group = group          # 'weight', 'bn' or 'other'
        self.n_weights = n_weights
        self.shape = shape          # of a weight layer's W (its groups are cut from it)
        self.functions = []         # functions of the graph computing with it
        self.rebuild = []           # functions to replace by the LUT-Q/mlbn function
        self.record = None          # live record of an existing layer
        self.problem = None         # why it cannot be converted (float)
        self.scope = None           # absolute scope the parametric function is called in
        self.target = None          # that function's own scope (scope/lutq_conv), absolute
        self.moves = OrderedDict()  # NdArray of a parameter -> its new absolute name
        self.renames = {}           # old name -> new name (relative, for the decision)
        self.biases = set()
        self.action = 'float'
        self.reason = ''
        self.config = None
        self.layer_config = None
        self.unexpected = False
        self.bn_args = None

    def decision(self):
        return LayerDecision(self.name, self.function, self.action, self.reason, self.config,
                             self.n_weights, len(self.functions), dict(self.renames),
                             self.unexpected)


def _strip_scope(scope, own):
    """A parameter scope without the parametric function's own scope ``own`` (a name or set)."""
    parent, last = _split(scope)
    return parent if (last == own if isinstance(own, str) else last in own) else scope


class Planner(Decisions):
    """Finds the layers of a graph and decides what happens to each (changes nothing)."""

    def __init__(self, config, overrides, min_weights, mlbn, groups=GROUPS):
        self.groups = frozenset(groups)
        self.config = config
        self.overrides = overrides
        self.min_weights = min_weights
        self.mlbn = mlbn
        self.names = names_by_array()
        self.layers = OrderedDict()   # key -> _Layer
        self.anonymous = 0
        self.live = {id(r) for r in STATE.lutq_layers() + STATE.mlbn_layers()}
        self.prefix = current_path()

    # -- names and lookups ------------------------------------------------------------------
    def rel(self, name):
        """A name from the root as ``nn.get_parameters()`` shows it in the current scope."""
        return relative_name(name, self.prefix)

    def display(self, layer_scope, own):
        """The layer name of an absolute layer scope (``own``: the function's own scope)."""
        return self.rel(layer_scope) if layer_scope and layer_scope != self.prefix else own

    def part_of(self, v):
        """``(record, part)`` of a live LUT-Q/mlbn layer that ``v`` is a parameter of."""
        if v.parent is not None:
            return None, None
        rec, part = STATE.part_of(v)
        if rec is None or id(rec) not in self.live:
            return None, None
        return rec, part

    def param_name(self, v):
        """The absolute registered name of a parameter variable, or None."""
        if v.parent is not None:
            return None
        names = self.names.get(v.data)
        return names[0] if names else None

    def layer(self, key, name, function, group, n_weights, shape=None):
        lay = self.layers.get(key)
        if lay is None:
            lay = self.layers[key] = _Layer(name, function, group, n_weights, shape)
        return lay

    def above(self, v, found):
        """The first ``found(leaf)`` that is not None among the leaves a few functions above."""
        frontier = [v]
        for _ in range(_SEARCH_DEPTH):
            nxt = []
            for u in frontier:
                if u.parent is None:
                    hit = found(u)
                    if hit is not None:
                        return hit
                else:
                    nxt.extend(u.parent.inputs)
            if not nxt:
                break
            frontier = nxt
        return None

    def record_above(self, v, cls):
        """The record of class ``cls`` whose parameters compute ``v``."""
        return self.above(v, lambda u: self.part_of(u)[0] if isinstance(self.part_of(u)[0], cls)
                          else None)

    def anonymous_name(self, f):
        self.anonymous += 1
        return f"{f.info.type_name}#{self.anonymous}"

    def float_layer(self, f, t, group, problem, n_weights, name=None):
        """A layer of one function that stays float because of ``problem``."""
        lay = self.layer(('float', f), name or self.anonymous_name(f), t, group, n_weights)
        lay.functions.append(f)
        lay.problem = problem
        return lay

    def existing(self, rec):
        """The layer entry of an existing LUT-Q or mlbn record."""
        if isinstance(rec, LUTQLayer):
            t = BY_KIND[rec.kind].function
            lay = self.layer(rec.W.data, self.display(_split(rec.name)[0], rec.kind), t, 'weight',
                             rec.W.size, tuple(rec.W.shape))
        else:
            lay = self.layer(rec.beta.data, self.display(_split(rec.name)[0], 'bn'),
                             'BatchNormalization', 'bn', rec.gamma.size)
        lay.record = rec
        lay.scope, lay.target = _split(rec.name)[0], rec.name
        return lay

    # -- collection -------------------------------------------------------------------------
    def collect(self, functions):
        for f in functions:
            t = f.info.type_name
            if t in BY_FUNCTION and BY_FUNCTION[t].convertible:
                if 'weight' in self.groups:
                    self.weight_function(f, t)
            elif t in BN_FUNCTIONS:
                if 'bn' in self.groups:
                    self.bn_function(f, t)
            else:
                self.other_function(f, t)

    def weight_function(self, f, t):
        spec = BY_FUNCTION[t]
        own, pf = spec.kind, getattr(layers, spec.lutq_function)
        ins = f.inputs
        w, b = ins[1], (ins[2] if len(ins) > 2 else None)
        args = f.info.args
        if w.parent is not None:
            rec = self.record_above(w, LUTQLayer)
            if rec is not None:  # a LUT-Q layer built by its parametric function
                self.existing(rec).functions.append(f)
                return
            pname = self.above(w, lambda u: self.param_name(u) if _non_singleton_dims(u.shape) >= 2
                               else None)
            if pname is None:  # computed from scalars or data (an activation quantizer's
                return         # per-channel step): arithmetic, not a layer with weights
            name = self.display(_strip_scope(_split(pname)[0], own), own)
            self.float_layer(f, t, 'weight', f"its weight is computed (by "
                             f"{w.parent.info.type_name}), not a parameter", w.size, name)
            return
        rec, part = self.part_of(w)
        wname = self.param_name(w)
        if rec is not None:
            if not (isinstance(rec, LUTQLayer) and part == 'W' and rec.kind == own):
                self.float_layer(f, t, 'weight', f"its weight is the {part} of the "
                                 f"{type(rec).__name__} {self.rel(rec.name)}", w.size)
                return
            lay = self.existing(rec)  # e.g. the test graph of a network converted before
        elif wname is None:
            self.float_layer(f, t, 'weight', "its weight is not a registered parameter", w.size)
            return
        else:
            scope = _strip_scope(_split(wname)[0], own)
            lay = self.layer(w.data, self.display(scope, own), t, 'weight', w.size, tuple(w.shape))
            lay.scope, lay.target = scope, _join(scope, spec.lutq_scope)
        lay.functions.append(f)
        if lay.function != t:
            lay.problem = f"its weight is shared by {lay.function} and {t}"
            return
        lay.rebuild.append(f)
        if wname is not None:
            lay.moves[w.data] = f"{lay.target}/W"
        if args.get('channel_last') and not _accepts(pf, 'channel_last'):
            lay.problem = f"channel_last=True: {pf.__name__} has no channel_last argument"
            return
        if b is not None:
            if b.parent is not None:
                lay.problem = f"its bias is computed (by {b.parent.info.type_name})"
                return
            if self.param_name(b) is None:
                lay.problem = "its bias is not a registered parameter"
                return
            lay.biases.add(b.data)
            if len(lay.biases) > 1:
                lay.problem = "functions sharing its weight use different biases"
                return
            lay.moves[b.data] = f"{lay.target}/b"

    def bn_function(self, f, t):
        args = f.info.args
        fused = t == 'FusedBatchNormalization'
        # the parameters it reads: PF.batch_normalization's, less gamma/beta with no_scale/no_bias;
        # a fused BN reads all four, then maybe z (added before its nonlinearity)
        parts = [p for p, omit in zip(_BN_PARTS, (args.get('no_bias'), args.get('no_scale'),
                                                  False, False)) if not omit]
        ins = f.inputs[:1 + len(parts)]
        plain = t in _MLBN_FUNCTIONS and len(ins) == 1 + len(parts) and len(f.outputs) == 1 \
            and len(f.inputs) <= len(ins) + fused
        rec = next((r for r in (self.part_of(v)[0] for v in ins[1:])
                    if isinstance(r, MLBNLayer)), None)
        if rec is None and t == 'BatchNormalization' and len(ins) == 5:
            rec = self.record_above(ins[2], MLBNLayer)
        if rec is not None:
            lay = self.existing(rec)
            lay.functions.append(f)
            if plain and all(v.parent is None for v in ins[1:]):  # float BN on its parameters
                lay.rebuild.append(f)
                lay.bn_args = args
                for part, v in zip(parts, ins[1:]):
                    if self.param_name(v) is not None:
                        lay.moves[v.data] = f"{rec.name}/{part}"
            return
        names = [self.param_name(v) for v in ins[1:]]
        first = next((n for n in names if n), None)
        n = int(ins[-1].size) if len(ins) > 1 else 0  # var: one value per channel
        if first is None:
            self.float_layer(f, t, 'bn', "its parameters are not registered parameters", n)
            return
        scope = _strip_scope(_split(first)[0], 'bn')
        lay = self.layer(ins[1].data if ins[1].parent is None else ('float', f),
                         self.display(scope, 'bn'), t, 'bn', n)
        lay.functions.append(f)
        if t not in _MLBN_FUNCTIONS:
            lay.problem = f"{t} has no multiplier-less counterpart"
        elif fused and args.get('nonlinearity') not in ('relu', '', None):
            lay.problem = f"nonlinearity={args.get('nonlinearity')!r}: PF.mlbn is followed by ReLU"
        elif len(ins) != 1 + len(parts) or len(f.inputs) > len(ins) + fused:
            lay.problem = f"it reads {len(ins) - 1} parameters, not {', '.join(parts)}"
        elif len(f.outputs) != 1:
            lay.problem = "output_stat=True (a function modifier returns one variable)"
        elif any(nm is None for nm in names):
            lay.problem = f"its {', '.join(parts)} are not all registered parameters"
        elif len({_split(nm)[0] for nm in names}) != 1:
            lay.problem = "its parameters are in different scopes"
        if lay.problem:
            return
        x = ins[0]
        shape = [1] * x.ndim
        for a in args['axes']:
            shape[a] = x.shape[a]
        if any(v.shape != tuple(shape) for v in ins[1:]):
            lay.problem = (f"its parameters have shape {ins[1].shape}; PF.mlbn keeps them as "
                           f"{tuple(shape)}")
            return
        lay.scope, lay.target = scope, _join(scope, MLBN_SCOPE)
        lay.rebuild.append(f)
        lay.bn_args = args
        for part, v in zip(parts, ins[1:]):
            lay.moves[v.data] = f"{lay.target}/{part}"

    def other_function(self, f, t):
        params = []
        for v in f.inputs:
            rec, part = self.part_of(v)
            if rec is not None and (part != 'W' or t in layers.TIE_FUNCTIONS):
                self.existing(rec)  # a piece of an existing LUT-Q or mlbn layer
                return
            name = self.param_name(v)
            if name is not None:
                params.append((name, v))
        if not params:
            return
        full = _split(params[0][0])[0]
        scope = _strip_scope(full, _PF_SCOPES)
        # one entry per parameter scope, however many functions read it (a quantizer's range)
        lay = self.layer(('other', full), self.display(scope, _split(full)[1] or t), t,
                         'other', int(max(v.size for _, v in params)))
        lay.n_weights = max(lay.n_weights, int(max(v.size for _, v in params)))
        lay.functions.append(f)
        weights = [self.rel(n) for n, v in params if _non_singleton_dims(v.shape) >= 2]
        if lay.problem is None or (weights and not lay.unexpected):
            lay.function = t
            lay.problem = f"{t} has no LUT-Q counterpart"
            lay.unexpected = bool(weights)
            if weights:
                lay.problem += f" (it reads the weights {', '.join(weights)})"


def make_plan(outputs, config, overrides, min_weights, mlbn, groups=GROUPS):
    """``(plan, function -> layer to rebuild)`` for the graph of ``outputs`` (changes nothing).

    Raises:
        ValueError: naming the layer, for settings it cannot use or a conflict.
    """
    planner = Planner(config, overrides, min_weights, mlbn, groups)
    planner.collect(graph_functions(outputs))
    layers = planner.decide()
    by_function = {}
    for lay in layers.values():
        if lay.action != 'float':
            for f in lay.rebuild:
                by_function[f] = lay
    plan = ConversionPlan(lay.decision() for lay in layers.values())
    return plan, by_function
