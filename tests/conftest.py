import numpy as np
import pytest
import nnabla as nn


@pytest.fixture(autouse=True)
def clean_parameters():
    """Every test starts with an empty parameter scope and the CPU context."""
    nn.clear_parameters()
    yield
    nn.clear_parameters()


@pytest.fixture
def rng():
    return np.random.RandomState(313)
