"""Whole-network LUT-Q: convert any nnabla graph, with per-layer settings.

:func:`convert` (or :class:`LUTQModifier` in nnabla's
``nnabla.experimental.graph_converters.GraphConverter``) turns a float graph into the graph the
LUT-Q parametric functions would build:

* every ``Convolution``, ``Affine`` and ``DepthwiseConvolution`` whose weight is a registered
  parameter becomes ``PF.lutq_convolution`` / ``PF.lutq_affine`` /
  ``PF.lutq_depthwise_convolution``, called in the layer's parameter scope with the function's
  arguments. The float parameters are *moved*, not copied: ``conv1/conv/W`` becomes
  ``conv1/lutq_conv/W`` (the same :class:`~nnabla.Variable`, so every other function reading it
  reads the trained weights), the bias moves alike, and ``d`` / ``A`` are initialized from ``W``
  exactly as the parametric function does. The result (parameters, outputs, training steps) is
  bit-identical to the network written with the LUT-Q parametric functions from the same float
  weights;
* with ``mlbn=True``, ``BatchNormalization`` becomes ``PF.mlbn`` (``bn`` -> ``mlbn`` scopes);
* a function that already computes with a LUT-Q layer's parameters is kept (a graph built with
  the LUT-Q parametric functions) or rebuilt on them (the test graph of a network whose training
  graph was converted before): converting the training and the test graph of one network gives
  one set of LUT-Q parameters, as the parametric functions do. Layers are built in the current
  weight mode (:func:`~nnabla_lutq.inference_mode` for deployment graphs).

Every decision is made before anything changes (:func:`conversion_plan` returns them without
converting); invalid settings raise a ValueError naming the layer. Functions with weights that
cannot be converted (``Deconvolution``, a computed weight, a channel-last convolution, ...) stay
float and are listed in one warning.

Layer names are parameter scopes without the function's own scope, relative to the current
parameter scope as ``nn.get_parameters()`` names parameters: ``PF.convolution(...,
name='res1/conv1')`` builds layer ``'res1/conv1'`` (parameters ``res1/conv1/conv/W``); a layer
built without a name is called by its function's scope (``'conv'``).
"""
import fnmatch
import inspect
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple, Union

import numpy as np
import nnabla as nn
from nnabla.experimental.graph_converters import FunctionModifier, GraphConverter

from ..core.config import LUTQConfig, make_config
from ..training.initialization import FLOAT_TO_LUTQ_SCOPES
from .layers import lutq_affine, lutq_convolution, lutq_depthwise_convolution, mlbn as _mlbn
from .state import STATE, LUTQLayer, MLBNLayer, _scope_path, all_parameters

__all__ = ['LayerConfig', 'LUTQModifier', 'LayerDecision', 'ConversionPlan', 'convert',
           'conversion_plan']

#: nnabla function type -> (LUT-Q kind = scope of the float parametric function, LUT-Q one)
_WEIGHT_LAYERS = {
    'Convolution': ('conv', lutq_convolution),
    'Affine': ('affine', lutq_affine),
    'DepthwiseConvolution': ('depthwise_conv', lutq_depthwise_convolution),
}
_BN_FUNCTIONS = ('BatchNormalization', 'FusedBatchNormalization', 'SyncBatchNormalization')
_BN_PARTS = MLBNLayer.PARTS  # beta, gamma, mean, var
#: scopes of nnabla 1.39's parametric functions (stripped from the names of float layers)
_PF_SCOPES = frozenset((
    'affine bicon_affine bicon_conv bn bwn_affine bwn_conv conv cpd3_conv deconv deformable_conv '
    'depthwise_conv depthwise_deconv embed fp_quantized_affine fp_quantized_conv '
    'group_normalization gru inq_affine inq_conv instance_normalization layer_normalization lstm '
    'mean_subtraction min_max_quantize min_max_quantized_affine min_max_quantized_conv '
    'multi_head_attention pow2_quantized_affine pow2_quantized_conv prelu pruned_affine '
    'pruned_conv rnn svd_affine svd_conv transformer transformer_decode transformer_encode '
    'wn').split())
#: how far above a computed weight the LUT-Q parameters of an existing layer are looked for
_SEARCH_DEPTH = 6


def _accepts(func, arg):
    return arg in inspect.signature(func).parameters


# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerConfig:
    """The LUT-Q settings of one layer (the arguments of the LUT-Q parametric functions).

    Validated on creation with the rules and messages of the layers
    (:func:`nnabla_lutq.core.config.make_config`); the rules that depend on the layer's number of
    weights N (``n_values <= N``, enough weights left after pruning) are checked when a layer is
    converted.

    Args:
        n_values (int): K, the number of dictionary values (ignored for a fixed dictionary).
        dictionary (str or list): ``'free'``, ``'pow2'`` or fixed values such as ``[-1, 0, 1]``.
        prune_ratio (float): p in [0, 1): the ceil(p·N) smallest-|W| weights are tied to 0.
        pow2_range (tuple of int): ``(min_exp, max_exp)`` of a ``'pow2'`` dictionary, or None.

    Raises:
        ValueError: on settings no layer can use.

    Example:
        >>> LayerConfig(4, 'pow2', prune_ratio=0.5)
    """
    n_values: int = 16
    dictionary: Union[str, Tuple[float, ...]] = 'free'
    prune_ratio: float = 0.0
    pow2_range: Optional[Tuple[int, int]] = None

    def __post_init__(self):
        if not isinstance(self.dictionary, str):
            try:
                object.__setattr__(self, 'dictionary', tuple(self.dictionary))
            except TypeError:
                pass  # make_config names the problem
        if self.pow2_range is not None and not isinstance(self.pow2_range, str):
            try:
                object.__setattr__(self, 'pow2_range', tuple(self.pow2_range))
            except TypeError:
                pass
        self.resolve(2 ** 53, 'LayerConfig')

    def resolve(self, n_weights, layer='layer'):
        """The validated :class:`~nnabla_lutq.core.config.LUTQConfig` for a layer of N weights.

        Args:
            n_weights (int): N.
            layer (str): the layer's name, for messages.

        Returns:
            LUTQConfig: as the parametric function would build it.

        Raises:
            ValueError: naming the layer (e.g. ``n_values`` larger than N).
        """
        return make_config(self.n_values, self._dictionary_arg(), self.prune_ratio,
                           self.pow2_range, int(n_weights), layer)

    def _dictionary_arg(self):
        return self.dictionary if isinstance(self.dictionary, str) else list(self.dictionary)

    def kwargs(self):
        """dict: the keyword arguments of the LUT-Q parametric functions for these settings."""
        return {'n_values': self.n_values, 'dictionary': self._dictionary_arg(),
                'prune_ratio': self.prune_ratio,
                'pow2_range': None if self.pow2_range is None else tuple(self.pow2_range)}


def _as_layer_config(value, where):
    if value is None or isinstance(value, LayerConfig):
        return value
    if isinstance(value, dict):
        try:
            return LayerConfig(**value)
        except TypeError as e:
            raise ValueError(f"{where}: {e}; use the arguments of LayerConfig")
    raise ValueError(f"{where}: expected a LayerConfig, a dict of its arguments or None (keep "
                     f"the layer float), got {value!r}")


def _normalize_overrides(overrides):
    if overrides is None:
        return []
    items = overrides.items() if isinstance(overrides, dict) else overrides
    out = []
    for item in items:
        try:
            pattern, value = item
        except (TypeError, ValueError):
            raise ValueError(f"overrides: expected a dict or (pattern, LayerConfig) pairs, got "
                             f"{item!r}")
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"overrides: a pattern must be a non-empty string, got {pattern!r}")
        out.append((pattern, _as_layer_config(value, f"overrides[{pattern!r}]")))
    return out


# ---------------------------------------------------------------------------------------------
# decisions
# ---------------------------------------------------------------------------------------------
@dataclass
class LayerDecision:
    """What the conversion does with one layer.

    Attributes:
        name (str): the layer's scope from the root without the function's own scope, e.g.
            ``'res1/conv1'`` (for a layer without parameters: the function type and its index).
        function (str): the nnabla function type, e.g. ``'Convolution'``.
        action (str): ``'lutq'`` (a LUT-Q layer), ``'mlbn'`` (multiplier-less BN) or
            ``'float'`` (unchanged).
        reason (str): why, e.g. ``'override fc'`` or ``'432 weights < min_weights=1000'``.
        config (LUTQConfig or None): the settings of a LUT-Q layer.
        n_weights (int): number of weights (of ``W``; of ``gamma`` for BN).
        n_functions (int): functions of the graph that compute with this layer (2 for a weight
            shared by two functions, or the training and the test graph converted together).
        parameters (dict): parameter name before -> after the conversion.
        unexpected (bool): the layer has weights but cannot be converted (listed in the warning).
    """
    name: str
    function: str
    action: str
    reason: str
    config: Optional[LUTQConfig] = None
    n_weights: int = 0
    n_functions: int = 0
    parameters: Dict[str, str] = field(default_factory=dict)
    unexpected: bool = False

    def row(self):
        """tuple: the columns of :meth:`ConversionPlan.table`."""
        settings = self.config.describe() if self.config is not None else ''
        return (self.name, self.function, self.action, str(self.n_weights), settings, self.reason)


