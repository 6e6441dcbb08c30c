# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""An integer, multiplication-free executor for exported LUT-Q networks.

``IntegerNetwork.from_nnp(path)`` lowers an exported .nnp (:func:`nnabla_lutq.export_nnp`) to
integer arithmetic: uint8 pixels in, integer activation codes between layers, per LUT-Q layer
"add each input into one of K partial sums by its weight's index, then combine the K sums with
the dictionary" (its group's row for grouped tables; a shift per sum for power-of-two values), BN and requantization by shift and
add (multiplier-less BN, power-of-two steps) or by comparisons with exact thresholds (other
scales), residual sums on a common integer grid, integer logits with their scale. Every value
is proven to fit the accumulator width. :func:`verify_int` compares it with nnabla's float graph;
:func:`write_c` writes a stand-alone C program computing the same logits. See docs/integer.md.
"""
from .network import IntegerNetwork, verify_int, format_op_table, load_eval_data
from .lowering import lower, Program, SUPPORTED
from .cgen import write_c

__all__ = ['IntegerNetwork', 'verify_int', 'format_op_table', 'load_eval_data', 'lower', 'Program',
           'SUPPORTED', 'write_c']
