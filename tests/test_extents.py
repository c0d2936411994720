"""Padded and packed batches: ``lengths=`` on the adaptive and global ops, and
``segment_pool``. Against the NumPy loop references, recorded PyTorch (one example or
row at a time), a live torch when installed, and the runtime-value promises: one compile
for every lengths/ids, zero gradient on padding, vmap over them."""

import json
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from torch_extents import OPS, compare, make_input, run_torch, sample_case
from util import LAYOUTS, from_layout, recorded, to_layout

import jaxpool
import jaxpool.linen as L
import jaxpool.nnx as N

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "torch_extents.npz"


RECORDED = list(recorded(FIXTURES))


def test_fixtures_cover_every_op():
  assert {p.values[0]["op"] for p in RECORDED} == set(OPS)
  reduces = {p.values[0]["reduce"] for p in RECORDED if p.values[0]["op"] == "segment"}
  assert reduces == {"avg", "max", "min", "sum"}
  assert json.loads(str(np.load(FIXTURES)["meta"]))["torch"].startswith("2.13.0")


@pytest.mark.parametrize("case,x,torch_out,data_format", RECORDED)
def test_recorded_pytorch_parity(case, x, torch_out, data_format):
  compare(case, x, torch_out, data_format)


@pytest.mark.parametrize("op", OPS)
def test_live_pytorch_parity(op):
  pytest.importorskip("torch", exc_type=ImportError)
  rng = np.random.default_rng(8)  # other cases than the recording
  for i in range(3):
    case = sample_case(rng, op)
    x = make_input(case, seed=20_000 + i)
    compare(case, x, run_torch(case, x), LAYOUTS[i % 2])


# ------------------------------------------------------------------ lengths vs reference


def _lengths(rng, n, spatial):
  return rng.integers(1, np.array(spatial) + 1, size=(n, len(spatial)))


@pytest.mark.parametrize("data_format", LAYOUTS)
@pytest.mark.parametrize("spatial,out", [((11,), (4,)), ((9,), (1,)), ((5,), (8,)),
                                         ((7, 6), (3, 4)), ((6, 5), (None, 2)),
                                         ((4, 5, 3), (2, 3, 2))])
def test_lengths_match_reference(rng, spatial, out, data_format):
  x = rng.integers(-3, 4, size=(4, 3) + spatial).astype(np.float32)  # ties
  n = _lengths(rng, 4, spatial)
  xs = to_layout(x, data_format)

  @jax.jit
  def run(v, n):
    avg = jaxpool.adaptive_avg_pool(v, out, lengths=n, data_format=data_format)
    mx, idx = jaxpool.adaptive_max_pool_with_indices(v, out, lengths=n,
                                                     data_format=data_format)
    return avg, mx, idx, jaxpool.adaptive_max_pool(v, out, lengths=n, data_format=data_format)

  avg, mx, idx, mx2 = run(xs, n)
  np.testing.assert_allclose(from_layout(avg, data_format),
                             reference.lengths_pool(x, out, n, "avg"), rtol=1e-6, atol=1e-6)
  want_v, want_i = reference.lengths_pool(x, out, n, "max")
  np.testing.assert_array_equal(from_layout(mx, data_format), want_v)
  np.testing.assert_array_equal(from_layout(idx, data_format), want_i)
  np.testing.assert_array_equal(mx2, mx)
  assert idx.dtype == jnp.int32


