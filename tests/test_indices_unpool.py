"""max_pool_with_indices and max_unpool against the reference."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref
from test_window import CASES, IDS, ROTATED, _kw, _ref_args
from util import LAYOUTS, from_layout, maybe_jit, randn, ties, to_layout

import jaxpool
from jaxpool import _scatter, _unpool
from jaxpool._engine.plan import Plan


@pytest.mark.parametrize("case,data_format,use_jit", ROTATED)
@pytest.mark.parametrize("data", ["random", "ties", "nan"])
def test_indices_vs_reference(rng, case, data_format, use_jit, data):
  shape = (2, 3) + case[0]
  x = ties(rng, shape) if data == "ties" else randn(rng, shape)
  if data == "nan":
    x[rng.random(shape) < 0.15] = np.nan
  f = maybe_jit(jaxpool.max_pool_with_indices, use_jit, data_format=data_format, **_kw(case))
  v, i = f(to_layout(x, data_format))
  assert i.dtype == jnp.int32 and i.shape == v.shape
  want_v, want_i = ref.max_pool_with_indices(x, *_ref_args(case))
  np.testing.assert_array_equal(from_layout(v, data_format), want_v)
  np.testing.assert_array_equal(from_layout(i, data_format), want_i)
  # values are bit-identical to max_pool
  m = jaxpool.max_pool(to_layout(x, data_format), data_format=data_format, **_kw(case))
  np.testing.assert_array_equal(np.asarray(v).view(np.uint32), np.asarray(m).view(np.uint32))


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int32])
def test_indices_integer(rng, dtype):
  info = np.iinfo(dtype)
  x = rng.integers(info.min, info.max, size=(2, 2, 6, 7), endpoint=True).astype(dtype)
  x[0, 0, :3, :3] = info.min  # a window of the dtype minimum, next to padding
  v, i = jaxpool.max_pool_with_indices(x, (3, 3), 2, 1, data_format="channels_first")
  want_v, want_i = ref.max_pool_with_indices(x, (3, 3), 2, 1)
  assert v.dtype == dtype
  np.testing.assert_array_equal(v, want_v)
  np.testing.assert_array_equal(i, want_i)


def test_all_neg_inf_window_points_to_real_element():
  x = np.full((1, 1, 3, 3), -np.inf, np.float32)
  v, i = jaxpool.max_pool_with_indices(x, (3, 3), 2, 1, data_format="channels_first")
  # PyTorch: the first real element of each window, never a padding position.
  np.testing.assert_array_equal(i[0, 0], [[0, 1], [3, 4]])  # windows start at 0 and 1
  assert np.all(v == -np.inf)


def test_values_grad_and_indices_no_grad(rng):
  x = randn(rng, (2, 8, 8, 3))

  def loss(v):
    vals, idx = jaxpool.max_pool_with_indices(v, (3, 3), 2, 1, dilation=2)
    return jnp.sum(vals ** 2) + jnp.sum(idx.astype(jnp.float32))

  def loss_ref(v):
    return jnp.sum(jaxpool.max_pool(v, (3, 3), 2, 1, dilation=2) ** 2)

  np.testing.assert_allclose(jax.grad(loss)(x), jax.grad(loss_ref)(x), rtol=1e-6)


@pytest.mark.parametrize("window,strides", [((2, 2), None), ((3, 2), (3, 2)), ((2, 2), 3),
                                            ((2, 3, 2), None)])
def test_one_pass_blocks(rng, window, strides):
  """Unpadded non-overlapping windows take values and indices from one variadic reduce:
  ties, NaN, -inf, integers, bool, bfloat16 and gradients (to the index) all agree with
  the reference."""
  shape = (2, 3) + (7, 8, 6)[:len(window)]
  x = ties(rng, shape)
  x[0, 0][(0,) * len(window)] = np.nan
  x[1, 0] = -np.inf
  x[1, 1][(slice(0, 2),) * len(window)] = [[-0.0, 0.0], [0.0, -0.0]] if len(window) == 2 else 0
  v, i = jaxpool.max_pool_with_indices(x, window, strides, data_format="channels_first")
  want_v, want_i = ref.max_pool_with_indices(x, window, strides)
  np.testing.assert_array_equal(v, want_v)
  np.testing.assert_array_equal(i, want_i)
  for dtype in (np.int8, np.bool_, jnp.bfloat16):
    xd = (x > 0) if dtype == np.bool_ else np.nan_to_num(x, neginf=-3).astype(dtype)
    vd, idd = jaxpool.max_pool_with_indices(xd, window, strides, data_format="channels_first")
    want_v, want_i = ref.max_pool_with_indices(np.asarray(xd, np.float32), window, strides)
    assert vd.dtype == xd.dtype
    np.testing.assert_array_equal(np.asarray(vd, np.float32), want_v)
    np.testing.assert_array_equal(idd, want_i)
  g = randn(rng, want_v.shape)
  x = np.nan_to_num(x, neginf=-5.0)
  dx = jax.grad(lambda a: jnp.sum(jaxpool.max_pool_with_indices(
      a, window, strides, data_format="channels_first")[0] * g))(x)
  np.testing.assert_array_equal(dx, ref.max_pool_grad(x, g, window, strides))
  x = randn(rng, shape)
  jax.test_util.check_grads(lambda a: jaxpool.max_pool_with_indices(
      a, window, strides, data_format="channels_first")[0], (x,), order=2, modes=["rev"])


def test_int32_overflow_is_a_value_error():
  x = jax.ShapeDtypeStruct((1, 50000, 50000, 1), jnp.float32)
  with pytest.raises(ValueError, match="int32"):
    jax.eval_shape(lambda v: jaxpool.max_pool_with_indices(v, (2, 2)), x)


# ----------------------------------------------------------------------------- unpool


# max_unpool has no dilation and cannot invert "SAME" (as PyTorch): those cases are excluded.
_UNPOOLABLE = [(c, i) for c, i in zip(CASES, IDS) if not isinstance(c[3], str) and c[4] == 1]


@pytest.mark.parametrize("case", [c for c, _ in _UNPOOLABLE], ids=[i for _, i in _UNPOOLABLE])
@pytest.mark.parametrize("data_format", LAYOUTS)
def test_round_trip_keeps_window_maxima(rng, case, data_format):
  x = randn(rng, (2, 3) + case[0])
  kw = _kw(case)
  kw.pop("dilation"), kw.pop("ceil_mode")
  v, i = jaxpool.max_pool_with_indices(to_layout(x, data_format), data_format=data_format,
                                       ceil_mode=case[5], **kw)
  out = jaxpool.max_unpool(v, i, output_size=case[0], data_format=data_format, **kw)
  got = from_layout(out, data_format)
  want = ref.max_unpool(*ref.max_pool_with_indices(x, *_ref_args(case)), case[0])
  np.testing.assert_array_equal(got, want)
  # every nonzero is an input element at the same place
  nz = got != 0
  np.testing.assert_array_equal(got[nz], x[nz])
  # the promise holds for these indices: the scatter-free lowering gives the same array
  fast = jaxpool.max_unpool(v, i, output_size=case[0], data_format=data_format,
                            indices_in_window=True, **kw)
  np.testing.assert_array_equal(from_layout(fast, data_format), want)


def _in_window_reference(values, indices, window, stride, pads, size):
  """Scatter, keeping only indices inside their own window (NumPy loops)."""
  kept = _kept_indices(values.shape[2:], indices, window, stride, pads, size)
  return ref.max_unpool(np.asarray(values), kept, size)


def _kept_indices(spatial, indices, window, stride, pads, size):
  """``indices`` with every index outside its own window (or out of range) set to -1."""
  indices = np.asarray(indices).copy()
  strides_flat = np.cumprod((1,) + tuple(size[::-1]))[:-1][::-1]
  for pos in np.ndindex(*spatial):
    lo = [o * s - p for o, s, (p, _) in zip(pos, stride, pads)]
    idx = indices[(slice(None), slice(None)) + pos]
    coords = [(idx // st) % n for st, n in zip(strides_flat, size)]
    inside = (idx >= 0) & (idx < np.prod(size))
    for q, a, k in zip(coords, lo, window):
      inside &= (q >= a) & (q < a + k)
    idx[~inside] = -1
    indices[(slice(None), slice(None)) + pos] = idx
  return indices


@pytest.mark.parametrize("moved", [False, True])
def test_constant_indices_are_checked_once_on_the_host(rng, moved):
  """Indices that are a constant of a traced program (closed over by a jitted decoder)
  get the in-window check on the host at trace time: in their windows, the program is
  the compare-and-select on every backend (no conditional for XLA to constant-fold,
  which took seconds on SegNet's indices; the select alone also beat the scatter on
  CUDA); otherwise it keeps the checked program (CPU) or the scatter. The result is the
  scatter's either way (NumPy reference)."""
  x = randn(rng, (2, 3, 8, 6))
  v, i = jaxpool.max_pool_with_indices(x, (2, 2), data_format="channels_first")
  i = np.asarray(i).copy()
  if moved:
    i[0, 0, 0, 0] = 13  # another window's position (row 2, column 1)
  f = jax.jit(lambda a: jaxpool.max_unpool(a, i, (2, 2), data_format="channels_first"))
  np.testing.assert_array_equal(f(v), ref.max_unpool(np.asarray(v), i, (8, 6)))
  hlo = f.lower(v).compile().as_text()
  assert ("conditional" in hlo or "scatter" in hlo) == moved


