# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""nnabla-lutq: LUT-Q (look-up table quantization) for Neural Network Libraries (nnabla).

Layout (one package per concern):

* :mod:`nnabla_lutq.core` -- numpy-only rules: layer settings, the power-of-two rule, the exact
  host k-means step, table fitting, the C step of learning-compression;
* :mod:`nnabla_lutq.nn` -- the layers (``PF.lutq_*``, ``PF.mlbn``), the LUT-Q state and weight
  modes, graph forms of the rules;
* :mod:`nnabla_lutq.kmeans` -- the k-means step behind one interface (host, device graph, CUDA);
* :mod:`nnabla_lutq.training` -- ``LUTQSolver``, ``LCSolver``, ``initialize``,
  ``load_float_parameters``; sensitivities from calibration data (``allocate_bits``,
  ``initialize_weighted``);
* :mod:`nnabla_lutq.io` -- .nnp, export, packed .lutq, post-training quantization, ONNX;
* :mod:`nnabla_lutq.analysis` -- ``report``, ``footprint``;
* :mod:`nnabla_lutq.integer` -- the integer-only executor (``verify_int``);
* :mod:`nnabla_lutq.cli` -- the ``nnabla-lutq`` command (also ``python -m nnabla_lutq.cli``).

``import nnabla_lutq`` loads what building and training a network needs (``core``, ``nn``,
``kmeans``, ``training``) and registers ``nnabla.parametric_functions.lutq_*`` and ``.mlbn``.
The other subpackages and the names taken from them (``export_nnp``, ``convert``, ``report``,
``verify_int``, ``allocate_bits``, ...) are imported on first use.
"""
import importlib as _importlib
import os as _os
import sys as _sys


def _started_as_command():
    """Whether this import starts the ``nnabla-lutq`` command rather than a library user's code.

    ``python -m nnabla_lutq.cli`` imports this package first, while ``sys.argv[0]`` is still
    ``'-m'`` (Python sets it to the module's path only once the module is found); the console
    script is ``<bin>/nnabla-lutq``.
    """
    first = (getattr(_sys, 'argv', None) or [''])[0]
    return first == '-m' or _os.path.splitext(_os.path.basename(first))[0] == 'nnabla-lutq'


if _started_as_command():
    # nnabla configures logging at import (INFO lines on stderr) unless logging already is: a
    # command keeps its output to its own lines and nnabla's warnings and errors
    import logging as _logging
    _logging.basicConfig(level=_logging.WARNING, format='%(name)s: %(levelname)s: %(message)s')

import nnabla.parametric_functions as _PF  # noqa: E402

from .core import LUTQConfig, make_config, kmeans_step, init_dictionary, pow2_round  # noqa: E402
from .nn import (lutq_affine, lutq_convolution, lutq_depthwise_convolution, mlbn,  # noqa: E402
                 fold_mlbn, inference_mode, weight_mode, WeightMode, lutq_layers, mlbn_layers,
                 LUTQLayer, MLBNLayer, STATE)
from .training import (LUTQSolver, LCSolver, lc_schedule, initialize,  # noqa: E402
                       load_float_parameters)

__version__ = '0.1.0'

#: public name -> the submodule it is imported from on first use
_LAZY = {
    'report': 'analysis', 'Report': 'analysis', 'LayerRecord': 'analysis',
    'footprint': 'analysis',
    'export_nnp': 'io.export', 'pack': 'io.packed', 'unpack': 'io.packed',
    'quantize_nnp': 'io.quantize', 'export_onnx': 'io.onnx',
    'LayerConfig': 'nn.convert', 'LUTQModifier': 'nn.convert', 'convert': 'nn.convert',
    'IntegerNetwork': 'integer', 'verify_int': 'integer',
    'fisher_diagonal': 'training.sensitivity', 'allocate_bits': 'training.budget',
    'choose_bits': 'training.budget', 'initialize_weighted': 'training.sensitivity',
    'Budget': 'training.budget', 'Fisher': 'training.sensitivity',
    'BitReport': 'training.budget',
}
#: subpackages imported on first use (``nnabla_lutq.io`` etc.)
_SUBPACKAGES = ('analysis', 'cli', 'integer', 'io')

__all__ = ['LUTQConfig', 'make_config', 'kmeans_step', 'init_dictionary', 'pow2_round',
           'lutq_affine', 'lutq_convolution', 'lutq_depthwise_convolution', 'mlbn', 'fold_mlbn',
           'inference_mode', 'weight_mode', 'WeightMode', 'lutq_layers', 'mlbn_layers',
           'LUTQLayer', 'MLBNLayer', 'STATE', 'LUTQSolver', 'LCSolver', 'lc_schedule',
           'initialize', 'load_float_parameters'] + list(_LAZY)


def __getattr__(name):
    """Import a lazily loaded name or subpackage on first use (PEP 562)."""
    if name in _LAZY:
        value = getattr(_importlib.import_module('.' + _LAZY[name], __name__), name)
    elif name in _SUBPACKAGES:
        value = _importlib.import_module('.' + name, __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_SUBPACKAGES))


for _name in ('lutq_affine', 'lutq_convolution', 'lutq_depthwise_convolution', 'mlbn'):
    if not hasattr(_PF, _name):  # never replace a name nnabla itself defines
        setattr(_PF, _name, globals()[_name])
del _name
