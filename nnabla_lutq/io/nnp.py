# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Reading, rewriting and writing .nnp files at the protobuf level.

An .nnp is a zip archive holding ``nnp_version.txt``, the network definition (``*.nntxt`` text or
``*.protobuf`` binary protobuf, :mod:`nnabla.utils.nnabla_pb2`) and the parameters
(``parameter.h5``: one dataset per name with ``need_grad`` and ``index`` attributes; the dtype is
kept, so look-up-table indices stay int32). :class:`Nnp` holds the definition and the parameters
in memory; :func:`write_nnp` writes the same layout as :func:`nnabla.utils.save.save`, atomically.

Also here: :func:`lut_embeds` (the functions computing ``d[A]`` of a stored look-up table, found
by the one recognizer :mod:`nnabla_lutq.io.lookup`) and the description of a file's layers
(:func:`describe_legacy`, :func:`describe_float_layers`, :func:`describe_float_bn`); constant
folding of a file is :mod:`nnabla_lutq.io.fold`.
"""
import contextlib
import io
import os
import stat
import tempfile
import zipfile
from collections import OrderedDict

import json

import h5py
import numpy as np
from google.protobuf import text_format
from google.protobuf.message import DecodeError

from ..core.kinds import BN_FUNCTIONS, BY_FUNCTION
from ..nn.params import isolated
from . import metadata
from .lookup import table_lookups

__all__ = ['Nnp', 'NnpError', 'read_nnp', 'write_nnp', 'lut_embeds', 'sync_executor_parameters',
           'describe_legacy', 'describe_float_bn', 'describe_float_layers', 'function_inputs',
           'proto_network', 'atomic_output', 'default_network', 'loaded_network']


class NnpError(ValueError):
    """An .nnp file is missing, damaged or cannot be rewritten; the message says which."""


class Nnp:
    """An .nnp file in memory.

    Attributes:
        proto (nnabla_pb2.NNablaProtoBuf): networks, executors, ... (without parameter values).
        params (OrderedDict): parameter name -> numpy array (dtype as stored).
        need_grad (dict): parameter name -> bool.
        meta (dict or None): the file's LUT-Q description (:mod:`nnabla_lutq.io.metadata`);
            None for a file that nnabla-lutq did not write.
    """

    def __init__(self, proto, params, need_grad=None, meta=None):
        self.proto = proto
        self.params = OrderedDict(params)
        self.need_grad = dict(need_grad or {})
        self.meta = meta

    def copy(self):
        """A deep copy."""
        from nnabla.utils import nnabla_pb2
        p = nnabla_pb2.NNablaProtoBuf()
        p.CopyFrom(self.proto)
        return Nnp(p, OrderedDict((k, v.copy()) for k, v in self.params.items()),
                   self.need_grad, json.loads(json.dumps(self.meta)) if self.meta else None)


def read_nnp(path):
    """Read an .nnp file.

    Args:
        path (str): the file.

    Returns:
        Nnp: its definition and parameters.

    Raises:
        NnpError: if the file is missing, not an .nnp archive, or its parts cannot be parsed, or
            its LUT-Q description has a version or flags this package does not know.
    """
    from nnabla.utils import nnabla_pb2
    if not os.path.isfile(path):
        raise NnpError(f"{path}: no such file")
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise NnpError(f"{path}: not an .nnp file (a zip archive written by nnabla): {e}")
    proto = nnabla_pb2.NNablaProtoBuf()
    params, need_grad = OrderedDict(), {}
    with z:
        names = z.namelist()
        defs = [n for n in names if n.endswith(('.nntxt', '.prototxt', '.protobuf'))]
        if not any(n.endswith(('.nntxt', '.prototxt')) for n in defs) and not any(
                n.endswith('.protobuf') and 'param' not in n for n in defs):
            raise NnpError(f"{path}: no network definition (.nntxt/.protobuf) in the archive")
        try:
            for n in defs:
                data = z.read(n)
                part = nnabla_pb2.NNablaProtoBuf()
                if n.endswith('.protobuf'):
                    part.ParseFromString(data)
                else:
                    text_format.Merge(data.decode('utf-8'), part)
                for p in part.parameter:  # parameters stored in protobuf form
                    params[p.variable_name] = np.array(p.data, np.float32).reshape(
                        tuple(p.shape.dim))
                    need_grad[p.variable_name] = p.need_grad
                del part.parameter[:]
                proto.MergeFrom(part)
            meta = None
            if metadata.FILE_NAME in names:
                meta = metadata.check(json.loads(z.read(metadata.FILE_NAME).decode('utf-8')),
                                      path, NnpError)
            for n in names:
                if n.endswith('.h5'):
                    with h5py.File(io.BytesIO(z.read(n)), 'r') as f:
                        keys = []
                        f.visititems(lambda k, o: keys.append((o.attrs.get('index', 0), k))
                                     if isinstance(o, h5py.Dataset) else None)
                        for _, k in sorted(keys):
                            params[k] = f[k][...]
                            need_grad[k] = bool(f[k].attrs.get('need_grad', False))
        except NnpError:
            raise
        except (zipfile.BadZipFile, DecodeError, text_format.ParseError, OSError, KeyError,
                UnicodeDecodeError, ValueError) as e:
            raise NnpError(f"{path}: damaged .nnp ({type(e).__name__}: {e})")
    return Nnp(proto, params, need_grad, meta)


def write_nnp(path, nnp):
    """Write an :class:`Nnp` as nnabla does (nntxt + parameter.h5), atomically.

    The archive is written under a temporary name in the destination folder and moved into place,
    so an existing file is replaced only by a complete one.

    Args:
        path (str): destination (``.nnp``).
        nnp (Nnp): what to write.
    """
    from nnabla.utils.nnp_format import nnp_version
    if not str(path).endswith('.nnp'):
        raise NnpError(f"{path}: the file name must end with .nnp")
    buf = io.BytesIO()
    with h5py.File(buf, 'w') as f:
        for i, (k, v) in enumerate(nnp.params.items()):
            f[k] = v
            f[k].attrs['need_grad'] = bool(nnp.need_grad.get(k, False))
            f[k].attrs['index'] = i
    with atomic_output(path, '.nnp') as tmp:
        with zipfile.ZipFile(tmp, 'w', zipfile.ZIP_DEFLATED) as z:
            z.writestr('nnp_version.txt', nnp_version())
            z.writestr('network.nntxt', text_format.MessageToString(nnp.proto))
            z.writestr('parameter.h5', buf.getvalue())
            if nnp.meta:
                z.writestr(metadata.FILE_NAME, json.dumps(nnp.meta, indent=1, sort_keys=True))


@contextlib.contextmanager
def atomic_output(path, suffix):
    """A temporary file next to ``path`` that replaces ``path`` only if the block succeeds.

    The file that replaces ``path`` keeps the permission bits of the file it replaces; a new file
    gets the permissions of any file the user creates (``0o666`` less the umask), not the private
    ``0o600`` of a temporary file. An ``OSError`` about the temporary file (a read-only folder, a
    full disk) is raised again naming ``path``, the file the user asked for.

    Args:
        path (str): the destination.
        suffix (str): suffix of the temporary name (writers that choose a format by it need it).

    Yields:
        str: the temporary path to write; it is removed if the block raises.

    Raises:
        OSError: if the temporary file cannot be created, written or moved to ``path`` (nothing
            is changed then).
    """
    path = os.fspath(path)
    try:
        fd, tmp = tempfile.mkstemp(suffix=suffix, dir=os.path.dirname(os.path.abspath(path)))
    except OSError as e:
        raise _about(e, path, e.filename) from e
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _output_mode(path))
        os.replace(tmp, path)
    except OSError as e:
        renamed = _about(e, path, tmp)
        if renamed is e:
            raise
        raise renamed from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _about(error, path, tmp):
    """``error`` (an ``OSError`` about the temporary file ``tmp``) told about ``path`` instead."""
    if error.errno is not None and error.filename in (tmp, None):
        return OSError(error.errno, error.strerror, path)
    if tmp and tmp in str(error):
        return OSError(str(error).replace(tmp, path))
    return error


def _output_mode(path):
    """Permission bits for a file written to ``path``: those of the file there, else the umask's."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        umask = os.umask(0o022)
        os.umask(umask)
        return 0o666 & ~umask