@pytest.mark.parametrize("data_format", LAYOUTS)
@pytest.mark.parametrize("geometry", [
    ((8,), (2,), (2,), ((0, 0),)),
    ((7, 9), (2, 3), (2, 3), ((1, 0), (0, 1))),
    ((9, 8), (2, 2), (3, 2), ((0, 0), (0, 0))),      # stride > window: gaps
    ((4, 6, 5), (2, 2, 1), (2, 2, 2), ((0, 0), (1, 1), (0, 0))),
], ids=["1d", "2d-pad", "2d-gap", "3d"])
@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_unpool_in_window(rng, data_format, geometry, dtype):
  size, window, stride, pads = geometry
  x = (rng.standard_normal((2, 3) + size) * 50).astype(dtype)
  kw = dict(window_shape=window, strides=stride, padding=pads)
  v, i = jaxpool.max_pool_with_indices(to_layout(x, data_format), data_format=data_format, **kw)
  scatter = jaxpool.max_unpool(v, i, output_size=size, data_format=data_format, **kw)
  f = jax.jit(lambda a, b: jaxpool.max_unpool(a, b, output_size=size, data_format=data_format,
                                              indices_in_window=True, **kw))
  fast = f(v, i)
  assert fast.dtype == dtype
  np.testing.assert_array_equal(fast, scatter)
  # indices outside their own window (or out of range) are dropped
  bad = from_layout(i, data_format).copy()
  bad.reshape(-1)[::3] += 1
  bad.reshape(-1)[::7] = -1
  vv = from_layout(v, data_format)
  got = from_layout(f(v, to_layout(bad, data_format)), data_format)
  np.testing.assert_array_equal(got, _in_window_reference(vv, bad, window, stride, pads, size))
  if dtype == np.float32:  # the gradient gathers at the kept indices, like the scatter's
    g = randn(rng, scatter.shape)
    ga = jax.grad(lambda a: jnp.sum(jaxpool.max_unpool(
        a, i, output_size=size, data_format=data_format, **kw) * g))(v)
    gb = jax.grad(lambda a: jnp.sum(f(a, i) * g))(v)
    np.testing.assert_array_equal(ga, gb)
    # with indices outside their window: 0 for the dropped values, g at the kept ones
    kept = _kept_indices(vv.shape[2:], bad, window, stride, pads, size)
    gc = jax.jit(jax.grad(lambda a: jnp.sum(jaxpool.max_unpool(  # jit: -1s are dropped
        a, to_layout(kept, data_format), output_size=size, data_format=data_format,
        **kw) * g)))(v)
    gd = jax.grad(lambda a: jnp.sum(f(a, to_layout(bad, data_format)) * g))(v)
    np.testing.assert_array_equal(gd, gc)


