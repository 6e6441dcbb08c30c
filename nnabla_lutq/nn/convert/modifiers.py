# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The rewrites, one ``FunctionModifier`` each, and the one-call API.

* :class:`LUTQWeightModifier`: ``Convolution`` / ``Affine`` / ``DepthwiseConvolution`` on a
  registered weight -> the LUT-Q parametric function;
* :class:`MLBNModifier`: ``BatchNormalization`` -> ``PF.mlbn``;
* :class:`LUTQModifier`: both, planned together (a list of the two, which nnabla's
  ``GraphConverter`` accepts as one entry), and :func:`convert` / :func:`conversion_plan`.

Each modifier plans the whole graph it visits when ``GraphConverter`` reaches its first function
(:mod:`.planner`), raises every error then, before any parameter is created or changed, and
rebuilds only the functions of its rewrite.
"""
import warnings

import nnabla as nn
import nnabla.functions as F
from nnabla.experimental.graph_converters import GraphConverter

from ..layers import lutq_affine, lutq_convolution, lutq_depthwise_convolution
from ..layers import mlbn as mlbn_layer
from ..graph import GraphModifier, follow_unlinked, terminal_outputs
from ..params import all_parameters, current_path, move, restore, scope_at, snapshot, to_end
from ..state import STATE
from .plan import ConversionPlan
from .decide import GROUPS, clean_float
from .planner import make_plan
from .settings import LayerConfig, as_outputs, check_settings

__all__ = ['LUTQWeightModifier', 'MLBNModifier', 'LUTQModifier', 'convert', 'conversion_plan']


class _Transaction:
    """The parameter tree before a conversion changed it, to put back if the conversion fails
    (shared by the rewrites of one :class:`LUTQModifier`)."""

    def __init__(self):
        self.saved = None

    def begin(self):
        if self.saved is None:
            self.saved = snapshot()

    def rollback(self):
        if self.saved is not None:
            restore(self.saved)
        self.saved = None

    def commit(self):
        self.saved = None


class _PlannedModifier(GraphModifier):
    """A modifier that plans the graph it visits first, then rebuilds the functions of its
    ``group`` (``'weight'`` or ``'bn'``) as the plan says; if anything fails on the way, the
    parameter tree is put back as it was."""

    group = None

    def __init__(self, config, overrides, min_weights, mlbn, plan_groups):
        super().__init__()
        (self.config, self.overrides, self.min_weights,
         self.mlbn) = check_settings(config, overrides, min_weights, mlbn)
        self.plan_groups = frozenset(plan_groups)
        self.decisions = ConversionPlan()
        self.transaction = _Transaction()
        self.last = True  # the last rewrite of its transaction (commits it when done)
        self._outputs = None
        self._by_function = None

    def plan(self, outputs):
        """The decisions for the graph of ``outputs``, without changing anything.

        Args:
            outputs (~nnabla.Variable or list): the graph's outputs.

        Returns:
            ConversionPlan: one :class:`~.plan.LayerDecision` per layer.

        Raises:
            ValueError: as the conversion would.
        """
        plan, _ = make_plan(as_outputs(outputs), self.config, self.overrides, self.min_weights,
                            self.mlbn, self.plan_groups)
        return plan

    def __call__(self, f):
        if self._by_function is None:
            try:
                outputs = self._outputs or terminal_outputs(f)
                plan, self._by_function = make_plan(outputs, self.config, self.overrides,
                                                    self.min_weights, self.mlbn,
                                                    self.plan_groups)
            except Exception:
                self.transaction.rollback()
                self._outputs = None
                self.finish_up()
                raise
            self.replaced = {}
            self.transaction.begin()
            self.decisions = plan
            unexpected = [d for d in plan if d.unexpected]
            if unexpected:
                warnings.warn(
                    f"LUT-Q conversion: {len(unexpected)} layer(s) with weights stay float: " +
                    '; '.join(f"{d.name} ({d.function}): {d.reason}" for d in unexpected),
                    stacklevel=2)
        try:
            return super().__call__(f)
        except Exception:
            self.transaction.rollback()
            self.finish_up()
            raise

    def modify(self, f, inputs):
        lay = self._by_function.get(f)
        if lay is None or lay.group != self.group:
            return None
        for data, new in lay.moves.items():
            move(data, new)
        with nn.parameter_scope(lay.scope, nn.parameter.root_scope):
            out = self.rebuild(f, inputs, dict(f.info.args), lay)
        target = scope_at(lay.target)
        if target is not None and 'b' in target and lay.moves:
            to_end(f"{lay.target}/b")  # the parametric function creates W, d, A, then b
        return out

    def rebuild(self, f, inputs, args, lay):
        """The output of the parametric function that replaces ``f`` (called in its scope)."""
        raise NotImplementedError

    def __finish__(self):
        if self._by_function is not None and self.last:
            self.transaction.commit()
        super().__finish__()
        self._outputs = None
        self._by_function = None


class LUTQWeightModifier(_PlannedModifier):
    """Every ``Convolution``, ``Affine`` and ``DepthwiseConvolution`` whose weight is a
    registered parameter becomes the LUT-Q layer its parametric function builds.

    The layer's scope gets ``conv``/``affine``/``depthwise_conv`` replaced by ``lutq_conv``/
    ``lutq_affine``/``lutq_depthwise_conv``; the float ``W`` and bias are moved there and
    ``d``/``A`` are fitted to ``W``. Batch normalization is left as it is.

    Args:
        config (LayerConfig or None): settings of every layer that no override matches; None
            keeps those layers float (only the overrides convert).
        overrides (dict): ``fnmatch`` pattern on the layer name (the scope without the
            function's own scope, e.g. ``'fc'``, ``'res*/conv1'``; ``*`` also matches ``/``) ->
            :class:`LayerConfig` (or a dict of its arguments), or None to keep the layer float.
            The first matching pattern wins; every pattern must match a layer. Overrides apply
            whatever the layer's size.
        min_weights (int): layers with fewer weights stay float (unless an override matches).

    Attributes:
        decisions (ConversionPlan): the decisions of the last conversion.
    """

    group = 'weight'

    def __init__(self, config=LayerConfig(), overrides=None, min_weights=0):
        super().__init__(config, overrides, min_weights, False, {'weight'})

    def rebuild(self, f, inputs, args, lay):
        t = f.info.type_name
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


class MLBNModifier(_PlannedModifier):
    """Every ``BatchNormalization`` on registered parameters becomes ``PF.mlbn`` (``bn`` ->
    ``mlbn`` scopes; the parameters are moved, not copied). Weight layers are left as they are.

    Attributes:
        decisions (ConversionPlan): the decisions of the last conversion.
    """

    group = 'bn'

    def __init__(self):
        super().__init__(None, None, 0, True, {'bn'})

    def rebuild(self, f, inputs, args, lay):
        h = mlbn_layer(inputs[0], axes=list(args['axes']),
                       decay_rate=clean_float(args['decay_rate']), eps=clean_float(args['eps']),
                       batch_stat=bool(args['batch_stat']), output_stat=False,
                       fix_parameters=not inputs[1].need_grad,
                       no_scale=bool(args.get('no_scale')), no_bias=bool(args.get('no_bias')))
        if f.info.type_name == 'FusedBatchNormalization':  # BN, + z, nonlinearity, as fused
            if len(inputs) > 5:
                h = h + inputs[5]
            if args.get('nonlinearity') == 'relu':
                h = F.relu(h)
        return h


class LUTQModifier(list):
    """Both rewrites for nnabla's ``GraphConverter``: the weight layers (and with ``mlbn=True``
    batch normalization), planned together.

    A list of a :class:`LUTQWeightModifier` and, with ``mlbn=True``, an :class:`MLBNModifier`
    (``GraphConverter`` takes a list of modifiers as one entry). The whole graph, batch
    normalization included, is planned when the converter reaches its first function, and every
    error is raised then, before any parameter is created or changed. See :func:`convert` for
    the same in one call.

    Args:
        config, overrides, min_weights: as :class:`LUTQWeightModifier`.
        mlbn (bool): make ``BatchNormalization`` multiplier-less (``PF.mlbn``).

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
        weights = LUTQWeightModifier(config, overrides, min_weights)
        if not isinstance(mlbn, bool):
            raise ValueError(f"mlbn must be True or False, got {mlbn!r}")
        weights.mlbn, weights.plan_groups = mlbn, GROUPS  # plan (and check) BN with the weights
        rewrites = [weights] + ([MLBNModifier()] if mlbn else [])
        for r in rewrites:  # one transaction: a failure in either puts everything back
            r.transaction, r.last = weights.transaction, r is rewrites[-1]
        super().__init__(rewrites)

    @property
    def weights(self):
        """LUTQWeightModifier: the first rewrite, which plans the whole graph."""
        return self[0]

    config = property(lambda self: self.weights.config)
    overrides = property(lambda self: self.weights.overrides)
    min_weights = property(lambda self: self.weights.min_weights)
    mlbn = property(lambda self: self.weights.mlbn)

    @property
    def decisions(self):
        """ConversionPlan: the decisions of the last conversion (every layer)."""
        return self.weights.decisions

    @property
    def replaced(self):
        """dict: array of a variable of the converted graph -> the variable replacing it."""
        out = {}
        for r in self:
            out.update(r.replaced)
        return out

    def plan(self, outputs):
        """The decisions for the graph of ``outputs`` (see :meth:`LUTQWeightModifier.plan`)."""
        return self.weights.plan(outputs)


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
    """Convert the graph of ``y`` to LUT-Q (see :class:`LUTQModifier` and the package docs).

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
    outs = as_outputs(y)
    mod = LUTQModifier(config, overrides, min_weights, mlbn)
    mod.weights._outputs = outs
    prefix = current_path()
    converted = GraphConverter([mod]).convert(outs)
    follow_unlinked(converted, mod.replaced, {v.data for v in all_parameters().values()})
    for d in mod.decisions:  # layer names are relative to the current scope
        STATE.note_conversion(f"{prefix}/{d.name}" if prefix else d.name,
                              {'function': d.function, 'action': d.action, 'reason': d.reason})
    result = list(converted) if isinstance(y, (list, tuple)) else converted[0]
    if isinstance(y, tuple):
        result = tuple(result)
    if return_decisions:
        return result, mod.decisions
    return result
