"""The one place a plan is chosen per backend: :func:`on_backends`."""

from __future__ import annotations

from collections.abc import Callable, Hashable

from jax import lax


def on_backends(run: Callable[[Hashable], Callable], plans: dict[str, Hashable], *args):
  """``run(plan)(*args)`` with the plan of the backend the program is lowered for.

  ``plans`` maps ``lax.platform_dependent`` platforms (and ``"default"``) to plans, as
  :func:`jaxpool._engine.plan.plans` gives them (or to forms, as
  :func:`jaxpool._engine.plan.axis_sum_forms`). When they differ,
  ``lax.platform_dependent`` holds each distinct program and lowering keeps the one for
  its platform (``jax.export`` for several platforms keeps each one's).
  """
  default = plans["default"]
  branches = {k: run(p) for k, p in plans.items() if k != "default" and p != default}
  if not branches:
    return run(default)(*args)
  return lax.platform_dependent(*args, **branches, default=run(default))