@pytest.mark.parametrize("geometry", [
    ((8,), (2,), (2,), ((0, 0),)),
    ((7, 9), (2, 3), (2, 3), ((1, 0), (0, 1))),
    ((9, 8), (2, 2), (3, 2), ((0, 0), (0, 0))),
    ((4, 6, 5), (2, 2, 1), (2, 2, 2), ((0, 0), (1, 1), (0, 0))),
], ids=["1d", "2d-pad", "2d-gap", "3d"])
@pytest.mark.parametrize("use_jit", [False, True])
def test_unpool_default_checks_indices_first(rng, geometry, use_jit):
  """Without the promise, non-overlapping windows on a lone CPU device check the indices
  and take the scatter-free lowering only when all lie in their own window: both
  branches give the scatter's result and gradient (NumPy reference)."""
  size, window, stride, pads = geometry
  x = randn(rng, (2, 3) + size)
  kw = dict(window_shape=window, strides=stride, padding=pads, output_size=size,
            data_format="channels_first")
  v, i = jaxpool.max_pool_with_indices(x, window, stride, pads,
                                       data_format="channels_first")
  f = maybe_jit(jaxpool.max_unpool, use_jit, **kw)
  g = randn(rng, (2, 3) + size)
  m = int(np.prod(size))
  moved = np.asarray(i).reshape(6, -1).copy()
  for row in moved:  # every 5th index to the next position, where that one is free
    for k in range(0, row.size, 5):
      if (row[k] + 1) % m not in row:
        row[k] = (row[k] + 1) % m
  if use_jit:
    moved[:, 1] = -1  # and one index dropped per slice (eagerly that is an error)
  for idx in (np.asarray(i), moved.reshape(i.shape)):
    np.testing.assert_array_equal(f(v, idx), ref.max_unpool(np.asarray(v), idx, size))
    dv = jax.grad(lambda a, idx=idx: jnp.sum(f(a, idx) * g))(v)
    flat_g = g.reshape(6, -1)
    want = np.where(idx >= 0, np.take_along_axis(
        flat_g, np.clip(idx.reshape(6, -1), 0, m - 1), 1).reshape(idx.shape), 0)
    np.testing.assert_array_equal(dv, want)
  hlo = jax.jit(lambda a, b: jaxpool.max_unpool(a, b, **kw)).lower(v, i).compile().as_text()
  # the check is the lone CPU device's plan; CUDA keeps the scatter (run on an H100)
  assert ("conditional" in hlo) == (jax.default_backend() == "cpu")