class ConversionPlan(list):
    """The :class:`LayerDecision` of every layer of a graph, in graph order (a list).

    ``str(plan)`` is a table; :attr:`converted` and :attr:`kept_float` filter it.
    """

    @property
    def converted(self):
        """list: decisions of layers that are LUT-Q or multiplier-less BN after conversion."""
        return [d for d in self if d.action != 'float']

    @property
    def kept_float(self):
        """list: decisions of layers that stay float."""
        return [d for d in self if d.action == 'float']

    def get(self, name):
        """The decision of the layer called ``name``, or None."""
        for d in self:
            if d.name == name:
                return d
        return None

    def table(self):
        """str: one row per layer: name, function, action, weights, settings, reason."""
        head = ('layer', 'function', 'action', 'weights', 'settings', 'reason')
        rows = [head] + [d.row() for d in self]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ['  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, '  '.join('-' * w for w in widths))
        return '\n'.join(lines)

    def __str__(self):
        return self.table()


# ---------------------------------------------------------------------------------------------
# graph and parameter helpers
# ---------------------------------------------------------------------------------------------
def _graph_functions(outputs):
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


def _terminal_outputs(first):
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


def _registered():
    """NdArray -> names (from the root) of the registered parameters sharing it, aliases
    included."""
    names = {}
    for name, v in all_parameters().items():
        names.setdefault(v.data, []).append(name)
    return names


def _scope_dict(path, create=False):
    """The parameter-scope dict at ``path`` from the root (created if asked), or None."""
    node = nn.parameter.root_scope
    for part in path.split('/') if path else []:
        nxt = node.get(part)
        if nxt is None and create:
            nxt = node[part] = OrderedDict()
        if not isinstance(nxt, dict):
            return None
        node = nxt
    return node


def _split(name):
    scope, _, last = name.rpartition('/')
    return scope, last


def _join(*parts):
    return '/'.join(p for p in parts if p)


def _pop_name(name):
    """Remove one registered name; drop the scopes it leaves empty."""
    parts = name.split('/')
    chain = [nn.parameter.root_scope]
    for part in parts[:-1]:
        chain.append(chain[-1][part])
    del chain[-1][parts[-1]]
    for i in range(len(parts) - 1, 0, -1):
        if chain[i]:
            break
        del chain[i - 1][parts[i - 1]]


def _move(data, new_name):
    """Register the parameter holding ``data`` under ``new_name`` (from the root) and under no
    other name (the registered variable itself is moved, not a copy)."""
    names = _registered().get(data, [])
    scope, last = _split(new_name)
    target = _scope_dict(scope, create=True)
    current = target.get(last)
    if isinstance(current, nn.Variable) and current.data == data:
        var = current
    else:
        var = _lookup(names[0])
    for name in names:
        if name != new_name:
            _pop_name(name)
    target = _scope_dict(scope, create=True)
    target[last] = var


def _lookup(name):
    scope, last = _split(name)
    return _scope_dict(scope)[last]


def _clean(x):
    """A float argument as its float32 value's shortest text (eps=1e-5 stays 1e-05)."""
    return float(str(np.float32(x)))


def _non_singleton_dims(shape):
    return sum(1 for s in shape if s > 1)


# ---------------------------------------------------------------------------------------------
# the plan
# ---------------------------------------------------------------------------------------------
class _Layer:
    """A layer found in the graph while planning (internal)."""

    def __init__(self, name, function, group, n_weights):
        self.name = name            # display name (relative to the current parameter scope)
        self.function = function
        self.group = group          # 'weight', 'bn' or 'other'
        self.n_weights = n_weights
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


class _Planner:
    """Finds the layers of a graph and decides what happens to each (changes nothing)."""

    def __init__(self, config, overrides, min_weights, mlbn):
        self.config = config
        self.overrides = overrides
        self.min_weights = min_weights
        self.mlbn = mlbn
        self.names = _registered()
        self.layers = OrderedDict()   # key -> _Layer
        self.anonymous = 0
        self.live = {id(r) for r in STATE.lutq_layers() + STATE.mlbn_layers()}
        self.prefix = _scope_path(nn.parameter.get_current_parameter_scope()) or ''

    # -- names and lookups ------------------------------------------------------------------
    def rel(self, name):
        """A name from the root as ``nn.get_parameters()`` shows it in the current scope."""
        if self.prefix and name.startswith(self.prefix + '/'):
            return name[len(self.prefix) + 1:]
        return name

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

    def layer(self, key, name, function, group, n_weights):
        lay = self.layers.get(key)
        if lay is None:
            lay = self.layers[key] = _Layer(name, function, group, n_weights)
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
            t = next(k for k, v in _WEIGHT_LAYERS.items() if v[0] == rec.kind)
            lay = self.layer(rec.W.data, self.display(_split(rec.name)[0], rec.kind), t, 'weight',
                             rec.W.size)
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
            if t in _WEIGHT_LAYERS:
                self.weight_function(f, t)
            elif t in _BN_FUNCTIONS:
                self.bn_function(f, t)
            else:
                self.other_function(f, t)

    def weight_function(self, f, t):
        kind, pf = _WEIGHT_LAYERS[t]
        own = kind  # the float parametric function's scope
        ins = f.inputs
        w, b = ins[1], (ins[2] if len(ins) > 2 else None)
        args = f.info.args
        if w.parent is not None:
            rec = self.record_above(w, LUTQLayer)
            if rec is not None:  # a LUT-Q layer built by its parametric function
                self.existing(rec).functions.append(f)
                return
            pname = self.above(w, self.param_name)
            name = self.display(_strip_scope(_split(pname)[0], own), own) if pname else None
            self.float_layer(f, t, 'weight', f"its weight is computed (by "
                             f"{w.parent.info.type_name}), not a parameter", w.size, name)
            return
        rec, part = self.part_of(w)
        wname = self.param_name(w)
        if rec is not None:
            if not (isinstance(rec, LUTQLayer) and part == 'W' and rec.kind == kind):
                self.float_layer(f, t, 'weight', f"its weight is the {part} of the "
                                 f"{type(rec).__name__} {self.rel(rec.name)}", w.size)
                return
            lay = self.existing(rec)  # e.g. the test graph of a network converted before
        elif wname is None:
            self.float_layer(f, t, 'weight', "its weight is not a registered parameter", w.size)
            return
        else:
            scope = _strip_scope(_split(wname)[0], own)
            lay = self.layer(w.data, self.display(scope, own), t, 'weight', w.size)
            lay.scope, lay.target = scope, _join(scope, FLOAT_TO_LUTQ_SCOPES[own])
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
        ins = f.inputs
        args = f.info.args
        plain = t == 'BatchNormalization' and len(ins) == 5 and len(f.outputs) == 1 \
            and not args.get('no_scale') and not args.get('no_bias')
        rec = next((r for r in (self.part_of(v)[0] for v in ins[1:])
                    if isinstance(r, MLBNLayer)), None)
        if rec is None and t == 'BatchNormalization' and len(ins) == 5:
            rec = self.record_above(ins[2], MLBNLayer)
        if rec is not None:
            lay = self.existing(rec)
            lay.functions.append(f)
            if plain and ins[2].parent is None:  # a float BN on the layer's parameters
                lay.rebuild.append(f)
                lay.bn_args = args
                for part, v in zip(_BN_PARTS, ins[1:]):
                    if self.param_name(v) is not None:
                        lay.moves[v.data] = f"{rec.name}/{part}"
            return
        names = [self.param_name(v) for v in ins[1:]]
        first = next((n for n in names if n), None)
        n = int(ins[2].size) if len(ins) > 2 else 0
        if first is None:
            self.float_layer(f, t, 'bn', "its parameters are not registered parameters", n)
            return
        scope = _strip_scope(_split(first)[0], 'bn')
        lay = self.layer(ins[1].data if ins[1].parent is None else ('float', f),
                         self.display(scope, 'bn'), t, 'bn', n)
        lay.functions.append(f)
        if t != 'BatchNormalization':
            lay.problem = f"{t} has no multiplier-less counterpart"
        elif args.get('no_scale') or args.get('no_bias') or len(ins) != 5:
            lay.problem = "no_scale/no_bias: PF.mlbn learns both beta and gamma"
        elif len(f.outputs) != 1:
            lay.problem = "output_stat=True (a function modifier returns one variable)"
        elif any(nm is None for nm in names):
            lay.problem = "its beta, gamma, mean and var are not all registered parameters"
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
        lay.scope, lay.target = scope, _join(scope, FLOAT_TO_LUTQ_SCOPES['bn'])
        lay.rebuild.append(f)
        lay.bn_args = args
        for part, v in zip(_BN_PARTS, ins[1:]):
            lay.moves[v.data] = f"{lay.target}/{part}"

    def other_function(self, f, t):
        params = []
        for v in f.inputs:
            rec, part = self.part_of(v)
            if rec is not None and (part != 'W' or t == 'Sub2'):
                self.existing(rec)  # a piece of an existing LUT-Q or mlbn layer
                return
            name = self.param_name(v)
            if name is not None:
                params.append((name, v))
        if not params:
            return
        full = _split(params[0][0])[0]
        scope = _strip_scope(full, _PF_SCOPES)
        lay = self.layer((t,) + tuple(v.data for _, v in params),
                         self.display(scope, _split(full)[1] or t), t,
                         'other', int(max(v.size for _, v in params)))
        lay.functions.append(f)
        weights = [self.rel(n) for n, v in params if _non_singleton_dims(v.shape) >= 2]
        lay.problem = f"{t} has no LUT-Q counterpart"
        lay.unexpected = bool(weights)
        if weights:
            lay.problem += f" (it reads the weights {', '.join(weights)})"

    # -- decisions ----------------------------------------------------------------------------
    def requested(self, lay):
        """(LayerConfig or None, reason) asked for a weight layer: the first matching override,
        else the default config (subject to min_weights)."""
        for pattern, value in self.overrides:
            if fnmatch.fnmatchcase(lay.name, pattern):
                if value is None:
                    return None, f"override {pattern!r}: kept float"
                return value, f"override {pattern!r}"
        if self.config is None:
            return None, "config=None and no override"
        if lay.n_weights < self.min_weights:
            return None, f"{lay.n_weights} weights < min_weights={self.min_weights}"
        return self.config, "default config"

    def resolve(self, lcfg, lay):
        try:
            return lcfg.resolve(lay.n_weights, lay.name)
        except ValueError as e:
            raise ValueError(f"{e} (or keep the layer float with overrides={{{lay.name!r}: "
                             "None}} or min_weights)") from None

    def decide(self):
        owners = {}
        for lay in self.layers.values():
            for data in lay.moves:
                owners.setdefault(data, []).append(lay)
        for data, lays in owners.items():
            for lay in lays if len(lays) > 1 else ():
                others = [o.name for o in lays if o is not lay]
                lay.problem = lay.problem or (f"it shares the parameter "
                                              f"{self.rel(self.names[data][0])} with {others}")
        layer_names = [lay.name for lay in self.layers.values() if lay.group == 'weight']
        unmatched = [p for p, _ in self.overrides
                     if not any(fnmatch.fnmatchcase(n, p) for n in layer_names)]
        if unmatched:
            raise ValueError(
                f"override pattern(s) {unmatched} match no Convolution, Affine or "
                f"DepthwiseConvolution layer; the layers are {layer_names}")
        targets = {}
        for lay in self.layers.values():
            if lay.group == 'weight':
                self.decide_weight(lay)
            elif lay.group == 'bn':
                self.decide_bn(lay)
            else:
                lay.reason = lay.problem
            if lay.action != 'float':
                self.check_target(lay, targets)
        return self.layers

    def decide_weight(self, lay):
        lcfg, why = self.requested(lay)
        if lay.record is not None:  # already LUT-Q: the same settings or an error
            have = lay.record.config
            want = None if lcfg is None else self.resolve(lcfg, lay)
            if want is None or want.settings() != have.settings():
                asked = 'float' if want is None else want.describe()
                raise ValueError(
                    f"{lay.name}: the graph already holds the LUT-Q layer "
                    f"{self.rel(lay.record.name)} with {have.describe()}; this conversion asks "
                    f"for {asked} ({why}). Convert with the settings of the first conversion, "
                    "or clear the parameters (nn.clear_parameters()) and build the float "
                    "network again")
            if lay.rebuild and lay.problem:
                raise ValueError(f"{lay.name}: cannot rebuild the LUT-Q layer "
                                 f"{self.rel(lay.record.name)}: {lay.problem}")
            lay.action, lay.config = 'lutq', have
            lay.layer_config = LayerConfig(**_settings_kwargs(have))
            lay.reason = ('rebuilt on the existing LUT-Q layer' if lay.rebuild
                          else 'already a LUT-Q layer')
            return
        if lay.problem:
            lay.reason = lay.problem
            lay.unexpected = lcfg is not None  # not when the layer was to stay float anyway
            return
        if lcfg is None:
            lay.reason = why
            return
        lay.config = self.resolve(lcfg, lay)
        lay.layer_config = lcfg
        lay.action, lay.reason = 'lutq', why

    def decide_bn(self, lay):
        if lay.record is not None:
            if not self.mlbn:
                raise ValueError(
                    f"{lay.name}: the graph already holds the multiplier-less BN layer "
                    f"{self.rel(lay.record.name)}; this conversion asks for float BN "
                    "(mlbn=False). Convert with mlbn=True as the first conversion did")
            if lay.rebuild:
                eps, axes = _clean(lay.bn_args['eps']), tuple(lay.bn_args['axes'])
                if eps != lay.record.eps or axes != tuple(lay.record.axes):
                    raise ValueError(
                        f"{lay.name}: the multiplier-less BN layer {self.rel(lay.record.name)} "
                        f"has eps={lay.record.eps}, axes={list(lay.record.axes)}; the graph's "
                        f"BatchNormalization has eps={eps}, axes={list(axes)}")
            lay.action = 'mlbn'
            lay.reason = ('rebuilt on the existing mlbn layer' if lay.rebuild
                          else 'already multiplier-less')
            return
        if not self.mlbn:
            lay.reason = 'mlbn=False'
        elif lay.problem:
            lay.reason, lay.unexpected = lay.problem, True
        else:
            lay.action, lay.reason = 'mlbn', 'mlbn=True'

    def check_target(self, lay, targets):
        """Record the renames; a new layer's scope must hold no other parameters (nothing is
        reused silently) and belong to one layer."""
        for data, new in lay.moves.items():
            for old in self.names.get(data, []):
                if old != new:
                    lay.renames[self.rel(old)] = self.rel(new)
        if lay.record is not None:
            return
        other = targets.setdefault(lay.target, lay)
        if other is not lay:
            raise ValueError(f"{lay.name}: both {other.name} and {lay.name} would become "
                             f"{self.rel(lay.target)}; give the float layers distinct scopes")
        scope = _scope_dict(lay.target)
        foreign = [k for k, v in (scope or {}).items()
                   if isinstance(v, dict) or v.data not in lay.moves]
        if foreign:
            raise ValueError(
                f"{lay.name}: {self.rel(lay.target)} already holds "
                f"{[self.rel(lay.target + '/' + k) for k in foreign]}, which are not the float "
                f"parameters {sorted(lay.renames)} of this layer (a float network built again "
                "after a conversion gets new weights). Build every graph of the float network "
                "before converting, or clear the parameters (nn.clear_parameters())")


def _settings_kwargs(cfg):
    s = cfg.settings()
    d = s['dictionary']
    return {'n_values': s['n_values'], 'dictionary': d if isinstance(d, str) else tuple(d),
            'prune_ratio': s['prune_ratio'],
            'pow2_range': None if s['pow2_range'] is None else tuple(s['pow2_range'])}


def _make_plan(outputs, config, overrides, min_weights, mlbn):
    planner = _Planner(config, overrides, min_weights, mlbn)
    planner.collect(_graph_functions(outputs))
    layers = planner.decide()
    by_function = {}
    for lay in layers.values():
        if lay.action != 'float':
            for f in lay.rebuild:
                by_function[f] = lay
    plan = ConversionPlan(lay.decision() for lay in layers.values())
    return plan, by_function


def _check_settings(config, overrides, min_weights, mlbn):
    config = _as_layer_config(config, 'config')
    overrides = _normalize_overrides(overrides)
    if isinstance(min_weights, bool) or not isinstance(min_weights, (int, np.integer)) \
            or min_weights < 0:
        raise ValueError(f"min_weights must be an integer >= 0, got {min_weights!r}")
    if not isinstance(mlbn, bool):
        raise ValueError(f"mlbn must be True or False, got {mlbn!r}")
    return config, overrides, int(min_weights), mlbn


def _as_outputs(y):
    outs = list(y) if isinstance(y, (list, tuple)) else [y]
    if not outs or not all(isinstance(o, nn.Variable) for o in outs):
        raise ValueError(f"expected an nnabla Variable or a list of them, got {y!r}")
    return outs


# ---------------------------------------------------------------------------------------------
# the modifier
# ---------------------------------------------------------------------------------------------
class LUTQModifier(FunctionModifier):
    """A ``GraphConverter`` modifier that makes a float graph a LUT-Q graph.

    Every ``Convolution``, ``Affine`` and ``DepthwiseConvolution`` whose weight is a registered
    parameter becomes the LUT-Q layer the parametric function builds (same scope with
    ``conv``/``affine``/``depthwise_conv`` replaced by ``lutq_conv``/``lutq_affine``/
    ``lutq_depthwise_conv``; the float ``W`` and bias are moved there and ``d``/``A`` are
    initialized from ``W``); with ``mlbn=True`` every ``BatchNormalization`` becomes
    ``PF.mlbn``. See the module documentation for the rules, and :func:`convert` for the same
    in one call.

    The whole graph is planned when the converter reaches its first function, and every error is
    raised then, before any parameter is created or changed. The plan covers the graph that
    ``GraphConverter`` visits (found through its sink); :func:`convert` passes the outputs
    explicitly.

    Args:
        config (LayerConfig or None): settings of every layer that no override matches; None
            keeps those layers float (only the overrides convert).
        overrides (dict): ``fnmatch`` pattern on the layer name (the scope without the
            function's own scope, e.g. ``'fc'``, ``'res*/conv1'``; ``*`` also matches ``/``) ->
            :class:`LayerConfig` (or a dict of its arguments), or None to keep the layer float.
            The first matching pattern wins; every pattern must match a layer. Overrides apply
            whatever the layer's size.
        min_weights (int): layers with fewer weights stay float (unless an override matches).
        mlbn (bool): make ``BatchNormalization`` multiplier-less (``PF.mlbn``).

    Attributes:
        decisions (ConversionPlan): the decisions of the last conversion.

    Raises:
        ValueError: for invalid arguments here; when converting, naming the layer: an override
            that matches no layer, ``n_values`` larger than a layer's weights or another setting
            the layer cannot use, a graph that already holds LUT-Q layers with other settings,
            a layer scope that already holds other parameters.

    Example:
        >>> import nnabla.experimental.graph_converters as GC
        >>> mod = LUTQModifier(LayerConfig(4, 'pow2'), overrides={'fc': LayerConfig(16)})
        >>> y_lutq = GC.GraphConverter([mod]).convert(y)
    """

    def __init__(self, config=LayerConfig(), overrides=None, min_weights=0, mlbn=False):
        super().__init__()
        (self.config, self.overrides, self.min_weights,
         self.mlbn) = _check_settings(config, overrides, min_weights, mlbn)
        self.decisions = ConversionPlan()
        self._outputs = None
        self._by_function = None

    def plan(self, outputs):
        """The decisions for the graph of ``outputs``, without changing anything.

        Args:
            outputs (~nnabla.Variable or list): the graph's outputs.

        Returns:
            ConversionPlan: one :class:`LayerDecision` per layer.

        Raises:
            ValueError: as the conversion would.
        """
        plan, _ = _make_plan(_as_outputs(outputs), self.config, self.overrides,
                             self.min_weights, self.mlbn)
        return plan

    def _copy_inputs(self, inputs):
        # Keep the graph's own input variables (nnabla copies them unlinked): the converted graph
        # reads the same x, so data set on it and export names work as before.
        return list(inputs)

    def __call__(self, f):
        if self._by_function is None:
            try:
                outputs = self._outputs or _terminal_outputs(f)
                plan, self._by_function = _make_plan(outputs, self.config, self.overrides,
                                                     self.min_weights, self.mlbn)
            except Exception:
                self._outputs = None
                self.finish_up()
                raise
            self.decisions = plan
            unexpected = [d for d in plan if d.unexpected]
            if unexpected:
                warnings.warn(
                    f"LUT-Q conversion: {len(unexpected)} layer(s) with weights stay float: " +
                    '; '.join(f"{d.name} ({d.function}): {d.reason}" for d in unexpected),
                    stacklevel=2)
        return super().__call__(f)

    def modify(self, f, inputs):
        lay = self._by_function.get(f)
        if lay is None:
            return None
        for data, new in lay.moves.items():
            _move(data, new)
        args = dict(f.info.args)
        with nn.parameter_scope(lay.scope, nn.parameter.root_scope):
            if lay.group == 'bn':
                return _mlbn(inputs[0], axes=list(args['axes']),
                             decay_rate=_clean(args['decay_rate']), eps=_clean(args['eps']),
                             batch_stat=bool(args['batch_stat']), output_stat=False,
                             fix_parameters=not inputs[1].need_grad)
            out = self._weight_layer(f.info.type_name, inputs, args, lay)
        target = _scope_dict(lay.target)
        if target is not None and 'b' in target and lay.moves:
            target.move_to_end('b')  # the parametric function creates W, d, A, then b
        return out

    @staticmethod
    def _weight_layer(t, inputs, args, lay):
        x, w = inputs[0], inputs[1]
        b = inputs[2] if len(inputs) > 2 else None
        kw = dict(lay.layer_config.kwargs(), base_axis=args['base_axis'],
                  fix_parameters=not w.need_grad, with_bias=b is not None)
        if t == 'Affine':
            return lutq_affine(x, list(w.shape[1:]), **kw)
        conv = dict(pad=list(args['pad']), stride=list(args['stride']),
                    dilation=list(args['dilation']))
        if t == 'DepthwiseConvolution':
            return lutq_depthwise_convolution(x, tuple(w.shape[1:]),
                                              multiplier=args['multiplier'], **conv, **kw)
        if args.get('channel_last'):
            return lutq_convolution(x, w.shape[0], tuple(w.shape[1:-1]), group=args['group'],
                                    channel_last=True, **conv, **kw)
        return lutq_convolution(x, w.shape[0], tuple(w.shape[2:]), group=args['group'],
                                **conv, **kw)

    def __finish__(self):
        self._outputs = None
        self._by_function = None
        self.outputs = None  # do not keep the converter's sink (and the graph) alive


# ---------------------------------------------------------------------------------------------
# one-call API
# ---------------------------------------------------------------------------------------------
def conversion_plan(y, config=LayerConfig(), overrides=None, min_weights=0, mlbn=False):
    """What :func:`convert` would do with each layer of the graph of ``y``; changes nothing.

    Args:
        y (~nnabla.Variable or list): the graph's outputs.
        config, overrides, min_weights, mlbn: as :func:`convert`.

    Returns:
        ConversionPlan: one :class:`LayerDecision` per layer, in graph order; ``str()`` is a table.

    Raises:
        ValueError: as :func:`convert` would (nothing is changed).
    """
    return LUTQModifier(config, overrides, min_weights, mlbn).plan(y)


def convert(y, config=LayerConfig(), overrides=None, min_weights=0, mlbn=False,
            return_decisions=False):
    """Convert the graph of ``y`` to LUT-Q (see :class:`LUTQModifier` and the module docs).

    Convert the training graph and the test graph of a network with the same settings (one call
    each, or one call with both outputs): they share one set of LUT-Q parameters. Build every
    graph of the float network before converting: the conversion moves the float parameters, so
    a float layer built afterwards would get new weights.

    Args:
        y (~nnabla.Variable or list): output(s) of a float graph (or a partly LUT-Q one).
        config (LayerConfig or None): settings of every layer no override matches; None keeps
            them float.
        overrides (dict): layer-name pattern -> LayerConfig (or a dict of its arguments) or None
            (keep float); the first match wins, every pattern must match a layer.
        min_weights (int): layers with fewer weights stay float unless an override matches.
        mlbn (bool): make ``BatchNormalization`` multiplier-less (``PF.mlbn``).
        return_decisions (bool): also return the :class:`ConversionPlan`.

    Returns:
        ~nnabla.Variable or list: the converted output(s) (same structure as ``y``), and with
        ``return_decisions`` a tuple ``(outputs, plan)``.

    Raises:
        ValueError: before anything is created or changed, naming the layer (see
            :class:`LUTQModifier`).

    Warns:
        UserWarning: once, listing the layers with weights that stay float although they were
            not asked to (e.g. ``Deconvolution``, a computed weight).

    Example:
        >>> y_lutq = nnabla_lutq.convert(y, LayerConfig(4), overrides={'fc': LayerConfig(16)})
    """
    outs = _as_outputs(y)
    mod = LUTQModifier(config, overrides, min_weights, mlbn)
    mod._outputs = outs
    prefix = _scope_path(nn.parameter.get_current_parameter_scope()) or ''
    converted = GraphConverter([mod]).convert(outs)
    for d in mod.decisions:  # layer names are relative to the current scope
        STATE.note_conversion(f"{prefix}/{d.name}" if prefix else d.name,
                              {'function': d.function, 'action': d.action, 'reason': d.reason})
    result = list(converted) if isinstance(y, (list, tuple)) else converted[0]
    if isinstance(y, tuple):
        result = tuple(result)
    if return_decisions:
        return result, mod.decisions
    return result
