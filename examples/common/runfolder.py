"""A run folder: one owner at a time, checkpoints that are whole or not used, writes that fail cleanly.

* :class:`RunLock`: the process that trains or resumes a run holds an OS file lock
  (``flock``) on ``RUN_DIR/run.lock``. The kernel releases it however the process ends (Ctrl-C,
  an exception, ``kill -9``, a crash), so a lock never outlives its owner and there is no stale
  pid file to remove by hand; a second process that asks for the folder (the same ``--output``,
  or ``--resume`` of a run that is training) is refused with one line. The file only names the
  owner (pid and host) for that message, and is removed when the owner ends normally.
* :func:`save_checkpoint` / :func:`checkpoint_problem` / :func:`recover_checkpoint`: a
  checkpoint is written to ``checkpoint.tmp`` and moved into place by renames; its
  ``state.json`` (written last) records the size and SHA-256 of ``params.h5`` and ``solver.h5``,
  so a truncated or damaged file is recognised on ``--resume``, which then falls back to
  ``checkpoint.old`` when that one is whole.
* :func:`writes_to`: a failed write (full disk, quota, file size limit ``ulimit -f``, read-only
  file system) becomes one :class:`RunError` line saying what is intact and how to continue; the
  checkpoint being written is removed, the previous one is not touched.
"""
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket

__all__ = ['RunError', 'RunLock', 'CHECKPOINT_FILES', 'save_checkpoint', 'checkpoint_problem',
           'complete_checkpoint', 'recover_checkpoint', 'load_state', 'writes_to',
           'write_problem', 'reserve', 'write_bytes']

LOCK_FILE = 'run.lock'
#: The files of a checkpoint folder (``state.json`` last: its presence completes the folder).
CHECKPOINT_FILES = ('params.h5', 'solver.h5', 'state.json')
_DIGESTS = 'files'  # the key of state.json that holds the sizes and digests of the .h5 files


class RunError(RuntimeError):
    """A run cannot start or continue; the message says what to do."""


# --- ownership ------------------------------------------------------------------------------

_HELD = set()  # lock file descriptors of this process (closed in forked children)


def _close_in_child():
    for fd in _HELD:
        try:
            os.close(fd)  # the parent's lock stays: flock belongs to the open file description
        except OSError:
            pass
    _HELD.clear()


if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=_close_in_child)


class RunLock:
    """Exclusive ownership of a run folder by this process (see the module docs).

    Child processes forked while the lock is held (decoding workers) close their copy of the
    descriptor, so a worker that outlives its parent does not keep the folder locked.

    Args:
        run_dir (str): the run folder (created by :meth:`acquire` if missing).
        flag (str): how the user named it, for the messages (``--output X`` / ``--resume X``).
    """

    def __init__(self, run_dir, flag=None):
        self.run_dir = run_dir
        self.flag = flag or run_dir
        self.path = os.path.join(run_dir, LOCK_FILE)
        self.created = False
        self._fd = None

    def acquire(self):
        """Create the folder if needed and lock it.

        Raises:
            RunError: if another process holds the folder, or it cannot be created or written.
        """
        try:
            if not os.path.isdir(self.run_dir):
                os.makedirs(self.run_dir)
                self.created = True
            while True:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                if not _lock(fd):
                    raise self._busy(fd)
                # the previous owner removes the file when it ends: lock the file that is there
                try:
                    if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                        break
                except FileNotFoundError:
                    pass
                os.close(fd)
            self._fd = fd
            _HELD.add(fd)
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        except OSError as e:
            self.release(failed=True)
            raise RunError(f"{self.flag}: cannot write there ({e.strerror or e}); choose another "
                           "folder")
        return self

    def check_free(self):
        """Refuse a folder that another process holds, without creating or locking anything.

        Raises:
            RunError: the one :meth:`acquire` would raise.
        """
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return  # no lock file: nobody holds it
        if not _lock(fd):
            raise self._busy(fd)
        os.close(fd)  # closing the only descriptor releases the test lock

    def _busy(self, fd):
        owner = os.read(fd, 200).decode(errors='replace').strip() or 'unknown'
        os.close(fd)
        return RunError(f"{self.flag}: the run folder is in use by another process ({owner}), "
                        "which trains or resumes it; wait until it ends (Ctrl-C or SIGTERM stops "
                        "it with a checkpoint) or choose another --output")

    def release(self, failed=False):
        """Unlock (and remove the lock file); after a failure, also remove the folder if this
        lock created it and nothing else was written into it.

        Args:
            failed (bool): the run ended before it wrote anything worth keeping.
        """
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)  # before unlocking: a waiter then locks a new file
            _HELD.discard(self._fd)
            os.close(self._fd)
            self._fd = None
        if failed and self.created:
            with contextlib.suppress(OSError):
                os.rmdir(self.run_dir)  # only if empty

    def __enter__(self):
        return self.acquire()

    def __exit__(self, exc_type, exc, tb):
        self.release(failed=exc_type is not None)
        return False


