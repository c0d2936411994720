"""Adaptive, global and channel pooling against the reference."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref
from util import LAYOUTS, from_layout, maybe_jit, randn, ties, to_layout

import jaxpool
from jaxpool._adaptive import bin_taps

# (input spatial, output_size): divisible, uniform (56->5), general, o > L, None
CASES = [
    ((10,), (4,)), ((12,), (3,)), ((7,), (9,)), ((5,), (1,)), ((3,), (8,)),
    ((13, 13), (6, 6)), ((14, 14), (7, 7)), ((56, 9), (5, 4)), ((9, 7), (None, 3)),
    ((5, 6), (7, 11)), ((4, 6, 5), (3, 4, 2)), ((6, 5, 7), (2, None, 7)),
    ((1, 4), (3, 2)),  # L = 1 < o: every bin is [0, 1), a step of 0
]
IDS = [f"{s}->{o}" for s, o in CASES]


@pytest.mark.parametrize("shape,size", CASES, ids=IDS)
@pytest.mark.parametrize("data_format", LAYOUTS)
@pytest.mark.parametrize("use_jit", [False, True])
def test_adaptive_avg(rng, shape, size, data_format, use_jit):
  x = randn(rng, (2, 3) + shape)
  f = maybe_jit(jaxpool.adaptive_avg_pool, use_jit, output_size=size, data_format=data_format)
  got = from_layout(f(to_layout(x, data_format)), data_format)
  np.testing.assert_allclose(got, ref.adaptive_avg_pool(x, size), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape,size", CASES, ids=IDS)
@pytest.mark.parametrize("data_format", LAYOUTS)
@pytest.mark.parametrize("data", ["random", "ties", "nan"])
def test_adaptive_max_with_indices(rng, shape, size, data_format, data):
  x = ties(rng, (2, 3) + shape) if data == "ties" else randn(rng, (2, 3) + shape)
  if data == "nan":
    x[rng.random(x.shape) < 0.1] = np.nan
  v, i = jaxpool.adaptive_max_pool_with_indices(to_layout(x, data_format), size,
                                                data_format=data_format)
  want_v, want_i = ref.adaptive_max_pool_with_indices(x, size)
  np.testing.assert_array_equal(from_layout(v, data_format), want_v)
  np.testing.assert_array_equal(from_layout(i, data_format), want_i)
  m = jaxpool.adaptive_max_pool(to_layout(x, data_format), size, data_format=data_format)
  np.testing.assert_array_equal(np.asarray(m), np.asarray(v))


@pytest.mark.parametrize("shape,size", CASES, ids=IDS)
def test_adaptive_grads(rng, shape, size):
  x = ties(rng, (2, 2) + shape)
  g = randn(rng, (2, 2) + tuple(n if o is None else o for n, o in zip(shape, size)))
  gmax = jax.grad(lambda v: jnp.sum(jaxpool.adaptive_max_pool(
      v, size, data_format="channels_first") * g))(x)
  _, idx = ref.adaptive_max_pool_with_indices(x, size)
  want = np.zeros((2, 2, int(np.prod(shape))))
  for n in range(2):
    for c in range(2):
      np.add.at(want[n, c], idx[n, c].ravel(), g[n, c].ravel())
  np.testing.assert_allclose(gmax, want.reshape(x.shape), rtol=1e-6, atol=1e-6)
  gavg = jax.grad(lambda v: jnp.sum(jaxpool.adaptive_avg_pool(
      v, size, data_format="channels_first") * g))(x)
  # the reference is linear: its gradient is its transpose, read off column by column
  jac = np.stack([ref.adaptive_avg_pool(np.eye(x[0, 0].size)[k].reshape((1, 1) + shape), size)
                  .ravel() for k in range(x[0, 0].size)])
  want_avg = np.einsum("kn,bcn->bck", jac, g.reshape(2, 2, -1)).reshape(x.shape)
  np.testing.assert_allclose(gavg, want_avg, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int32])
def test_adaptive_max_integers(rng, dtype):
  info = np.iinfo(dtype)
  x = rng.integers(info.min, info.max, size=(2, 3, 10, 7), endpoint=True).astype(dtype)
  v, i = jaxpool.adaptive_max_pool_with_indices(x, (4, 3), data_format="channels_first")
  want_v, want_i = ref.adaptive_max_pool_with_indices(x, (4, 3))
  assert v.dtype == dtype
  np.testing.assert_array_equal(v, want_v)
  np.testing.assert_array_equal(i, want_i)


def test_adaptive_to_input_size_is_identity(rng):
  x = randn(rng, (2, 5, 6, 3))
  np.testing.assert_array_equal(jaxpool.adaptive_avg_pool(x, (5, 6)), x)
  np.testing.assert_array_equal(jaxpool.adaptive_max_pool(x, (None, None)), x)


@pytest.mark.parametrize("size,out,kind", [(10, 5, "reshape"), (56, 5, "uniform"),
                                           (10, 4, "gather"), (7, 512, "gather"),
                                           (512, 7, "uniform"), (13, 6, "uniform"),
                                           (10, 7, "gather"), (512, 9, "gather")])
def test_bin_plans(size, out, kind):
  t = bin_taps(size, out)
  assert (t.regular, t.regular and t.stride >= t.window) == {
      "reshape": (True, True), "uniform": (True, False), "gather": (False, False)}[kind]
  starts = [int(np.floor(i * size / out)) for i in range(out)]
  ends = [int(np.ceil((i + 1) * size / out)) for i in range(out)]
  pos, real = t.positions(), t.real()
  for i in range(out):
    np.testing.assert_array_equal(np.unique(pos[i][real[i]]), np.arange(starts[i], ends[i]))


def _hlo_ops(fn, shape):
  text = jax.jit(fn).lower(jax.ShapeDtypeStruct(shape, jnp.float32)).as_text()
  return sum(1 for line in text.splitlines() if " = " in line and "stablehlo." in line)


@pytest.mark.parametrize("fn", [jaxpool.adaptive_avg_pool, jaxpool.adaptive_max_pool,
                                lambda x, o: jaxpool.adaptive_max_pool_with_indices(x, o)[0]])
def test_program_size_does_not_grow_with_output_size(fn):
  """512 -> 7 and 7 -> 512 lower to programs of the same small size as 512 -> 9. (Max
  reduces over a gathered axis by folds on CPU: a few slices per halving of the bin
  width, 58 elements here, not per bin.)"""
  counts = {o: _hlo_ops(lambda x, o=o: fn(x, (o,)), (2, 512, 4)) for o in (7, 9, 13)}
  up = {o: _hlo_ops(lambda x, o=o: fn(x, (o,)), (2, 7, 4)) for o in (100, 512)}
  assert max(counts.values()) <= 80, counts
  assert up[512] == up[100] and up[512] <= 80, up


@pytest.mark.parametrize("data_format", LAYOUTS)
@pytest.mark.parametrize("keepdims", [False, True])
def test_global_pools(rng, data_format, keepdims):
  x_cf = randn(rng, (2, 3, 5, 4, 6))
  x = to_layout(x_cf, data_format)
  avg = jaxpool.global_avg_pool(x, 3, keepdims=keepdims, data_format=data_format)
  mx = jaxpool.global_max_pool(x, 3, keepdims=keepdims, data_format=data_format)
  want_avg = x_cf.astype(np.float64).mean(axis=(2, 3, 4))
  want_max = x_cf.max(axis=(2, 3, 4))
  if keepdims:
    assert avg.shape == to_layout(np.zeros((2, 3, 1, 1, 1)), data_format).shape
    avg, mx = from_layout(avg, data_format), from_layout(mx, data_format)
    avg, mx = avg.reshape(2, 3), mx.reshape(2, 3)
  np.testing.assert_allclose(avg, want_avg, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(mx, want_max)


def test_global_unbatched_and_num_spatial_dims(rng):
  x = randn(rng, (7, 7, 16))
  np.testing.assert_allclose(jaxpool.global_avg_pool(x, 2), x.mean(axis=(0, 1)), rtol=1e-5,
                             atol=1e-7)
  y = randn(rng, (2, 3, 7, 7, 16))  # two batch axes
  assert jaxpool.global_max_pool(y, 2).shape == (2, 3, 16)


def test_global_max_grad_goes_to_first_max():
  x = jnp.array([[[1.0], [3.0]], [[3.0], [0.0]]])[None]  # (1, 2, 2, 1), a tie at 3
  g = jax.grad(lambda v: jnp.sum(jaxpool.global_max_pool(v, 2)))(x)
  np.testing.assert_array_equal(g[0, :, :, 0], [[0, 1], [0, 0]])


@pytest.mark.parametrize("data_format", LAYOUTS)
def test_channel_pool(rng, data_format):
  x_cf = ties(rng, (2, 5, 4, 3))
  x = to_layout(x_cf, data_format)
  for op, want in (("max", x_cf.max(axis=1, keepdims=True)),
                   ("avg", x_cf.mean(axis=1, keepdims=True))):
    y = jaxpool.channel_pool(x, op, data_format=data_format, num_spatial_dims=2)
    np.testing.assert_allclose(from_layout(y, data_format), want, rtol=1e-6)
    y = jaxpool.channel_pool(x, op, keepdims=False, data_format=data_format,
                             num_spatial_dims=2)
    np.testing.assert_allclose(y, want[:, 0], rtol=1e-6)
  # gradient of channel max: first maximum along the channel axis
  g = jax.grad(lambda v: jnp.sum(jaxpool.channel_pool(v, data_format=data_format,
                                                      num_spatial_dims=2)))(x)
  g = from_layout(g, data_format)
  first = (x_cf == x_cf.max(axis=1, keepdims=True)).argmax(axis=1)
  np.testing.assert_array_equal(g.argmax(axis=1), first)
  np.testing.assert_array_equal(g.sum(axis=1), np.ones((2, 4, 3)))


def test_channel_pool_channels_first_unbatched(rng):
  x = randn(rng, (5, 4, 3))  # (C, H, W)
  y = jaxpool.channel_pool(x, "avg", data_format="channels_first", num_spatial_dims=2)
  np.testing.assert_allclose(y, x.mean(axis=0, keepdims=True), rtol=1e-6)


def test_in_graph_divisor_counts_match_static_counts():
  """AxisTaps.count_of (iota arithmetic, used in the graph) == AxisTaps.count (NumPy)."""
  from jaxpool._geometry import AxisTaps

  rng = np.random.default_rng(3)
  checked = 0
  for _ in range(400):
    n, k, s, d = (int(v) for v in rng.integers(1, 9, size=4))
    lo, hi = (int(v) for v in rng.integers(0, 4, size=2))
    out = (n + lo + hi - d * (k - 1) - 1) // s + 1
    if out < 1:
      continue
    t = AxisTaps(n, out, k, s, d, lo, hi)
    for include in (True, False):
      np.testing.assert_array_equal(t.count_of(np.arange(out), include), t.count(include))
    checked += 1
  for n in range(1, 12):
    for o in range(1, 15):
      t = bin_taps(n, o)
      np.testing.assert_array_equal(t.count_of(np.arange(o), False), t.count(False))
  assert checked > 100
