"""Saving LUT-Q inference graphs to .nnp with nnabla's own writer."""

import nnabla as nn
from nnabla.utils.save import save

from .nnp import atomic_output, fold_constants, read_nnp, write_nnp
from .parametric_functions import find_lutq_layer

__all__ = ['export_nnp']


def _graph_params(outputs, inputs):
    """Leaf parameters that the graphs of ``outputs`` read, by name.

    Parameters are recognized by the registry and by the LUT-Q/mlbn layer records (which keep the
    layer's own variables even if a loader later registered new ones under the same names).

    Raises:
        ValueError: for a leaf that is neither an input nor a known parameter.
    """
    from . import parametric_functions as lpf
    registered = {p.data: k for k, p in nn.get_parameters(grad_only=False).items()}
    for rec in list(lpf._LUTQ_ANY.values()):
        for part in ('W', 'd', 'A'):
            registered.setdefault(getattr(rec, part).data, f"{rec.name}/{part}")
    for rec in list(lpf._MLBN.values()):
        for part in ('beta', 'gamma', 'mean', 'var'):
            registered.setdefault(getattr(rec, part).data, f"{rec.name}/{part}")
    input_data = {v.data for v in inputs}
    used, unknown = {}, []

    def cb(f):
        for v in f.inputs:
            if v.parent is None:
                if v.data in registered:
                    used[registered[v.data]] = v
                elif v.data not in input_data:
                    unknown.append(v.shape)
    for o in outputs:
        o.visit(cb)
    if unknown:
        raise ValueError(
            f"the graph reads {len(unknown)} variable(s) (shapes {unknown[:3]}) that are neither "
            "inputs nor registered parameters: pass every data input in `inputs` and build the "
            "graph from parameters created with get_parameter_or_create (NnpLoader replaces the "
            "registered parameters of the same names: load files inside "
            "`with nn.parameter_scope('loaded'):`)")
    return used


def export_nnp(path, inputs, outputs, dense=False, fold=True, batch_size=1, network_name='lutq'):
    """Save an inference graph with its look-up tables to an .nnp file.

    Build the graph under :func:`nnabla_lutq.inference_mode` (and BN layers with
    ``batch_stat=False``): LUT-Q layers then compute ``F.embed(A, d)`` and the file holds
    ``<layer>/d`` and ``<layer>/A`` (int32) but no float ``W``. With ``fold`` (default), every
    value computed from parameters only is stored instead of its subgraph
    (:func:`nnabla_lutq.nnp.fold_constants`): multiplier-less BN becomes ``x * a + b`` with stored
    ``<bn>/a`` (powers of two) and ``<bn>/b``. With ``dense=True`` the tied weights ``d[A]`` are
    stored as plain float ``<layer>/W`` (for runtimes without Embed/Gather). The file is written
    with ``nnabla.utils.save.save`` (then rewritten) under a temporary name and moved into place,
    so an existing file is never left half-written. Reload it with
    ``nnabla.utils.nnp_graph.NnpLoader`` or ``nnabla.utils.load.load``; the outputs equal the
    in-memory graph's exactly (same context).

    Args:
        path (str): destination ``.nnp`` file.
        inputs (dict): name -> input :class:`~nnabla.Variable`.
        outputs (dict): name -> output :class:`~nnabla.Variable`.
        dense (bool): store ``d[A]`` as float weights instead of the look-up tables.
        fold (bool): store parameter-only subexpressions (mlbn scales) as parameters.
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
    params = _graph_params(list(outputs.values()), list(inputs.values()))
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
    with atomic_output(path, '.nnp') as tmp:
        save(tmp, contents, variable_batch_size=True, parameters=params)
        if fold or dense:
            model = fold_constants(read_nnp(tmp), dense=dense)
            write_nnp(tmp, model)
            params = model.params
    return sorted(params)
