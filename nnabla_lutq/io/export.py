"""Saving LUT-Q inference graphs to .nnp with nnabla's own writer."""

import numpy as np
from nnabla.utils.save import save

from ..nn.state import STATE, LUTQLayer, MLBNLayer, all_parameters
from . import metadata
from .nnp import (atomic_output, describe_float_bn, describe_float_layers, fold_constants,
                  read_nnp, write_nnp)

__all__ = ['export_nnp']

#: functions whose argument says the graph was built for training
_TRAINING_ARGS = {'BatchNormalization': ('batch_stat', True),
                  'FusedBatchNormalization': ('batch_stat', True),
                  'MinMaxQuantize': ('x_min_max', True)}


def _graph_params(outputs, inputs):
    """Leaf parameters that the graphs of ``outputs`` read, by name, and the functions.

    Parameters are recognized by nnabla's registry (names from the root scope) and by the LUT-Q
    state (whose records keep the layer's own variables even if a loader later registered new
    ones under the same names).

    Raises:
        ValueError: for a leaf that is neither an input nor a known parameter.
    """
    registered = {p.data: k for k, p in all_parameters().items()}
    for rec in STATE.lutq_layers(live=False) + STATE.mlbn_layers(live=False):
        for part in rec.PARTS:
            registered.setdefault(getattr(rec, part).data, f"{rec.name}/{part}")
    input_data = {v.data for v in inputs}
    used, unknown, functions = {}, [], []

    def cb(f):
        functions.append(f)
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
    return used, functions


def _check_graph(params, functions):
    """Refuse graphs that would export wrong: training-mode functions, float W, broken tables."""
    names = {v.data: k for k, v in params.items()}
    for f in functions:
        arg = _TRAINING_ARGS.get(f.info.type_name)
        if arg and f.info.args.get(arg[0]) == arg[1]:
            where = sorted(names[v.data].rsplit('/', 1)[0] for v in f.inputs
                           if v.parent is None and v.data in names) or [f.name]
            raise ValueError(
                f"{where[0]}: {f.info.type_name} is built for training ({arg[0]}=True); build "
                "the inference graph with test=True / batch_stat=False before exporting")
    for k, v in params.items():
        rec, part = STATE.part_of(v)
        if not isinstance(rec, LUTQLayer):
            continue
        if part == 'W':
            raise ValueError(
                f"{rec.name}: the graph reads the float weights {k}: build the inference graph "
                "inside `with nnabla_lutq.inference_mode():` so LUT-Q layers compute "
                "F.embed(A, d)")
        if part == 'A':
            if v.data.dtype != np.int32:
                raise ValueError(
                    f"{rec.name}: A has dtype {np.dtype(v.data.dtype).name}, not int32 (it was "
                    "overwritten with floats); restore it with nnabla_lutq.initialize() or "
                    "A.data.cast(numpy.int32)")
            a = v.data.get_data('r')
            k_values = rec.config.n_values
            if a.size and (a.min() < 0 or a.max() >= k_values):
                raise ValueError(
                    f"{rec.name}: A holds indices outside [0, {k_values}) (min {a.min()}, max "
                    f"{a.max()}); re-fit it with nnabla_lutq.initialize()")


def _describe(model, params):
    """The LUT-Q description of an exported model (see :mod:`nnabla_lutq.io.metadata`)."""
    meta = metadata.new()
    done = set()
    for v in params.values():
        rec, _ = STATE.part_of(v)
        if rec is None or id(rec) in done:
            continue
        done.add(id(rec))
        if isinstance(rec, LUTQLayer):
            a, d = f"{rec.name}/A", f"{rec.name}/d"
            stored = 'tables' if a in model.params and d in model.params else 'dense'
            meta['tables'][rec.name] = metadata.table(rec.kind, rec.config, stored, rec.name)
        elif isinstance(rec, MLBNLayer):
            held = [k for k in model.params if k.startswith(rec.name + '/')]
            meta['bn'][rec.name] = {'multiplier_less': True,
                                    'folded': not any(k.endswith('/gamma') for k in held),
                                    'params': held}
    notes = STATE.conversion_notes
    return describe_float_layers(model, describe_float_bn(model, meta, notes), notes)


def export_nnp(path, inputs, outputs, dense=False, fold=True, batch_size=1, network_name='lutq'):
    """Save an inference graph with its look-up tables to an .nnp file.

    Build the graph under :func:`nnabla_lutq.inference_mode` (and BN layers with
    ``batch_stat=False``): LUT-Q layers then compute ``F.embed(A, d)`` and the file holds
    ``<layer>/d`` and ``<layer>/A`` (int32) but no float ``W``. With ``fold`` (default), every
    value computed from parameters only is stored instead of its subgraph
    (:func:`nnabla_lutq.io.nnp.fold_constants`): multiplier-less BN becomes ``x * a + b`` with stored
    ``<bn>/a`` (powers of two) and ``<bn>/b``. With ``dense=True`` the tied weights ``d[A]`` are
    stored as plain float ``<layer>/W`` (for runtimes without Embed/Gather). The file is written
    with ``nnabla.utils.save.save`` (then rewritten) under a temporary name and moved into place,
    so an existing file is never left half-written. Reload it with
    ``nnabla.utils.nnp_graph.NnpLoader`` or ``nnabla.utils.load.load``; the outputs equal the
    in-memory graph's exactly (same context). Folding always computes in float32, so in a half
    type config the file holds the float32 values (e.g. :func:`nnabla_lutq.fold_mlbn`'s), not
    the half ones the in-memory graph computes with.

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

    The file describes itself (``lutq.json``, :mod:`nnabla_lutq.io.metadata`): per look-up table
    its kind (free/pow2/fixed, pruning, K) and how it is stored, per BN layer whether it is
    multiplier-less.

    Raises:
        ValueError: before anything is written, naming the layer, if the graph still reads float
            ``W`` of a LUT-Q layer (built outside :func:`~nnabla_lutq.inference_mode`), was built
            for training (``batch_stat=True``, activation ranges still tracked), holds an ``A``
            that lost its int32 dtype or has indices outside ``[0, K)``, or the arguments are
            malformed.
    """
    if not str(path).endswith('.nnp'):
        raise ValueError(f"{path}: the file name must end with .nnp")
    if not isinstance(inputs, dict) or not isinstance(outputs, dict) or not inputs or not outputs:
        raise ValueError("inputs and outputs must be non-empty dicts of name -> Variable")
    params, functions = _graph_params(list(outputs.values()), list(inputs.values()))
    _check_graph(params, functions)
    contents = {
        'networks': [{'name': network_name, 'batch_size': batch_size,
                      'outputs': dict(outputs), 'names': dict(inputs)}],
        'executors': [{'name': 'runtime', 'network': network_name,
                       'data': list(inputs.keys()), 'output': list(outputs.keys())}]}
    # nnabla cannot reload a variable batch size through layers with base_axis > 1
    variable = not any(f.info.args.get('base_axis', 1) > 1 for f in functions)
    with atomic_output(path, '.nnp') as tmp:
        save(tmp, contents, variable_batch_size=variable, parameters=params)
        model = read_nnp(tmp)
        if fold or dense:
            model = fold_constants(model, dense=dense)
        model.meta = _describe(model, params)
        write_nnp(tmp, model)
    return sorted(model.params)