@pytest.mark.parametrize("geometry, planned", [
    (((9, 10), (3, 3), (2, 2), ((1, 1), (1, 1))), True),
    (((9, 8), (3, 2), (2, 2), ((0, 0), (1, 0))), True),
    (((17,), (5,), (2,), ((2, 2),)), True),
    (((16,), (3,), (1,), ((1, 1),)), True),
    (((7, 8), (3, 3), (1, 1), ((1, 1), (1, 1))), False),
    (((8, 9), (2, 4), (1, 2), ((0, 0), (1, 2))), False),
    (((4, 5, 6), (2, 2, 2), (1, 1, 1), ((0, 0), (0, 0), (0, 0))), False),
], ids=["3x3s2p1", "3x2s2", "1d-5s2p2", "1d-3s1p1", "3x3s1p1", "2x4-mixed", "3d-2s1"])
def test_unpool_in_window_overlapping_select(rng, geometry, planned):
  """Promised indices of overlapping windows by one compare-and-select per window
  covering a position (planned on a lone CPU device for small strided or 1-D windows
  with 16+ channels after them; forced elsewhere). Against NumPy's serial scatter:
  values that share an index (windows overlap) leave the window last in row-major
  order; an index outside its window is dropped; the gradient gathers the cotangent at
  each kept index."""
  size, window, stride, pads = geometry
  kw = dict(window_shape=window, strides=stride, padding=pads, output_size=size)
  x = randn(rng, (2, 16) + size)
  _, i = jaxpool.max_pool_with_indices(to_layout(x, "channels_last"), window, stride, pads)
  i = from_layout(i, "channels_last")
  v = randn(rng, i.shape)  # unequal values where windows share a maximum
  if planned and len(size) == 1:  # integer values take the same plan
    v = np.round(v * 100).astype(np.int32)
  axes = tuple(range(1, 1 + len(size)))
  select = None if planned else Plan(unpool="select", address="flat")
  f = jax.jit(lambda a, b: jaxpool.max_unpool(a, b, indices_in_window=True, **kw)
              if planned else _unpool.unpool(a, b, (axes, window, stride, pads, size),
                                             a.shape[:1] + size + a.shape[-1:], True,
                                             plan=select))
  to_cl = functools.partial(to_layout, data_format="channels_last")
  np.testing.assert_array_equal(from_layout(f(to_cl(v), to_cl(i)), "channels_last"),
                                ref.max_unpool(v, i, size))
  bad = i.copy()
  bad.reshape(-1)[::3] += 1
  bad.reshape(-1)[::7] = -1
  np.testing.assert_array_equal(from_layout(f(to_cl(v), to_cl(bad)), "channels_last"),
                                _in_window_reference(v, bad, window, stride, pads, size))
  hlo = f.lower(to_cl(v), to_cl(i)).compile().as_text()
  # planned: the lone CPU device's plan (CUDA keeps the scatter); forced: everywhere
  assert ("scatter" in hlo) == (planned and jax.default_backend() != "cpu")
  if v.dtype == np.int32:
    return
  g = randn(rng, (2, 16) + size)
  kept = _kept_indices(v.shape[2:], bad, window, stride, pads, size)
  dv = jax.grad(lambda a: jnp.sum(f(a, to_cl(bad)) * to_cl(g)))(to_cl(v))
  flat_g, m = g.reshape(32, -1), int(np.prod(size))
  want = np.where(kept >= 0, np.take_along_axis(
      flat_g, np.clip(kept.reshape(32, -1), 0, m - 1), 1).reshape(kept.shape), 0)
  np.testing.assert_array_equal(from_layout(dv, "channels_last"), want)


