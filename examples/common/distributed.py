# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Data-parallel training on nnabla's communicator (``mpirun -n N python train.py ...``).

Rank 0 writes the monitors, checkpoints and exports; every rank starts from rank 0's parameters
(LUT-Q tables included), gradients are averaged over the ranks after each backward pass, and the
LUT-Q k-means step keeps the tables identical on every rank by construction
(``LUTQSolver(comm=...)``). Each rank reads its own shard of every epoch's permutation, so the
ranks together make one minibatch of ``batch_size * size`` images; the trainer scales ``--lr``
by ``size`` (linear scaling rule; ``--no-lr-scaling`` opts out). The ranks decide together
whether to stop at each iteration boundary (:meth:`Distributed.agree_stop`): a Ctrl-C, a SIGTERM
or the time limit of one rank stops every rank at the same iteration, with the same exit status,
after rank 0 has written the checkpoint. With one process every method is a no-op.

Why not ``nnabla.utils.communicator_util`` (``create_communicator`` / ``single_or_rankzero``),
which nnabla-examples use: its ``create_communicator`` only recognises OpenMPI's ``mpirun``
(``OMPI_COMM_WORLD_SIZE``), so under ``srun`` (PMIx), MPICH or MVAPICH each process would train
alone, unsynchronised, and the ranks would fight over one run folder; it also puts the GPU at
``rank % size`` on a context of its own rather than at the local rank on the run's. And
``single_or_rankzero`` only knows the communicator that ``create_communicator`` made, not one
given to the trainer (a stand-in with ``rank``, ``size``, ``local_rank``, ``bcast`` and
``all_reduce`` tests the data-parallel logic in one process). :class:`Distributed` is the small
wrapper that nnabla-examples' ``CommunicatorWrapper`` also is, on the same communicator
(``MultiProcessDataParallelCommunicator``).
"""
import os
import signal

import numpy as np
import nnabla as nn

__all__ = ['Distributed', 'launched_by_mpi', 'mpi_rank']

#: The variables MPI launchers set (OpenMPI, MPICH/Intel MPI, MVAPICH, PMIx e.g. ``srun``).
_MPI_SIZE_VARS = ('OMPI_COMM_WORLD_SIZE', 'PMI_SIZE', 'MV2_COMM_WORLD_SIZE', 'PMIX_SIZE')
_MPI_RANK_VARS = ('OMPI_COMM_WORLD_RANK', 'PMI_RANK', 'MV2_COMM_WORLD_RANK', 'PMIX_RANK')


def _launcher_value(names, default):
    return next((int(os.environ[v]) for v in names if os.environ.get(v, '').isdigit()), default)


def launched_by_mpi():
    """int: the number of processes an MPI launcher started (1 when not under mpirun)."""
    return _launcher_value(_MPI_SIZE_VARS, 1)


def mpi_rank():
    """int: this process's rank as the MPI launcher set it (0 when not under mpirun), known
    before the communicator is created."""
    return _launcher_value(_MPI_RANK_VARS, 0)


class Distributed:
    """The data-parallel side of a run (see the module docs).

    Args:
        comm: an nnabla data-parallel communicator (after ``init()``), or None for one process.
    """

    def __init__(self, comm=None):
        self.comm = comm if comm is not None and comm.size > 1 else None
        self.rank = comm.rank if comm is not None else 0
        self.size = comm.size if comm is not None else 1
        self.local_rank = getattr(comm, 'local_rank', self.rank) if comm is not None else 0
        #: bool: rank 0 (or the only process), the process that writes files.
        self.is_main = self.rank == 0

    @classmethod
    def create(cls, ctx):
        """The communicator for ``ctx`` when launched by mpirun, else the one-process setup.

        Args:
            ctx (~nnabla.Context): the training context; its ``device_id`` is set to this
                process's local rank.

        Raises:
            RuntimeError: under mpirun, if nnabla's communicator cannot be created (it needs
                nnabla-ext-cuda with NCCL and an MPI library).
        """
        if launched_by_mpi() <= 1:
            return cls(None)
        import nnabla.communicators as C
        try:
            comm = C.MultiProcessDataParallelCommunicator(ctx)
            comm.init()
        except Exception as e:  # nnabla raises plain Exceptions here
            raise RuntimeError(
                f"mpirun started {launched_by_mpi()} processes but nnabla's data-parallel "
                f"communicator cannot be created ({e}); it needs nnabla-ext-cuda (NCCL) and an MPI "
                "library (e.g. OpenMPI)")
        ctx.device_id = str(comm.local_rank)
        return cls(comm)

    def bcast_parameters(self, params):
        """Give every rank rank 0's values of ``params`` (name -> Variable)."""
        if self.comm is not None:
            self.comm.bcast([v.data for v in params.values()], src=0, inplace=False)

    def all_reduce_gradients(self, params):
        """Replace each gradient by the mean over the ranks (``params``: name -> Variable)."""
        if self.comm is not None:
            self.comm.all_reduce([v.grad for v in params.values()], division=True,
                                 inplace=False)

    def barrier(self):
        """Wait until every rank is here (an all-reduce of one value for a communicator without
        ``barrier``)."""
        if self.comm is None:
            return
        if hasattr(self.comm, 'barrier'):
            self.comm.barrier()
        else:
            self.any_true(False)

    def any_true(self, flag):
        """bool: whether ``flag`` is true on any rank; every rank gets the same answer (a
        decision to stop must be taken by all ranks at the same iteration)."""
        return bool(self._counts([flag])[0])

    def agree_stop(self, signum, out_of_time):
        """Why every rank stops at this iteration boundary, if any rank has a reason.

        A signal may reach one rank only (``kill`` of one process, a node's scheduler); the rank
        that stopped alone would leave the others waiting in their next all-reduce. One
        all-reduce per iteration gives every rank the same decision.

        Args:
            signum (int or None): the signal this rank received (SIGINT or SIGTERM).
            out_of_time (bool): this rank's time-limit decision.

        Returns:
            tuple: ``(signum, out_of_time)`` of the ranks together: SIGTERM if any rank received
            it, else SIGINT if any did, else None; and whether any rank ran out of time.
        """
        if self.comm is None:
            return signum, bool(out_of_time)
        sigint, sigterm, late = self._counts([signum == signal.SIGINT,
                                              signum == signal.SIGTERM, out_of_time])
        return (signal.SIGTERM if sigterm else signal.SIGINT if sigint else None), bool(late)

    def _counts(self, flags):
        """How many ranks have each of ``flags`` true (one all-reduce)."""
        if self.comm is None:
            return [int(bool(f)) for f in flags]
        value = nn.NdArray.from_numpy_array(np.array([1.0 if f else 0.0 for f in flags],
                                                     np.float32))
        self.comm.all_reduce([value], division=False, inplace=False)
        return [int(round(float(v))) for v in value.data]
