"""Post-training LUT-Q of an existing float .nnp (no training): ``nnabla_lutq.quantize_nnp``."""
import os

import numpy as np
from tqdm import tqdm

from ..training.initialization import FLOAT_TO_LUTQ_SCOPES
from ..core.config import make_config
from ..core.fit import init_dictionary, lloyd_bound
from . import metadata
from .nnp import (WEIGHT_FUNCTIONS, NnpError, _sync_executor_parameters, default_network,
                  describe_float_bn, describe_float_layers, loaded_network, read_nnp, write_nnp)

__all__ = ['quantize_nnp', 'WEIGHT_FUNCTIONS', 'evaluate_nnp']

#: Functions whose second input is a weight that post-training LUT-Q replaces by ``Embed(A, d)``.


def _lutq_prefix(w_name):
    prefix = w_name[:-2] if w_name.endswith('/W') else w_name
    parts = prefix.split('/')
    if parts[-1] in FLOAT_TO_LUTQ_SCOPES:
        parts[-1] = FLOAT_TO_LUTQ_SCOPES[parts[-1]]
    return '/'.join(parts)


def _describe(old, model, targets, kinds, configs):
    """The description of a quantized model: its new tables, what the float file said about the
    layers it kept (BN, tables it already had, reasons), and the layers still float.

    Args:
        old (dict or None): the float file's description.
        model (Nnp): the quantized model.
        targets (dict): quantized weight name -> the layer's LUT-Q prefix.
        kinds (dict): quantized weight name -> the layer's kind.
        configs (dict): quantized weight name -> its :class:`~nnabla_lutq.core.config.LUTQConfig`.

    Returns:
        dict: the description (:mod:`nnabla_lutq.io.metadata`).
    """
    old = old or metadata.new()
    meta = metadata.new()
    meta['bn'] = {k: dict(v) for k, v in old.get('bn', {}).items()
                  if all(p in model.params for p in v.get('params', []))}
    meta['tables'] = {k: dict(t) for k, t in old.get('tables', {}).items()
                      if t.get('W') not in targets and all(
                          t.get(p) in model.params for p in ('A', 'd', 'W') if t.get(p))}
    for w, p in targets.items():
        meta['tables'][p] = metadata.table(kinds[w], configs[w], 'tables', p)
    notes = {k.rsplit('/', 1)[0]: v for k, v in old.get('float_layers', {}).items()}
    return describe_float_layers(model, describe_float_bn(model, meta), notes)


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
                 pow2_range=None, iters=None, data=None, progress=False):
    """Replace the weights of a float .nnp by k-means look-up tables, without training.

    Every ``Convolution`` / ``DepthwiseConvolution`` / ``Deconvolution`` / ``Affine`` whose weight
    is a stored float parameter gets ``Embed(A, d)`` instead: ``d`` and ``A`` come from
    :func:`nnabla_lutq.core.fit.init_dictionary` (the near-optimal fit: an exact dynamic program,
    then at most ``iters`` Lloyd iterations, the constraints of ``dictionary`` /
    ``prune_ratio``). The float ``W`` leaves the file; the layer's parameters move to the LUT-Q
    scope names (``<x>/conv/W`` -> ``<x>/lutq_conv/d`` and ``.../A``, bias ``<x>/lutq_conv/b``),
    so the result loads into the same network built with ``PF.lutq_*``. Fine-tune afterwards
    with the training scripts' ``--init`` (from the float parameters).

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
        progress (bool): a progress bar over the layers.

    Returns:
        dict: ``layers`` (name, K, weights, mean squared quantization error), and with ``data``
        ``accuracy_before`` / ``accuracy_after``.

    Raises:
        ValueError: for wrong settings (checked on every layer before anything is written; also
            ``iters < 0``), a file without float weight layers, or ``out_path == in_path``.
    """
    if os.path.abspath(in_path) == os.path.abspath(out_path):
        raise ValueError("write the quantized model to another file than its float source")
    if not str(out_path).endswith('.nnp'):
        raise ValueError(f"{out_path}: the file name must end with .nnp")
    lloyd_bound(iters)  # a wrong value is refused before anything is read or written
    model = read_nnp(in_path)
    targets, kinds = {}, {}  # W name -> new prefix, the kind of its layer
    for net in model.proto.network:
        for f in net.function:
            if f.type in WEIGHT_FUNCTIONS and len(f.input) > 1:
                w = f.input[1]
                if w in model.params and np.issubdtype(model.params[w].dtype, np.floating):
                    targets[w] = _lutq_prefix(w)
                    kinds.setdefault(w, metadata.KINDS[f.type])
    if not targets:
        raise NnpError(f"{in_path}: no convolution/affine layer with a stored float weight; is it "
                       "already LUT-Q?")
    configs = {w: make_config(n_values, dictionary, prune_ratio, pow2_range,
                              model.params[w].size, layer=p) for w, p in targets.items()}
    for w, p in targets.items():
        if p + '/A' in model.params or p + '/d' in model.params:
            raise NnpError(f"{in_path}: {p}/A or {p}/d exists already")
    rename = {}
    for w, p in targets.items():  # the layer's other parameters (bias) follow to the new scope
        old = w[:-2] if w.endswith('/W') else w
        for k in model.params:
            if k != w and k.startswith(old + '/') and '/' not in k[len(old) + 1:]:
                rename[k] = p + k[len(old):]
    layers = []
    for w, p in tqdm(targets.items(), desc='k-means', disable=not progress, ncols=80):
        W = model.params[w].astype(np.float32)
        d, a = init_dictionary(W, configs[w], iters)
        model.params[p + '/d'] = d.astype(np.float32)
        model.params[p + '/A'] = a.astype(np.int32)
        model.need_grad[p + '/d'] = model.need_grad[p + '/A'] = False
        layers.append({'name': p, 'K': int(len(d)), 'n_weights': int(W.size),
                       'mse': float(np.mean((d[a] - W) ** 2))})
    for old, new in rename.items():
        model.params[new] = model.params.pop(old)
        model.need_grad[new] = model.need_grad.pop(old, False)
    for w in targets:
        del model.params[w]
    for net in model.proto.network:
        functions, made = [], set()
        for f in net.function:
            g = type(f)()
            g.CopyFrom(f)
            for j, i in enumerate(g.input):
                if i in targets:
                    p = targets[i]
                    if p not in made:  # Embed(A, d) right before its first reader
                        e = type(f)()
                        e.name, e.type = p + '/Embed', 'Embed'
                        e.input.extend([p + '/A', p + '/d'])
                        e.output.append(p + '/W_q')
                        functions.append(e)
                        made.add(p)
                    g.input[j] = p + '/W_q'
                elif i in rename:
                    g.input[j] = rename[i]
            functions.append(g)
        del net.function[:]
        net.function.extend(functions)
        shapes = {v.name: list(v.shape.dim) for v in net.variable}
        for v in list(net.variable):
            if v.name in targets:
                p = targets[v.name]
                net.variable.remove(v)
                for name, shape, kind in ((p + '/A', shapes[v.name], 'Parameter'),
                                          (p + '/d', [None], 'Parameter'),
                                          (p + '/W_q', shapes[v.name], 'Buffer')):
                    nv = net.variable.add()
                    nv.name, nv.type = name, kind
                    nv.shape.dim.extend([len(model.params[p + '/d'])] if shape == [None]
                                        else shape)
            elif v.name in rename:
                v.name = rename[v.name]
    for opt in model.proto.optimizer:  # training sections must not name removed parameters
        keep = [pv for pv in opt.parameter_variable if pv.variable_name in model.params
                or pv.variable_name in rename]
        del opt.parameter_variable[:]
        for pv in keep:
            opt.parameter_variable.add().variable_name = rename.get(pv.variable_name,
                                                                    pv.variable_name)
    _sync_executor_parameters(model)
    model.meta = _describe(model.meta, model, targets, kinds, configs)
    result = {'layers': layers}
    if data is not None:
        result['accuracy_before'] = evaluate_nnp(in_path, *data)
    write_nnp(out_path, model)
    if data is not None:
        result['accuracy_after'] = evaluate_nnp(out_path, *data)
    return result
