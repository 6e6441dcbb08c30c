# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""ONNX export of LUT-Q .nnp files through nnabla's own converter (the ``[onnx]`` extra).

nnabla-converter (1.39) takes no LUT-Q graph as it is: its Affine exporter refuses a computed
weight (``@lutq/Embed_out is not in network's parameters``) and its DepthwiseConvolution exporter
reshapes the weight to ONNX's ``(C, 1, kh, kw)`` only when it is stored, so a computed ``d[A]``
keeps nnabla's ``(C, kh, kw)`` and onnxruntime refuses the file. So :func:`export_onnx` gives it
the model with the tables folded (``d[A]`` stored, :func:`~nnabla_lutq.io.fold.fold_constants`),
lets it lay each weight out as ONNX wants (transposed, reshaped), and then puts every table back:
the weight initializer becomes ``Gather(d, Cast(A))`` with ``A`` in the narrowest integer type
ONNX has for K values (uint8 up to K = 256, uint16 up to 65536, else int32: opset 11 has no
sub-byte type) and ``d`` the K float32 values. Before the file is moved into place, onnxruntime
runs it beside nnabla on a random batch (when onnxruntime is installed).

``nnabla_cli convert x.nnp x.onnx`` fails without TensorFlow (nnabla's command imports it for
every ONNX conversion, and the ``[onnx]`` install leaves it out); ``nnabla-lutq onnx`` calls
nnabla's ONNX exporter directly, for any .nnp.

Install, in a clone of nnabla-lutq (the README says why nnabla-converter goes without its
declared dependencies, which pull in TensorFlow)::

    pip install ".[onnx]"                              # onnx and onnxruntime
    pip install --no-deps "nnabla-converter==1.39.*"
"""
import contextlib
import io
import os
import tempfile

import numpy as np

from ..core.checks import integer_at_least
from .fold import fold_constants
from .lookup import table_lookups
from .nnp import atomic_output, default_network, loaded_network, read_nnp, write_nnp

__all__ = ['export_onnx', 'check_onnx', 'index_dtype', 'INSTALL_HINT', 'CHECK_TOLERANCE']

#: The two commands that install what ONNX export needs (run in a clone of nnabla-lutq).
INSTALL_HINT = 'pip install ".[onnx]" && pip install --no-deps "nnabla-converter==1.39.*"'

#: Largest |onnxruntime - nnabla| :func:`export_onnx` accepts, relative to max(1, max |nnabla|).
CHECK_TOLERANCE = 1e-4


def _converter():
    try:
        from nnabla.utils.converter.nnabla import NnpImporter
        from nnabla.utils.converter.onnx.exporter import OnnxExporter
        import onnx
    except ImportError as e:
        raise ImportError(
            f"ONNX export needs nnabla-converter and onnx ({e}); install them in the nnabla-lutq "
            f"clone with: {INSTALL_HINT}")
    return NnpImporter, OnnxExporter, onnx


def index_dtype(k):
    """The narrowest ONNX integer type for indices into a table of ``k`` values (numpy dtype)."""
    for dt in (np.uint8, np.uint16):
        if k <= np.iinfo(dt).max + 1:
            return np.dtype(dt)
    return np.dtype(np.int32)


def _tables(model, dense):
    """Folded weight name -> ``(A name, d name, d, lookup, A)`` for the weights of ``dense`` (the
    folded ``model``) that are ``d[A]`` of one of ``model``'s tables."""
    tables = []
    for net in model.proto.network:
        for lk in table_lookups(net, model.params):
            d, a = model.params[lk.d].astype(np.float32), model.params[lk.a]
            tables.append((lk.a, lk.d, d, lk, a, lk.values(d, a)))
    found = {}
    for name, w in dense.params.items():
        if name in model.params:
            continue
        for a_name, d_name, values, lk, idx, q in tables:
            if q.shape == w.shape and np.array_equal(q, w):
                found[name] = (a_name, d_name, values, lk, idx)
                break
    return found


def _indices(values, w):
    """Indices ``i`` with ``values[i] == w`` exactly (the first of equal values), or None."""
    order = np.argsort(values, kind='stable')
    pos = np.clip(np.searchsorted(values[order], w.ravel()), 0, len(values) - 1)
    idx = order[pos].reshape(w.shape)
    return idx if np.array_equal(values[idx], w) else None


def _layouts(shape, w):
    """The ways nnabla's exporter may lay out a weight of ``shape`` as the initializer ``w``:
    the same values in the same order (reshaped: convolutions, depthwise ``(C, 1, kh, kw)``,
    affine), or a 2-D weight transposed."""
    out = [lambda x: np.reshape(x, w.shape)]
    if w.ndim == 2:
        out.append(lambda x: np.reshape(x, w.shape[::-1]).T)
    return out


def _grouped_indices(values, lk, a, w):
    """Indices of a grouped table's weight ``w`` (as ONNX holds it) into the flattened tables.

    Returns:
        tuple: ``(local, offsets)``: ``A`` laid out as ``w`` (indices into its group's row) and
        ``g·K`` per output channel, shaped to broadcast along ``w``'s output axis, with
        ``flat[local + offsets] == w``; ``(global indices, None)`` when the output channels are
        not one axis of ``w``; None when no index array gives ``w``.
    """
    flat = values.reshape(-1)
    k = values.shape[-1]
    q, gid = lk.values(values, a), lk.group_ids()
    for lay in _layouts(a.shape, w):
        if not np.array_equal(lay(q), w):
            continue
        local, g = lay(a).astype(np.int64), lay(gid)
        for axis in range(w.ndim):
            row = np.moveaxis(g, axis, 0).reshape(w.shape[axis], -1)[:, 0]
            view = [1] * w.ndim
            view[axis] = -1
            offsets = (row * k).reshape(view)
            if np.array_equal(np.broadcast_to(offsets, w.shape), g * k) and \
                    np.array_equal(flat[local + offsets], w):
                return local, offsets.astype(np.int32)
    idx = _indices(flat, w)
    return None if idx is None else (idx, None)


def _regather(onnx, path, tables):
    """Replace each folded weight initializer of the ONNX file by ``Gather(d, Cast(A))`` (one
    table) or ``Gather(flat d, Add(Cast(A), offsets))`` (grouped tables: ``d`` flattened to G·K
    values, ``A`` the indices into the group's row, ``offsets`` = ``g·K`` per output channel).

    Returns:
        tuple: ``(names put back as Gather, names left dense, index dtype per name)``.
    """
    from onnx import TensorProto, helper, numpy_helper
    model = onnx.load(path)
    g = model.graph
    taken = {i.name for i in g.initializer} | {o for n in g.node for o in n.output} | {
        i.name for i in g.input}
    gathered, dense, nodes, types = [], [], [], {}

    def fresh(name):
        base, k = name, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        return name
    for init in list(g.initializer):
        if init.name not in tables:
            continue
        a, d, values, lk, a_arr = tables[init.name]
        w = numpy_helper.to_array(init)
        offsets = None
        if lk.grouped:
            found = _grouped_indices(values, lk, a_arr, w)
            idx, offsets = found if found is not None else (None, None)
        else:
            idx = _indices(values, w)
        if idx is None:
            dense.append(init.name)
            continue
        dt = index_dtype(values.shape[-1] if offsets is not None else values.size)
        d_name, a_name = fresh(d), fresh(a)
        g.initializer.append(numpy_helper.from_array(values.reshape(-1), d_name))
        g.initializer.append(numpy_helper.from_array(idx.astype(dt), a_name))
        if dt != np.int32:
            cast = fresh(a + '_int32')
            nodes.append(helper.make_node('Cast', [a_name], [cast], to=TensorProto.INT32,
                                          name=fresh(a + '/Cast')))
            a_name = cast
        if offsets is not None:
            off_name, total = fresh(a + '/offsets'), fresh(a + '_in_d')
            g.initializer.append(numpy_helper.from_array(offsets, off_name))
            nodes.append(helper.make_node('Add', [a_name, off_name], [total],
                                          name=fresh(a + '/Add')))
            a_name = total
        nodes.append(helper.make_node('Gather', [d_name, a_name], [init.name], axis=0,
                                      name=fresh(init.name + '/Gather')))
        g.initializer.remove(init)
        gathered.append(init.name)
        types[init.name] = dt
    kept = list(g.node)
    del g.node[:]
    g.node.extend(nodes + kept)
    for v in [v for v in g.input if v.name in gathered]:  # an initializer listed as an input
        g.input.remove(v)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return gathered, dense, types


def export_onnx(nnp_path, onnx_path, batch_size=1, opset='11', check=True):
    """Convert a (LUT-Q) .nnp to ONNX with nnabla's converter, keeping the look-up tables.

    Every look-up table is stored as ``d`` (K float32) and ``A`` (uint8 up to K = 256) and read
    through ``Gather``, whatever layer uses it (convolution, grouped and depthwise convolution,
    affine); everything else is what nnabla's exporter writes.

    Args:
        nnp_path (str): the model, e.g. written by :func:`nnabla_lutq.export_nnp`.
        onnx_path (str): destination ``.onnx``.
        batch_size (int): batch size of the ONNX graph.
        opset (str): ONNX opset, as nnabla's exporter names it.
        check (bool): run the file with onnxruntime beside nnabla on a random batch before it
            is moved into place (skipped when onnxruntime is not installed).

    Returns:
        dict: ``gather_layers`` (tables kept as Gather), ``dense_layers`` and ``dense_names``
        (tables stored as float weights: none unless a weight could not be re-indexed),
        ``index_types`` (Gather index input -> stored dtype), ``max_abs_diff`` (onnxruntime vs
        nnabla; None when not checked).

    Raises:
        ImportError: without the converter (says what to install).
        ValueError: before anything is written, for malformed arguments or a file that cannot be
            read, converted, loaded by onnxruntime or that computes other values than nnabla.
        OSError: if ``onnx_path`` cannot be written (an existing file is left as it was).
    """
    NnpImporter, OnnxExporter, onnx = _converter()
    if not str(onnx_path).endswith('.onnx'):
        raise ValueError(f"{onnx_path}: the file name must end with .onnx")
    batch_size = integer_at_least(batch_size, 1, 'batch_size')
    model = read_nnp(nnp_path)
    folded = fold_constants(model, dense=True)
    tables = _tables(model, folded)
    with tempfile.TemporaryDirectory() as tmp, atomic_output(onnx_path, '.onnx') as out:
        src = os.path.join(tmp, 'model.nnp')
        write_nnp(src, folded)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                nnp = NnpImporter(src, expand_network=True, executor_index=None).execute()
                OnnxExporter(nnp, batch_size, -1, opset=opset).execute(out)
        except (ValueError, KeyError, AttributeError, TypeError, IndexError) as e:
            raise ValueError(f"{nnp_path}: nnabla's ONNX converter failed: {e}")
        gathered, dense, dtypes = _regather(onnx, out, tables)
        diff = _check(out, nnp_path, batch_size) if check else None
    short = sorted(n[:-2] if n.endswith('/W') else n for n in dense)
    types = {tables[n][0]: dtypes[n].name for n in gathered}
    return {'gather_layers': len(gathered), 'dense_layers': len(dense), 'dense_names': short,
            'index_types': types, 'max_abs_diff': diff}


def _check(onnx_path, nnp_path, batch_size):
    """Max |onnxruntime - nnabla| on a random normal batch, or None without onnxruntime or for a
    network with other than float inputs; raises ValueError if onnxruntime cannot load or run the
    file or computes other values."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    rng = np.random.RandomState(0)
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3  # the exception says it; no log line besides
        sess = ort.InferenceSession(onnx_path, options, providers=['CPUExecutionProvider'])
        inputs = {}
        for i in sess.get_inputs():
            if i.type != 'tensor(float)':
                return None
            shape = [d if isinstance(d, int) else batch_size for d in i.shape]
            inputs[i.name] = rng.randn(*shape).astype(np.float32)
        sess.run(None, inputs)
    except Exception as e:  # onnxruntime raises its own types (Fail, InvalidGraph, ...)
        raise ValueError(f"{nnp_path}: onnxruntime refuses the converted file: "
                         f"{' '.join(str(e).split())}")
    diff, scale = check_onnx(onnx_path, nnp_path, inputs, scale=True)
    if not diff <= CHECK_TOLERANCE * max(1.0, scale):
        raise ValueError(f"{nnp_path}: the converted file computes other values than nnabla "
                         f"(max |onnxruntime - nnabla| = {diff:.3g}, outputs up to {scale:.3g})")
    return diff


def check_onnx(onnx_path, nnp_path, inputs, network=None, scale=False):
    """Largest absolute difference between onnxruntime and nnabla on the same inputs.

    Args:
        onnx_path (str): the ONNX file.
        nnp_path (str): the .nnp it came from.
        inputs (numpy.ndarray or dict): a batch for the single input, or input name -> batch
            (batch size of the ONNX graph).
        network (str or None): network name (default: the first executor's).
        scale (bool): also return the largest |nnabla output|.

    Returns:
        float: max |onnxruntime - nnabla| over every output (with ``scale``: a pair).
    """
    import onnxruntime as ort
    sess = ort.InferenceSession(onnx_path, providers=['CPUExecutionProvider'])
    if not isinstance(inputs, dict):
        inputs = {sess.get_inputs()[0].name: inputs}
    inputs = {k: np.asarray(v, np.float32) for k, v in inputs.items()}
    network = network or default_network(read_nnp(nnp_path))
    batch = len(next(iter(inputs.values())))
    with loaded_network(nnp_path, network, batch) as net:
        for k, v in net.inputs.items():
            v.d = inputs[k]
        refs = {}
        for k, v in net.outputs.items():
            v.forward()
            refs[k] = v.d.copy()
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, inputs)))
    diff = max(float(np.max(np.abs(got[k].reshape(r.shape) - r))) for k, r in refs.items())
    top = max(float(np.max(np.abs(r))) for r in refs.values())
    return (diff, top) if scale else diff
