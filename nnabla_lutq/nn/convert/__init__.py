# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Whole-network LUT-Q: convert any nnabla graph, with per-layer settings.

:func:`convert` (or :class:`LUTQModifier` in nnabla's
``nnabla.experimental.graph_converters.GraphConverter``; its two rewrites alone are
:class:`LUTQWeightModifier` and :class:`MLBNModifier`) turns a float graph into the graph the
LUT-Q parametric functions would build:

* every ``Convolution``, ``Affine`` and ``DepthwiseConvolution`` whose weight is a registered
  parameter becomes ``PF.lutq_convolution`` / ``PF.lutq_affine`` /
  ``PF.lutq_depthwise_convolution``, called in the layer's parameter scope with the function's
  arguments (and the :class:`LayerConfig`'s, ``group_size`` included: one table per that many
  output channels). The float parameters are *moved*, not copied: ``conv1/conv/W`` becomes
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
cannot be converted (``Deconvolution``, a computed weight, a weight shared with another kind of
layer, ...) stay float and are listed in one warning.

Layer names are parameter scopes without the function's own scope, relative to the current
parameter scope as ``nn.get_parameters()`` names parameters: ``PF.convolution(...,
name='res1/conv1')`` builds layer ``'res1/conv1'`` (parameters ``res1/conv1/conv/W``); a layer
built without a name is called by its function's scope (``'conv'``).

The package: :mod:`.settings` (:class:`LayerConfig`, the checks), :mod:`.plan` (decisions and
graph walks), :mod:`.planner` (finding the layers) and :mod:`.decide` (deciding them),
:mod:`.modifiers` (the rewrites and this API). The weight layers it knows are those of
:mod:`nnabla_lutq.core.kinds`.
"""
from .modifiers import LUTQModifier, LUTQWeightModifier, MLBNModifier, conversion_plan, convert
from .plan import ConversionPlan, LayerDecision
from .settings import LayerConfig

__all__ = ['LayerConfig', 'LUTQModifier', 'LUTQWeightModifier', 'MLBNModifier', 'LayerDecision',
           'ConversionPlan', 'convert', 'conversion_plan']
