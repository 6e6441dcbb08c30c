# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Saving LUT-Q inference graphs to .nnp with nnabla's own writer."""

import json
import zipfile

import numpy as np
import nnabla as nn
from nnabla.experimental.graph_converters import GraphConverter
from nnabla.utils.save import save

from ..core.checks import check_indices
from ..nn.graph import GraphModifier, graph_functions
from ..nn.layers import fold_mlbn
from ..nn.params import all_parameters, isolated
from ..nn.state import STATE, LUTQLayer, MLBNLayer
from . import metadata
from .fold import folded_name, folded_use
from .lookup import find_lookups, graph_facts, inner_outputs
from .nnp import atomic_output, describe_float_bn, describe_float_layers

__all__ = ['export_nnp']

#: functions whose argument says the graph was built for training
_TRAINING_ARGS = {'BatchNormalization': ('batch_stat', True),
                  'FusedBatchNormalization': ('batch_stat', True),
                  'MinMaxQuantize': ('x_min_max', True)}


def _graph_params(outputs, inputs, extra=None):
    """Leaf parameters that the graphs of ``outputs`` read, by name, and the functions (inputs
    before consumers).

    Parameters are recognized by nnabla's registry (names from the root scope), by the LUT-Q
    state (whose records keep the layer's own variables even if a loader later registered new
    ones under the same names) and by ``extra`` (name -> Variable, e.g. folded values).

    Raises:
        ValueError: for a leaf that is neither an input nor a known parameter.
    """
    registered = {p.data: k for k, p in all_parameters().items()}
    for rec in STATE.lutq_layers(live=False) + STATE.mlbn_layers(live=False):
        for part in rec.PARTS:
            registered.setdefault(getattr(rec, part).data, f"{rec.name}/{part}")
    registered.update({v.data: k for k, v in (extra or {}).items()})
    input_data = {v.data for v in inputs}
    used, unknown = {}, []
    functions = graph_functions(outputs)
    for f in functions:
        for v in f.inputs:
            if v.parent is None:
                if v.data in registered:
                    used[registered[v.data]] = v
                elif v.data not in input_data:
                    unknown.append(v.shape)
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
                "inside `with nnabla_lutq.inference_mode():` so LUT-Q layers compute d[A] "
                "from their tables")
        if part == 'A':
            if v.data.dtype != np.int32:
                raise ValueError(
                    f"{rec.name}: A has dtype {np.dtype(v.data.dtype).name}, not int32 (it was "
                    "overwritten with floats); restore it with nnabla_lutq.initialize() or "
                    "A.data.cast(numpy.int32)")
            check_indices(v.data.get_data('r'), rec.config.n_values, rec.name,
                          "; re-fit it with nnabla_lutq.initialize()")


def _constants(functions, params, dense):
    """The values an export stores instead of computing them: the variables computed from
    parameters only that a function depending on data reads.

    Args:
        functions (list): the graph's functions, inputs before consumers.
        params (dict): name -> parameter Variable read by the graph.
        dense (bool): fold look-up tables too (``d[A]`` of a stored int ``A`` and a table ``d``,
            as :func:`~nnabla_lutq.io.lookup.find_lookups` finds them, one table or grouped).

    Returns:
        tuple: ``(constants, lookups)``: ``(variable, producing function, names of the
        parameters it comes from, types of the functions that read it with data)`` per folded
        value, and the look-ups by their output variable.
    """
    sources = {v: {k} for k, v in params.items()}
    leaves = set(params.values())
    facts = graph_facts(functions)
    lookups = find_lookups(facts, lambda v: (np.dtype(v.data.dtype), v.shape)
                           if v in leaves else None)
    kept = set() if dense else inner_outputs(lookups, facts)
    producer = {}
    for f in functions:
        ins, outs = f.inputs, f.outputs
        if ins and len(outs) == 1 and all(i in sources for i in ins) and outs[0] not in kept:
            sources[outs[0]] = set().union(*(sources[i] for i in ins))
            producer[outs[0]] = f
    uses = {}  # frontier variable -> types of the functions reading it with data, in order
    for f in functions:
        if len(f.outputs) == 1 and f.outputs[0] in producer:
            continue  # computed from parameters only: folded with its consumer
        data = not all(i in sources for i in f.inputs)
        for i in f.inputs:
            if i in producer:
                types = uses.setdefault(i, set())
                if data:
                    types.add(f.info.type_name)
    return ([(v, producer[v], sources[v], types) for v, types in uses.items()],
            {lk.output: lk for lk in lookups})


def _value(v, sources, params, use):
    """The value of a folded variable: a multiplier-less BN's inference scale and bias (``use``
    ``'a'`` / ``'b'``, :func:`~nnabla_lutq.io.fold.folded_use`) as
    :func:`~nnabla_lutq.fold_mlbn` computes them (in float32), anything else as the graph does."""
    recs = {STATE.part_of(params[k])[0] for k in sources}
    if len(recs) == 1 and use in ('a', 'b'):
        rec = recs.pop()
        if isinstance(rec, MLBNLayer):
            a, b = fold_mlbn(rec)
            if v.shape == a.shape:
                return a if use == 'a' else b
    v.forward()
    return np.asarray(v.d, np.float32).copy()