@pytest.mark.parametrize("d", [1, 2, 3])
def test_global_lengths_match_reference(rng, d):
  spatial = (6, 5, 4)[:d]
  x = rng.standard_normal((3, 2) + spatial).astype(np.float32)
  n = _lengths(rng, 3, spatial)
  xs = to_layout(x, "channels_last")
  got_avg = jaxpool.global_avg_pool(xs, d, lengths=n)
  got_max = jaxpool.global_max_pool(xs, d, lengths=n, keepdims=True)
  np.testing.assert_allclose(got_avg, reference.lengths_pool(x, (1,) * d, n, "avg")
                             .reshape(3, 2), rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(from_layout(got_max, "channels_last"),
                                reference.lengths_pool(x, (1,) * d, n, "max")[0])


def test_lengths_gradients_match_reference(rng):
  x = rng.standard_normal((3, 2, 7, 6))
  n = _lengths(rng, 3, (7, 6))
  g = rng.standard_normal((3, 2, 3, 4))
  with jax.enable_x64(True):
    dx_avg = jax.grad(lambda v: jnp.sum(jaxpool.adaptive_avg_pool(
        v, (3, 4), lengths=n, data_format="channels_first") * g))(x)
    dx_max = jax.grad(lambda v: jnp.sum(jaxpool.adaptive_max_pool(
        v, (3, 4), lengths=n, data_format="channels_first") * g))(x)
  np.testing.assert_allclose(dx_avg, reference.lengths_avg_grad(x, (3, 4), n, g), rtol=1e-12)
  _, idx = reference.lengths_pool(x, (3, 4), n, "max")
  want = np.zeros((3, 2, 42))
  for b in range(3):
    for c in range(2):
      np.add.at(want[b, c], idx[b, c].ravel(), g[b, c].ravel())
  np.testing.assert_allclose(dx_max, want.reshape(x.shape), rtol=1e-12)


def test_padding_never_matters(rng):
  """Garbage (NaN, inf, huge) beyond the lengths changes no value and gets no gradient."""
  x = rng.standard_normal((2, 6, 5, 3)).astype(np.float32)
  n = np.array([[4, 3], [6, 5]])
  dirty = x.copy()
  dirty[0, 4:], dirty[0, :, 3:] = np.nan, np.inf
  fns = [lambda v: jaxpool.adaptive_avg_pool(v, (3, 2), lengths=n),
         lambda v: jaxpool.adaptive_max_pool(v, (2, 4), lengths=n),
         lambda v: jaxpool.global_avg_pool(v, 2, lengths=n),
         lambda v: jaxpool.global_max_pool(v, 2, lengths=n)]
  run = jax.jit(lambda v: [(f(v), jax.grad(lambda u, f=f: jnp.sum(f(u) ** 2))(v))
                           for f in fns])
  for (clean, dx), (messy, _) in zip(run(x), run(dirty)):
    np.testing.assert_array_equal(messy, clean)
    assert np.all(dx[0, 4:] == 0) and np.all(dx[0, :, 3:] == 0)
    assert np.abs(dx[1]).sum() > 0


def test_lengths_are_clipped_to_the_axis(rng):
  x = rng.standard_normal((2, 6, 3)).astype(np.float32)
  got = jaxpool.adaptive_avg_pool(x, (2,), lengths=np.array([0, 99]))
  want = jaxpool.adaptive_avg_pool(x, (2,), lengths=np.array([1, 6]))
  np.testing.assert_array_equal(got, want)


def test_full_lengths_equal_the_plain_op(rng):
  x = rng.standard_normal((2, 9, 7, 3)).astype(np.float32)
  full = np.array([[9, 7]] * 2)

  @jax.jit
  def both(v, n):
    return [(jaxpool.adaptive_avg_pool(v, out, lengths=n), jaxpool.adaptive_avg_pool(v, out),
             jaxpool.adaptive_max_pool_with_indices(v, out, lengths=n),
             jaxpool.adaptive_max_pool_with_indices(v, out))
            for out in [(4, 3), (1, 1), (9, 14)]]

  for avg, plain_avg, mx, plain_mx in both(x, full):
    np.testing.assert_allclose(avg, plain_avg, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_equal(mx, plain_mx)


def test_indices_feed_unpool_with_the_padded_size(rng):
  x = rng.standard_normal((2, 6, 6, 3)).astype(np.float32)
  n = np.array([[4, 5], [6, 2]])
  v, i = jaxpool.adaptive_max_pool_with_indices(x, (2, 2), lengths=n)
  up = np.asarray(jaxpool.max_unpool(v, i, (3, 3), output_size=(6, 6)))
  flat = x.reshape(2, 36, 3)
  for b in range(2):
    for c in range(3):
      np.testing.assert_array_equal(up.reshape(2, 36, 3)[b, i[b, ..., c].ravel(), c],
                                    flat[b, i[b, ..., c].ravel(), c])
  assert np.all(up.reshape(2, 6, 6, 3)[0, 4:] == 0)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, np.float16, np.int32, np.bool_])
def test_lengths_dtypes(rng, dtype):
  x = rng.integers(-3, 4, size=(2, 7, 5, 2)).astype(np.float32)
  n = np.array([[5, 4], [7, 2]])
  xd = jnp.asarray(x).astype(dtype)
  mx, idx = jaxpool.adaptive_max_pool_with_indices(xd, (3, 2), lengths=n)
  assert mx.dtype == xd.dtype
  want_v, want_i = reference.lengths_pool(np.moveaxis(np.asarray(xd), -1, 1), (3, 2), n, "max")
  np.testing.assert_array_equal(np.moveaxis(np.asarray(mx), -1, 1), want_v)
  np.testing.assert_array_equal(np.moveaxis(np.asarray(idx), -1, 1), want_i)
  if jnp.issubdtype(xd.dtype, jnp.floating):
    avg = jaxpool.global_avg_pool(xd, 2, lengths=n)
    assert avg.dtype == xd.dtype
    np.testing.assert_allclose(np.asarray(avg, np.float32), reference.lengths_pool(
        np.moveaxis(x, -1, 1), (1, 1), n, "avg").reshape(2, 2), rtol=1e-2)


