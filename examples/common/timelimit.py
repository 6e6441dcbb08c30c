"""When a run writes a checkpoint between epoch ends, and when it stops (a time limit, a signal).

An ImageNet epoch takes hours: a run that checkpoints only at epoch ends loses them to a
``kill -9``, a crash or a scheduler that ends the job. :class:`CheckpointTimer` asks for a
checkpoint every ``interval`` seconds, and, with a time limit (a SLURM job's, less a margin),
for a stop with a checkpoint at the last iteration boundary from which the next iteration, its
validation (at an epoch end) and a checkpoint would no longer fit. Those durations are estimated
from the run itself (the last iteration, the longest validation and checkpoint so far).
:class:`Interrupts` turns SIGINT and SIGTERM into a stop at the next iteration boundary.
"""
import signal
import time

__all__ = ['CheckpointTimer', 'Interrupts']


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


class Interrupts:
    """SIGINT and SIGTERM only set a flag; the training loop stops at an iteration boundary.

    A second Ctrl-C while the first is pending stops at once (without a new checkpoint; the
    previous one stays valid).
    """

    def __init__(self):
        self.signum = None
        self._old = {}

    def __enter__(self):
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: no handlers, Ctrl-C raises as usual
            pass
        return self

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt("stopped at once by a second Ctrl-C, without a new "
                                    "checkpoint; --resume continues from the last one")
        self.signum = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False
