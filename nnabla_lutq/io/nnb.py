# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""NNB export of LUT-Q .nnp files for nnabla's C runtime, through nnabla's own NNB writer.

What nnabla's tools make of a LUT-Q .nnp (nnabla-converter 1.39; nnabla-c-runtime built from its
source, API level 44):

* ``nnabla_cli convert model.nnp model.nnb`` and ``nnabla_cli nnb_template`` stop with
  ``UnboundLocalError: ... w_data``: the NNB writer stores an Affine weight transposed, reading it
  from the stored parameters, and a LUT-Q Affine computes its weight ``d[A]``.
* Where the conversion goes through (no Affine), the file holds ``Embed``, which the C runtime
  does not implement (``Function (ID: 10) is not implemented in nnabla-c-runtime!``): no runtime
  of nnabla's reads look-up tables from an NNB.
* An NNB parameter is FLOAT32, FIXED16 or FIXED8 (integers ``q`` meaning ``q * 2^-fp_pos``,
  ``fp_pos`` 0 to 15) or SIGN. The C runtime's Affine and DepthwiseConvolution read fixed-point
  weights through their generic kernels; its Convolution runs the float kernel whenever its output
  is float and reads a fixed-point weight's bytes as floats (NaN), and its Identity converts any
  type to float.
* nnabla-converter writes API level 45 by default (level 45 adds Trilu); the C runtime refuses
  a file of a level above its own.

