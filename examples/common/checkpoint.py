# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""A run's parameters in and out: checkpoints (whole or not used, an exact resume), the
parameter files, and the ``--init`` file a new run starts from.

nnabla-examples' ``checkpoint.py`` saves parameters + solver states + the iteration
(``save_checkpoint`` / ``load_checkpoint``); so does this module, with what a long run needs:

* ``RUN_DIR/checkpoint/`` holds ``params.h5``, ``solver.h5`` and ``state.json`` (iteration,
  epoch, validation history, monitor state, and the size and SHA-256 of the two ``.h5`` files).
* ``RUN_DIR/checkpoint.old/`` is the checkpoint before it, kept as the fallback:
  :func:`save_checkpoint` writes ``checkpoint.tmp``, syncs it, reads it back, and only then
  moves it into place by renames, so a whole checkpoint is on disk at every instant;
  :func:`checkpoint_problem` recognises a truncated or damaged checkpoint, and
  :func:`recover_checkpoint` falls back to ``checkpoint.old`` when that one is whole.
* Parameters are made in memory as the bytes of an ``.h5`` file (:func:`parameters_h5`): HDF5
  does not survive a write to a full disk, Python's write of the bytes fails cleanly.
* :class:`Checkpoints` is one run's side of it: loads, saves by the process that writes, and
  failed writes as one line that names the checkpoint still on disk
  (:func:`examples.common.runfolder.writes_to`).
* ``--init``: a float run's ``params.h5`` (loaded into the built graphs by
  :func:`nnabla_lutq.load_float_parameters`) or ``model.nnp`` (its parameters registered before
  the graphs are built, :func:`load_init_nnp`, then checked, :func:`complete_init`).
"""
import hashlib
import io
import json
import os
import shutil

import nnabla as nn
import nnabla_lutq

from . import configs
from .runfolder import RunError, reserve, write_bytes, write_problem, writes_to

__all__ = ['CHECKPOINT_FILES', 'SAVE_STAGES', 'parameters_h5', 'save_parameters', 'save_checkpoint',
           'load_checkpoint', 'checkpoint_problem', 'complete_checkpoint', 'recover_checkpoint',
           'load_state', 'Checkpoints', 'load_init_nnp', 'complete_init']

#: The files of a checkpoint folder (``state.json`` last: its presence completes the folder).
CHECKPOINT_FILES = ('params.h5', 'solver.h5', 'state.json')
_DIGESTS = 'files'  # the key of state.json that holds the sizes and digests of the .h5 files


def _digest(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def _fsync(path):
    """Sync a file, or a folder's entries (the renames in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def parameters_h5():
    """bytes: the current parameters as an ``.h5`` file, made in memory."""
    f = io.BytesIO()
    nn.save_parameters(f, extension='.h5')
    return f.getvalue()


def save_parameters(path):
    """Write (or replace, atomically) the current parameters as ``path`` (``best.h5``,
    ``params.h5``)."""
    from nnabla_lutq.io.nnp import atomic_output
    data = parameters_h5()
    with atomic_output(path, '.h5') as tmp:
        write_bytes(tmp, data)


#: The stages of :func:`save_checkpoint`, in order; a whole checkpoint is on disk after each
#: (``checkpoint`` until ``'moved to old'``, ``checkpoint.old`` then, the new ``checkpoint``
#: from ``'in place'`` on).
SAVE_STAGES = ('old removed', 'params written', 'solver written', 'state written', 'verified',
               'moved to old', 'in place')


