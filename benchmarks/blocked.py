"""Non-overlapping max windows on XLA:CPU: the planned values form against the other one,
forward, in one process, interleaved, medians of batches (``blocks``, a reshape and one
reduce, for windows up to ``BLOCKS_MAX`` elements, over 3+ axes, with at least
``BLOCKS_INNER_MIN`` elements after the pooled axes, or over whole trailing axes; else
one ``reduce_window`` per axis, ``axes``); and avg+max at (1, 1) as planned (two reductions)
against one variadic reduce (a single read of the input); and non-overlapping max with
indices, planned against one variadic reduce at every window size.

    python -m benchmarks.blocked [--rounds 15]
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

import jaxpool
from jaxpool._engine import plan as planner

CASES = {
    "global_max (32, 7, 7, 2048)": ((32, 7, 7, 2048), lambda x: jaxpool.global_max_pool(x, 2)),
    "adaptive_max 56->7 (16, 56, 56, 64)": (
        (16, 56, 56, 64), lambda x: jaxpool.adaptive_max_pool(x, (7, 7))),
    "max 10x10 (8, 60, 60, 512)": ((8, 60, 60, 512), lambda x: jaxpool.max_pool(x, (10, 10))),
    "max 28x28 (64, 28, 28, 128)": ((64, 28, 28, 128), lambda x: jaxpool.max_pool(x, (28, 28))),
    "global_max (32, 14, 14, 2048)": (
        (32, 14, 14, 2048), lambda x: jaxpool.global_max_pool(x, 2)),
    "global_max 3-D (4, 16, 28, 28, 32)": (
        (4, 16, 28, 28, 32), lambda x: jaxpool.global_max_pool(x, 3)),
    "max 16x16 (16, 64, 64, 64)": ((16, 64, 64, 64), lambda x: jaxpool.max_pool(x, (16, 16))),
    "max 4x4/4 (16, 56, 56, 64)": ((16, 56, 56, 64), lambda x: jaxpool.max_pool(x, (4, 4))),
    "catavgmax 1x1 (32, 7, 7, 2048)": (
        (32, 7, 7, 2048), lambda x: jaxpool.adaptive_catavgmax_pool(x, (1, 1))),
    # over BLOCKS_MAX elements: the form follows the elements after the pooled axes
    "max 14x14 (64, 14, 14, 256)": ((64, 14, 14, 256), lambda x: jaxpool.max_pool(x, (14, 14))),
    "max 14x14 (32, 14, 14, 384)": ((32, 14, 14, 384), lambda x: jaxpool.max_pool(x, (14, 14))),
    "max 14x14 (32, 14, 14, 512)": ((32, 14, 14, 512), lambda x: jaxpool.max_pool(x, (14, 14))),
    "max 28x28 (16, 28, 28, 512)": ((16, 28, 28, 512), lambda x: jaxpool.max_pool(x, (28, 28))),
    "max 16x16 (2, 64, 64, 512)": ((2, 64, 64, 512), lambda x: jaxpool.max_pool(x, (16, 16))),
    "global_max channels_first (32, 512, 14, 14)": (
        (32, 512, 14, 14), lambda x: jaxpool.global_max_pool(x, 2, data_format="channels_first")),
    "global_max channels_first (64, 128, 28, 28)": (
        (64, 128, 28, 28), lambda x: jaxpool.global_max_pool(x, 2, data_format="channels_first")),
    "max 16x16 channels_first (16, 64, 64, 64)": (
        (16, 64, 64, 64), lambda x: jaxpool.max_pool(x, (16, 16), data_format="channels_first")),
    "max 28x28 channels_first (16, 64, 56, 56)": (
        (16, 64, 56, 56), lambda x: jaxpool.max_pool(x, (28, 28), data_format="channels_first")),
}


def _compiled(f, x, swap: bool, forms: list | None = None):
  """``f`` jitted and compiled with the planner as it is, or (``swap``) with max/min's
  non-overlapping windows in the other form: ``"blocks"`` and ``"axes"`` swapped.
  ``forms`` collects the planned max/min forms."""
  original = planner.values_form

  def swapped(taps, kind, inner=0):
    form = original(taps, kind, inner)
    if kind == "sum" or not planner.blocked(taps):
      return form
    if forms is not None:
      forms.append(form)
    return {"blocks": "axes", "axes": "blocks"}.get(form, form) if swap else form

  planner.values_form = swapped
  try:
    jax.clear_caches()
    return jax.jit(f).lower(x).compile()
  finally:
    planner.values_form = original


def _medians(runs: dict, x, rounds: int) -> dict[str, float]:
  """Median ms per call of each compiled run: blocks of 5 calls after one untimed call,
  the runs taking turns ``rounds`` times."""
  times = {k: [] for k in runs}
  for _ in range(rounds):
    for k, run in runs.items():
      run(x).block_until_ready()
      start = time.perf_counter()
      for _ in range(5):
        run(x).block_until_ready()
      times[k].append((time.perf_counter() - start) / 5 * 1e3)
  return {k: float(np.median(t)) for k, t in times.items()}


def _one_pass(x):
  """timm's catavgmax at (1, 1) as one variadic reduce: sum and max in one read."""
  zero, low = np.zeros((), x.dtype), np.array(-np.inf, x.dtype)
  total, peak = jax.lax.reduce((x, x), (zero, low),
                               lambda a, b: (a[0] + b[0], jax.lax.max(a[1], b[1])), (1, 2))
  n = np.array(x.shape[1] * x.shape[2], x.dtype)
  return jax.numpy.concatenate([total / n, peak], -1)[:, None, None, :]


