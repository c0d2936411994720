"""SPMD checks on 8 virtual CPU devices (run as a script: XLA_FLAGS must precede JAX).

    python tests/sharding_check.py  -> prints one JSON line per check

For every public function and its VJP: inputs sharded along batch or channels compile to
programs with no collectives and match the unsharded result; inputs sharded along a
spatial axis give the right result (XLA may communicate there: windows cross shards);
``jax.vmap`` of the function inside ``jax.shard_map`` (default ``check_vma``), forward and
gradient, matches the unsharded computation.
"""

import json
import os
import re
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import jaxpool  # noqa: E402

COLLECTIVES = re.compile(r"all-gather|all-reduce|collective-permute|all-to-all|reduce-scatter")



def _unpool(x, **kw):
  v, i = jaxpool.max_pool_with_indices(x, (2, 2))
  return jaxpool.max_unpool(v, i, (2, 2), **kw)


FUNCTIONS = {
    "max_pool": (lambda x: jaxpool.max_pool(x, (3, 3), 2, 1, ceil_mode=True), True),
    "max_pool_dilated": (lambda x: jaxpool.max_pool(x, (2, 2), 1, 0, dilation=2), True),
    "min_pool": (lambda x: jaxpool.min_pool(x, (2, 2)), True),
    "avg_pool": (lambda x: jaxpool.avg_pool(x, (3, 3), 1, 1, count_include_pad=False), True),
    "lp_pool": (lambda x: jaxpool.lp_pool(jnp.abs(x) + 1, 2.0, (2, 2)), True),
    "max_pool_with_indices": (lambda x: jaxpool.max_pool_with_indices(x, (2, 2)), False),
    "max_unpool": (_unpool, True),
    "max_unpool_in_window": (lambda x: _unpool(x, indices_in_window=True), True),
    "adaptive_avg_pool": (lambda x: jaxpool.adaptive_avg_pool(x, (5, 7)), True),
    "adaptive_max_pool": (lambda x: jaxpool.adaptive_max_pool(x, (5, 7)), True),
    # 16 -> 20 bins repeat every 4 elements: sliced in periods on CPU
    "adaptive_max_pool_periods": (lambda x: jaxpool.adaptive_max_pool(x, (20, 7)), True),
    "adaptive_max_pool_with_indices": (
        lambda x: jaxpool.adaptive_max_pool_with_indices(x, (5, 7)), False),
    "global_avg_pool": (lambda x: jaxpool.global_avg_pool(x, 2), True),
    "global_max_pool": (lambda x: jaxpool.global_max_pool(x, 2), True),
    "channel_pool_spatial": (lambda x: jaxpool.channel_pool(x, "max"), True),
    "gem_pool": (lambda x: jaxpool.gem_pool(jnp.abs(x) + 0.1, 2), True),
    "adaptive_avgmax_pool": (lambda x: jaxpool.adaptive_avgmax_pool(x, (5, 7)), True),
    "adaptive_catavgmax_pool": (lambda x: jaxpool.adaptive_catavgmax_pool(x, (1, 1)), True),
    "blur_pool": (lambda x: jaxpool.blur_pool(x, 3), True),
    "max_blur_pool": (lambda x: jaxpool.max_blur_pool(x, 3), True),
}
# concatenating two channel-sharded halves on the channel axis reorders channels across
# shards: communication by definition
CHANNEL_CONCAT = {"adaptive_catavgmax_pool"}


# Runtime values beside x, sharded with its batch: (fn(x, aux), aux, differentiable)
_RNG = np.random.default_rng(3)
RUNTIME = {
    "adaptive_avg_pool_lengths": (
        lambda x, n: jaxpool.adaptive_avg_pool(x, (5, 7), lengths=n),
        _RNG.integers(1, [17, 15], size=(8, 2)), True),
    "adaptive_max_pool_with_indices_lengths": (
        lambda x, n: jaxpool.adaptive_max_pool_with_indices(x, (5, 7), lengths=n),
        _RNG.integers(1, [17, 15], size=(8, 2)), False),
    "global_max_pool_lengths": (
        lambda x, n: jaxpool.global_max_pool(x, 2, lengths=n),
        _RNG.integers(1, [17, 15], size=(8, 2)), True),
    "fractional_max_pool": (
        lambda x, u: jaxpool.fractional_max_pool(x, (2, 2), (7, 6), samples=u),
        _RNG.random((8, 16, 2)).astype(np.float32), True),
    "segment_pool": (
        lambda x, ids: jaxpool.segment_pool(x.reshape(x.shape[:-3] + (-1, x.shape[-1])), ids, 5,
                                            "max"),
        _RNG.integers(-1, 5, size=(8, 16 * 14)), True),
}