def save_checkpoint(run_dir, params, save_solver, state, stage=None):
    """Write a checkpoint of the run and move it into place; the previous one becomes
    ``checkpoint.old``.

    The one before the previous (``checkpoint.old``) is removed first (unless the previous one
    is not whole: then it is the fallback and stays), so a save needs room for one checkpoint
    more than the folder holds. ``checkpoint.tmp`` is written, synced and read
    back against the sizes and SHA-256 recorded in its ``state.json`` (those of ``params.h5``
    come from the bytes in memory); only then does ``checkpoint`` become ``checkpoint.old`` and
    ``checkpoint.tmp`` become ``checkpoint``. At every instant a whole checkpoint is on disk (a
    death between the renames is undone by :func:`recover_checkpoint`). If writing fails,
    ``checkpoint.tmp`` is removed and the previous checkpoint is untouched.

    Args:
        run_dir (str): the run folder.
        params (bytes): the parameters' ``.h5`` file, made in memory (:func:`parameters_h5`).
        save_solver (callable): ``save_solver(path)`` writes the solver states (``.h5``); its
            space is reserved first (:func:`~examples.common.runfolder.reserve`): the size of the
            previous checkpoint's file, or twice the parameters' size for the first one.
        state (dict): the JSON state (iteration, history, ...); the files' digests are added.
        stage (callable or None): ``stage(name)`` after each of :data:`SAVE_STAGES` (tests
            stop the process there).

    Raises:
        OSError: a write failed; RuntimeError: the new checkpoint does not read back whole.
    """
    reached = stage or (lambda name: None)
    tmp = os.path.join(run_dir, 'checkpoint.tmp')
    final = os.path.join(run_dir, 'checkpoint')
    old = os.path.join(run_dir, 'checkpoint.old')
    shutil.rmtree(tmp, ignore_errors=True)
    previous_whole = complete_checkpoint(final)
    if previous_whole:  # else checkpoint.old may be the only whole one: it stays
        shutil.rmtree(old, ignore_errors=True)
    reached('old removed')
    try:
        os.makedirs(tmp)
        write_bytes(os.path.join(tmp, 'params.h5'), params)
        reached('params written')
        previous = os.path.join(final, 'solver.h5')
        need = os.path.getsize(previous) if os.path.isfile(previous) else 2 * len(params)
        reserve(os.path.join(tmp, 'solver.reserved'), need + (1 << 16))
        save_solver(os.path.join(tmp, 'solver.h5'))
        _fsync(os.path.join(tmp, 'solver.h5'))
        reached('solver written')
        path = os.path.join(tmp, 'solver.h5')
        files = {'params.h5': {'bytes': len(params), 'sha256': hashlib.sha256(params).hexdigest()},
                 'solver.h5': {'bytes': os.path.getsize(path), 'sha256': _digest(path)}}
        path = os.path.join(tmp, 'state.json')
        with open(path, 'w') as f:
            json.dump({**state, _DIGESTS: files}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        _fsync(tmp)
        reached('state written')
        problem = checkpoint_problem(tmp)
        if problem is not None:
            raise RuntimeError(f"the checkpoint written does not read back ({problem})")
        reached('verified')
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if previous_whole:
        os.replace(final, old)
    else:
        shutil.rmtree(final, ignore_errors=True)  # damaged (or none): not worth keeping
    reached('moved to old')
    os.replace(tmp, final)  # a death before this line leaves checkpoint.old: recover_checkpoint
    reached('in place')
    _fsync(run_dir)


def load_checkpoint(run_dir, solver):
    """Load the run's checkpoint: parameters, solver states, and the state it was saved with.

    Args:
        run_dir (str): the run folder (its ``checkpoint`` recovered by :func:`recover_checkpoint`).
        solver (nnabla.solver.Solver): with its parameters set.

    Returns:
        dict: the ``state.json`` (iteration, history, ...) without the digests.

    Raises:
        RunError: the checkpoint cannot be read (it is unchanged).
    """
    folder = os.path.join(run_dir, 'checkpoint')
    try:
        nn.load_parameters(os.path.join(folder, 'params.h5'))
        solver.load_states(os.path.join(folder, 'solver.h5'))
        return load_state(folder)
    except (OSError, RuntimeError) as e:  # e.g. the file size limit on a temporary copy
        raise RunError(f"--resume {run_dir}: the checkpoint cannot be loaded "
                       f"({write_problem(e)}); it is unchanged")


def _h5_problem(path):
    """Why an .h5 file of a checkpoint written without digests cannot be read, or None."""
    import h5py

    def read(name, obj):
        if isinstance(obj, h5py.Dataset):
            obj[()]  # noqa: B018 (reading it is the test)
    try:
        with h5py.File(path, 'r') as f:
            f.visititems(read)
    except Exception as e:  # h5py raises OSError, KeyError, RuntimeError, ...
        return f"cannot be read ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    return None


def checkpoint_problem(folder):
    """What is wrong with a checkpoint folder, or ``None`` when it is whole.

    Whole means: all of :data:`CHECKPOINT_FILES`, a ``state.json`` with the iteration, and
    ``.h5`` files with the size and SHA-256 recorded in it (checkpoints of older versions, without
    digests: ``.h5`` files that h5py reads to the end).

    Args:
        folder (str): e.g. ``RUN_DIR/checkpoint``.

    Returns:
        str or None: e.g. ``'params.h5 is truncated (1200 of 2332600 bytes)'``.
    """
    if not os.path.isdir(folder):
        return 'missing'
    for name in CHECKPOINT_FILES:
        if not os.path.isfile(os.path.join(folder, name)):
            return f"{name} is missing"
    try:
        with open(os.path.join(folder, 'state.json')) as f:
            state = json.load(f)
        if not isinstance(state, dict) or 'iteration' not in state:
            return 'state.json has no iteration'
    except (OSError, ValueError) as e:
        return f"state.json cannot be read ({e})"
    recorded = state.get(_DIGESTS)
    for name in CHECKPOINT_FILES[:2]:
        path = os.path.join(folder, name)
        if recorded is None:
            problem = _h5_problem(path)
            if problem:
                return f"{name} {problem}"
            continue
        want = recorded.get(name, {})
        size = os.path.getsize(path)
        if size != want.get('bytes'):
            return f"{name} is truncated or overwritten ({size} of {want.get('bytes')} bytes)"
        if _digest(path) != want.get('sha256'):
            return f"{name} is damaged (its SHA-256 differs from the one recorded)"
    return None


def complete_checkpoint(folder):
    """Whether ``folder`` holds a whole checkpoint (see :func:`checkpoint_problem`).

    Args:
        folder (str): e.g. ``RUN_DIR/checkpoint``.

    Returns:
        bool: True when every file is there and loads.
    """
    return checkpoint_problem(folder) is None


def recover_checkpoint(run_dir, log=None):
    """Make ``run_dir/checkpoint`` the last whole checkpoint, if there is one.

    A run killed between the two renames of :func:`save_checkpoint` leaves its previous
    checkpoint as ``checkpoint.old`` (and perhaps an incomplete ``checkpoint``); a damaged
    ``checkpoint`` is replaced by a whole ``checkpoint.old`` too; ``checkpoint.tmp`` is never
    trusted.

    Args:
        run_dir (str): the run folder.
        log (callable or None): told when a damaged checkpoint is set aside.

    Returns:
        bool: whether a whole checkpoint is in place.
    """
    final = os.path.join(run_dir, 'checkpoint')
    old = os.path.join(run_dir, 'checkpoint.old')
    problem = checkpoint_problem(final)
    if problem is None:
        return True
    if complete_checkpoint(old):
        if os.path.exists(final) and log is not None:
            log(f"{final}: {problem}; continuing from checkpoint.old")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(old, final)
        return True
    return False


def load_state(folder):
    """The ``state.json`` of a checkpoint, without the recorded digests."""
    with open(os.path.join(folder, 'state.json')) as f:
        state = json.load(f)
    state.pop(_DIGESTS, None)
    return state


class Checkpoints:
    """The checkpoints and parameter files of one run, as one training process sees them.

    Args:
        run_dir (str): the run folder.
        writer (bool): this process writes the files (rank 0); the saves of the others do
            nothing.

    Attributes:
        iteration (int or None): the iteration of the checkpoint on disk (``None``: none yet).
    """

    def __init__(self, run_dir, writer=True):
        self.run_dir = run_dir
        self.writer = writer
        self.iteration = None

    def writing(self):
        """A context in which a failed write into the run folder becomes one
        :class:`~examples.common.runfolder.RunError` line; the checkpoint on disk stays."""
        return writes_to(self.run_dir, lambda: self.iteration)

    def load(self, solver):
        """:func:`load_checkpoint`, remembering the iteration on disk."""
        state = load_checkpoint(self.run_dir, solver)
        self.iteration = state['iteration']
        return state

    def save(self, solver, state):
        """Write a checkpoint of the parameters, ``solver``'s states and ``state``."""
        if self.writer:
            with self.writing():
                save_checkpoint(self.run_dir, parameters_h5(), solver.save_states, state)
            self.iteration = state['iteration']

    def save_parameters(self, name):
        """Write the current parameters as ``RUN_DIR/name`` (``best.h5``, ``params.h5``)."""
        if self.writer:
            with self.writing():
                save_parameters(os.path.join(self.run_dir, name))


def load_init_nnp(path, layers):
    """Register a float run's ``model.nnp`` parameters (converted to LUT-Q for a LUT-Q run).

    The file's network is loaded with nnabla's ``NnpLoader`` (its parameters keep their names,
    e.g. ``net/conv0/conv/W``) and, for a LUT-Q run, converted with :func:`nnabla_lutq.convert`
    with the run's settings, which moves the float weights to the LUT-Q names and initializes the
    tables; the run's model then finds its parameters there.

    Args:
        path (str): the ``--init`` file.
        layers (~examples.common.models.Layers): the run's layers.

    Returns:
        set: the names of the registered parameters (for :func:`complete_init`).

    Raises:
        RunError: the file cannot be read or converted.
    """
    from nnabla.utils.nnp_graph import NnpLoader
    from nnabla_lutq.io.nnp import default_network, read_nnp
    try:
        net = NnpLoader(path).get_network(default_network(read_nnp(path)), batch_size=1)
    except Exception as e:  # nnabla's loader raises many kinds
        raise RunError(f"--init {path}: not a readable float .nnp ({e})")
    if layers.lutq:
        edges = None if layers.quantize_first_last else {'conv0': None, 'fc': None}
        cfg = nnabla_lutq.LayerConfig(layers.n_values, layers.dictionary, layers.prune_ratio,
                                      layers.pow2_range)
        try:
            nnabla_lutq.convert(list(net.outputs.values()), config=cfg, mlbn=layers.mlbn,
                                overrides={f'net/{k}': v for k, v in (edges or {}).items()})
        except ValueError as e:
            raise RunError(f"--init {path}: cannot convert it to {configs.describe(layers)} ({e})")
    return set(nnabla_lutq.nn.state.all_parameters())


def complete_init(path, loaded, *outputs):
    """Once the graphs of ``outputs`` are built: load an ``--init`` ``.h5`` into them, or check
    that they found all their parameters in an ``--init`` ``.nnp`` (and drop the others).

    Args:
        path (str): the ``--init`` file.
        loaded (set or None): what :func:`load_init_nnp` returned (``.nnp``).
        *outputs (~nnabla.Variable): the run's graphs.

    Raises:
        RunError: the file does not fit the model.
    """
    if path.endswith('.h5'):
        try:
            nnabla_lutq.load_float_parameters(path)
        except ValueError as e:
            raise RunError(f"--init {path}: {e}")
        return
    used = _graph_parameters(*outputs)
    missing = sorted(used - loaded)
    if missing:
        raise RunError(f"--init {path}: the file has no {missing[:3]} (+"
                       f"{max(0, len(missing) - 3)} more); give the model.nnp of a float "
                       "run of this model and --act-bits setting")
    for k in loaded - used:  # e.g. parameters the converted float graph no longer reads
        nn.parameter.pop_parameter(k)


def _graph_parameters(*outputs):
    """Full names of the registered parameters that the graphs of ``outputs`` read."""
    data = {}
    for o in outputs:
        o.visit(lambda f: data.update({v.data: None for v in f.inputs if v.parent is None}))
    return {k for k, v in nnabla_lutq.nn.state.all_parameters().items() if v.data in data}