def default_network(model):
    """Name of the network of an :class:`Nnp` that its first executor runs (else the first)."""
    if model.proto.executor:
        return model.proto.executor[0].network_name
    return proto_network(model).name


@contextlib.contextmanager
def loaded_network(path, network, batch_size=1):
    """An .nnp's network loaded with nnabla's ``NnpLoader``, its parameters kept private.

    ``NnpLoader`` registers the file's parameters in the current parameter scope, replacing
    parameters of the same names; here the block runs with a parameter tree of its own
    (:func:`nnabla_lutq.nn.params.isolated`): inside it ``nn.get_parameters()`` lists the file's
    parameters by their own names, and the user's parameters are back, untouched, when it ends.

    Args:
        path (str): the .nnp.
        network (str): network name.
        batch_size (int): batch size of the built graph.

    Yields:
        NnpNetwork: with ``inputs``, ``outputs`` and ``variables`` dicts.
    """
    from nnabla.utils.nnp_graph import NnpLoader
    with isolated():
        yield NnpLoader(path).get_network(network, batch_size=batch_size)


def proto_network(nnp, name=None):
    """The network called ``name`` (default: the first one) of an :class:`Nnp`."""
    nets = list(nnp.proto.network)
    if not nets:
        raise NnpError("the file defines no network")
    if name is None:
        return nets[0]
    for n in nets:
        if n.name == name:
            return n
    raise NnpError(f"no network named {name!r}; the file has {[n.name for n in nets]}")


