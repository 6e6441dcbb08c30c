# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Shared fixtures.

Contexts: tests that take the ``ctx`` argument run once per nnabla context, as nnabla's own
function tests do: ``cpu`` (float), ``cpu`` with the half type config, and every context added
with ``--context`` (e.g. ``pytest --context cudnn`` on a machine with nnabla-ext-cuda, also
``--context cudnn:half``). CI runs the CPU lanes only.
"""
import numpy as np
import pytest
import nnabla as nn


def pytest_addoption(parser):
    parser.addoption('--context', action='append', default=[], metavar='EXT[:TYPE]',
                     help="an extra nnabla context for tests taking `ctx`, e.g. cudnn or "
                          "cudnn:half (repeatable)")


def _context_names(config):
    names = ['cpu:float', 'cpu:half']
    for c in config.getoption('--context'):
        name = c if ':' in c else c + ':float'
        if name not in names:
            names.append(name)
    return names


def pytest_generate_tests(metafunc):
    if 'ctx' in metafunc.fixturenames:
        metafunc.parametrize('ctx', _context_names(metafunc.config), indirect=True)


@pytest.fixture
def ctx(request):
    """The nnabla context of this run of the test (see the module docs)."""
    from nnabla.ext_utils import get_extension_context
    ext, type_config = request.param.split(':')
    return get_extension_context(ext, type_config=type_config)


@pytest.fixture(autouse=True)
def clean_parameters():
    """Every test starts with an empty parameter scope and the CPU context."""
    nn.clear_parameters()
    yield
    nn.clear_parameters()


@pytest.fixture
def rng():
    return np.random.RandomState(313)
