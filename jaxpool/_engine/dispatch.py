"""The one place a plan is chosen per backend: :func:`on_backends`."""

from __future__ import annotations

from collections.abc import Callable

from jax import lax

from jaxpool._engine.plan import Plan


def on_backends(run: Callable[[Plan], Callable], plans: dict[str, Plan], *args):
  """``run(plan)(*args)`` with the plan of the backend the program is lowered for.

  ``plans`` maps ``lax.platform_dependent`` platforms (and ``"default"``) to plans, as
  :func:`jaxpool._engine.plan.plans` gives them. When they differ,
  ``lax.platform_dependent`` holds each distinct program and lowering keeps the one for
  its platform (``jax.export`` for several platforms keeps each one's).
  """
  default = plans["default"]
  branches = {k: run(p) for k, p in plans.items() if k != "default" and p != default}
  if not branches:
    return run(default)(*args)
  return lax.platform_dependent(*args, **branches, default=run(default))
