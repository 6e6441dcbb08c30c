# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Post-training LUT-Q of an existing float .nnp (no training): ``nnabla_lutq.quantize_nnp``.

The file's network is loaded with nnabla's ``NnpLoader``, converted by the one conversion path
(:func:`nnabla_lutq.convert`, which fits every table with the near-optimal fit of
:mod:`nnabla_lutq.core.fit`) and saved with :func:`nnabla_lutq.export_nnp`. With calibration
data the tables are fitted with each weight counted by its sensitivity, and a memory budget
chooses K per layer (:mod:`nnabla_lutq.training.sensitivity`).
"""
import os

import numpy as np
import nnabla as nn
import nnabla.functions as F

from ..core.fit import lloyd_bound
from ..nn.convert import LayerConfig, convert
from ..nn.state import STATE, inference_mode
from ..training.initialization import initialize
from ..training.budget import DEFAULT_CANDIDATES, Budget, choose_bits
from ..training.sensitivity import fisher_diagonal, initialize_weighted
from .export import export_nnp
from .nnp import NnpError, default_network, loaded_network, proto_network, read_nnp

__all__ = ['quantize_nnp', 'evaluate_nnp', 'network_accuracy']


def evaluate_nnp(path, x, y, batch_size=100, network=None):
    """Top-1 accuracy of the first executor's network of an .nnp on ``(x, y)``.

    Args:
        path (str): the .nnp.
        x (numpy.ndarray): inputs (N, ...) as the network expects them.
        y (numpy.ndarray): integer labels (N,) or (N, 1).
        batch_size (int): evaluation batch size.
        network (str or None): network name (default: the first executor's).

    Returns:
        float: accuracy in [0, 1].
    """
    network = network or default_network(read_nnp(path))
    with loaded_network(path, network, batch_size) as net:
        return network_accuracy(net, x, y)


def network_accuracy(net, x, y):
    """Top-1 accuracy of a loaded network (its first input and output) on ``(x, y)``, in
    minibatches of the network's batch size.

    Args:
        net: a network of nnabla's ``NnpLoader`` (``inputs``, ``outputs`` dicts).
        x (numpy.ndarray): inputs (N, ...).
        y (numpy.ndarray): integer labels (N,) or (N, 1).

    Returns:
        float: accuracy in [0, 1].
    """
    y = np.asarray(y).reshape(-1)
    xi = list(net.inputs.values())[0]
    yo = list(net.outputs.values())[0]
    batch_size = xi.shape[0]
    correct = 0
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        xi.d[:len(xb)] = xb
        yo.forward(clear_buffer=True)
        correct += int(np.sum(yo.d[:len(xb)].reshape(len(xb), -1).argmax(1) ==
                              y[i:i + len(xb)]))
    return correct / len(x)


def quantize_nnp(in_path, out_path, n_values=16, dictionary='free', prune_ratio=0.0,
                 pow2_range=None, iters=None, data=None, overrides=None, min_weights=0,
                 mlbn=False, network=None, calibration=None, budget=None,
                 candidates=DEFAULT_CANDIDATES, weighted=True, calibration_batch_size=32,
                 group_size=None):
    """Replace the weights of a float .nnp by look-up tables, without training.

    The file's network is loaded, converted with :func:`nnabla_lutq.convert` in inference mode
    (every ``Convolution`` / ``DepthwiseConvolution`` / ``Affine`` on a stored weight becomes a
    LUT-Q layer, with one table or, with ``group_size``, one per group of output channels, whose
    ``d`` and ``A`` are the near-optimal fit of
    :func:`nnabla_lutq.core.fit.init_dictionary`; layers without a LUT-Q counterpart, such as
    ``Deconvolution``, stay float and are listed in a warning) and saved with
    :func:`nnabla_lutq.export_nnp`. The layers' parameters move to the LUT-Q scope names
    (``<x>/conv/W`` -> ``<x>/lutq_conv/d`` and ``.../A``, bias ``<x>/lutq_conv/b``), so the
    result loads into the same network built with ``PF.lutq_*``; the float ``W`` leaves the
    file. The user's own registered parameters are not touched. Fine-tune afterwards with the
    training scripts' ``--init`` (from the float parameters).

    With ``calibration`` the sensitivity of every weight, the diagonal Fisher information of a
    loss on the calibration data (:func:`nnabla_lutq.fisher_diagonal`, at the float weights), is
    measured first: the tables are then fitted with each weight counted by it
    (:func:`nnabla_lutq.initialize_weighted`; ``weighted=False`` keeps the plain fit), and a
    ``budget`` chooses K per layer from ``candidates`` (:func:`nnabla_lutq.choose_bits`:
    ``n_values`` is then not used, the other settings, ``overrides`` and ``min_weights`` say
    which layers are quantized and how). For a classifier ``calibration=(x, y)`` is enough: the
    loss is the softmax cross-entropy of the first output (flattened to ``(B, classes)``)
    against the labels ``y``, or with ``(x, None)`` against the float model's own predictions
    (no labels needed); minibatches of ``calibration_batch_size`` samples (the last one filled
    up from the first samples). Any other loss: a function ``calibration(net)`` that gets the
    file's network loaded at ``calibration_batch_size`` (``net.inputs``, ``net.outputs``: names
    -> Variables) and returns ``(loss, minibatches)`` as :func:`nnabla_lutq.fisher_diagonal`
    takes them (``{Variable: array}`` dicts).

    Args:
        in_path (str): float .nnp.
        out_path (str): destination .nnp (written atomically; may not be ``in_path``).
        n_values (int): K.
        dictionary (str or list): ``'free'``, ``'pow2'`` or fixed values.
        prune_ratio (float): fraction of smallest weights tied to a fixed 0.
        pow2_range (tuple or None): exponent range for ``'pow2'``.
        iters (int or None): Lloyd iterations after the dynamic program (None: to the fixed
            point; 0: the program's table as it is).
        data (tuple or None): ``(x, y)`` to report the accuracy before and after.
        overrides (dict or None): per-layer settings, as :func:`nnabla_lutq.convert`.
        min_weights (int): layers with fewer weights stay float, as :func:`nnabla_lutq.convert`.
        mlbn (bool): make batch normalization multiplier-less too (folded to ``x * a + b``).
        network (str or None): the network to quantize (default: the first executor's).
        calibration (tuple or callable or None): ``(x, y)``, ``(x, None)`` or a function
            ``net -> (loss, minibatches)`` (see above).
        budget (Budget or float or None): memory of the quantized layers, tables included: a
            :class:`~nnabla_lutq.Budget` or average bits per weight; needs ``calibration``.
        candidates (iterable): the K a budget chooses from.
        weighted (bool): with ``calibration``, fit sensitivity-weighted tables.
        calibration_batch_size (int): samples per calibration minibatch.
        group_size (int or None): one table per ``group_size`` output channels of every
            quantized layer (:class:`~nnabla_lutq.nn.convert.LayerConfig`'s ``group_size``; it
            must divide each layer's output channels); None: one table per layer. Overrides may
            set their own.

    Returns:
        dict: ``layers`` (name, K, weights, mean squared quantization error, and for a layer
        with grouped tables its ``group_size`` and ``n_groups``), ``plan`` (the
        :class:`~nnabla_lutq.nn.convert.ConversionPlan`), with ``data``
        ``accuracy_before`` / ``accuracy_after``, with ``calibration`` ``fisher`` (the
        :class:`~nnabla_lutq.Fisher`) and ``weighted`` (the layers whose tables are weighted
        fits), with ``budget`` ``bits`` (the :class:`~nnabla_lutq.BitReport`).

    Raises:
        ValueError: for wrong settings (checked on every layer before anything is written; also
            ``iters < 0``), a budget without calibration or below the minimum possible, a file
            without float weight layers, or ``out_path == in_path``.
    """
    if os.path.abspath(in_path) == os.path.abspath(out_path):
        raise ValueError("write the quantized model to another file than its float source")
    if not str(out_path).endswith('.nnp'):
        raise ValueError(f"{out_path}: the file name must end with .nnp")
    lloyd_bound(iters)  # wrong values are refused before anything is read or written
    grouped = {} if group_size is None else {'group_size': group_size}
    config = LayerConfig(n_values, dictionary, prune_ratio, pow2_range, **grouped)
    if budget is not None:
        budget = Budget.of(budget)
        if calibration is None:
            raise ValueError("a budget chooses K per layer from sensitivities: give calibration "
                             "data (calibration=(x, y), (x, None) or a loss function)")
    model = read_nnp(in_path)
    network = network or default_network(model)
    batch_size = max(1, proto_network(model, network).batch_size)
    fisher = bits = None
    if calibration is not None and (weighted or budget is not None):
        fisher = _calibration_fisher(in_path, network, calibration, calibration_batch_size)
    if budget is not None:
        overrides, bits = choose_bits(fisher, budget, candidates, config, overrides, min_weights,
                                      weighted, iters)
        config = None  # the chosen layers are named; the others stay float
    # the file's parameters by their own names; the user's are set aside meanwhile
    with loaded_network(in_path, network, batch_size) as net:
        with inference_mode():
            outputs, plan = convert(list(net.outputs.values()), config, overrides, min_weights,
                                    mlbn, return_decisions=True)
        layers = STATE.lutq_layers()
        if not layers:
            raise NnpError(f"{in_path}: no convolution/affine layer with a stored float weight; "
                           "is it already LUT-Q?")
        refitted = []
        if fisher is not None and weighted:
            refitted = initialize_weighted(fisher, iters=iters)
        elif iters is not None:
            initialize(layers, iters)
        export_nnp(out_path, dict(net.inputs), dict(zip(net.outputs, outputs)),
                   batch_size=batch_size, network_name=network)
        result = {'plan': plan, 'layers': [_layer_result(r) for r in layers]}
    if fisher is not None:
        result['fisher'], result['weighted'] = fisher, refitted
    if bits is not None:
        result['bits'] = bits
    if data is not None:
        result['accuracy_before'] = evaluate_nnp(in_path, *data)
        result['accuracy_after'] = evaluate_nnp(out_path, *data)
    return result


def _calibration_fisher(path, network, calibration, batch_size):
    """The :class:`~nnabla_lutq.Fisher` of the file's float network on the calibration data
    (in a parameter tree of its own)."""
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) \
            or batch_size < 1:
        raise ValueError(f"calibration_batch_size must be an integer >= 1, got {batch_size!r}")
    if callable(calibration):
        with loaded_network(path, network, int(batch_size)) as net:
            loss, batches = calibration(net)
            return fisher_diagonal(loss, batches)
    if not isinstance(calibration, (tuple, list)) or len(calibration) != 2:
        raise ValueError("calibration must be (x, y), (x, None) or a function net -> (loss, "
                         f"minibatches), got {type(calibration).__name__}")
    x, labels = np.asarray(calibration[0], np.float32), calibration[1]
    n = len(x)
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != n:
            raise ValueError(f"calibration: {n} inputs but {len(labels)} labels")
    if not n:
        raise ValueError("calibration: no samples")
    b = min(int(batch_size), n)
    with loaded_network(path, network, b) as net:
        if len(net.inputs) != 1:
            raise ValueError(f"calibration=(x, y) needs a network with one input, "
                             f"{network!r} has {list(net.inputs)}; pass a loss function")
        xi = list(net.inputs.values())[0]
        yo = list(net.outputs.values())[0]
        if xi.shape[1:] != x.shape[1:]:
            raise ValueError(f"calibration: inputs of shape {x.shape[1:]} per sample, the "
                             f"network takes {xi.shape[1:]}")
        t = nn.Variable((b, 1))
        loss = F.mean(F.softmax_cross_entropy(F.reshape(yo, (b, -1)), t))

        def batches():
            for i in range(0, n, b):
                idx = np.arange(i, i + b) % n
                if labels is None:  # the float model's own predictions
                    xi.d = x[idx]
                    yo.forward(clear_buffer=True)
                    tb = yo.d.reshape(b, -1).argmax(1)
                else:
                    tb = labels[idx]
                yield {xi: x[idx], t: tb.reshape(b, 1)}
        return fisher_diagonal(loss, batches())


def _layer_result(rec):
    w, cfg = rec.W.d, rec.config
    q = cfg.lookup(rec.d.d, rec.A.d.astype(np.int64))
    out = {'name': rec.name, 'K': cfg.n_values, 'n_weights': int(w.size),
           'mse': float(np.mean((q - w) ** 2))}
    if cfg.group_size is not None:
        out.update(group_size=cfg.group_size, n_groups=cfg.n_groups)
    return out
