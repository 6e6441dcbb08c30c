# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Memory footprint of a network for inference, as the LUT-Q paper counts it.

``footprint(y, act_bits)`` adds up

* **parameters at their bit widths**: per LUT-Q layer T·K·32 + N·⌈log2 K⌉ bits (T tables of K
  values: one per group of output channels, 1 without ``group_size``), per float weight 32
  bits, per batch-normalization channel two 32-bit numbers (the folded scale and bias, for float
  BN and mlbn alike), biases 32 bits (these are :func:`nnabla_lutq.report`'s memory numbers
  plus the biases);
* **activations at their bit width**: the peak, over a sequential execution of the graph for one
  sample, of the activations that must be held at the same time (the inputs a later function
  still needs, a residual branch's input included, plus the output being computed), at
  ``act_bits`` bits each (32 for float activations). Element-wise functions (BN, ReLU, the
  activation quantizer, residual adds, ...) write over an input that is not needed afterwards,
  as a deployment fuses them into the layer before.

The paper (Table 2) gives 97.5 MB for float ResNet-50 and 7.4 MB with 2-bit weights and 8-bit
activations; its float figure is the 25.6 M parameters at 32 bits (97.5 MiB) alone, so both are
printed: parameters, and parameters plus peak activations.
"""
import numpy as np
import nnabla as nn

from .report import report

__all__ = ['footprint']

_BIAS_OF = {'Convolution': 2, 'DepthwiseConvolution': 2, 'Affine': 2}
#: functions whose output may take the place of a same-sized input that dies there
_ELEMENTWISE = {'BatchNormalization', 'FusedBatchNormalization', 'ReLU', 'LeakyReLU', 'ReLU6',
                'Mul2', 'Add2', 'Sub2', 'Div2', 'MulScalar', 'AddScalar', 'MinMaxQuantize',
                'FixedPointQuantize', 'Pow2Quantize', 'Identity', 'Reshape', 'Sigmoid', 'Tanh',
                'MaximumScalar', 'MinimumScalar', 'ClipByValue', 'Round', 'Sign', 'Abs'}


def footprint(output, act_bits=32, inputs=None):
    """The inference footprint of the graph computing ``output`` (per sample).

    Args:
        output (~nnabla.Variable): the network output (a graph built for inference).
        act_bits (int): bits per activation value (8 for 8-bit activations).
        inputs (list or None): the data input variables (default: every leaf that is not a
            registered parameter).

    Returns:
        dict: ``param_bits``, ``activation_bits`` (the peak), ``total_bits``, the same in MiB
        (``param_mib``, ``activation_mib``, ``total_mib``) and ``peak_at`` (the function where
        the activation peak occurs).
    """
    rep = report(output)
    bits = rep.totals['memory_bits']
    functions = []
    output.visit(functions.append)
    params = {p.data for p in nn.parameter.get_parameters(grad_only=False).values()}
    from ..nn.state import all_parameters
    params |= {p.data for p in all_parameters().values()}
    input_data = None if inputs is None else {v.data for v in inputs}

    def is_input(v):
        if v.parent is not None:
            return False
        return v.data in input_data if input_data is not None else v.data not in params

    # biases: the third input of conv/affine, when it is a stored parameter
    seen = set()
    for f in functions:
        pos = _BIAS_OF.get(f.info.type_name)
        if pos is not None and len(f.inputs) > pos and f.inputs[pos].parent is None:
            b = f.inputs[pos]
            if b.data not in seen:
                seen.add(b.data)
                bits += 32 * int(np.prod(b.shape))
    # activations: variables that depend on the data input
    data_dep = set()
    last_use = {}
    for i, f in enumerate(functions):
        if any(is_input(v) or v in data_dep for v in f.inputs):
            data_dep.update(f.outputs)
        for v in f.inputs:
            last_use[v] = i
    batch = output.shape[0] if output.ndim else 1

    def size(v):
        return int(np.prod(v.shape)) // max(1, batch)
    live = {v for f in functions for v in f.inputs if is_input(v)}
    peak, peak_at = sum(size(v) for v in live), 'input'
    for i, f in enumerate(functions):
        outs = [v for v in f.outputs if v in data_dep]
        now = sum(size(v) for v in live) + sum(size(v) for v in outs)
        if f.info.type_name in _ELEMENTWISE and outs:
            dying = [v for v in f.inputs if v in live and last_use.get(v) == i
                     and size(v) == size(outs[0])]
            if dying:  # computed in place of an input that is not needed afterwards
                now -= size(dying[0])
        if now > peak:
            peak, peak_at = now, f.info.type_name
        live = {v for v in live if last_use.get(v, -1) > i} | {
            v for v in outs if last_use.get(v, -1) > i or v is output}
    act = peak * act_bits
    mib = 8 * 2 ** 20
    return {'param_bits': int(bits), 'activation_bits': int(act), 'total_bits': int(bits + act),
            'param_mib': bits / mib, 'activation_mib': act / mib, 'total_mib': (bits + act) / mib,
            'peak_at': peak_at}