class _FoldModifier(GraphModifier):
    """Rebuilds the graph with each folded value a parameter."""

    def __init__(self, folded):
        super().__init__()
        self.folded = folded  # variable of the graph -> parameter variable

    def modify(self, f, inputs):
        return self.folded.get(f.outputs[0]) if len(f.outputs) == 1 else None

    def __finish__(self):
        super().__finish__()
        self.folded = None


def _fold(outputs, params, functions, dense):
    """The outputs of the graph with every constant folded, and the new parameters by name."""
    used = set(params)
    names = {v.data: k for k, v in params.items()}
    folded, new = {}, {}
    constants, lookups = _constants(functions, params, dense)
    for v, f, sources, uses in constants:
        table_a = names.get(lookups[v].a.data) if v in lookups else None
        name = folded_name(sources, uses, used, table_a)
        value = _value(v, sources, params, folded_use(uses))
        p = nn.Variable.from_numpy_array(value, need_grad=False)
        folded[v], new[name] = p, p
    if not folded:
        return outputs, {}
    return GraphConverter([_FoldModifier(folded)]).convert(list(outputs)), new


def _describe(params, saved, functions):
    """The LUT-Q description of an exported model (see :mod:`nnabla_lutq.io.metadata`).

    Args:
        params (dict): name -> parameter Variable the graph reads before folding.
        saved (dict): stored name -> parameter Variable.
        functions (list): the saved graph's functions.
    """
    meta = metadata.new()
    done = set()
    for v in params.values():
        rec, _ = STATE.part_of(v)
        if rec is None or id(rec) in done:
            continue
        done.add(id(rec))
        if isinstance(rec, LUTQLayer):
            a, d = f"{rec.name}/A", f"{rec.name}/d"
            stored = 'tables' if a in saved and d in saved else 'dense'
            metadata.add_table(meta, rec.name,
                               metadata.table(rec.kind, rec.config, stored, rec.name))
        elif isinstance(rec, MLBNLayer):
            held = [k for k in saved if k.startswith(rec.name + '/')]
            meta['bn'][rec.name] = {'multiplier_less': True,
                                    'folded': not any(k.endswith('/gamma') for k in held),
                                    'params': held}
    names = {v: k for k, v in saved.items()}
    facts = [(f.info.type_name, [names.get(i, '') for i in f.inputs], f.name) for f in functions]
    notes = STATE.conversion_notes
    return describe_float_layers(facts, saved, describe_float_bn(facts, saved, meta, notes),
                                 notes)


def export_nnp(path, inputs, outputs, dense=False, fold=True, batch_size=1, network_name='lutq'):
    """Save an inference graph with its look-up tables to an .nnp file.

    Build the graph under :func:`nnabla_lutq.inference_mode` (and BN layers with
    ``batch_stat=False``): LUT-Q layers then compute ``d[A]`` (``F.embed(A, d)``; grouped
    tables by the ``F.gather`` of :func:`~nnabla_lutq.nn.layers.grouped_lookup`) and the file
    holds ``<layer>/d`` (``(K,)``, grouped ``(G, K)``), ``<layer>/A`` (int32) and the functions
    computing ``d[A]``, but no float ``W``. With ``fold`` (default), every
    value computed from parameters only is stored instead of its subgraph, folded in the live
    graph: multiplier-less BN becomes ``x * a + b`` with stored ``<bn>/a`` (powers of two) and
    ``<bn>/b``, the values of :func:`nnabla_lutq.fold_mlbn` (float32 whatever the type config,
    so in a half config the file holds them, not the half ones the in-memory graph computes
    with); other constants are the values the graph computes. With ``dense=True`` the tied
    weights ``d[A]`` are stored as plain float ``<layer>/W`` (for runtimes without
    Embed/Gather). The file is written once, with ``nnabla.utils.save.save`` (plus the
    description), under a temporary name and moved into place, so an existing file is never left
    half-written. Reload it with ``nnabla.utils.nnp_graph.NnpLoader`` or
    ``nnabla.utils.load.load``; the outputs equal the in-memory graph's exactly (same context).

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
    its kind (free/pow2/fixed, pruning, K, for grouped tables the group size and output axis)
    and how it is stored, per BN layer whether it is multiplier-less.

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
    # nnabla cannot reload a variable batch size through layers with base_axis > 1
    variable = not any(f.info.args.get('base_axis', 1) > 1 for f in functions)
    outs = list(outputs.values())
    if fold or dense:
        outs, new = _fold(outs, params, functions, dense)
        saved, functions = _graph_params(outs, list(inputs.values()), new)
    else:
        saved = params
    contents = {
        'networks': [{'name': network_name, 'batch_size': batch_size,
                      'outputs': dict(zip(outputs, outs)), 'names': dict(inputs)}],
        'executors': [{'name': 'runtime', 'network': network_name,
                       'data': list(inputs.keys()), 'output': list(outputs.keys())}]}
    meta = _describe(params, saved, functions)
    with atomic_output(path, '.nnp') as tmp, isolated(saved):  # nnabla names them by the tree
        save(tmp, contents, variable_batch_size=variable, parameters=saved)
        with zipfile.ZipFile(tmp, 'a', zipfile.ZIP_DEFLATED) as z:
            z.writestr(metadata.FILE_NAME, json.dumps(meta, indent=1, sort_keys=True))
    return sorted(saved)
