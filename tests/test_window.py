"""max/min/avg/lp pooling against the NumPy loop reference."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref
from jax.test_util import check_grads
from util import LAYOUTS, from_layout, maybe_jit, randn, rotated, ties, to_layout

import jaxpool

# (spatial shape, window, strides, padding, dilation, ceil_mode)
CASES = [
    ((9,), (3,), 2, 1, 1, False),
    ((10,), (4,), 3, 2, 1, True),
    ((11,), (3,), 1, ((2, 0),), 2, False),
    ((12,), (2,), None, 0, 1, False),
    ((7, 9), (3, 3), 2, 1, 1, False),
    ((8, 8), (2, 2), None, 0, 1, False),
    ((7, 10), (3, 2), (2, 1), (1, 0), 1, True),
    ((9, 9), (3, 3), 2, 1, 2, True),
    ((6, 7), (2, 3), (2, 2), ((1, 0), (0, 2)), (1, 2), False),
    ((10, 11), (3, 3), 2, "SAME", 1, False),
    ((9, 8), (4, 3), 3, "VALID", 1, True),
    ((5, 6, 7), (2, 3, 2), (1, 2, 2), (1, 1, 0), 1, True),
    ((4, 5, 6), (2, 2, 2), None, 0, (1, 2, 1), False),
    ((3, 4, 4, 5), (2, 2, 2, 3), 2, 0, 1, True),  # 4 spatial dims
]
IDS = [f"{len(c[0])}d-{i}" for i, c in enumerate(CASES)]
ROTATED = rotated(CASES, IDS)  # each case in one (layout, eager/jit) pair


def _kw(case):
  _, window, strides, padding, dilation, ceil_mode = case
  return dict(window_shape=window, strides=strides, padding=padding, dilation=dilation,
              ceil_mode=ceil_mode)


def _ref_args(case):
  _, window, strides, padding, dilation, ceil_mode = case
  return (window, strides, padding, dilation, ceil_mode)


@pytest.mark.parametrize("case,data_format,use_jit", ROTATED)
@pytest.mark.parametrize("op", ["max", "min"])
def test_max_min_vs_reference(rng, case, data_format, use_jit, op):
  x = ties(rng, (2, 3) + case[0])
  f = maybe_jit(getattr(jaxpool, f"{op}_pool"), use_jit, data_format=data_format, **_kw(case))
  got = from_layout(f(to_layout(x, data_format)), data_format)
  np.testing.assert_array_equal(got, getattr(ref, f"{op}_pool")(x, *_ref_args(case)))


@pytest.mark.parametrize("case,data_format,use_jit", ROTATED)
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_vs_reference(rng, case, data_format, count_include_pad, use_jit):
  x = randn(rng, (2, 3) + case[0])
  f = maybe_jit(jaxpool.avg_pool, use_jit, data_format=data_format,
                count_include_pad=count_include_pad, **_kw(case))
  got = from_layout(f(to_layout(x, data_format)), data_format)
  want = ref.avg_pool(x, *_ref_args(case), count_include_pad=count_include_pad)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", CASES[:6] + CASES[11:13], ids=IDS[:6] + IDS[11:13])
@pytest.mark.parametrize("divisor", [1, 5])
def test_avg_divisor_override(rng, case, divisor):
  x = randn(rng, (2, 3) + case[0])
  got = jaxpool.avg_pool(x, divisor_override=divisor, data_format="channels_first",
                         **_kw(case))
  want = ref.avg_pool(x, *_ref_args(case), divisor_override=divisor)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case,data_format,use_jit", ROTATED)
@pytest.mark.parametrize("p", [1, 2, 3.5])
def test_lp_vs_reference(rng, case, p, data_format, use_jit):
  x = np.abs(randn(rng, (2, 3) + case[0])) + 0.1
  f = maybe_jit(jaxpool.lp_pool, use_jit, p=p, data_format=data_format, **_kw(case))
  got = from_layout(f(to_layout(x, data_format)), data_format)
  np.testing.assert_allclose(got, ref.lp_pool(x, p, *_ref_args(case)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch", [(), (6,), (2, 3)])
@pytest.mark.parametrize("data_format", LAYOUTS)
@pytest.mark.parametrize("fn", [jaxpool.max_pool, jaxpool.avg_pool, jaxpool.min_pool])
def test_any_batch_dims(rng, batch, data_format, fn):
  """Unbatched and multi-axis batches give what one flat batch gives."""
  x = to_layout(randn(rng, (6, 2, 7, 8)), data_format)
  kw = dict(window_shape=(3, 3), strides=2, padding=1, data_format=data_format)
  flat = np.asarray(fn(x, **kw))
  if batch == ():
    got = np.stack([np.asarray(fn(x[i], **kw)) for i in range(6)])
  else:
    got = np.asarray(fn(x.reshape(batch + x.shape[1:]), **kw)).reshape(flat.shape)
  np.testing.assert_array_equal(got, flat)


@pytest.mark.parametrize("fn", [jaxpool.max_pool, jaxpool.avg_pool, jaxpool.lp_pool])
def test_vmap_equals_batch(rng, fn):
  x = np.abs(randn(rng, (5, 9, 9, 3))) + 0.1
  args = (2.0,) if fn is jaxpool.lp_pool else ()

  def f(v):
    return fn(v, *args, (3, 3), 2, 1)

  np.testing.assert_allclose(jax.vmap(f)(x), f(x), rtol=1e-6)
  # vmap over a non-leading axis too
  np.testing.assert_allclose(jax.vmap(f, in_axes=3, out_axes=3)(x[..., None]),
                             f(x)[..., None], rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("fn", ["max_pool", "min_pool", "avg_pool", "lp_pool"])
def test_low_precision_keeps_dtype_and_accumulates_in_f32(rng, dtype, fn):
  x32 = np.abs(randn(rng, (2, 12, 12, 4))) + 0.5
  x = jnp.asarray(x32, dtype)
  args = (2.0,) if fn == "lp_pool" else ()
  y = getattr(jaxpool, fn)(x, *args, (3, 3), 1, 1)
  assert y.dtype == dtype
  # f32 accumulation: the result is the f32 result of the same (rounded) input, rounded.
  want = getattr(jaxpool, fn)(x.astype(jnp.float32), *args, (3, 3), 1, 1).astype(dtype)
  np.testing.assert_array_equal(np.asarray(y, np.float32), np.asarray(want, np.float32))


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int32, np.bool_])
@pytest.mark.parametrize("op", ["max", "min"])
def test_integer_max_min_pad_with_dtype_limits(rng, dtype, op):
  info = np.iinfo(dtype) if dtype != np.bool_ else None
  lo, hi = (0, 2) if info is None else (info.min, info.max)
  x = rng.integers(lo, hi, size=(2, 3, 7, 9), endpoint=True).astype(dtype)
  got = getattr(jaxpool, f"{op}_pool")(x, (3, 3), 2, 1, data_format="channels_first")
  assert got.dtype == dtype
  np.testing.assert_array_equal(got, getattr(ref, f"{op}_pool")(x, (3, 3), 2, 1))


def test_nan_propagates(rng):
  x = randn(rng, (1, 1, 6, 6))
  x[0, 0, 1, 4] = np.nan
  for fn in (jaxpool.max_pool, jaxpool.min_pool, jaxpool.avg_pool):
    y = np.asarray(fn(x, (2, 2), data_format="channels_first"))
    assert np.isnan(y[0, 0, 0, 2]) and np.isnan(y).sum() == 1


# Large enough that XLA:CPU hands a max reduce (or a non-overlapping reduce_window, which
# it rewrites into one) to YNNPACK, whose max/min drop NaN: before the CPU plans' `fold`,
# every one of these returned a finite max for a window holding a NaN (PyTorch: NaN).
YNN_SHAPE = (2, 16, 16, 8)
NAN_AT = [(0, 3, 5, 1), (1, 9, 9, 7), (1, 15, 0, 0)]
NAN_CASES = {
    "max 8x8": lambda x: jaxpool.max_pool(x, (8, 8)),
    "min 4x4": (lambda x: jaxpool.min_pool(x, (4, 4)),
                lambda x: jaxpool.max_pool(x, (4, 4))),
    "max 2x2 padded": lambda x: jaxpool.max_pool(x, (2, 2), padding=1),
    "max whole axes": lambda x: jaxpool.max_pool(x, (16, 16)),
    "max 16x1": lambda x: jaxpool.max_pool(x, (16, 1)),
    "indices 8x8": lambda x: jaxpool.max_pool_with_indices(x, (8, 8))[0],
    "indices whole axes": lambda x: jaxpool.max_pool_with_indices(x, (16, 16))[0],
    "adaptive max 16->4": lambda x: jaxpool.adaptive_max_pool(x, (4, 4)),
    "adaptive max 16->1": lambda x: jaxpool.adaptive_max_pool(x, (1, 1)),
    "adaptive max 16->3": lambda x: jaxpool.adaptive_max_pool(x, (3, 3)),
    "global max": lambda x: jaxpool.global_max_pool(x, 2),
    "global max channels_first": lambda x: jaxpool.global_max_pool(
        jnp.moveaxis(x, -1, 1), 2, data_format="channels_first"),
    "channel max": lambda x: jaxpool.channel_pool(x, "max"),
    "channel max channels_first": lambda x: jaxpool.channel_pool(
        jnp.moveaxis(x, -1, 1), "max", data_format="channels_first", num_spatial_dims=2),
}


@pytest.mark.parametrize("dtype", [np.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("name", list(NAN_CASES))
def test_nan_propagates_through_large_reductions(rng, name, dtype):
  """A window holding a NaN pools to NaN, and only such windows do: the windows that
  hold one are found by pooling the NaN mask itself (0/1 values, no NaN)."""
  x = randn(rng, YNN_SHAPE)
  for i in NAN_AT:
    x[i] = np.nan
  case = NAN_CASES[name]  # (the op, the op that finds the windows holding a NaN)
  fn, holding = case if isinstance(case, tuple) else (case, case)
  fn = jax.jit(fn)
  got = np.asarray(fn(jnp.asarray(x, dtype)), np.float32)
  holds = np.asarray(jax.jit(holding)(jnp.asarray(np.isnan(x), np.float32))) > 0
  assert holds.any()
  np.testing.assert_array_equal(np.isnan(got), holds)
  clean = np.asarray(fn(jnp.asarray(np.nan_to_num(x, nan=-5.0), dtype)), np.float32)
  np.testing.assert_array_equal(got[~holds], clean[~holds])


def test_large_window_indices_and_gradient_find_the_first_nan(rng):
  """At the YNNPACK size: the index of a window holding NaNs is its first NaN's, and the
  max's gradient goes there, as in PyTorch."""
  x = randn(rng, YNN_SHAPE)
  x[0, 2, 3, 1] = x[0, 1, 6, 1] = np.nan  # row-major first: (1, 6)
  values, idx = jaxpool.max_pool_with_indices(x, (8, 8))
  assert np.isnan(values[0, 0, 0, 1]) and idx[0, 0, 0, 1] == 1 * 16 + 6
  g = np.asarray(jax.grad(lambda v: jnp.sum(jnp.where(
      jnp.isnan(jaxpool.max_pool(v, (8, 8))), 1.0, 0.0) * jaxpool.max_pool(v, (8, 8))))(x))
  assert g[0, 1, 6, 1] == 1 and g[0, :8, :8, 1].sum() == 1