@pytest.mark.parametrize("shape", [(3, 5), (8, 3), (9, 2, 4), (2, 17, 3), (20,), (4, 7, 8, 5)])
def test_count_adds_every_flag(rng, shape):
  """The in-window check's count (eight slices of an axis added, then a reduce) sums
  every element, those past the last whole slice too."""
  flags = (rng.random(shape) < 0.3).astype(np.int32)
  assert int(jax.jit(_unpool._count)(flags)) == flags.sum()
  last = np.zeros(shape, np.int32)
  last.reshape(-1)[-1] = 1  # one flag in the remainder (or the last slice)
  assert int(jax.jit(_unpool._count)(last)) == 1
  batch = np.stack([flags, last, flags * 0])
  np.testing.assert_array_equal(jax.vmap(_unpool._count)(batch), [flags.sum(), 1, 0])


def test_unpool_check_sees_an_index_in_the_last_rows(rng):
  """An index outside its window in the rows past the check's last whole slice still
  sends the unpooling to the scatter (NumPy reference)."""
  x = randn(rng, (2, 3, 18, 4))  # 9 pooled rows: eight slices of one, and one more
  v, i = jaxpool.max_pool_with_indices(x, (2, 2), data_format="channels_first")
  moved = np.asarray(i).copy()
  # the last row's first index onto a position of the first window that is not its max
  first = moved[:, :, 0, 0]
  moved[:, :, -1, 0] = np.where(first == 0, 1, 0)
  kw = dict(window_shape=(2, 2), output_size=(18, 4), data_format="channels_first")
  got = jax.jit(lambda a, b: jaxpool.max_unpool(a, b, **kw))(v, moved)
  want = ref.max_unpool(np.asarray(v), moved, (18, 4))
  np.testing.assert_array_equal(got, want)
  # the scatter writes it where the select would have dropped it
  assert np.all(want.reshape(6, -1)[np.arange(6), np.where(first == 0, 1, 0).ravel()]
                == np.asarray(v)[:, :, -1, 0].ravel())