def _lock(fd):
    """Lock ``fd`` exclusively without waiting; False if another process holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


# --- checkpoints ----------------------------------------------------------------------------

def _digest(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def reserve(path, size):
    """Make sure ``size`` bytes can be written to a file at ``path`` (then remove it).

    HDF5 does not survive a write that fails half-way (its later clean-up crashes the process),
    so a file that HDF5 writes straight to disk gets its space reserved first: a full disk, a
    quota or the file size limit then fail here, as one ``OSError``.

    Args:
        path (str): a file name in the destination folder (removed again).
        size (int): bytes.

    Raises:
        OSError: ``ENOSPC``, ``EDQUOT``, ``EFBIG``, ...
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.posix_fallocate(fd, 0, max(1, int(size)))
    finally:
        os.close(fd)
        os.remove(path)


def write_bytes(path, data):
    """Write ``data`` to ``path`` and sync it (a plain write: a failure is a clean ``OSError``)."""
    with open(path, 'wb') as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(run_dir, params, save_solver, state):
    """Write a checkpoint of the run and move it into place.

    ``checkpoint.tmp`` is written and synced first; then ``checkpoint`` becomes
    ``checkpoint.old`` and ``checkpoint.tmp`` becomes ``checkpoint`` (a death between the renames
    is undone by :func:`recover_checkpoint`). If writing fails, ``checkpoint.tmp`` is removed and
    the previous checkpoint is untouched.

    Args:
        run_dir (str): the run folder.
        params (bytes): the parameters' ``.h5`` file, made in memory.
        save_solver (callable): ``save_solver(path)`` writes the solver states (``.h5``); its
            space is reserved first (:func:`reserve`): the size of the previous checkpoint's
            file, or twice the parameters' size for the first one.
        state (dict): the JSON state (iteration, history, ...); the files' digests are added.
    """
    tmp = os.path.join(run_dir, 'checkpoint.tmp')
    final = os.path.join(run_dir, 'checkpoint')
    old = os.path.join(run_dir, 'checkpoint.old')
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        os.makedirs(tmp)
        write_bytes(os.path.join(tmp, 'params.h5'), params)
        previous = os.path.join(final, 'solver.h5')
        need = os.path.getsize(previous) if os.path.isfile(previous) else 2 * len(params)
        reserve(os.path.join(tmp, 'solver.reserved'), need + (1 << 16))
        save_solver(os.path.join(tmp, 'solver.h5'))
        _fsync(os.path.join(tmp, 'solver.h5'))
        files = {}
        for name in CHECKPOINT_FILES[:2]:
            path = os.path.join(tmp, name)
            files[name] = {'bytes': os.path.getsize(path), 'sha256': _digest(path)}
        path = os.path.join(tmp, 'state.json')
        with open(path, 'w') as f:
            json.dump({**state, _DIGESTS: files}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(final):
        os.replace(final, old)
    os.replace(tmp, final)  # a death before this line leaves checkpoint.old: recover_checkpoint
    shutil.rmtree(old, ignore_errors=True)


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


# --- failed writes --------------------------------------------------------------------------

_ERRNO = re.compile(r'errno = (\d+)')


def write_problem(error):
    """A short reason for a failed write (h5py reports some only inside its message).

    Args:
        error (BaseException): what the writer raised.

    Returns:
        str: e.g. ``'No space left on device'``.
    """
    code = getattr(error, 'errno', None)
    if not isinstance(code, int):
        m = _ERRNO.search(str(error))
        code = int(m.group(1)) if m else None
    if code:
        return os.strerror(code)
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


#: errno values that mean "the storage refused", with what to do about it
_REMEDY = {errno.ENOSPC: 'free space', errno.EDQUOT: 'free space within the quota',
           errno.EFBIG: 'raise the file size limit (ulimit -f)',
           errno.EROFS: 'make the file system writable'}


@contextlib.contextmanager
def writes_to(run_dir, saved_iteration):
    """Turn a failed write into the folder into one :class:`RunError` line.

    Args:
        run_dir (str): the run folder (for the message).
        saved_iteration (callable): ``() -> int or None``: the iteration of the checkpoint on
            disk (``None``: none yet).

    Raises:
        RunError: instead of the ``OSError`` / ``RuntimeError`` (h5py) of the writer.
    """
    try:
        yield
    except RunError:
        raise
    except (OSError, RuntimeError) as e:
        reason = write_problem(e)
        code = next((c for c in _REMEDY if os.strerror(c) == reason), None)
        remedy = _REMEDY.get(code, 'fix the cause')
        it = saved_iteration()
        if it is None:
            then = f"nothing to resume yet: {remedy}, then start the run again"
        else:
            then = (f"the checkpoint of iteration {it} is intact: {remedy}, then continue with "
                    f"--resume {run_dir}")
        raise RunError(f"cannot write to {run_dir} ({reason}); {then}") from None
