"""Training: the LUT-Q and learning-compression solver wrappers (and their state files), table
initialization and loading float checkpoints; sensitivities from calibration data (bit widths
per layer under a budget, sensitivity-weighted tables: :mod:`.sensitivity`, imported on first
use)."""
import importlib as _importlib

from .solver import LUTQSolver, SolverStateError
from .initialization import initialize, load_float_parameters, FLOAT_TO_LUTQ_SCOPES
from .lc import LCSolver, lc_schedule

#: names of :mod:`.sensitivity` (it imports the conversion, which ``import nnabla_lutq`` leaves
#: out), imported on first use
_SENSITIVITY = ('Budget', 'Fisher', 'BitReport', 'LayerBits', 'fisher_diagonal', 'choose_bits',
                'allocate_bits', 'initialize_weighted', 'multiple_choice_knapsack', 'layer_bits')

__all__ = ['LUTQSolver', 'LCSolver', 'lc_schedule', 'SolverStateError', 'initialize',
           'load_float_parameters', 'FLOAT_TO_LUTQ_SCOPES'] + list(_SENSITIVITY)


def __getattr__(name):
    """Import the names of :mod:`.sensitivity` on first use (PEP 562)."""
    if name in _SENSITIVITY:
        value = getattr(_importlib.import_module('.sensitivity', __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