def test_unpool_in_window_overlapping_windows_scatter(rng):
  """Overlapping windows with few channels after them (and larger windows, or several
  devices) keep the scatter even with the promise: same result."""
  x = randn(rng, (2, 7, 7, 3))
  v, i = jaxpool.max_pool_with_indices(x, (3, 3), 2, 1)
  bad = np.asarray(i).copy()
  bad[0, 0, 0, 0] = 48  # far outside its window: still written by the scatter
  want = jaxpool.max_unpool(v, bad, (3, 3), 2, 1, output_size=(7, 7))
  got = jaxpool.max_unpool(v, bad, (3, 3), 2, 1, output_size=(7, 7), indices_in_window=True)
  np.testing.assert_array_equal(got, want)
  assert got[0, 6, 6, 0] == v[0, 0, 0, 0]


@pytest.mark.parametrize("data_format", LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.uint8])
def test_unpool_scatter_semantics(rng, data_format, dtype):
  v = (rng.random((2, 3, 4, 5)) * 100).astype(dtype)  # (N, C, H, W)
  idx = rng.integers(-3, 9 * 11 + 3, size=v.shape)  # includes out-of-range
  unpool = jax.jit(functools.partial(jaxpool.max_unpool, window_shape=(2, 2),
                                     output_size=(9, 11), data_format=data_format))
  with pytest.raises(ValueError, match=r"indices must lie in \[0, 99\)"):  # eagerly
    jaxpool.max_unpool(to_layout(v, data_format), to_layout(idx, data_format), (2, 2),
                       output_size=(9, 11), data_format=data_format)
  out = unpool(to_layout(v, data_format), to_layout(idx, data_format))  # jit: dropped
  assert out.dtype == dtype
  got = from_layout(out, data_format)
  # unique indices per slice so "set" is well defined
  for n in range(2):
    for c in range(3):
      _, first = np.unique(idx[n, c].ravel(), return_index=True)
      keep = np.zeros(idx[n, c].size, bool)
      keep[first] = True
      idx[n, c].ravel()[~keep] = -1
  out = unpool(to_layout(v, data_format), to_layout(idx, data_format))
  np.testing.assert_array_equal(from_layout(out, data_format), ref.max_unpool(v, idx, (9, 11)))
  assert got.shape == (2, 3, 9, 11)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_unpool_lowerings_agree(rng, axis):
  """The batched scatter/gather (GPU, TPU, several CPU devices) and the flattened one (a
  lone CPU device) give the same output and gradient, invalid indices included."""

  shape = [3, 4, 5]
  shape[axis] = 6
  v = randn(rng, tuple(shape))
  m = 10
  idx = rng.integers(-3, m + 3, size=v.shape).astype(np.int32)
  for n in np.ndindex(*(s for a, s in enumerate(v.shape) if a != axis)):
    sl = list(n)
    sl.insert(axis, slice(None))
    col = idx[tuple(sl)]
    _, first = np.unique(col, return_index=True)
    dup = np.ones(col.size, bool)
    dup[first] = False
    col[dup] = m + 1  # unique per slice, so which duplicate wins does not matter
    idx[tuple(sl)] = col
  want = np.zeros(v.shape[:axis] + (m,) + v.shape[axis + 1:], np.float32)
  ok = (idx >= 0) & (idx < m)
  for pos in zip(*np.nonzero(ok)):
    dst = list(pos)
    dst[axis] = idx[pos]
    want[tuple(dst)] = v[pos]
  g = randn(rng, want.shape)
  want_grad = np.where(ok, np.take_along_axis(g, np.clip(idx, 0, m - 1), axis), 0)
  for scatter, gather in [(_scatter.scatter_batched, _scatter.gather_batched),
                          (_scatter.scatter_flat, _scatter.gather_flat)]:
    np.testing.assert_array_equal(jax.jit(scatter, static_argnums=(2, 3))(v, idx, m, axis),
                                  want)
    np.testing.assert_array_equal(jax.jit(gather, static_argnums=2)(g, idx, axis), want_grad)


