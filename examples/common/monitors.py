# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The run's nnabla monitors, continued across ``--resume``.

nnabla's ``MonitorSeries`` / ``MonitorTimeElapsed`` empty their file when they are created, so a
resumed run would lose every line written before it. :class:`RunMonitors` uses them without that
step and makes a resumed run's files those of a run that never stopped:

* the lines of iterations before the checkpoint stay; lines of later iterations (a run killed
  after its checkpoint had trained on) go, since those iterations are trained and written again;
* the running means (``train_loss`` and ``train_error`` average ``interval`` iterations) continue
  where the checkpoint left them: their partial sums are part of the checkpoint's state;
* ``val_error`` is written again from the checkpoint's validation history;
* ``time`` counts the run's own seconds (those before the resume included).

A damaged last line (a disk that filled up mid-line) is dropped.
"""
import os
import time

from nnabla.monitor import MonitorSeries, MonitorTimeElapsed

__all__ = ['RunMonitors']


def _lines(path, keep):
    """The well-formed lines of a monitor file whose iteration ``keep(iteration)`` accepts."""
    if not os.path.isfile(path):
        return []
    out = []
    with open(path, errors='replace') as f:
        for line in f:
            parts = line.split()
            if len(parts) < 2 or not line.endswith('\n'):
                continue
            try:
                index = int(parts[0])
                [float(p) for p in parts[1:]]
            except ValueError:
                continue
            if keep(index):
                out.append(line)
    return out


def _rewrite(path, lines):
    tmp = path + '.tmp'
    try:
        with open(tmp, 'w') as f:
            f.writelines(lines)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class RunMonitors:
    """``train_loss``, ``train_error`` (means over ``interval`` iterations), ``val_error`` and
    ``time`` in a run folder (see the module docs).

    Args:
        run_dir (str): the run folder.
        interval (int): iterations per ``train_loss`` / ``train_error`` line.
        time_interval (int): iterations per ``time`` line.
        state (dict or None): a resumed run's checkpoint state (``iteration``, ``history``,
            ``seconds`` and ``monitors``); ``None`` starts new, empty files.
    """

    def __init__(self, run_dir, interval, time_interval, state=None):
        self.loss = MonitorSeries('train_loss', None, interval=interval, verbose=False)
        self.error = MonitorSeries('train_error', None, interval=interval, verbose=False)
        self.val = MonitorSeries('val_error', None, interval=1, verbose=False)
        self.time = MonitorTimeElapsed('time', None, interval=time_interval, verbose=False)
        self._train = {'train_loss': self.loss, 'train_error': self.error, 'time': self.time}
        for name, m in (*self._train.items(), ('val_error', self.val)):
            m.sp = os.path.join(run_dir, name + ('.timer.txt' if name == 'time' else
                                                 '.series.txt'))
        it = state['iteration'] if state else 0
        saved = (state or {}).get('monitors', {})
        for name, m in self._train.items():
            lines = _lines(m.sp, lambda i: i < it) if state else []
            _rewrite(m.sp, lines)
            if name in saved:
                m.flush_at = saved[name]['flush_at']
                if name != 'time':
                    m.buf = list(saved[name]['buf'])
            elif lines:  # a checkpoint of an older version: the partial mean is lost
                m.flush_at = int(lines[-1].split()[0])
        _rewrite(self.val.sp, [f"{h['iteration']} {h['val_error']:g}\n"
                               for h in (state or {}).get('history', [])])
        self.time.start = time.time() - (state or {}).get('seconds', 0.0)

    def add_train(self, it, loss, error):
        """Record iteration ``it`` (0-based): its loss and training error."""
        self.loss.add(it, loss)
        self.error.add(it, error)
        self.time.add(it)

    def add_val(self, it, error):
        """Record the validation error after ``it`` iterations."""
        self.val.add(it, error)

    def state(self):
        """dict: what a checkpoint keeps to continue the monitors exactly."""
        out = {name: {'flush_at': int(m.flush_at)} for name, m in self._train.items()}
        for name in ('train_loss', 'train_error'):
            out[name]['buf'] = [float(v) for v in self._train[name].buf]
        return out
