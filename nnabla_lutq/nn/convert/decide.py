# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The second half of the planner: what a conversion does with each layer found in the graph
(:class:`Decisions`, which :class:`~.planner.Planner` extends), and the checks that raise every
error before anything changes."""
import fnmatch
from collections import OrderedDict

import numpy as np

from ...core.kinds import BY_FUNCTION
from ..params import scope_at
from .settings import layer_config_of

__all__ = ['GROUPS', 'Decisions', 'clean_float']

#: the groups of layers a planner can decide: weight layers and batch normalization
GROUPS = frozenset(('weight', 'bn'))


def clean_float(x):
    """A float argument as its float32 value's shortest text (eps=1e-5 stays 1e-05)."""
    return float(str(np.float32(x)))


class Decisions:
    """The decisions on the layers a :class:`~.planner.Planner` collected (its ``layers``,
    ``config``, ``overrides``, ``min_weights``, ``mlbn``, ``groups``, ``names`` and ``rel``)."""

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
        """The :class:`~nnabla_lutq.core.config.LUTQConfig` of ``lcfg`` on a weight layer."""
        try:
            return lcfg.resolve(lay.n_weights, lay.name, lay.shape,
                                BY_FUNCTION[lay.function].out_axis)
        except ValueError as e:
            raise ValueError(f"{e}; or keep the layer float (overrides={{{lay.name!r}: None}} "
                             "or min_weights)") from None

    def decide(self):
        """Decide every layer found (the ones of the planned groups); returns them."""
        skipped = set(GROUPS - self.groups)
        if 'weight' in skipped:
            skipped.add('other')  # functions with weights and no counterpart: a weight matter
        self.layers = OrderedDict((k, lay) for k, lay in self.layers.items()
                                  if lay.group not in skipped)
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
        unmatched = [p for p, _ in (self.overrides if 'weight' in self.groups else ())
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
            lay.layer_config = layer_config_of(have)
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
                eps, axes = clean_float(lay.bn_args['eps']), tuple(lay.bn_args['axes'])
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
        scope = scope_at(lay.target)
        foreign = [k for k, v in (scope or {}).items()
                   if isinstance(v, dict) or v.data not in lay.moves]
        if foreign:
            raise ValueError(
                f"{lay.name}: {self.rel(lay.target)} already holds "
                f"{[self.rel(lay.target + '/' + k) for k in foreign]}, which are not the float "
                f"parameters {sorted(lay.renames)} of this layer (a float network built again "
                "after a conversion gets new weights). Build every graph of the float network "
                "before converting, or clear the parameters (nn.clear_parameters())")
