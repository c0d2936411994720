"""The CPU plan rows of the geometry-sweep fixes, each against its alternative: every case
compiled twice, once as planned and once with one plan field changed (the planner
patched while it compiles), timed interleaved in one process, medians of batches.

    python -m benchmarks.fences [--rounds 9] [--only TEXT ...]

Rows: the ``fence`` field (values computed into memory once where XLA:CPU would fuse
them into every reader or into a serial scatter loop) for lp's cotangent, max chains
over shared elements and unpool's scatter; the ``match_real`` scatter backward of large
padded windows against the phase planes; ``upcast`` of 16-bit max (float32 throughout)
against 16-bit arithmetic; the channel mean folded against one reduce; indices matched
against the compare chain, blocked indices against the per-axis chain, and adaptive bins
that repeat viewed by slices (``bins="periods"``) against the gather (planned for max,
tried for sums). ``--only`` runs the cases whose name contains one of the given texts.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxpool
from jaxpool._engine import plan as planner

S = (8, 56, 56, 64)


def _grad(f):
  return jax.grad(lambda v: jnp.sum(f(v).astype(jnp.float32)))


def _grad_of_square(f):
  """The gradient of ``sum(f(x) ** 2)``: its cotangent ``2 f(x)`` is a runtime value (a
  sum pool's gradient under a constant cotangent is a constant, which XLA folds)."""
  return jax.grad(lambda v: jnp.sum(f(v).astype(jnp.float32) ** 2))


def _pool_unpool(window, strides, padding):
  def f(x):
    v, i = jaxpool.max_pool_with_indices(x, window, strides, padding)
    return jaxpool.max_unpool(v, i, window, strides, padding, output_size=x.shape)
  return f


# name: (shape, dtype, function, plan op the change applies to, the change)
CASES = {
    "lp 3x3/2 fwd+bwd (8, 57, 57, 64): fence off": (
        (8, 57, 57, 64), "float32", _grad(lambda x: jaxpool.lp_pool(x, 2.0, (3, 3), 2)),
        "sum", {"fence": False}),
    "adaptive max 56->5 fwd+bwd: chain fence off": (
        S, "float32", _grad(lambda x: jaxpool.adaptive_max_pool(x, (5, 5))),
        "max", {"fence": False}),
    "max 5x5/1 p2 fwd+bwd: phase planes": (
        S, "float32", _grad(lambda x: jaxpool.max_pool(x, (5, 5), 1, 2)),
        "max", {"residual": "match_slices", "backward": "planes", "address": None,
                "fence": False}),
    "pool+unpool 3x3/1 p1 fwd: unpool fence off": (
        S, "float32", _pool_unpool((3, 3), 1, 1), "unpool", {"fence": False}),
    "bf16 max 3x3/2 p1 fwd+bwd: 16-bit arithmetic": (
        S, "bfloat16", _grad(lambda x: jaxpool.max_pool(x, (3, 3), 2, 1)),
        "max", {"upcast": False}),
    "bf16 indices 3x3/2 p1 fwd: 16-bit arithmetic": (
        S, "bfloat16", lambda x: jaxpool.max_pool_with_indices(x, (3, 3), 2, 1),
        "indices", {"upcast": False}),
    "indices 5x5/1 p2 fwd: compare chain": (
        S, "float32", lambda x: jaxpool.max_pool_with_indices(x, (5, 5), 1, 2),
        "indices", {"indices": "first_max"}),
    "indices whole 56x56 fwd: per-axis chain": (
        S, "float32", lambda x: jaxpool.max_pool_with_indices(x, (56, 56)),
        "indices", {"indices": "chain", "fence": False}),
    "adaptive max 56->80 fwd (8, 56, 56, 16): gathered bins": (
        (8, 56, 56, 16), "float32", lambda x: jaxpool.adaptive_max_pool(x, (80, 80)),
        "max", {"bins": None}),
    "adaptive max 56->80 fwd+bwd (8, 56, 56, 16): gathered bins": (
        (8, 56, 56, 16), "float32", _grad(lambda x: jaxpool.adaptive_max_pool(x, (80, 80))),
        "max", {"bins": None}),
    "adaptive indices 56->80 fwd (8, 56, 56, 16): gathered bins": (
        (8, 56, 56, 16), "float32",
        lambda x: jaxpool.adaptive_max_pool_with_indices(x, (80, 80)),
        "indices", {"bins": None}),
    "adaptive max 28->12 fwd+bwd: gathered bins": (
        (8, 28, 28, 64), "float32", _grad(lambda x: jaxpool.adaptive_max_pool(x, (12, 12))),
        "max", {"bins": None}),
    "adaptive avg 56->80 fwd (8, 56, 56, 16): bins in periods": (
        (8, 56, 56, 16), "float32", lambda x: jaxpool.adaptive_avg_pool(x, (80, 80)),
        "sum", {"bins": "periods"}),
    "adaptive avg 56->80 fwd+bwd (8, 56, 56, 16): bins in periods": (
        (8, 56, 56, 16), "float32",
        _grad_of_square(lambda x: jaxpool.adaptive_avg_pool(x, (80, 80))),
        "sum", {"bins": "periods"}),
    "adaptive avg 28->12 fwd+bwd: bins in periods": (
        (8, 28, 28, 64), "float32",
        _grad_of_square(lambda x: jaxpool.adaptive_avg_pool(x, (12, 12))),
        "sum", {"bins": "periods"}),
    "channel mean channels_first (32, 512, 14, 14): one reduce": (
        (32, 512, 14, 14), "float32",
        lambda x: jaxpool.channel_pool(x, "avg", data_format="channels_first",
                                       num_spatial_dims=2),
        "axis_sum", "reduce"),
}


def _compiled(f, x, op: str | None, change):
  """``f`` compiled with the planner as it is (``op=None``), or with ``change`` applied
  to the CPU plans of ``op`` (for ``"axis_sum"``, the form returned instead)."""
  plan, form = planner.plan, planner.axis_sum_form

  def changed_plan(o, taps, dtype, target, **kw):
    p = plan(o, taps, dtype, target, **kw)
    if o == op and target.platform == "cpu":
      p = dataclasses.replace(p, **change)
    return p

  def changed_form(size, inner, target):
    return change if target.platform == "cpu" else form(size, inner, target)

  if op == "axis_sum":
    planner.axis_sum_form = changed_form
  elif op is not None:
    planner.plan = changed_plan
  try:
    jax.clear_caches()
    return jax.jit(f).lower(x).compile()
  finally:
    planner.plan, planner.axis_sum_form = plan, form


def _medians(runs: dict, x, rounds: int) -> dict[str, float]:
  """Median ms per call of each compiled run (outputs may be tuples): blocks of 3 calls
  after one untimed call, the runs taking turns ``rounds`` times."""
  times = {k: [] for k in runs}
  for _ in range(rounds):
    for k, run in runs.items():
      jax.block_until_ready(run(x))
      start = time.perf_counter()
      for _ in range(3):
        jax.block_until_ready(run(x))
      times[k].append((time.perf_counter() - start) / 3 * 1e3)
  return {k: float(np.median(t)) for k, t in times.items()}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--rounds", type=int, default=9)
  parser.add_argument("--only", nargs="*", default=None, metavar="TEXT")
  args = parser.parse_args(argv)
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, rounds={args.rounds}\n")
  print("| case | planned ms | changed ms | planned / changed |")
  print("| --- | ---: | ---: | ---: |")
  for name, (shape, dtype, f, op, change) in CASES.items():
    if args.only and not any(text in name for text in args.only):
      continue
    x = jnp.asarray(np.random.default_rng(0).standard_normal(shape), dtype)
    runs = {"planned": _compiled(f, x, None, None), "changed": _compiled(f, x, op, change)}
    ms = _medians(runs, x, args.rounds)
    print(f"| {name} | {ms['planned']:.2f} | {ms['changed']:.2f} | "
          f"{ms['planned'] / ms['changed']:.2f}x |", flush=True)


if __name__ == "__main__":
  main()