def test_lengths_unbatched_and_many_batch_axes(rng):
  x = rng.standard_normal((2, 3, 8, 4)).astype(np.float32)
  n = rng.integers(1, 9, size=(2, 3))
  batched = jaxpool.adaptive_max_pool(x, (3,), lengths=n)
  one = jaxpool.adaptive_max_pool(x[1, 2], (3,), lengths=n[1, 2])
  np.testing.assert_array_equal(one, batched[1, 2])
  np.testing.assert_array_equal(jaxpool.adaptive_max_pool(x, (3,), lengths=n[..., None]),
                                batched)


# ------------------------------------------------------------------ segments vs reference


@pytest.mark.parametrize("op", ["avg", "max", "min", "sum"])
@pytest.mark.parametrize("ids_shape,x_shape", [((13,), (13, 4)), ((3, 9), (3, 9, 2)),
                                               ((2, 2, 5), (2, 2, 5, 3, 2)), ((6,), (6,))])
def test_segment_pool_matches_reference(rng, op, ids_shape, x_shape):
  x = rng.integers(-2, 3, size=x_shape).astype(np.float32)  # ties
  ids = rng.integers(-1, 5, size=ids_shape)  # 4 means dropped, like -1
  got = jax.jit(jaxpool.segment_pool, static_argnums=(2, 3))(x, ids, 4, op)
  want, _ = reference.segment_pool(x, ids, 4, op)
  assert got.shape == ids_shape[:-1] + (4,) + x_shape[len(ids_shape):]
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("op", ["max", "min"])
def test_segment_extreme_gradient_goes_to_the_first(rng, op):
  x = rng.integers(-1, 2, size=(2, 10, 3)).astype(np.float32)  # many ties
  ids = rng.integers(-1, 3, size=(2, 10))
  g = rng.standard_normal((2, 3, 3)).astype(np.float32)
  dx = jax.grad(lambda v: jnp.sum(jaxpool.segment_pool(v, ids, 3, op) * g))(x)
  _, first = reference.segment_pool(x, ids, 3, op)
  want = np.zeros_like(x)
  for b, s, c in np.ndindex(2, 3, 3):
    if first[b, s, c] >= 0:
      want[b, first[b, s, c], c] += g[b, s, c]
  np.testing.assert_array_equal(dx, want)
  _, tangent = jax.jvp(lambda v: jaxpool.segment_pool(v, ids, 3, op), (x,), (np.ones_like(x),))
  np.testing.assert_array_equal(tangent, (first >= 0).astype(np.float32))


def test_segment_nan_and_empty(rng):
  x = np.array([[1.0], [np.nan], [3.0], [2.0]], np.float32)
  ids = np.array([0, 0, 1, -1])
  for op in ("max", "min", "avg", "sum"):
    y = np.asarray(jaxpool.segment_pool(x, ids, 3, op))[:, 0]
    assert np.isnan(y[0]) and y[1] == 3.0 and y[2] == 0.0, (op, y)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, np.float16, np.int8, np.bool_])
def test_segment_dtypes(rng, dtype):
  x = jnp.asarray(rng.integers(0, 3, size=(11, 2))).astype(dtype)
  ids = rng.integers(-1, 4, size=(11,))
  for op in ("max", "min") + (("sum",) if dtype != np.bool_ else ()) + (
      ("avg",) if jnp.issubdtype(x.dtype, jnp.floating) else ()):
    got = jaxpool.segment_pool(x, ids, 4, op)
    assert got.dtype == x.dtype, op
    want, _ = reference.segment_pool(np.asarray(x, np.float64), ids, 4, op)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-2, err_msg=op)


# ------------------------------------------------------------------ runtime values


