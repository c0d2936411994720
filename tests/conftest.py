import gc

import jax
import numpy as np
import pytest

import jaxpool  # noqa: F401  (imported before the freeze below)

# The suite traces and compiles thousands of programs; with CPython's default collector
# thresholds (700, 10, 10) each worker ran about 2,700 collections, 9.5-12.4 s of an 88 s
# file (benchmarks/README.md, "Test suite time"). Collecting 140x less often (the garbage
# is still found, later), with the modules imported so far frozen out of every
# collection, took that file to 74 s.
gc.collect()
gc.freeze()
gc.set_threshold(100_000, 50, 100)

# Strict numerics, as equinox does: implicit rank promotion is a bug in pooling code.
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def rng():
  return np.random.default_rng(0)