So :func:`export_nnb` writes the file that runtime runs: every ``d[A]`` computed (the tables
folded, :func:`~nnabla_lutq.io.fold.fold_constants`), and each weight stored in the narrowest
type that holds all its values exactly -- FIXED8 at the smallest ``fp_pos`` that makes every
``w * 2^fp_pos`` an integer in [-128, 127], else FIXED16 ([-32768, 32767]), else FLOAT32 --, a
fixed-point Convolution weight read through an ``Identity`` (fixed point -> a float buffer, as
large as that one weight, at run time). A power-of-two table whose exponents span at most 7
consecutive powers (e.g. ±2^-7 ... ±2^-1, and 0) fits FIXED8: 8 bits per weight instead of 32.
Free tables (any float32 values) stay FLOAT32. The file's API level is the lowest that holds
every function of the network with all its arguments.
"""
import contextlib
import io
import os
import tempfile
import warnings

import numpy as np

from ..core.checks import integer_at_least
from .fold import fold_constants
from .nnp import atomic_output, default_network, proto_network, read_nnp, write_nnp

__all__ = ['export_nnb', 'nnb_model', 'weight_type', 'api_levels', 'FIXED_TYPES',
           'FIXED_READERS']

#: NNB fixed-point types, narrowest first: (name, bits).
FIXED_TYPES = (('FIXED8', 8), ('FIXED16', 16))

#: ``fp_pos`` values an NNB variable can hold (4 bits in the file).
FP_POS = range(16)

#: Functions whose weight (second input) may be fixed point in nnabla's C runtime: directly for
#: Affine and DepthwiseConvolution, through an Identity for Convolution.
FIXED_READERS = ('Affine', 'DepthwiseConvolution', 'Convolution')


def weight_type(values):
    """The narrowest NNB type that holds every value exactly.

    Args:
        values (numpy.ndarray): the weights.

    Returns:
        str: ``'FIXED8_<fp_pos>'``, ``'FIXED16_<fp_pos>'`` or ``'FLOAT32'`` (the form of nnabla's
        NNB settings files).
    """
    v = np.unique(np.asarray(values, np.float64))
    if v.size == 0 or not np.all(np.isfinite(v)):
        return 'FLOAT32'
    for fp in FP_POS:  # the smallest exact fp_pos gives the smallest integers
        q = v * 2.0 ** fp
        if np.array_equal(q, np.round(q)):
            break
    else:
        return 'FLOAT32'
    for name, bits in FIXED_TYPES:
        if q[0] >= -2 ** (bits - 1) and q[-1] <= 2 ** (bits - 1) - 1:
            return f'{name}_{fp}'
    return 'FLOAT32'


def nnb_model(model):
    """The model as nnabla's NNB writer takes it and nnabla's C runtime runs it.

    Args:
        model (Nnp): a (LUT-Q) model (not modified).

    Returns:
        tuple: ``(Nnp, types)``: the model with every look-up table folded into its weights
        (``<layer>/W``) and an ``Identity`` in front of each Convolution whose weight is stored
        fixed point; ``types`` maps those weights to their NNB type (weights not named are
        FLOAT32).
    """
    from nnabla.utils import nnabla_pb2
    out = fold_constants(model, dense=True)
    out.meta = None  # its description of the tables would be wrong for the folded file
    net = proto_network(out, default_network(out))
    uses = {}
    for f in net.function:
        for j, name in enumerate(f.input):
            uses.setdefault(name, []).append((f.type, j))
    types = {}
    for name, value in out.params.items():
        readers = uses.get(name, [])
        if readers and all(j == 1 and t in FIXED_READERS for t, j in readers):
            t = weight_type(value)
            if t != 'FLOAT32':
                types[name] = t
    taken = {v.name for v in net.variable} | {f.name for f in net.function}
    shapes = {v.name: v.shape for v in net.variable}
    functions, converted = [], {}
    for old in net.function:
        f = nnabla_pb2.Function()
        f.CopyFrom(old)  # the list is rebuilt below
        w = f.input[1] if f.type == 'Convolution' and len(f.input) > 1 else None
        if w in types:
            if w not in converted:
                name, k = f"{w}/float", 1
                while name in taken or f"{name}/Identity" in taken:
                    name, k = f"{w}/float_{k}", k + 1
                converted[w] = name
                v = net.variable.add()
                v.name, v.type = name, 'Buffer'
                v.shape.CopyFrom(shapes[w])
                g = nnabla_pb2.Function()
                g.name, g.type = f"{name}/Identity", 'Identity'
                g.input.append(w)
                g.output.append(name)
                functions.append(g)
            f.input[1] = converted[w]
        functions.append(f)
    del net.function[:]
    net.function.extend(functions)
    return out, types


def api_levels(function_types):
    """NNB API levels for a network's functions: the lowest that holds every one of them with all
    the arguments it has at the newest level, and the newest nnabla-converter writes.

    Raises:
        ValueError: for a function that nnabla's NNB format does not have.
    """
    from nnabla.utils.converter import get_api_level_info
    info = get_api_level_info()
    info.set_api_level(-1)
    newest = info.get_current_level()
    missing = sorted(set(function_types) - set(info.get_function_list()))
    if missing:
        raise ValueError(f"nnabla's NNB format (API level {newest}) has no {', '.join(missing)}")
    codes = {t: info.get_argument_code(t) for t in function_types}
    for level in range(1, newest + 1):
        info.set_api_level(level)
        have = info.get_function_list()
        if all(t in have and info.get_argument_code(t) == c for t, c in codes.items()):
            return level, newest
    return newest, newest


def _converter():
    try:
        from nnabla.utils.converter.nnabla import NnpImporter
        from nnabla.utils.converter.nnablart import NnbExporter
    except ImportError as e:
        raise ImportError(f"NNB export needs nnabla-converter ({e}); install it with: "
                          "pip install --no-deps \"nnabla-converter==1.39.*\"")
    return NnpImporter, NnbExporter


def _check_output(path, suffixes, what, taken):
    if path is None:
        return None
    if not str(path).endswith(suffixes):
        raise ValueError(f"{path}: the {what} file name must end with {' or '.join(suffixes)}")
    full = os.path.abspath(path)
    if full in taken:
        raise ValueError(f"{path}: used twice (input and outputs must be distinct files)")
    taken.add(full)
    return path


def export_nnb(nnp_path, nnb_path, batch_size=1, api_level=None, settings_path=None,
               nnp_out=None):
    """Convert a (LUT-Q) .nnp to NNB, the format of nnabla's C runtime, with nnabla's NNB writer.

    The tables are folded into the weights (no runtime of nnabla's runs ``Embed``) and each
    weight is stored in the narrowest NNB type that holds it exactly (see the module's notes), so
    the C runtime computes what nnabla does, within float32 rounding.

    Args:
        nnp_path (str): the model, e.g. written by :func:`nnabla_lutq.export_nnp`.
        nnb_path (str): destination ``.nnb``.
        batch_size (int): batch size of the NNB network (fixed in the file).
        api_level (int or None): NNB API level; default: the lowest that holds the network.
        settings_path (str or None): also write the settings used (what ``nnabla_cli
            nnb_template`` writes, with the types chosen here) to this ``.yaml``.
        nnp_out (str or None): also write the .nnp that was given to nnabla's writer:
            ``nnabla_cli convert <nnp_out> <x>.nnb -b <batch_size> --api <level> --settings
            <settings_path>`` then writes the same bytes.

    Returns:
        dict: ``api_level``, ``types`` (weight -> NNB type, the fixed-point ones),
        ``float_weights`` (weights left FLOAT32), ``bytes`` (size of the file),
        ``runtime_lacks`` (functions of the network that nnabla's C runtime does not implement,
        by nnabla-converter's function table; a warning names them).

    Raises:
        ImportError: without nnabla-converter.
        ValueError: before anything is written, for malformed arguments, a file that cannot be
            read, a function the NNB format lacks or an API level that cannot hold the network.
        OSError: if a destination cannot be written (existing files are left as they were).
    """
    NnpImporter, NnbExporter = _converter()
    taken = {os.path.abspath(nnp_path)}
    _check_output(nnb_path, ('.nnb',), 'NNB', taken)
    _check_output(settings_path, ('.yaml', '.yml'), 'settings', taken)
    _check_output(nnp_out, ('.nnp',), '.nnp', taken)
    batch_size = integer_at_least(batch_size, 1, 'batch_size')
    if api_level is not None:
        api_level = integer_at_least(api_level, 1, 'api_level')
    model, types = nnb_model(read_nnp(nnp_path))
    net = proto_network(model, default_network(model))
    used = {f.type for f in net.function}
    lowest, newest = api_levels(used)
    if api_level is None:
        api_level = lowest
    elif not lowest <= api_level <= newest:
        raise ValueError(f"api_level must be from {lowest} (the lowest that holds this network) "
                         f"to {newest}, got {api_level}")
    from nnabla.utils.converter import get_function_info
    table = get_function_info()
    lacking = sorted(t for t in used if table.get(t, {}).get('c_runtime') != 'support')
    weights = {f.input[1] for f in net.function if f.type in FIXED_READERS}
    weights = sorted(w for w in weights if w in model.params)
    import yaml
    with tempfile.TemporaryDirectory() as tmp:
        src, settings = os.path.join(tmp, 'model.nnp'), os.path.join(tmp, 'settings.yaml')
        template = os.path.join(tmp, 'template.yaml')
        write_nnp(src, model)
        with open(settings, 'w') as f:
            yaml.dump({'variables': types}, f)
        with atomic_output(nnb_path, '.nnb') as out:
            log = io.StringIO()
            try:
                with contextlib.redirect_stdout(log):
                    nnp = NnpImporter(src, expand_network=True, executor_index=None).execute()
                    NnbExporter(nnp, batch_size, api_level=api_level).execute(
                        out, template, [settings], ['FLOAT32'])
            except (ValueError, KeyError, AttributeError, TypeError, IndexError) as e:
                raise ValueError(f"{nnp_path}: nnabla's NNB writer failed: "
                                 f"{type(e).__name__}: {e}")
            size = os.path.getsize(out)
        if settings_path is not None:
            with atomic_output(settings_path, '.yaml') as out, open(template, 'rb') as f:
                with open(out, 'wb') as g:
                    g.write(f.read())
    if nnp_out is not None:
        write_nnp(nnp_out, model)
    if lacking:
        warnings.warn(f"{nnb_path}: nnabla's C runtime does not implement {', '.join(lacking)} "
                      "(nnabla-converter's function table says so): it cannot run this file")
    return {'api_level': api_level, 'types': dict(sorted(types.items())),
            'float_weights': [w for w in weights if w not in types], 'bytes': size,
            'runtime_lacks': lacking}
