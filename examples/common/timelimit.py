# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""When a run writes a checkpoint between epoch ends, and when it stops (a time limit, a signal).

An ImageNet epoch takes hours: a run that checkpoints only at epoch ends loses them to a
``kill -9``, a crash or a scheduler that ends the job. :class:`CheckpointTimer` asks for a
checkpoint every ``interval`` seconds, and, with a time limit (a SLURM job's, less a margin),
for a stop with a checkpoint at the last iteration boundary from which the next iteration, its
validation (at an epoch end) and a checkpoint would no longer fit. Those durations are estimated
from the run itself (the last iteration, the longest validation and checkpoint so far).
:class:`Interrupts` turns SIGINT and SIGTERM into a stop at the next iteration boundary in the
training loop, and into an immediate end (:class:`Interrupted`) outside it.
"""
import contextlib
import signal
import sys
import time

__all__ = ['CheckpointTimer', 'Interrupts', 'Interrupted', 'end_interrupted']


class CheckpointTimer:
    """The checkpoint and time-limit decisions of one training process (see the module docs).

    Args:
        interval (float): seconds between checkpoints (0: after every iteration).
        time_limit (float or None): seconds from ``start`` by which the process must have
            written its checkpoint; ``None``: no limit.
        start (float or None): ``clock()`` when the process started its work (default: now).
        clock (callable): a monotonic clock in seconds.
    """

    def __init__(self, interval, time_limit=None, start=None, clock=time.monotonic):
        self.clock = clock
        self.start = clock() if start is None else start
        self.interval = interval
        self.time_limit = time_limit
        self.last_checkpoint = clock()
        self.step_s = self.validation_s = self.checkpoint_s = 0.0
        self._began = None

    def begin(self):
        """Mark the start of an iteration, a validation or a checkpoint."""
        self._began = self.clock()

    def end(self, what):
        """Mark its end; ``what`` is ``'step'``, ``'validation'`` or ``'checkpoint'``."""
        took = self.clock() - self._began
        if what == 'step':
            self.step_s = took
        else:
            setattr(self, what + '_s', max(getattr(self, what + '_s'), took))
        if what == 'checkpoint':
            self.last_checkpoint = self.clock()

    def checkpoint_due(self):
        """bool: ``interval`` seconds have passed since the last checkpoint."""
        return self.clock() - self.last_checkpoint >= self.interval

    def out_of_time(self, validation_next):
        """Whether to stop now: the next iteration (and its validation when
        ``validation_next``) plus a checkpoint would end after the time limit.

        Args:
            validation_next (bool): the next iteration ends an epoch (or the run).

        Returns:
            bool: always False without a time limit.
        """
        if self.time_limit is None:
            return False
        need = self.step_s + (self.validation_s if validation_next else 0.0) + self.checkpoint_s
        return self.clock() - self.start + need >= self.time_limit


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM (``signum``) outside the training loop: the run ends at once."""

    def __init__(self, signum):
        super().__init__()
        self.signum = signum


class Interrupts:
    """SIGINT and SIGTERM for the whole of a run, from its first step to its last file.

    Outside the training loop (checking the flags, locking the folder, loading the data, building
    the graphs, writing the final files) a signal ends the run at once: :class:`Interrupted` is
    raised wherever the process is (a blocking read included), the ``finally`` blocks on the way
    out clean up, and signals that arrive meanwhile are only noted. Within :meth:`deferred` it is
    raised at the end of the block instead, so that a step that must finish (taking the lock)
    finishes. Within :meth:`looping` a signal only sets ``signum``; the training loop stops at
    the next iteration boundary with a checkpoint. A second Ctrl-C while the first is pending
    stops at once (without a new checkpoint; the previous one stays valid).

    Attributes:
        signum (int or None): the first signal received.
    """

    def __init__(self):
        self.signum = None
        self._old = {}
        self._looping = False
        self._deferred = 0
        self._pending = False  # a signal outside the loop, not raised yet

    def __enter__(self):
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: no handlers, Ctrl-C raises as usual
            pass
        return self

    def _handle(self, signum, frame):
        if self.signum is None:
            self.signum = signum
            self._pending = not self._looping
            self._stop_now()
        elif self._looping and signum == signal.SIGINT:
            raise KeyboardInterrupt("stopped at once by a second Ctrl-C, without a new "
                                    "checkpoint")

    def _stop_now(self):
        if self._pending and not self._deferred:
            self._pending = False
            raise Interrupted(self.signum)

    @contextlib.contextmanager
    def deferred(self):
        """A block that a signal does not interrupt: it ends the run after the block."""
        self._deferred += 1
        try:
            yield
        finally:
            self._deferred -= 1
        self._stop_now()

    @contextlib.contextmanager
    def looping(self):
        """The training loop: a signal only sets :attr:`signum`."""
        self._looping = True
        try:
            yield self
        finally:
            self._looping = False

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def end_interrupted(e, resume_dir):
    """End a run that a signal stopped outside its training loop (or a second Ctrl-C stopped in
    it) with one line and the status of the signal.

    Args:
        e (KeyboardInterrupt): what stopped it (:class:`Interrupted` for a signal of
            :class:`Interrupts`).
        resume_dir (str or None): the run folder when it holds a checkpoint to resume from
            (``None``: a new run's folder, removed, or none yet).

    Raises:
        KeyboardInterrupt: for SIGINT, with the line to print (empty: the script's own,
            :mod:`examples.common.console`); the scripts exit 130.
        SystemExit: 128 + the signal for SIGTERM, once its line is on stderr.
    """
    signum = getattr(e, 'signum', signal.SIGINT)
    what = ('interrupted (Ctrl-C)' if signum == signal.SIGINT
            else f"terminated ({signal.Signals(signum).name})")
    text = None
    if resume_dir is not None:
        text = (f"{str(e) or what + ' outside the training loop'}; the run's checkpoint is "
                f"whole: continue with --resume {resume_dir}")
    elif str(e):  # a second Ctrl-C before the first checkpoint
        text = f"{e}; nothing was kept: start the run again"
    if signum == signal.SIGINT:
        raise KeyboardInterrupt(text or '') from None
    print(text or f"{what} before training started; nothing was changed", file=sys.stderr,
          flush=True)
    raise SystemExit(128 + signum) from None
