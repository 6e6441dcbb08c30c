# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The inference footprint (parameters at their bit widths + peak activations), by hand."""
import numpy as np
import pytest
import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF

import nnabla_lutq
from nnabla_lutq.analysis.footprint import footprint


def test_footprint_of_a_small_residual_network_by_hand():
    x = nn.Variable((1, 2, 4, 4))
    with nnabla_lutq.inference_mode():
        h = PF.lutq_convolution(x, 3, (3, 3), pad=(1, 1), name='c1', n_values=4)   # N = 54
        h = F.relu(PF.mlbn(h, batch_stat=False, name='bn1'))
        r = PF.convolution(h, 3, (3, 3), pad=(1, 1), name='c2', with_bias=False)  # 81 floats
        h = F.relu(h + r)
        y = PF.affine(h, 5, name='fc')                                            # 48 x 5
    fp = footprint(y, act_bits=8, inputs=[x])
    params = (4 * 32 + 54 * 2 + 3 * 32      # c1: table, indices at 2 bits, bias
              + 2 * 3 * 32                  # bn1: scale and bias per channel
              + 81 * 32                     # c2
              + 48 * 5 * 32 + 5 * 32)       # fc weights and bias
    assert fp['param_bits'] == params
    # peak: while c2 runs, h (48 values, still needed by the residual add) and c2's output (48)
    # are held; c1 held its input (32) and output (48) = 80; the add writes over r
    assert fp['activation_bits'] == (48 + 48) * 8
    assert fp['total_bits'] == params + 96 * 8
    assert fp['param_mib'] == pytest.approx(params / 8 / 2 ** 20)


def test_float_resnet50_parameters_are_the_papers_97_5_mib():
    from examples.common.models import Layers
    from examples.imagenet.models import resnet
    x = nn.Variable((1, 3, 64, 64))
    y = resnet(x, Layers(), 50, test=True)
    # 25,557,032 parameters (conv, fc, bias, BN scale/shift) at 32 bits
    assert footprint(y, inputs=[x])['param_mib'] == pytest.approx(97.49, abs=0.01)
