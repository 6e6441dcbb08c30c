# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The one table of the layers LUT-Q knows: nnabla functions with a weight, and BN functions.

Conversion, initialization, report, export, packing, post-training quantization and integer
lowering all read this table; a new weight layer (say, ``Deconvolution`` with a LUT-Q
counterpart) is added here once.

Each :class:`WeightLayer` ties together the names one layer has in different places:

* ``function``: the nnabla function type in a graph or an .nnp (``'Convolution'``);
* ``kind``: the parameter scope of nnabla's float parametric function (``PF.convolution`` ->
  ``'conv'``), which is also the ``kind`` of a LUT-Q record and of a table in an exported
  file's description;
* ``lutq_scope`` / ``lutq_function``: the scope and the name of the LUT-Q parametric function
  (``'lutq_conv'``, ``'lutq_convolution'``), or None for a weight layer without a LUT-Q
  counterpart (it stays float, and is reported as such);
* ``out_axis``: the output-channel axis of the weight, along which grouped tables are cut (0 for
  convolutions, -1 for affine layers).
"""
from dataclasses import dataclass
from typing import Optional

__all__ = ['WeightLayer', 'WEIGHT_LAYERS', 'BY_FUNCTION', 'BY_KIND', 'CONVERTIBLE',
           'BN_FUNCTIONS', 'MLBN_SCOPE', 'FLOAT_TO_LUTQ_SCOPES', 'LAYER_SCOPES', 'lutq_scope_of']


@dataclass(frozen=True)
class WeightLayer:
    """The names of one kind of weight layer (see the module documentation).

    Attributes:
        function (str): nnabla function type, e.g. ``'Convolution'``.
        kind (str): scope of nnabla's float parametric function, e.g. ``'conv'``.
        lutq_scope (str or None): scope of the LUT-Q parametric function, e.g. ``'lutq_conv'``.
        lutq_function (str or None): name of the LUT-Q parametric function.
        out_axis (int): the output-channel axis of the weight (negative: from the end).
    """
    function: str
    kind: str
    lutq_scope: Optional[str] = None
    lutq_function: Optional[str] = None
    out_axis: int = 0

    @property
    def convertible(self):
        """bool: the layer has a LUT-Q counterpart."""
        return self.lutq_scope is not None


#: every nnabla function whose second input is a weight, in the order reports list them
WEIGHT_LAYERS = (
    WeightLayer('Convolution', 'conv', 'lutq_conv', 'lutq_convolution'),
    WeightLayer('DepthwiseConvolution', 'depthwise_conv', 'lutq_depthwise_conv',
                'lutq_depthwise_convolution'),
    WeightLayer('Affine', 'affine', 'lutq_affine', 'lutq_affine', out_axis=-1),
    WeightLayer('Deconvolution', 'deconv', out_axis=1),
)
#: function type -> :class:`WeightLayer`
BY_FUNCTION = {w.function: w for w in WEIGHT_LAYERS}
#: kind (float scope) -> :class:`WeightLayer`
BY_KIND = {w.kind: w for w in WEIGHT_LAYERS}
#: function types that have a LUT-Q counterpart
CONVERTIBLE = tuple(w.function for w in WEIGHT_LAYERS if w.convertible)

#: batch-normalization function types (only ``BatchNormalization`` becomes ``PF.mlbn``)
BN_FUNCTIONS = ('BatchNormalization', 'FusedBatchNormalization', 'SyncBatchNormalization')
#: scope of ``PF.mlbn`` (float BN: ``'bn'``)
MLBN_SCOPE = 'mlbn'

#: float parametric-function scope -> the LUT-Q one (``'conv'`` -> ``'lutq_conv'``, ``'bn'`` ->
#: ``'mlbn'``)
FLOAT_TO_LUTQ_SCOPES = dict([(w.kind, w.lutq_scope) for w in WEIGHT_LAYERS if w.convertible]
                            + [('bn', MLBN_SCOPE)])
#: the scopes of the layers' own parametric functions, float and LUT-Q: the last component of a
#: parameter prefix that names the function rather than the layer (``res1/conv1/lutq_conv``)
LAYER_SCOPES = frozenset(FLOAT_TO_LUTQ_SCOPES) | frozenset(FLOAT_TO_LUTQ_SCOPES.values())


def lutq_scope_of(prefix):
    """The LUT-Q parameter prefix of a float layer's prefix (``'fc/affine'`` ->
    ``'fc/lutq_affine'``); a prefix whose last scope is not a float layer's is returned as is.

    Args:
        prefix (str): a parameter prefix, e.g. ``'res1/conv1/conv'``.

    Returns:
        str: e.g. ``'res1/conv1/lutq_conv'``.
    """
    scope, _, last = prefix.rpartition('/')
    new = FLOAT_TO_LUTQ_SCOPES.get(last, last)
    return f"{scope}/{new}" if scope else new
