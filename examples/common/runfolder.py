# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""A run folder: one owner at a time, and writes into it that fail cleanly.

* :class:`RunLock`: the process that trains or resumes a run holds an OS file lock
  (``flock``) on ``RUN_DIR/run.lock``. The kernel releases it however the process ends (Ctrl-C,
  an exception, ``kill -9``, a crash), so a lock never outlives its owner and there is no stale
  pid file to remove by hand; a second process that asks for the folder (the same ``--output``,
  or ``--resume`` of a run that is training) is refused with one line. The file only names the
  owner (pid and host) for that message, and is removed when the owner ends normally. A run
  that ends without anything worth keeping (an error or a signal before its first checkpoint)
  leaves the folder as it found it: what it wrote is removed, and so is the folder if it made it.
* :func:`writes_to`: a failed write (full disk, quota, file size limit ``ulimit -f``, read-only
  file system) becomes one :class:`RunError` line saying what is intact and how to continue.
  :func:`write_bytes` and :func:`reserve` make the writes fail as a plain ``OSError``.

The checkpoints inside the folder: :mod:`examples.common.checkpoint`.
"""
import contextlib
import errno
import fcntl
import os
import re
import shutil
import socket

__all__ = ['RunError', 'RunLock', 'writes_to', 'write_problem', 'reserve', 'write_bytes']

LOCK_FILE = 'run.lock'


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
        self._found = set()  # what the folder held when this process locked it

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
            try:
                self._found = set(os.listdir(self.run_dir)) - {LOCK_FILE}
            except OSError:
                os.close(fd)
                raise
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
        """Unlock (and remove the lock file); after a failure, first remove what was written into
        the folder while it was held (the entries it did not hold then), and then the folder if
        this lock created it and nothing else is in it.

        Args:
            failed (bool): the run ended before it wrote anything worth keeping.
        """
        if failed and self._fd is not None:  # only the owner removes anything
            try:
                written = set(os.listdir(self.run_dir)) - self._found - {LOCK_FILE}
            except OSError:
                written = set()
            for name in written:
                path = os.path.join(self.run_dir, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        os.remove(path)
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


# --- writes -----------------------------------------------------------------------------------

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