def one_pass_table(rounds: int) -> None:
  """avg+max at (1, 1): the planned two reductions against one variadic reduce."""
  x = jax.random.normal(jax.random.key(0), (32, 7, 7, 2048))
  runs = {"planned": jax.jit(lambda v: jaxpool.adaptive_catavgmax_pool(v, (1, 1))),
          "one variadic reduce": jax.jit(_one_pass)}
  np.testing.assert_allclose(runs["planned"](x), runs["one variadic reduce"](x), rtol=1e-5,
                             atol=1e-6)
  print("\n| catavgmax 1x1 (32, 7, 7, 2048) | ms |\n| --- | ---: |")
  for k, ms in _medians(runs, x, rounds).items():
    print(f"| {k} | {ms:.3f} |")


def indices_table(rounds: int) -> None:
  """Non-overlapping max with indices: the planned form (``block_match`` above
  ``BLOCK_ARGMAX_MAX`` elements) against one variadic reduce (``block``) at every size."""
  print("\n| max_pool_with_indices | planned ms | one variadic reduce ms | planned/variadic |\n"
        "| --- | ---: | ---: | ---: |")
  for shape, window in (((8, 56, 56, 64), (2, 2)), ((8, 57, 57, 64), (3, 3)),
                        ((8, 56, 56, 64), (4, 4))):
    x = jax.random.normal(jax.random.key(0), shape)
    runs = {}
    for name, limit in (("planned", planner.BLOCK_ARGMAX_MAX), ("variadic", 10**9)):
      original, planner.BLOCK_ARGMAX_MAX = planner.BLOCK_ARGMAX_MAX, limit
      try:
        jax.clear_caches()
        runs[name] = jax.jit(lambda v, w=window: jaxpool.max_pool_with_indices(v, w)[1]
                             ).lower(x).compile()
      finally:
        planner.BLOCK_ARGMAX_MAX = original
    ms = _medians(runs, x, rounds)
    print(f"| {window} on {shape} | {ms['planned']:.3f} | {ms['variadic']:.3f} | "
          f"{ms['planned'] / ms['variadic']:.2f}x |")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=15)
  args = parser.parse_args(argv)
  print(f"backend: {jax.default_backend()}")
  print("| case | planned form | planned ms | other form ms | planned/other |\n"
        "| --- | --- | ---: | ---: | ---: |")
  for name, (shape, f) in CASES.items():
    x = jax.random.normal(jax.random.key(0), shape)
    forms = []
    runs = {"planned": _compiled(f, x, False, forms), "other": _compiled(f, x, True)}
    np.testing.assert_array_equal(np.asarray(runs["planned"](x)), np.asarray(runs["other"](x)))
    form = "/".join(sorted(set(forms)))
    ms = _medians(runs, x, args.rounds)
    b, a = ms["planned"], ms["other"]
    print(f"| {name} | {form} | {b:.3f} | {a:.3f} | {b / a:.2f}x |")
  one_pass_table(args.rounds)
  indices_table(args.rounds)


if __name__ == "__main__":
  main()
