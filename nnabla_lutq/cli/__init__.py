# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The ``nnabla-lutq`` command line (also ``python -m nnabla_lutq.cli``).

The command starts with nnabla's INFO log off: importing :mod:`nnabla_lutq` for the command
configures logging (WARNING) before nnabla is imported.
"""
from .main import main

__all__ = ['main']
