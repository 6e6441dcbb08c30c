"""Training: the LUT-Q solver wrapper, table initialization and loading float checkpoints."""
from .solver import LUTQSolver
from .initialization import initialize, load_float_parameters, FLOAT_TO_LUTQ_SCOPES
from .lc import LCSolver, lc_schedule

__all__ = ['LUTQSolver', 'initialize', 'load_float_parameters', 'FLOAT_TO_LUTQ_SCOPES']
__all__ += ['LCSolver', 'lc_schedule']
