"""Padded and packed batches: jaxpool's ``lengths=`` and ``segment_pool`` against the two
ways a user does it today, a per-example Python loop over slices in JAX and PyTorch on
each slice.

    python -m benchmarks.extents [--repeats N] [--rounds K]

Each case times, interleaved in one process (medians, call order rotated per round):

* ``jaxpool``: one jitted call, forward and forward+backward (random cotangent);
* ``jax loop``: a Python loop over examples calling a jitted op on each valid slice
  (every distinct slice shape compiles once; the timing is with those compiles cached,
  and the number of compiles one batch needed is printed beside it);
* ``torch loop``: PyTorch on each example or segment, each its own tensor (channels_first,
  its native layout here);
* for segments, also ``torch scatter``: one ``scatter_reduce`` over global ids, what a
  PyTorch user who knows the trick writes (PyG does this).

Writes a markdown table to stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import jaxpool


@dataclasses.dataclass
class Case:
  name: str
  contenders: dict[str, Callable]      # name -> zero-argument call that blocks
  compiles: int | None = None          # compiles the JAX loop needed for one batch


def _block(out):
  return jax.block_until_ready(out)


def _torch():
  try:
    import torch
  except ImportError:
    return None
  torch.set_num_threads(max(1, torch.get_num_threads()))
  return torch


def _fwd_bwd(f, x, *args):
  """jit(x, g -> (y, vjp)) of ``f(x, *args)`` with a random cotangent: the forward
  output is returned too, as PyTorch's forward+backward computes it."""
  g = jnp.asarray(np.random.default_rng(1).standard_normal(
      jax.eval_shape(lambda v: f(v, *args), x).shape).astype(np.float32))

  def both(v, g, *a):
    y, pullback = jax.vjp(lambda u: f(u, *a), v)
    return y, pullback(g)[0]

  step = jax.jit(both)
  return lambda: _block(step(x, g, *args))


