# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""LUT-Q layers (parametric functions), their state and graph functions."""
from .state import (STATE, LUTQState, WeightMode, LUTQLayer, MLBNLayer, weight_mode,
                    inference_mode, lutq_layers, mlbn_layers)
from .layers import lutq_affine, lutq_convolution, lutq_depthwise_convolution, mlbn, fold_mlbn
from .functions import pow2_round_graph, mlbn_scale, float32_context, detached

__all__ = ['STATE', 'LUTQState', 'WeightMode', 'LUTQLayer', 'MLBNLayer', 'weight_mode',
           'inference_mode', 'lutq_layers', 'mlbn_layers', 'lutq_affine', 'lutq_convolution',
           'lutq_depthwise_convolution', 'mlbn', 'fold_mlbn', 'pow2_round_graph', 'mlbn_scale',
           'float32_context', 'detached']