def test_one_compile_serves_every_lengths_and_ids(rng):
  x = rng.standard_normal((3, 8, 6, 2)).astype(np.float32)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(v, n, ids):
    loss = jnp.sum(jaxpool.adaptive_avg_pool(v, (3, 3), lengths=n) ** 2)
    loss += jnp.sum(jaxpool.adaptive_max_pool_with_indices(v, (2, 5), lengths=n)[0])
    loss += jnp.sum(jaxpool.global_max_pool(v, 2, lengths=n))
    loss += jnp.sum(jaxpool.segment_pool(v.reshape(3, 48, 2), ids, 5, "max"))
    return jax.value_and_grad(lambda u: jnp.sum(jaxpool.segment_pool(
        u.reshape(3, 48, 2), ids, 5) ** 2) + loss)(v)

  chex.clear_trace_counter()
  for seed in range(4):
    r = np.random.default_rng(seed)
    n = r.integers(1, [9, 7], size=(3, 2))
    ids = r.integers(-1, 5, size=(3, 48))
    value, grad = step(x, n, ids)
    assert np.isfinite(value) and np.isfinite(grad).all()


def test_vmap_over_lengths_and_ids(rng):
  x = rng.standard_normal((4, 3, 9, 2)).astype(np.float32)
  n = rng.integers(1, 10, size=(4, 3))
  ids = rng.integers(-1, 3, size=(4, 3, 9))

  @jax.jit
  def both(x, n, ids):
    mapped = (jax.vmap(lambda v, m: jaxpool.adaptive_avg_pool(v, (4,), lengths=m))(x, n),
              jax.vmap(lambda v, m: jaxpool.adaptive_max_pool_with_indices(v, (4,), lengths=m),
                       in_axes=(1, 1), out_axes=1)(x, n),
              jax.vmap(lambda v, i: jaxpool.segment_pool(v, i, 3, "min"))(x, ids))
    batched = (jaxpool.adaptive_avg_pool(x, (4,), lengths=n),
               jaxpool.adaptive_max_pool_with_indices(x, (4,), lengths=n),
               jaxpool.segment_pool(x, ids, 3, "min"))
    return mapped, batched

  mapped, batched = both(x, n, ids)
  np.testing.assert_allclose(mapped[0], batched[0], rtol=1e-6)
  chex.assert_trees_all_equal(mapped[1:], batched[1:])


def test_modules_take_lengths_and_ids(rng):
  x = rng.standard_normal((2, 8, 6, 3)).astype(np.float32)
  n = np.array([[5, 6], [8, 2]])
  ids = rng.integers(-1, 4, size=(2, 8))
  pairs = [
      (L.AdaptiveAvgPool((3, 2)), N.AdaptiveAvgPool((3, 2)),
       jaxpool.adaptive_avg_pool(x, (3, 2), lengths=n)),
      (L.AdaptiveMaxPool((3, 2)), N.AdaptiveMaxPool((3, 2)),
       jaxpool.adaptive_max_pool(x, (3, 2), lengths=n)),
      (L.GlobalAvgPool(2), N.GlobalAvgPool(2), jaxpool.global_avg_pool(x, 2, lengths=n)),
      (L.GlobalMaxPool(2, keepdims=True), N.GlobalMaxPool(2, keepdims=True),
       jaxpool.global_max_pool(x, 2, keepdims=True, lengths=n)),
  ]
  for linen, nnx, want in pairs:
    chex.assert_trees_all_equal(linen.apply({}, x, n), want)
    chex.assert_trees_all_equal(linen.apply({}, x, lengths=n), want)
    chex.assert_trees_all_equal(nnx(x, n), want)
  want = jaxpool.segment_pool(x, ids, 4, "max")
  chex.assert_trees_all_equal(L.SegmentPool(4, "max").apply({}, x, ids), want)
  chex.assert_trees_all_equal(N.SegmentPool(4, "max")(x, ids), want)
  assert L.SegmentPool(4).init(jax.random.key(0), x, ids) == {}


def test_nan_inside_the_lengths_propagates_at_large_sizes(rng):
  """A NaN inside an example's valid extent pools to NaN, and its index is the first
  NaN's; one beyond the extent is ignored. (At this size XLA:CPU hands a float max
  reduce to YNNPACK, which drops NaN: the extents' maxima fold instead.)"""
  x = rng.standard_normal((4, 64, 32)).astype(np.float32)
  lengths = np.array([64, 40, 64, 10])
  x[1, 5, 3] = x[1, 7, 3] = np.nan    # inside example 1's 40
  x[3, 45, 2] = np.nan                # beyond example 3's 10
  y = np.asarray(jaxpool.global_max_pool(x, 1, lengths=lengths))
  assert np.argwhere(np.isnan(y)).tolist() == [[1, 3]]
  values, idx = jaxpool.adaptive_max_pool_with_indices(x, (4,), lengths=lengths)
  assert np.argwhere(np.isnan(np.asarray(values))).tolist() == [[1, 0, 3]]
  assert idx[1, 0, 3] == 5
