# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The package's two worker threads.

nnabla's CPU backend computes on one thread and leaves the machine's second core idle; numpy
releases the interpreter lock inside its loops, so the host steps (the k-means step, the host
forms of the activation quantizer and of the multiplier-less BN scale) split their large passes
in parts and run them on two threads. One executor per process, created on first use; a forked
child (data-parallel ranks, loader workers) has none of its parent's threads and makes its own.
"""
import os
from concurrent.futures import ThreadPoolExecutor

__all__ = ['cores', 'run_parts']

_POOL = []  # the executor, created on first use in each process
if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=_POOL.clear)


def cores():
    """The number of cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def run_parts(fn, parts):
    """``[fn(p) for p in parts]``, on the two worker threads when there are several parts and
    cores.

    Args:
        fn (callable): called once per part (numpy work that releases the interpreter lock).
        parts (list): the parts.

    Returns:
        list: the results, in the order of ``parts``.
    """
    if len(parts) < 2 or cores() < 2:
        return [fn(p) for p in parts]
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(2, thread_name_prefix='lutq'))
    return list(_POOL[0].map(fn, parts))
