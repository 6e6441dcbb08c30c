"""Training: the LUT-Q and learning-compression solver wrappers (and their state files), table
initialization and loading float checkpoints."""
from .solver import LUTQSolver, SolverStateError
from .initialization import initialize, load_float_parameters, FLOAT_TO_LUTQ_SCOPES
from .lc import LCSolver, lc_schedule

__all__ = ['LUTQSolver', 'LCSolver', 'lc_schedule', 'SolverStateError', 'initialize',
           'load_float_parameters', 'FLOAT_TO_LUTQ_SCOPES']
