"""Post-training LUT-Q of an existing float .nnp (no training): ``nnabla_lutq.quantize_nnp``.

The file's network is loaded with nnabla's ``NnpLoader``, converted by the one conversion path
(:func:`nnabla_lutq.convert`, which fits every table with the near-optimal fit of
:mod:`nnabla_lutq.core.fit`) and saved with :func:`nnabla_lutq.export_nnp`.
"""
import os

import numpy as np

from ..core.fit import lloyd_bound
from ..nn.convert import LayerConfig, convert
from ..nn.state import STATE, inference_mode
from ..training.initialization import initialize
from .export import export_nnp
from .nnp import NnpError, default_network, loaded_network, proto_network, read_nnp

__all__ = ['quantize_nnp', 'evaluate_nnp']


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
    y = np.asarray(y).reshape(-1)
    with loaded_network(path, network, batch_size) as net:
        xi = list(net.inputs.values())[0]
        yo = list(net.outputs.values())[0]
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
                 mlbn=False, network=None):
    """Replace the weights of a float .nnp by look-up tables, without training.

    The file's network is loaded, converted with :func:`nnabla_lutq.convert` in inference mode
    (every ``Convolution`` / ``DepthwiseConvolution`` / ``Affine`` on a stored weight becomes a
    LUT-Q layer whose ``d`` and ``A`` are the near-optimal fit of
    :func:`nnabla_lutq.core.fit.init_dictionary`; layers without a LUT-Q counterpart, such as
    ``Deconvolution``, stay float and are listed in a warning) and saved with
    :func:`nnabla_lutq.export_nnp`. The layers' parameters move to the LUT-Q scope names
    (``<x>/conv/W`` -> ``<x>/lutq_conv/d`` and ``.../A``, bias ``<x>/lutq_conv/b``), so the
    result loads into the same network built with ``PF.lutq_*``; the float ``W`` leaves the
    file. The user's own registered parameters are not touched. Fine-tune afterwards with the
    training scripts' ``--init`` (from the float parameters).

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

    Returns:
        dict: ``layers`` (name, K, weights, mean squared quantization error), ``plan`` (the
        :class:`~nnabla_lutq.nn.convert.ConversionPlan`), and with ``data``
        ``accuracy_before`` / ``accuracy_after``.

    Raises:
        ValueError: for wrong settings (checked on every layer before anything is written; also
            ``iters < 0``), a file without float weight layers, or ``out_path == in_path``.
    """
    if os.path.abspath(in_path) == os.path.abspath(out_path):
        raise ValueError("write the quantized model to another file than its float source")
    if not str(out_path).endswith('.nnp'):
        raise ValueError(f"{out_path}: the file name must end with .nnp")
    lloyd_bound(iters)  # wrong values are refused before anything is read or written
    config = LayerConfig(n_values, dictionary, prune_ratio, pow2_range)
    model = read_nnp(in_path)
    network = network or default_network(model)
    batch_size = max(1, proto_network(model, network).batch_size)
    # the file's parameters by their own names; the user's are set aside meanwhile
    with loaded_network(in_path, network, batch_size) as net:
        with inference_mode():
            outputs, plan = convert(list(net.outputs.values()), config, overrides, min_weights,
                                    mlbn, return_decisions=True)
        layers = STATE.lutq_layers()
        if not layers:
            raise NnpError(f"{in_path}: no convolution/affine layer with a stored float weight; "
                           "is it already LUT-Q?")
        if iters is not None:
            initialize(layers, iters)
        export_nnp(out_path, dict(net.inputs), dict(zip(net.outputs, outputs)),
                   batch_size=batch_size, network_name=network)
        result = {'plan': plan, 'layers': [_layer_result(r) for r in layers]}
    if data is not None:
        result['accuracy_before'] = evaluate_nnp(in_path, *data)
        result['accuracy_after'] = evaluate_nnp(out_path, *data)
    return result


def _layer_result(rec):
    w = rec.W.d
    d, a = rec.d.d, rec.A.d.astype(np.int64)
    return {'name': rec.name, 'K': int(len(d)), 'n_weights': int(w.size),
            'mse': float(np.mean((d[a] - w) ** 2))}
