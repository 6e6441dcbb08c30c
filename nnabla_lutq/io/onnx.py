"""ONNX export of LUT-Q .nnp files through nnabla's own converter (the ``[onnx]`` extra).

nnabla-converter maps ``Embed(A, d)`` to ONNX ``Gather(d, A)``, so convolutions keep their look-up
tables in the ONNX file. Its Affine exporter, however, only accepts a stored parameter as weight
(a computed ``d[A]`` is refused), so the tables read by ``Affine`` are stored dense (``d[A]`` as a
float initializer ``<layer>/W``) before conversion; every other layer stays ``Gather``.

Install, in a clone of nnabla-lutq (the README says why nnabla-converter goes without its
declared dependencies, which pull in TensorFlow)::

    pip install ".[onnx]"                              # onnx and onnxruntime
    pip install --no-deps "nnabla-converter==1.39.*"
"""
import os
import tempfile

import numpy as np

from .fold import fold_constants
from .nnp import atomic_output, default_network, loaded_network, lut_embeds, read_nnp, write_nnp

__all__ = ['export_onnx', 'check_onnx', 'DENSE_FUNCTIONS', 'INSTALL_HINT']

#: Functions whose converter refuses a computed weight: their tables are stored dense.
DENSE_FUNCTIONS = ('Affine',)

#: The two commands that install what ONNX export needs (run in a clone of nnabla-lutq).
INSTALL_HINT = 'pip install ".[onnx]" && pip install --no-deps "nnabla-converter==1.39.*"'


def _converter():
    try:
        from nnabla.utils.converter.nnabla import NnpImporter
        from nnabla.utils.converter.onnx.exporter import OnnxExporter
    except ImportError as e:
        raise ImportError(
            f"ONNX export needs nnabla-converter and onnx ({e}); install them in the nnabla-lutq "
            f"clone with: {INSTALL_HINT}")
    return NnpImporter, OnnxExporter


def export_onnx(nnp_path, onnx_path, batch_size=1, opset='11'):
    """Convert a (LUT-Q) .nnp to ONNX with nnabla's converter.

    Args:
        nnp_path (str): the model, e.g. written by :func:`nnabla_lutq.export_nnp`.
        onnx_path (str): destination ``.onnx``.
        batch_size (int): batch size of the ONNX graph.
        opset (str): ONNX opset.

    Returns:
        dict: ``gather_layers`` (tables kept as Gather), ``dense_layers`` and ``dense_names``.

    Raises:
        ImportError: without the converter (says what to install).
        ValueError: for a file that cannot be read or converted.
        OSError: if ``onnx_path`` cannot be written (an existing file is left as it was).
    """
    NnpImporter, OnnxExporter = _converter()
    if not str(onnx_path).endswith('.onnx'):
        raise ValueError(f"{onnx_path}: the file name must end with .onnx")
    model = read_nnp(nnp_path)
    before = {a for net in model.proto.network for _, a, _ in lut_embeds(net, model.params)}
    model = fold_constants(model, dense=set(DENSE_FUNCTIONS))
    after = {a for net in model.proto.network for _, a, _ in lut_embeds(net, model.params)}
    dense = sorted(a[:-2] if a.endswith('/A') else a for a in before - after)
    with tempfile.TemporaryDirectory() as tmp, atomic_output(onnx_path, '.onnx') as out:
        src = os.path.join(tmp, 'model.nnp')
        write_nnp(src, model)
        try:
            nnp = NnpImporter(src, expand_network=True, executor_index=None).execute()
            OnnxExporter(nnp, batch_size, -1, opset=opset).execute(out)
        except (ValueError, KeyError, AttributeError, TypeError) as e:
            raise ValueError(f"{nnp_path}: nnabla's ONNX converter failed: {e}")
    return {'gather_layers': len(after), 'dense_layers': len(dense), 'dense_names': dense}


def check_onnx(onnx_path, nnp_path, inputs, network=None):
    """Largest absolute difference between onnxruntime and nnabla on the same inputs.

    Args:
        onnx_path (str): the ONNX file.
        nnp_path (str): the .nnp it came from.
        inputs (numpy.ndarray): a batch for the single input (batch size of the ONNX graph).
        network (str or None): network name (default: the first executor's).

    Returns:
        float: max |onnxruntime - nnabla|.
    """
    import onnxruntime as ort
    network = network or default_network(read_nnp(nnp_path))
    with loaded_network(nnp_path, network, len(inputs)) as net:
        xi, yo = list(net.inputs.values())[0], list(net.outputs.values())[0]
        xi.d = inputs
        yo.forward()
        ref = yo.d.copy()
    sess = ort.InferenceSession(onnx_path, providers=['CPUExecutionProvider'])
    got = sess.run(None, {sess.get_inputs()[0].name: inputs.astype(np.float32)})[0]
    return float(np.max(np.abs(got.reshape(ref.shape) - ref)))
