# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Helpers shared by the benchmarks: machine description and recording a result."""
import os
import platform
import subprocess
import sys

import render

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # the benchmarks use the examples' models (examples.common.models)
    sys.path.insert(0, ROOT)


def machine(context='cpu'):
    """A one-line description of the machine the numbers come from."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in open('/proc/cpuinfo'):
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    desc = f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, context {context}"
    if context != 'cpu':
        try:
            gpu = subprocess.run(['nvidia-smi', '--query-gpu=name', '--format=csv,noheader'],
                                 capture_output=True, text=True, timeout=10).stdout.strip()
            desc += f", GPU {gpu}"
        except (OSError, subprocess.SubprocessError):
            pass
    return desc


def _benchmark():
    """The running script's benchmark name: ``bench_kmeans.py`` -> ``kmeans``."""
    name = os.path.splitext(os.path.basename(getattr(sys.modules['__main__'], '__file__', '')
                                             or 'other'))[0]
    return name[len('bench_'):] if name.startswith('bench_') else name


def append(title, table, context='cpu', notes='', benchmark=None):
    """Print a result table, add it as one record (date, machine, commit, table) to
    ``benchmarks/results/<benchmark>.jsonl`` and write BENCHMARKS.md again from the records.

    Args:
        title (str): the benchmark's section title.
        table (str): the markdown table.
        context (str): the nnabla context of the run.
        notes (str): how the numbers were taken (a paragraph under the table).
        benchmark (str or None): the records file; default: the running script's name without
            ``bench_``.
    """
    record = render.make_record(title, table, machine(context), context, notes)
    print('\n' + render.section(record))
    path = render.add(benchmark or _benchmark(), record)
    render.write()
    print(f"recorded in {os.path.relpath(path, ROOT)}; BENCHMARKS.md written again")


def synchronizer(context):
    """A function that waits for the device to finish (a no-op on the CPU)."""
    if context == 'cpu':
        return lambda: None
    from nnabla.ext_utils import import_extension_module
    cuda = import_extension_module('cuda')
    return lambda: cuda.synchronize(device_id='0')
