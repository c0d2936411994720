"""Dtype table, no retracing, flat program size for large windows, python -O."""

import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpool
from jaxpool._engine import plan as planner

FLOATS = [jnp.float32, jnp.bfloat16, jnp.float16, "float64"]
INTS = [jnp.int8, jnp.uint8, jnp.int32]

# every public op, as fn(x) -> output (first output for pairs)
OPS = {
    "max_pool": lambda x: jaxpool.max_pool(x, (3, 3), 2, 1),
    "min_pool": lambda x: jaxpool.min_pool(x, (3, 3), 2, 1),
    "avg_pool": lambda x: jaxpool.avg_pool(x, (3, 3), 2, 1, count_include_pad=False),
    "lp_pool": lambda x: jaxpool.lp_pool(x, 2.0, (2, 2)),
    "max_pool_with_indices": lambda x: jaxpool.max_pool_with_indices(x, (2, 2)),
    "max_unpool": lambda x: jaxpool.max_unpool(*jaxpool.max_pool_with_indices(x, (2, 2)),
                                               (2, 2)),
    "adaptive_avg_pool": lambda x: jaxpool.adaptive_avg_pool(x, (3, 5)),
    "adaptive_max_pool": lambda x: jaxpool.adaptive_max_pool(x, (3, 5)),
    "adaptive_max_pool_with_indices": lambda x: jaxpool.adaptive_max_pool_with_indices(
        x, (3, 5)),
    "global_avg_pool": lambda x: jaxpool.global_avg_pool(x, 2),
    "global_max_pool": lambda x: jaxpool.global_max_pool(x, 2),
    "channel_pool_max": lambda x: jaxpool.channel_pool(x, "max"),
    "channel_pool_avg": lambda x: jaxpool.channel_pool(x, "avg"),
}
INT_OPS = {"max_pool", "min_pool", "max_pool_with_indices", "max_unpool", "adaptive_max_pool",
           "adaptive_max_pool_with_indices", "global_max_pool", "channel_pool_max"}


def _input(dtype, rng):
  x = rng.standard_normal((2, 8, 10, 3)) * 4 + 1
  if np.issubdtype(np.dtype(dtype), np.integer):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=(2, 8, 10, 3), endpoint=True).astype(dtype)
  return np.abs(x)


@pytest.mark.parametrize("dtype", FLOATS + INTS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op", sorted(OPS))
def test_dtype_table(op, dtype, rng):
  fn = OPS[op]
  x64 = dtype == "float64"
  with jax.enable_x64(x64):
    x = jnp.asarray(_input(dtype, rng), dtype)
    if np.issubdtype(np.dtype(dtype), np.integer) and op not in INT_OPS:
      with pytest.raises(TypeError, match="floating dtype"):
        fn(x)
      return
    out = fn(x)
    if isinstance(out, tuple):
      assert out[1].dtype == jnp.int32
      out = out[0]
    assert out.dtype == x.dtype, (op, out.dtype)
    if op not in ("max_unpool",):  # compare with the float32 computation of the same input
      want = fn(x.astype(jnp.float32))
      want = want[0] if isinstance(want, tuple) else want
      tol = {"bfloat16": 1e-2, "float16": 1e-3}.get(np.dtype(dtype).name, 1e-6)
      np.testing.assert_allclose(np.asarray(out, np.float64), np.asarray(want, np.float64),
                                 rtol=tol, atol=tol)


def test_float64_is_computed_in_float64(rng):
  with jax.enable_x64(True):
    x = jnp.asarray(rng.standard_normal((1, 6, 6, 1)) * 1e-9 + 1.0, jnp.float64)
    y = jaxpool.avg_pool(x, (3, 3))
    np.testing.assert_allclose(y[0, 0, 0, 0], np.mean(np.asarray(x)[0, :3, :3, 0]), rtol=1e-15)


@pytest.mark.parametrize("op", sorted(OPS))
def test_no_retracing_on_repeated_calls(op, rng):
  fn = OPS[op]

  @jax.jit
  @chex.assert_max_traces(n=1)
  def f(x):
    return fn(x)

  x = _input(jnp.float32, rng).astype(np.float32)
  for k in range(3):
    f(x + k)
  # and the Python-side geometry is cached per call, not recomputed into new traces
  chex.clear_trace_counter()


def _hlo_ops(fn, shape):
  text = jax.jit(fn).lower(jax.ShapeDtypeStruct(shape, jnp.float32)).as_text()
  return sum(1 for line in text.splitlines() if " = " in line and "stablehlo." in line)


def test_large_window_program_size_is_flat():
  """Global-as-window max, its gradient and its indices do not unroll the window: each
  folds the window axes (eighths, then halves; Plan.fold), a few ops per doubling of the
  window, never one per element. On CPU the indices of a window with at most
  ``CHAINED_MATCH_MAX`` positions along its last axis, and the first-max offsets its
  gradient reads, match those positions by a select chain (a few ops per position of
  that axis, not per element); past it they fold too."""
  def sizes(w):
    shape = (4, w, w, 8)
    return (_hlo_ops(lambda v: jaxpool.max_pool(v, (w, w)), shape),
            _hlo_ops(jax.grad(lambda v: jaxpool.max_pool(v, (w, w)).sum()), shape))

  def index_ops(w):
    return _hlo_ops(lambda v: jaxpool.max_pool_with_indices(v, (w, w))[1], (4, w, w, 8))

  chained = planner.CHAINED_MATCH_MAX
  runs = [sizes(w) for w in (25, 28, chained, chained + 1, 2 * chained)]
  values, grads = [r[0] for r in runs], [r[1] for r in runs]
  assert max(values) - min(values) <= 30, values  # 128 vs 25: 2 more levels, 28: remainders
  # folded (from 32 rows the derivative's first max is found by rows: two folded first
  # hits, about 200 ops at 65 and at 128)
  assert max(grads[3:]) < 250 and abs(grads[3] - grads[4]) <= 30, grads
  assert max(grads[:3]) < 200 + 10 * chained, grads  # one chain step per position
  folded = [index_ops(w) for w in (chained + 1, 2 * chained)]
  assert max(folded) - min(folded) <= 30 and max(folded) < 200, folded
  assert index_ops(chained) < 10 * chained, index_ops(chained)  # one chain step per position


def test_large_overlapping_window_values_use_one_reduction():
  x = jax.ShapeDtypeStruct((2, 64, 64, 4), jnp.float32)
  small = jax.jit(lambda v: jaxpool.avg_pool(v, (25, 25), 1)).lower(x).as_text().count("\n")
  big = jax.jit(lambda v: jaxpool.avg_pool(v, (31, 31), 1)).lower(x).as_text().count("\n")
  assert big == small


def test_library_checks_survive_python_O():
  """Validation uses raise, not assert: it must still fire under python -O."""
  code = ("import jaxpool, numpy as np\n"
          "try:\n"
          "  jaxpool.max_pool(np.zeros((1, 4, 4, 1)), (3, 3), 1, 2)\n"
          "except ValueError as e:\n"
          "  print('ok', e)\n")
  out = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True,
                       timeout=120, check=True)
  want = "ok max_pool: padding=2 exceeds window_shape // 2"
  assert out.stdout.startswith(want), out.stdout + out.stderr