# One window along an axis reads the same positions at every stride. At stride 1 XLA:CPU
# rewrote a whole-axis reduce_window into a reduce that drops NaN: until session 26 these
# returned a finite max/min for a window holding a NaN, at stride 1 only (found by a
# randomized comparison with PyTorch). (N, C, *spatial) shapes, window, dilation.
SINGLE_WINDOWS = {
    "2-D 52x41": ((2, 3, 52, 41), (52, 41), 1),
    "2-D 30x30, one channel": ((2, 1, 30, 30), (30, 30), 1),
    "1-D 1024": ((2, 16, 1024), (1024,), 1),
    "3-D 9x8x7": ((2, 3, 9, 8, 7), (9, 8, 7), 1),
    "whole first axis, overlapping second": ((2, 3, 30, 5), (30, 2), 1),
    "dilated 5x5 over 9x9": ((2, 3, 9, 9), (5, 5), 2),
}


@pytest.mark.parametrize("stride", [1, 2, None], ids=["stride 1", "stride 2", "default"])
@pytest.mark.parametrize("name", list(SINGLE_WINDOWS))
def test_a_single_window_propagates_nan_at_every_stride(rng, name, stride):
  shape, window, dilation = SINGLE_WINDOWS[name]
  x = randn(rng, shape)
  first = (0, 0) + tuple(n // 3 for n in shape[2:])
  x[first] = np.nan
  x[(0, 0) + tuple(n - 1 for n in shape[2:])] = np.nan  # a later NaN
  x[(1, shape[1] - 1) + (0,) * len(window)] = 50.0  # a larger number, no NaN
  args = (window, stride, 0)
  for layout in LAYOUTS:
    xl = jnp.asarray(to_layout(x, layout))
    kw = dict(window_shape=window, strides=stride, dilation=dilation, data_format=layout)
    for fn, reference in ((jaxpool.max_pool, ref.max_pool), (jaxpool.min_pool, ref.min_pool)):
      got = jax.jit(functools.partial(fn, **kw))(xl)
      want = reference(x, *args, dilation=dilation)
      np.testing.assert_array_equal(from_layout(np.asarray(got), layout), want)
      assert np.isnan(want).any() and not np.isnan(want).all()
    values, idx = jax.jit(functools.partial(jaxpool.max_pool_with_indices, **kw))(xl)
    want_values, want_idx = ref.max_pool_with_indices(x, *args, dilation=dilation)
    np.testing.assert_array_equal(from_layout(np.asarray(values), layout), want_values)
    np.testing.assert_array_equal(from_layout(np.asarray(idx), layout), want_idx)


def test_infinities(rng):
  x = np.full((1, 1, 4, 4), -np.inf, np.float32)
  y = jaxpool.max_pool(x, (2, 2), padding=1, data_format="channels_first")
  assert np.all(y == -np.inf)
  x[0, 0, 0, 0] = np.inf  # +inf and -inf in one window: NaN, as in PyTorch
  assert np.isnan(jaxpool.avg_pool(x, (2, 2), data_format="channels_first")[0, 0, 0, 0])
  z = np.zeros((1, 1, 4, 4), np.float32)
  z[0, 0, 3, 3] = np.inf
  np.testing.assert_array_equal(jaxpool.avg_pool(z, (2, 2), data_format="channels_first"),
                                [[[[0, 0], [0, np.inf]]]])


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("case,data_format,use_jit", ROTATED)
@pytest.mark.parametrize("op", ["max", "min"])
def test_max_min_grad_goes_to_first_extremum(rng, case, op, data_format, use_jit):
  x = ties(rng, (2, 2) + case[0])  # ties: the first extremum must win
  fn = getattr(jaxpool, f"{op}_pool")
  y = fn(to_layout(x, data_format), data_format=data_format, **_kw(case))
  g = randn(rng, y.shape)

  def loss(v):
    return jnp.sum(fn(v, data_format=data_format, **_kw(case)) * g)

  grad = jax.jit(jax.grad(loss)) if use_jit else jax.grad(loss)
  got = from_layout(grad(to_layout(x, data_format)), data_format)
  want = ref.max_pool_grad(x, from_layout(g, data_format), *_ref_args(case), kind=op)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


# Windows over 32 elements: values by reduce_window/separable plans, gradients routed
# one axis at a time (strided-slice, reshape and dilated axes, padding, ceil_mode).
LARGE = [
    ((13, 14), (7, 6), (3, 2), (3, 1), 1, True),
    ((12, 15), (4, 9), (4, 5), 0, 1, False),
    ((17, 9), (6, 6), 2, (2, 3), (2, 1), False),
    ((6, 7, 8), (3, 4, 3), (2, 1, 3), 1, 1, True),
]


@pytest.mark.parametrize("case", LARGE, ids=[f"large-{i}" for i in range(len(LARGE))])
@pytest.mark.parametrize("op", ["max", "min"])
def test_large_window_values_and_grads(rng, case, op):
  x = ties(rng, (2, 3) + case[0])
  fn = getattr(jaxpool, f"{op}_pool")
  kw = dict(data_format="channels_first", **_kw(case))
  y = fn(x, **kw)
  np.testing.assert_array_equal(y, getattr(ref, f"{op}_pool")(x, *_ref_args(case)))
  g = randn(rng, y.shape)
  got = jax.jit(jax.grad(lambda v: jnp.sum(fn(v, **kw) * g)))(x)
  want = ref.max_pool_grad(x, g, *_ref_args(case), kind=op)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  avg = jaxpool.avg_pool(x, **kw)
  np.testing.assert_allclose(avg, ref.avg_pool(x, *_ref_args(case)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kw", [dict(window_shape=(3, 3), strides=1, padding=1),
                                dict(window_shape=(3, 3), strides=2, padding=1)])
def test_all_neg_inf_windows_grad_to_first_real_element(rng, kw):
  """Padded small windows take their gradient offsets per tile, with padding masked: a
  window of -inf elements routes its cotangent to its first real element (PyTorch)."""
  x = np.full((1, 2, 5, 6), -np.inf, np.float32)
  x[0, 1, 2:, 3:] = randn(rng, (3, 3))  # one channel partly finite
  y = jaxpool.max_pool(x, data_format="channels_first", **kw)
  g = randn(rng, y.shape)
  got = jax.jit(jax.grad(lambda v: jnp.sum(jaxpool.max_pool(
      v, data_format="channels_first", **kw) * g)))(x)
  want = ref.max_pool_grad(x, g, kw["window_shape"], kw["strides"], kw["padding"])
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_large_window_check_grads(rng):
  shape = (1, 2) + LARGE[0][0]
  n = int(np.prod(shape))
  with jax.enable_x64(True):
    x = jnp.asarray((rng.permutation(n).reshape(shape) / n).astype(np.float64))
    check_grads(lambda v: jaxpool.max_pool(v, data_format="channels_first", **_kw(LARGE[0])),
                (x,), order=2, modes=("rev",), eps=1e-4)


@pytest.mark.parametrize("case", [CASES[0], CASES[7], CASES[8], CASES[11]],
                         ids=[IDS[0], IDS[7], IDS[8], IDS[11]])
def test_check_grads(rng, case):
  # distinct values, so max pooling is differentiable at x
  n = int(np.prod((1, 2) + case[0]))
  x = (rng.permutation(n).reshape((1, 2) + case[0]) / n).astype(np.float64)
  with jax.enable_x64(True):
    x = jnp.asarray(x)
    # both modes for every op (second order: the hessian column of test_transforms.py)
    for fn in (jaxpool.max_pool, jaxpool.min_pool, jaxpool.avg_pool):
      check_grads(jax.jit(lambda v, fn=fn: fn(v, data_format="channels_first", **_kw(case))),
                  (x,), order=1, modes=("fwd", "rev"), eps=1e-4)
    check_grads(jax.jit(lambda v: jaxpool.lp_pool(v + 1, 2.0, data_format="channels_first",
                                                  **_kw(case))), (x,), order=1, eps=1e-4)


def test_avg_grad_vs_reference_jacobian(rng):
  x = randn(rng, (1, 1, 5, 6))
  kw = dict(window_shape=(3, 2), strides=(2, 2), padding=(1, 1), ceil_mode=True,
            count_include_pad=False)
  jac = jax.jacrev(lambda v: jaxpool.avg_pool(v, data_format="channels_first", **kw))(x)
  # reference Jacobian by finite differences of the (linear) reference
  base = ref.avg_pool(x, (3, 2), (2, 2), (1, 1), 1, True, count_include_pad=False)
  for i in np.ndindex(x.shape):
    e = np.zeros_like(x, dtype=np.float64)
    e[i] = 1.0
    col = ref.avg_pool(e, (3, 2), (2, 2), (1, 1), 1, True, count_include_pad=False)
    np.testing.assert_allclose(np.asarray(jac)[(...,) + i], col, rtol=1e-6, atol=1e-7)
  assert base.shape == jac.shape[:4]


def test_nan_gradient_goes_to_a_nan(rng):
  x = randn(rng, (1, 1, 4, 4))
  x[0, 0, 0, 1] = np.nan
  g = jax.grad(lambda v: jnp.sum(jaxpool.max_pool(v, (2, 2), data_format="channels_first")))(x)
  g = np.asarray(g)
  assert g[0, 0, 0, 1] == 1 and g[0, 0, :2, :2].sum() == 1
