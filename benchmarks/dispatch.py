"""Dispatch cost of a jitted ``max_unpool``: jaxpool's effect-free index check against the
``checkify.debug_check`` it used before, whose effect sends every call of the enclosing
``jit`` through JAX's Python dispatch path. Pool + unpool (2x2/2), jitted, one process,
interleaved, medians of single calls (a blocking call each: dispatch plus compute).

    python -m benchmarks.dispatch [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

import jaxpool

SHAPES = [(1, 4, 4, 1), (8, 56, 56, 64), (16, 128, 128, 64)]


def _pool_unpool(x):
  return jaxpool.max_unpool(*jaxpool.max_pool_with_indices(x, (2, 2)), (2, 2),
                            output_size=x.shape)


def _with_debug_check(x):
  """The same program plus the former check: a ``checkify.debug_check`` on the indices."""
  values, indices = jaxpool.max_pool_with_indices(x, (2, 2))
  m = x.shape[1] * x.shape[2]
  checkify.debug_check(jnp.all((indices >= 0) & (indices < m)), "index out of range")
  return jaxpool.max_unpool(values, indices, (2, 2), output_size=x.shape)


def _call_s(f, x) -> float:
  start = time.perf_counter()
  jax.block_until_ready(f(x))
  return time.perf_counter() - start


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=15)
  args = parser.parse_args(argv)
  print(f"backend: {jax.default_backend()}")
  print("| shape | effect-free µs | debug_check µs | effect-free / debug_check |\n"
        "| --- | ---: | ---: | ---: |")
  for shape in SHAPES:
    x = jnp.asarray(np.random.default_rng(0).standard_normal(shape), jnp.float32)
    runs = {"free": jax.jit(_pool_unpool), "check": jax.jit(_with_debug_check)}
    times = {k: [] for k in runs}
    for f in runs.values():
      jax.block_until_ready(f(x))
    for _ in range(args.rounds):
      for k, f in runs.items():
        _call_s(f, x)
        times[k] += [_call_s(f, x) for _ in range(20)]
    free, check = (statistics.median(times[k]) * 1e6 for k in ("free", "check"))
    print(f"| {shape} | {free:.0f} | {check:.0f} | {free / check:.2f}x |")


if __name__ == "__main__":
  main()
