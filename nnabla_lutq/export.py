"""Saving LUT-Q inference graphs to .nnp with nnabla's own writer."""
import os
import tempfile

import nnabla as nn
from nnabla.utils.save import save

from .parametric_functions import find_lutq_layer

__all__ = ['export_nnp']


def _graph_params(outputs):
    """Leaf parameters (registered ones) that the graphs of ``outputs`` read, by name."""
    registered = {p.data: k for k, p in nn.get_parameters(grad_only=False).items()}
    used = {}

    def cb(f):
        for v in f.inputs:
            if v.parent is None and v.data in registered:
                used[registered[v.data]] = v
    for o in outputs:
        o.visit(cb)
    return used


def export_nnp(path, inputs, outputs, batch_size=1, network_name='lutq'):
    """Save an inference graph with its look-up tables to an .nnp file.

    Build the graph under :func:`nnabla_lutq.inference_mode` (and BN layers with
    ``batch_stat=False``): LUT-Q layers then compute ``F.embed(A, d)`` and the file holds
    ``<layer>/d`` and ``<layer>/A`` (int32) but no float ``W``. The file is written with
    ``nnabla.utils.save.save`` to a temporary name and moved into place, so an existing file is
    never left half-written. Reload it with ``nnabla.utils.nnp_graph.NnpLoader``.

    Args:
        path (str): destination ``.nnp`` file.
        inputs (dict): name -> input :class:`~nnabla.Variable`.
        outputs (dict): name -> output :class:`~nnabla.Variable`.
        batch_size (int): batch size recorded in the file.
        network_name (str): name of the network and of its executor.

    Returns:
        list: names of the saved parameters.

    Raises:
        ValueError: if the graph still reads float ``W`` of a LUT-Q layer (built outside
            :func:`~nnabla_lutq.inference_mode`), or the arguments are malformed.
    """
    if not str(path).endswith('.nnp'):
        raise ValueError(f"{path}: the file name must end with .nnp")
    if not isinstance(inputs, dict) or not isinstance(outputs, dict) or not inputs or not outputs:
        raise ValueError("inputs and outputs must be non-empty dicts of name -> Variable")
    params = _graph_params(list(outputs.values()))
    floats = [k for k, v in params.items()
              if find_lutq_layer(v) is not None and find_lutq_layer(v).W.data == v.data]
    if floats:
        raise ValueError(
            f"the graph reads the float weights {floats[:3]}: build the inference graph inside "
            "`with nnabla_lutq.inference_mode():` so LUT-Q layers compute F.embed(A, d)")
    contents = {
        'networks': [{'name': network_name, 'batch_size': batch_size,
                      'outputs': dict(outputs), 'names': dict(inputs)}],
        'executors': [{'name': 'runtime', 'network': network_name,
                       'data': list(inputs.keys()), 'output': list(outputs.keys())}]}
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(suffix='.nnp', dir=folder)
    os.close(fd)
    try:
        save(tmp, contents, variable_batch_size=True, parameters=params)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return sorted(params)