def lengths_case(name, shape, out, kind, rng, backward) -> Case:
  """``shape`` channels_last ``(B, *spatial, C)``; ``out`` the adaptive size."""
  d = len(out)
  x = jnp.asarray(rng.standard_normal(shape).astype(np.float32))
  spatial = shape[1:-1]
  lengths = np.stack([rng.integers(max(1, n // 2), n + 1, size=shape[0]) for n in spatial], -1)
  fn = jaxpool.adaptive_avg_pool if kind == "avg" else jaxpool.adaptive_max_pool

  def ours(v, n):
    return fn(v, out, lengths=n)

  one = jax.jit(lambda v: fn(v, out))  # per slice: a new shape compiles a new program

  def loop(v):
    return [one(v[(b,) + tuple(slice(0, int(m)) for m in lengths[b])])
            for b in range(shape[0])]

  if backward:
    mine = _fwd_bwd(ours, x, jnp.asarray(lengths))
    grad_one = jax.jit(jax.value_and_grad(lambda v: jnp.sum(fn(v, out) ** 2)))

    def loop_call():
      return _block([grad_one(x[(b,) + tuple(slice(0, int(m)) for m in lengths[b])])
                     for b in range(shape[0])])
  else:
    step = jax.jit(ours)
    n_dev = jnp.asarray(lengths)

    def mine():
      return _block(step(x, n_dev))

    def loop_call():
      return _block(loop(x))

  contenders = {"jaxpool": mine, "jax loop": loop_call}
  torch = _torch()
  if torch is not None:
    F = torch.nn.functional
    pool = getattr(F, f"adaptive_{kind}_pool{d}d")
    xc = np.moveaxis(np.asarray(x), -1, 1)
    # each example its own tensor, as a PyTorch user holds a list of variable-length
    # clips (slicing one padded leaf would make every slice's backward write a zero
    # gradient of the whole batch)
    examples = [torch.tensor(np.ascontiguousarray(
        xc[(b, slice(None)) + tuple(slice(0, int(m)) for m in lengths[b])]),
        requires_grad=backward) for b in range(shape[0])]

    def torch_loop():
      outs = [pool(e[None], out) for e in examples]
      if backward:
        sum(o.square().sum() for o in outs).backward()
      return outs

    contenders["torch loop"] = torch_loop
  compiles = len({tuple(int(m) for m in row) for row in lengths})
  return Case(name + (" fwd+bwd" if backward else " fwd"), contenders, compiles)


def segment_case(name, shape, segments, op, rng, backward) -> Case:
  """``shape`` ``(B, L, C)`` packed rows, or ``(N, C)`` flat (a graph batch)."""
  x = jnp.asarray(rng.standard_normal(shape).astype(np.float32))
  lead, length = shape[:-2], shape[-2]
  ids = np.sort(rng.integers(-1, segments, size=lead + (length,)), axis=-1)  # packed
  rows = ids.reshape(-1, length)

  def ours(v, i):
    return jaxpool.segment_pool(v, i, segments, op)

  step = jax.jit(ours)
  ids_dev = jnp.asarray(ids)
  mine = _fwd_bwd(ours, x, ids_dev) if backward else (lambda: _block(step(x, ids_dev)))
  reduce = {"avg": jnp.mean, "max": jnp.max}[op]
  one = jax.jit(lambda v: reduce(v, axis=0))
  grad_one = jax.jit(jax.value_and_grad(lambda v: jnp.sum(reduce(v, axis=0) ** 2)))
  xr = x.reshape((-1, length, shape[-1]))
  # a user's loop: one contiguous slice per (row, segment), packed rows being sorted
  spans = [(r, int(np.searchsorted(rows[r], s)), int(np.searchsorted(rows[r], s, "right")))
           for r in range(rows.shape[0]) for s in range(segments)]
  spans = [s for s in spans if s[2] > s[1]]

  def loop_call():
    f = grad_one if backward else one
    return _block([f(xr[r, a:b]) for r, a, b in spans])

  contenders = {"jaxpool": mine, "jax loop": loop_call}
  torch = _torch()
  if torch is not None:
    t = torch.tensor(np.asarray(xr), requires_grad=backward)
    red = {"avg": "mean", "max": "amax"}[op]
    pieces = [torch.tensor(np.asarray(xr[r, a:b]), requires_grad=backward) for r, a, b in spans]

    def torch_loop():  # each segment its own tensor (see the lengths case)
      outs = [(p.mean(0) if op == "avg" else p.amax(0)) for p in pieces]
      if backward:
        sum(o.square().sum() for o in outs).backward()
      return outs

    keep = rows >= 0
    flat = torch.tensor((rows + segments * np.arange(rows.shape[0])[:, None])[keep]).long()
    index = flat[:, None].expand(-1, shape[-1])
    mask = torch.tensor(keep)

    def torch_scatter():
      src = t[mask]
      y = torch.zeros(rows.shape[0] * segments, shape[-1]).scatter_reduce(
          0, index, src, red, include_self=False)
      if backward:
        y.square().sum().backward()
      return y

    contenders["torch loop"] = torch_loop
    contenders["torch scatter"] = torch_scatter
  return Case(name + (" fwd+bwd" if backward else " fwd"), contenders,
              len({b - a for _, a, b in spans}))


def cases() -> list[Case]:
  rng = np.random.default_rng(0)
  out = []
  for backward in (False, True):
    out += [
        lengths_case("padded audio (32, 4000, 64) adaptive avg -> 50", (32, 4000, 64), (50,),
                     "avg", rng, backward),
        lengths_case("padded audio (32, 4000, 64) global avg", (32, 4000, 64), (1,),
                     "avg", rng, backward),
        lengths_case("padded images (16, 64, 64, 32) adaptive max -> 7x7", (16, 64, 64, 32),
                     (7, 7), "max", rng, backward),
        segment_case("packed rows (8, 2048, 256), 16 segments avg", (8, 2048, 256), 16, "avg",
                     rng, backward),
        segment_case("packed rows (8, 2048, 256), 16 segments max", (8, 2048, 256), 16, "max",
                     rng, backward),
        segment_case("graph batch (20000, 128), 256 graphs avg", (20000, 128), 256, "avg",
                     rng, backward),
    ]
  return out


def time_case(case: Case, repeats: int, rounds: int) -> dict[str, float]:
  names = list(case.contenders)
  for fn in case.contenders.values():
    fn()  # compile / warm
  samples = {n: [] for n in names}
  for r in range(rounds):
    order = names[r % len(names):] + names[:r % len(names)]
    for n in order:
      for _ in range(repeats):
        t0 = time.perf_counter()
        case.contenders[n]()
        samples[n].append(time.perf_counter() - t0)
  return {n: statistics.median(v) * 1e3 for n, v in samples.items()}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--rounds", type=int, default=3)
  args = parser.parse_args()
  print("| case | jaxpool ms | jax loop ms (compiles per batch) | torch loop ms | "
        "torch scatter ms | jax loop / jaxpool | torch loop / jaxpool |")
  print("| --- | --- | --- | --- | --- | --- | --- |")
  for case in cases():
    ms = time_case(case, args.repeats, args.rounds)
    mine = ms["jaxpool"]

    def cell(name, ms=ms):
      return f"{ms[name]:.2f}" if name in ms else "-"

    def ratio(name, ms=ms, mine=mine):
      return f"{ms[name] / mine:.1f}x" if name in ms else "-"

    print(f"| {case.name} | {mine:.2f} | {cell('jax loop')} ({case.compiles}) | "
          f"{cell('torch loop')} | {cell('torch scatter')} | {ratio('jax loop')} | "
          f"{ratio('torch loop')} |", flush=True)


if __name__ == "__main__":
  main()
