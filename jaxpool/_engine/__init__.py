"""The compute core behind every pooling op, layered without cycles:

``plan`` (static decisions, no arrays) -> ``views`` (slices, reshapes, gathers, tiles)
-> ``values`` (max/min/sum, the sum transpose) -> ``select`` (first-max offsets, flat
indices, cotangent routing) -> ``rules`` (derivative rules, entry points), with
``dispatch`` choosing each backend's plan when the program is lowered.
"""

from jaxpool._engine.plan import Plan
from jaxpool._engine.rules import axis_sum, pool_with_indices, select_pool, sum_pool

__all__ = ["Plan", "axis_sum", "pool_with_indices", "select_pool", "sum_pool"]
