# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Training: the LUT-Q and learning-compression solver wrappers (and their state files), table
initialization and loading float checkpoints; sensitivities from calibration data (bit widths
per layer under a budget, sensitivity-weighted tables: :mod:`.sensitivity` and :mod:`.budget`,
imported on first use)."""
import importlib as _importlib

from .solver import LUTQSolver, SolverStateError
from .initialization import initialize, load_float_parameters, FLOAT_TO_LUTQ_SCOPES
from .lc import LCSolver, lc_schedule

#: names of :mod:`.sensitivity` and :mod:`.budget` (they import the conversion, which ``import
#: nnabla_lutq`` leaves out), imported on first use
_LAZY = {'Fisher': 'sensitivity', 'fisher_diagonal': 'sensitivity',
         'initialize_weighted': 'sensitivity', 'Budget': 'budget', 'BitReport': 'budget',
         'LayerBits': 'budget', 'choose_bits': 'budget', 'allocate_bits': 'budget',
         'multiple_choice_knapsack': 'budget', 'layer_bits': 'budget'}

__all__ = ['LUTQSolver', 'LCSolver', 'lc_schedule', 'SolverStateError', 'initialize',
           'load_float_parameters', 'FLOAT_TO_LUTQ_SCOPES'] + list(_LAZY)


def __getattr__(name):
    """Import the names of :mod:`.sensitivity` and :mod:`.budget` on first use (PEP 562)."""
    if name in _LAZY:
        value = getattr(_importlib.import_module('.' + _LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