def test_unpool_default_size_and_batchless(rng):
  v = randn(rng, (3, 4, 5))  # unbatched (H, W, C)
  i = rng.integers(0, 5 * 7, size=v.shape)  # fits the smallest output below
  assert jaxpool.max_unpool(v, i, (3, 3), 2, 1).shape == (5, 7, 5)  # (3-1)*2-2+3
  assert jaxpool.max_unpool(v, i, (2, 2)).shape == (6, 8, 5)
  assert jaxpool.max_unpool(v, i, (2, 2), output_size=(7, 9)).shape == (7, 9, 5)


def test_unpool_grad_gathers(rng):
  v = randn(rng, (2, 4, 4, 3))
  i = rng.integers(0, 64, size=v.shape).astype(np.int32)
  g = randn(rng, (2, 8, 8, 3))
  got = jax.grad(lambda a: jnp.sum(jaxpool.max_unpool(a, i, (2, 2)) * g))(v)
  want = np.take_along_axis(g.reshape(2, 64, 3), i.reshape(2, 16, 3), axis=1).reshape(v.shape)
  np.testing.assert_allclose(got, want)


def test_unpool_under_vmap_and_jit(rng):
  x = randn(rng, (4, 2, 8, 8, 3))
  f = jax.jit(jax.vmap(lambda a: jaxpool.max_unpool(*jaxpool.max_pool_with_indices(a, (2, 2)),
                                                    (2, 2))))
  got = f(x)
  want = jaxpool.max_unpool(*jaxpool.max_pool_with_indices(x, (2, 2)), (2, 2))
  np.testing.assert_array_equal(got, want)


def test_offset_that_only_reads_padding(rng):
  """Dilation can make one window offset read padding for every output (found by the
  PyTorch fixtures): it must never be chosen, and gradients stay exact."""
  x = randn(rng, (2, 3, 6, 6))
  kw = dict(window_shape=(3, 4), strides=(2, 4), padding=(0, 2), dilation=2)
  v, i = jaxpool.max_pool_with_indices(x, data_format="channels_first", **kw)
  want_v, want_i = ref.max_pool_with_indices(x, (3, 4), (2, 4), (0, 2), 2)
  np.testing.assert_array_equal(v, want_v)
  np.testing.assert_array_equal(i, want_i)
  g = randn(rng, v.shape)
  dx = jax.grad(lambda a: jnp.sum(jaxpool.max_pool(a, data_format="channels_first", **kw) * g))(x)
  np.testing.assert_allclose(dx, ref.max_pool_grad(x, g, (3, 4), (2, 4), (0, 2), 2), atol=1e-6)