def check_runtime(name, fn, aux, differentiable, x, mesh):
  """Batch-sharded x and runtime values: no collectives, and the unsharded answer; then
  ``jax.vmap`` over both inside ``shard_map``, forward and gradient."""
  batch = NamedSharding(mesh, P("d"))

  def first(out):
    return out[0] if isinstance(out, tuple) else out

  g = np.random.default_rng(2).standard_normal(
      first(jax.eval_shape(fn, x, aux)).shape).astype(np.float32)

  def step(v, a, w):
    out = fn(v, a)
    if not differentiable:
      return out
    return out, jax.grad(lambda u: jnp.sum(w * first(fn(u, a))))(v)

  want = step(x, aux, g)
  args = [jax.device_put(a, batch) for a in (x, aux, g)]
  compiled = jax.jit(step).lower(*args).compile()
  ok = all(np.allclose(a, b, rtol=1e-6, atol=1e-6) for a, b in
           zip(jax.tree.leaves(compiled(*args)), jax.tree.leaves(want), strict=True))
  results = [{"fn": name, "sharded": "batch", "correct": bool(ok),
              "collectives": sorted(set(COLLECTIVES.findall(compiled.as_text()))),
              "expect_no_collectives": True}]

  def mapped(v, a, w):
    return jax.vmap(step)(v[:, None], a[:, None], w[:, None])

  try:
    got = jax.jit(jax.shard_map(mapped, mesh=mesh, in_specs=(P("d"), P("d"), P("d")),
                                out_specs=P("d")))(*args)
    ok = all(np.allclose(np.squeeze(a, 1), b, rtol=1e-6, atol=1e-6) for a, b in
             zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True))
    results.append({"fn": name, "sharded": "shard_map", "correct": bool(ok),
                    "collectives": [], "expect_no_collectives": False})
  except Exception as e:  # reported as a failed check, with its message
    results.append({"fn": name, "sharded": "shard_map", "correct": False, "collectives": [],
                    "expect_no_collectives": False,
                    "error": f"{type(e).__name__}: {e}"[:300]})
  return results


def _vjp(fn):
  def f(x, g):
    y, pullback = jax.vjp(fn, x)
    return y, pullback(g)[0]
  return f


def check(name, fn, differentiable, x, sharding, axis_name, expect_no_collectives):
  xs = jax.device_put(x, sharding)
  want = fn(x)
  compiled = jax.jit(fn).lower(xs).compile()
  got = compiled(xs)
  ok = all(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)
           if a.dtype.kind != "f" else np.allclose(a, b, rtol=1e-6, atol=1e-6)
           for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)))
  found = sorted(set(COLLECTIVES.findall(compiled.as_text())))
  if differentiable:
    out = jax.eval_shape(fn, x)
    g = np.random.default_rng(1).standard_normal(out.shape).astype(np.float32)
    gs = jax.device_put(g, NamedSharding(sharding.mesh, _spec_like(sharding.spec, out.ndim)))
    bwd = jax.jit(_vjp(fn)).lower(xs, gs).compile()
    got_dx = bwd(xs, gs)[1]
    want_dx = _vjp(fn)(x, g)[1]
    ok = ok and np.allclose(got_dx, want_dx, rtol=1e-6, atol=1e-6)
    found = sorted(set(found) | set(COLLECTIVES.findall(bwd.as_text())))
  return {"fn": name, "sharded": axis_name, "correct": bool(ok), "collectives": found,
          "expect_no_collectives": expect_no_collectives}


def check_shard_map(name, fn, differentiable, x, mesh):
  """``jax.vmap`` of the op inside ``shard_map`` (default ``check_vma``), the batch
  sharded: forward and gradient match the unsharded computation."""
  def first(out):
    return out[0] if isinstance(out, tuple) else out

  g = np.random.default_rng(2).standard_normal(
      first(jax.eval_shape(jax.vmap(fn), x)).shape).astype(np.float32)

  def step(v, w):
    out = jax.vmap(fn)(v)
    if not differentiable:
      return out
    return out, jax.grad(lambda u: jnp.sum(w * first(jax.vmap(fn)(u))))(v)

  sharded = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P("d"), P("d")),
                                  out_specs=P("d")))
  batch = NamedSharding(mesh, P("d"))
  try:
    got = sharded(jax.device_put(x, batch), jax.device_put(g, batch))
  except Exception as e:  # reported as a failed check, with its message
    return {"fn": name, "sharded": "shard_map", "correct": False, "collectives": [],
            "expect_no_collectives": False, "error": f"{type(e).__name__}: {e}"[:300]}
  want = step(x, g)
  ok = all(np.allclose(a, b, rtol=1e-6, atol=1e-6) for a, b in
           zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True))
  return {"fn": name, "sharded": "shard_map", "correct": bool(ok), "collectives": [],
          "expect_no_collectives": False}


def _spec_like(spec, ndim):
  """The input's batch/channel sharding, fitted to an output of ``ndim`` dims."""
  spec = tuple(spec) + (None,) * (4 - len(tuple(spec)))
  if ndim == 4:
    return P(spec[0], None, None, spec[3])
  if ndim == 2:  # global pools: (batch, channel)
    return P(spec[0], spec[3])
  return P()


def main():
  assert jax.device_count() == 8, jax.devices()
  mesh = Mesh(np.array(jax.devices()), ("d",))
  x = np.random.default_rng(0).standard_normal((8, 16, 14, 16)).astype(np.float32)
  layouts = {
      "batch": (P("d"), True),
      "channel": (P(None, None, None, "d"), True),
      "spatial": (P(None, "d"), False),
  }
  results = []
  for name, (fn, diff) in FUNCTIONS.items():
    for axis_name, (spec, strict) in layouts.items():
      if name == "channel_pool_spatial" and axis_name == "channel":
        continue  # reducing the sharded axis itself needs communication by definition
      if name.startswith("global") and axis_name == "spatial":
        strict = False
      if name in CHANNEL_CONCAT and axis_name == "channel":
        strict = False
      results.append(check(name, fn, diff, x, NamedSharding(mesh, spec), axis_name, strict))
    results.append(check_shard_map(name, fn, diff, x, mesh))
  for name, (fn, aux, diff) in RUNTIME.items():
    results.extend(check_runtime(name, fn, aux, diff, x, mesh))
  for r in results:
    print(json.dumps(r))
  sys.stdout.flush()


if __name__ == "__main__":
  main()
