"""jaxpool: PyTorch-exact pooling for JAX and Flax."""

from jaxpool._window import avg_pool, lp_pool, max_pool, min_pool

__all__ = ["avg_pool", "lp_pool", "max_pool", "min_pool"]
