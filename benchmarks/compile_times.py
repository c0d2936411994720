"""Compile time of each sweep cell's gradient under a constant cotangent (the gradient of
``sum(f(x))``, what a quick check or a tutorial writes) against a runtime one (the
``vjp`` of a cotangent passed in). XLA folds every instruction whose operands are all
constants, in its slow evaluator: where a transpose of window sums sees a constant
cotangent, that can take seconds to minutes.

    python -m benchmarks.compile_times [--only TEXT ...] [--plain]

``--plain`` compiles with the sums' ``unfold`` plan field off on CPU (the programs before
it). Each row compiles after ``jax.clear_caches()``; seconds include tracing and
lowering. ``--only`` keeps the cells whose "op class" contains one of the texts.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp

from benchmarks.run import _first
from benchmarks.sweep import adaptive_cells, windowed_cells
from jaxpool._engine import plan as planner


def _seconds(f, *args) -> float:
  jax.clear_caches()
  start = time.perf_counter()
  jax.jit(f).lower(*args).compile()
  return time.perf_counter() - start


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--only", nargs="*", default=None, metavar="TEXT")
  parser.add_argument("--plain", action="store_true")
  args = parser.parse_args(argv)
  if args.plain:
    plan = planner.plan
    planner.plan = lambda *a, **k: dataclasses.replace(plan(*a, **k), unfold=False)
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}"
        f"{', unfold off' if args.plain else ''}\n")
  print("| op | class | constant cotangent s | runtime cotangent s | ratio |")
  print("| --- | --- | ---: | ---: | ---: |")
  for cell in windowed_cells() + adaptive_cells():
    if args.only and not any(t in f"{cell.op} {cell.cls}" for t in args.only):
      continue
    g = cell.geometry
    shape = g.shape if g.layout == "channels_last" else (g.shape[0], g.shape[-1],
                                                         *g.shape[1:-1])
    x = jnp.ones(shape, jnp.bfloat16 if g.dtype == "bfloat16" else jnp.float32)
    fn = lambda v, f=cell.jaxpool: _first(f(v))  # noqa: E731
    gy = jnp.ones(jax.eval_shape(fn, x).shape, x.dtype)
    constant = _seconds(lambda v, fn=fn: jax.grad(
        lambda u: jnp.sum(fn(u).astype(jnp.float32)))(v), x)
    runtime = _seconds(lambda v, c, fn=fn: jax.vjp(fn, v)[1](c)[0], x, gy)
    print(f"| {cell.op} | {cell.cls} | {constant:.2f} | {runtime:.2f} | "
          f"{constant / runtime:.1f}x |", flush=True)


if __name__ == "__main__":
  main()
