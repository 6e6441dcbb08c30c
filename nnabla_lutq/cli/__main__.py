# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""``python -m nnabla_lutq.cli``: the ``nnabla-lutq`` command."""
import sys

from .main import main

if __name__ == '__main__':
    sys.exit(main())
