# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Real faults for tests: a read-only folder and a small, full filesystem.

Both are tmpfs mounts (the only way a read-only folder is read-only for root, as CI runs); a
test that needs one is skipped where mounting is not allowed.
"""
import contextlib
import os
import subprocess

import pytest


@contextlib.contextmanager
def tmpfs(path, size='1m', readonly=False):
    """Mount a tmpfs of ``size`` at ``path`` (created) for the duration of the block.

    Args:
        path (str or os.PathLike): mount point (created if missing).
        size (str): tmpfs size, e.g. ``'64k'``.
        readonly (bool): mount it read-only.

    Yields:
        str: the mount point.
    """
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    opts = f"size={size}" + (',ro' if readonly else '')
    got = subprocess.run(['mount', '-t', 'tmpfs', '-o', opts, 'tmpfs', path],
                         capture_output=True, text=True)
    if got.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({got.stderr.strip() or got.returncode})")
    try:
        yield path
    finally:
        subprocess.run(['umount', '-l', path], check=False)