def lut_embeds(net, params):
    """The look-up-table functions of a network: ``d[A]`` of a stored int ``A`` and a stored
    table ``d``, as :func:`~nnabla_lutq.io.lookup.table_lookups` finds them (``Embed(A, d)`` with
    a 1-D ``d``, and the ``Gather`` of grouped tables, ``d`` of shape ``(G, K)``).

    Args:
        net: a network of the protobuf.
        params (dict): parameter name -> array.

    Returns:
        list: ``(function producing d[A], A name, d name)`` triples.
    """
    return [(net.function[lk.functions[-1]], lk.a, lk.d) for lk in table_lookups(net, params)]


#: nnabla functions whose second input is a weight (:data:`nnabla_lutq.core.kinds.BY_FUNCTION`)
WEIGHT_FUNCTIONS = tuple(BY_FUNCTION)


def function_inputs(nnp):
    """``(function type, input names, function name)`` of every function of every network of an
    :class:`Nnp`, the form :func:`describe_float_layers` and :func:`describe_float_bn` read."""
    return [(f.type, list(f.input), f.name) for net in nnp.proto.network for f in net.function]


def describe_float_layers(functions, params, meta, notes=None):
    """Fill ``meta['float_layers']``: the layers that compute with a stored float weight, with
    the reason they are not LUT-Q.

    Args:
        functions (list): ``(function type, input names, name)`` of the model's functions
            (:func:`function_inputs` of a file, or the graph being exported).
        params (dict): stored parameter name -> array (anything with ``size``).
        meta (dict): its description (the tables are already in ``meta['tables']``).
        notes (dict or None): layer name -> ``{'reason': ...}`` from the conversion that built the
            graph (:func:`nnabla_lutq.convert` records its decisions in the LUT-Q state).

    Returns:
        dict: ``meta``.
    """
    dense = {t['W'] for t in meta['tables'].values() if t.get('W')}
    notes = notes or {}
    out = {}
    for t, inputs, _ in functions:
        if t not in WEIGHT_FUNCTIONS or len(inputs) < 2:
            continue
        w = inputs[1]
        if w not in params or w in dense:
            continue
        scope = w.rsplit('/', 1)[0]              # e.g. 'fc/affine'
        layer = scope.rsplit('/', 1)[0] if '/' in scope else scope  # e.g. 'fc'
        note = notes.get(layer)
        reason = note['reason'] if note else (
            'built as a float layer (not a PF.lutq_* layer, not converted)')
        out[scope] = {'function': t, 'weight': w, 'n_weights': int(params[w].size),
                      'reason': reason}
    meta['float_layers'] = out
    return meta


def describe_float_bn(functions, params, meta, notes=None):
    """Add to ``meta['bn']`` the BN layers it does not describe yet, as float BN (with the reason
    in ``notes``); the arguments are those of :func:`describe_float_layers`; returns ``meta``."""
    notes = notes or {}
    for t, inputs, name in functions:
        if t in BN_FUNCTIONS:
            held = [i for i in inputs if i in params]
            prefix = held[0].rsplit('/', 1)[0] if held else name
            if prefix not in meta['bn']:
                meta['bn'][prefix] = {'multiplier_less': False, 'folded': False, 'params': held}
                note = notes.get(prefix.rsplit('/', 1)[0])
                if note:
                    meta['bn'][prefix]['reason'] = note['reason']
    return meta


def describe_legacy(nnp):
    """A LUT-Q description for a file written without one (older nnabla-lutq, other tools).

    Its look-up tables are the look-ups ``d[A]`` of stored parameters
    (:func:`~nnabla_lutq.io.lookup.table_lookups`: ``Embed(A, d)`` and grouped tables, whose
    group size and output axis the graph gives), their kind read from the values (``'pow2'``
    when every value is 0 or ±2^k, else ``'free'``); BN layers are not described (they count as
    float).

    Args:
        nnp (Nnp): the model.

    Returns:
        dict: a description in the layout of :mod:`nnabla_lutq.io.metadata`.
    """
    from ..core.pow2 import is_pow2_array
    meta = metadata.new()
    for net in nnp.proto.network:
        for lk in table_lookups(net, nnp.params):
            layer = lk.a[:-2] if lk.a.endswith('/A') else lk.a
            entry = {
                'kind': None, 'dictionary': 'pow2' if is_pow2_array(nnp.params[lk.d]) else 'free',
                'n_values': lk.n_values, 'prune_ratio': None, 'pruned': None,
                'pow2_range': None, 'fixed_values': None,
                'n_weights': int(nnp.params[lk.a].size), 'stored': 'tables', 'A': lk.a,
                'd': lk.d, 'W': None}
            if lk.grouped:
                entry.update(metadata.grouping(lk.group_size, lk.n_groups, lk.out_axis))
            metadata.add_table(meta, layer, entry)
    return describe_float_layers(function_inputs(nnp), nnp.params, meta)


def sync_executor_parameters(nnp):
    """Make every executor's parameter list the parameters its network reads."""
    nets = {n.name: n for n in nnp.proto.network}
    for e in nnp.proto.executor:
        net = nets.get(e.network_name)
        if net is None:
            continue
        names = [v.name for v in net.variable if v.type == 'Parameter' and v.name in nnp.params]
        del e.parameter_variable[:]
        for n in names:
            e.parameter_variable.add().variable_name = n
