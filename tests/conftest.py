import jax
import numpy as np
import pytest

# Strict numerics, as equinox does: implicit rank promotion is a bug in pooling code.
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def rng():
  return np.random.default_rng(0)
