# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""What the example scripts show on the console: progress and results, one line for a Ctrl-C.

The helpers use the standard library only, so a script calls :func:`script_console` first in its
``__main__`` block, before its slow imports (nnabla, the data): nnabla's INFO lines (a start-up
line, every file it saves, with temporary names) stay off the console, where they would break the
progress bar (:func:`quiet_nnabla` does the same for a block), and a Ctrl-C that ends the script
outside the training loop (which checkpoints and exits by itself) prints one line and exits with
status 130 instead of a traceback (:func:`one_line_interrupts`).
"""
import contextlib
import logging
import os
import sys

__all__ = ['script_console', 'quiet_nnabla', 'one_line_interrupts', 'INTERRUPTED_STATUS']

#: Exit status after Ctrl-C: 128 + SIGINT, what a shell reports for a program it interrupted.
INTERRUPTED_STATUS = 130


def script_console(prog, message=None):
    """Set up the console of an example script run from the command line (see the module docs).

    Args:
        prog (str): the script's name for the Ctrl-C line.
        message (str or None): the Ctrl-C line (see :func:`one_line_interrupts`).
    """
    logging.getLogger('nnabla').setLevel(logging.WARNING)
    one_line_interrupts(prog, message)


@contextlib.contextmanager
def quiet_nnabla(level=logging.WARNING):
    """Keep nnabla's INFO lines off the console for the duration of the block.

    The monitors still write their series files; only the console shows less: progress bars and
    results.

    Args:
        level (int): the least severe level shown (default: warnings).
    """
    log = logging.getLogger('nnabla')
    before = log.level
    log.setLevel(max(level, log.getEffectiveLevel()))
    try:
        yield
    finally:
        log.setLevel(before)


def one_line_interrupts(prog, message=None):
    """Make a Ctrl-C that ends the script print one line and exit with 130, not a traceback.

    Call it first in a script's ``__main__`` block, before the slow imports. A
    ``KeyboardInterrupt`` that reaches the top (during the imports, the data decode, the second
    Ctrl-C in training) prints ``PROG: <its message>`` (or ``message``) and ends
    the process at once with status 130: the ``finally`` blocks on the way up have already
    removed what was half-written, and skipping the interpreter's clean-up avoids native
    libraries crashing while they are torn down mid-operation. Other exceptions are shown as
    before.

    Args:
        prog (str): the script's name for the message.
        message (str or None): what to print for an interrupt without a message of its own
            (default: that training had not started and nothing was changed).
    """
    previous = sys.excepthook

    def hook(kind, value, tb):
        if not issubclass(kind, KeyboardInterrupt):
            return previous(kind, value, tb)
        text = str(value) or message or ("interrupted (Ctrl-C) before training started; nothing "
                                         "was changed")
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        with contextlib.suppress(Exception):
            sys.stderr.write(f"{prog}: {text}\n")
            sys.stderr.flush()
        os._exit(INTERRUPTED_STATUS)

    sys.excepthook = hook
