"""Helpers shared by the benchmarks: machine description and appending to BENCHMARKS.md."""
import datetime
import os
import platform
import subprocess
import sys

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


def append(title, table, context='cpu', notes=''):
    """Print a result table and append it to BENCHMARKS.md with the date and the machine."""
    text = (f"\n## {title}\n\n{datetime.date.today().isoformat()} - {machine(context)}\n\n"
            f"{table}\n" + (f"\n{notes}\n" if notes else ''))
    print(text)
    with open(os.path.join(ROOT, 'BENCHMARKS.md'), 'a') as f:
        f.write(text)


def synchronizer(context):
    """A function that waits for the device to finish (a no-op on the CPU)."""
    if context == 'cpu':
        return lambda: None
    from nnabla.ext_utils import import_extension_module
    cuda = import_extension_module('cuda')
    return lambda: cuda.synchronize(device_id='0')
