"""jaxpool: PyTorch-exact pooling for JAX and Flax.

Pure functions (this namespace), Flax modules in :mod:`jaxpool.linen` and
:mod:`jaxpool.nnx`. The contract is documented per function; layouts default to
``channels_last`` and ``strides=None`` means ``strides = window_shape``.
"""

from jaxpool._adaptive import (
    adaptive_avg_pool,
    adaptive_avgmax_pool,
    adaptive_catavgmax_pool,
    adaptive_max_pool,
    adaptive_max_pool_with_indices,
)
from jaxpool._argmax import max_pool_with_indices
from jaxpool._blur import blur_pool, max_blur_pool
from jaxpool._fractional import fractional_max_pool, fractional_max_pool_with_indices
from jaxpool._global import channel_pool, gem_pool, global_avg_pool, global_max_pool
from jaxpool._segment import segment_pool
from jaxpool._unpool import max_unpool
from jaxpool._window import avg_pool, lp_pool, max_pool, min_pool

__version__ = "0.1.0"


def __getattr__(name: str):
  """``jaxpool.linen`` and ``jaxpool.nnx`` load on first use: ``import jaxpool`` alone
  does not import Flax."""
  if name in ("linen", "nnx"):
    import importlib

    return importlib.import_module(f"jaxpool.{name}")
  raise AttributeError(f"module 'jaxpool' has no attribute {name!r}")


__all__ = [
    "adaptive_avg_pool",
    "adaptive_avgmax_pool",
    "adaptive_catavgmax_pool",
    "adaptive_max_pool",
    "adaptive_max_pool_with_indices",
    "avg_pool",
    "blur_pool",
    "channel_pool",
    "fractional_max_pool",
    "fractional_max_pool_with_indices",
    "gem_pool",
    "global_avg_pool",
    "global_max_pool",
    "lp_pool",
    "max_blur_pool",
    "max_pool",
    "max_pool_with_indices",
    "max_unpool",
    "min_pool",
    "segment_pool",
]
