"""Data-parallel training on nnabla's communicators (``mpirun -n N python train.py ...``).

:class:`Distributed` wraps what the trainer needs from nnabla's
``nnabla.communicators.MultiProcessDataParallelCommunicator``:

* ``rank``, ``size``, ``local_rank`` (the GPU of this process) and ``is_main`` (rank 0 writes the
  monitors, checkpoints and exports; the others only train);
* ``bcast_parameters(params)``: every rank starts from rank 0's parameters (LUT-Q tables
  included), so the ranks hold identical networks from the first step;
* ``all_reduce_gradients(params)``: the mean of the ranks' gradients (``division=True``) after
  each backward pass, so every rank makes the same update;
* the LUT-Q k-means step keeps the tables identical on every rank by construction
  (``LUTQSolver(comm=...)``, :class:`nnabla_lutq.kmeans.SyncKMeans`).

Each rank reads its own shard of every epoch's permutation, so the ranks together make one
minibatch of ``batch_size * size`` images. Learning rate: the linear scaling rule (Goyal et al.
2017), ``lr * size``, for the larger total batch; pass ``--lr`` already scaled to opt out
(``--no-lr-scaling``).

Without mpirun (one process) the communicator is not created and every method is a no-op, so the
same script runs on one device. The methods only use the communicator's ``rank``, ``size``,
``local_rank``, ``bcast`` and ``all_reduce``, so a stand-in with those tests the logic in one
process.
"""
import os

__all__ = ['Distributed', 'launched_by_mpi', 'mpi_rank']

_MPI_SIZE_VARS = ('OMPI_COMM_WORLD_SIZE', 'PMI_SIZE', 'MV2_COMM_WORLD_SIZE', 'PMIX_SIZE')
_MPI_RANK_VARS = ('OMPI_COMM_WORLD_RANK', 'PMI_RANK', 'MV2_COMM_WORLD_RANK', 'PMIX_RANK')


def launched_by_mpi():
    """int: the number of processes an MPI launcher started (1 when not under mpirun)."""
    for v in _MPI_SIZE_VARS:
        if os.environ.get(v, '').isdigit():
            return int(os.environ[v])
    return 1


def mpi_rank():
    """int: this process's rank as the MPI launcher set it (0 when not under mpirun), known
    before the communicator is created."""
    for v in _MPI_RANK_VARS:
        if os.environ.get(v, '').isdigit():
            return int(os.environ[v])
    return 0


class Distributed:
    """The data-parallel side of a run (see the module docs).

    Args:
        comm: an nnabla data-parallel communicator (after ``init()``), or None for one process.
    """

    def __init__(self, comm=None):
        self.comm = comm
        self.rank = comm.rank if comm is not None else 0
        self.size = comm.size if comm is not None else 1
        self.local_rank = getattr(comm, 'local_rank', self.rank) if comm is not None else 0

    @classmethod
    def create(cls, ctx):
        """The communicator for ``ctx`` when launched by mpirun, else the one-process stand-in.

        Args:
            ctx (~nnabla.Context): the training context; its ``device_id`` is set to this
                process's local rank.

        Returns:
            Distributed: the setup.

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

    @property
    def is_main(self):
        """bool: rank 0, the process that writes files."""
        return self.rank == 0

    def scaled_lr(self, lr):
        """The learning rate for the total batch of all ranks (linear scaling rule).

        Args:
            lr (float): the learning rate for one rank's batch size.

        Returns:
            float: ``lr * size``.
        """
        return lr * self.size

    def bcast_parameters(self, params):
        """Give every rank rank 0's values of ``params`` (name -> Variable)."""
        if self.comm is not None and self.size > 1:
            self.comm.bcast([v.data for v in params.values()], src=0, inplace=False)

    def all_reduce_gradients(self, params):
        """Replace each gradient by the mean over the ranks (``params``: name -> Variable)."""
        if self.comm is not None and self.size > 1:
            self.comm.all_reduce([v.grad for v in params.values()], division=True,
                                 inplace=False)

    def barrier(self):
        """Wait until every rank is here (the communicator's ``barrier``; an all-reduce of one
        value for a stand-in without one)."""
        if self.comm is None or self.size <= 1:
            return
        if hasattr(self.comm, 'barrier'):
            self.comm.barrier()
        else:
            import numpy as np
            import nnabla as nn
            self.comm.all_reduce([nn.NdArray.from_numpy_array(np.zeros(1, np.float32))],
                                 division=False, inplace=False)

    def any_true(self, flag):
        """Whether ``flag`` is true on any rank; every rank gets the same answer (a decision to
        stop must be taken by all ranks at the same iteration).

        Args:
            flag (bool): this rank's value.

        Returns:
            bool: the logical or over the ranks.
        """
        if self.comm is None or self.size <= 1:
            return bool(flag)
        import numpy as np
        import nnabla as nn
        value = nn.NdArray.from_numpy_array(np.array([1.0 if flag else 0.0], np.float32))
        self.comm.all_reduce([value], division=False, inplace=False)
        return bool(value.data[0] > 0)

    def kmeans_comm(self):
        """The communicator for ``LUTQSolver(comm=...)`` (None with one process)."""
        return self.comm if self.size > 1 else None
