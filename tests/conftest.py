import numpy as np
import pytest

# Tiny configuration used across tests (STYLE.md rule 11).
TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64)


@pytest.fixture
def tiny_config():
    return dict(TINY)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
