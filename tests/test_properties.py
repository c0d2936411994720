"""hypothesis: random shapes and configurations against the reference, and algebra."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import jaxpool

SETTINGS = settings(max_examples=15, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def configs(draw, allow_dilation=True, allow_strings=True):
  d = draw(st.integers(1, 3))
  spatial = tuple(draw(st.integers(1, 8 if d < 3 else 5)) for _ in range(d))
  window = tuple(draw(st.integers(1, 4)) for _ in range(d))
  strides = draw(st.one_of(st.none(), st.integers(1, 3),
                           st.tuples(*[st.integers(1, 3)] * d)))
  forms = [st.integers(0, 1).map(lambda p: min(p, min(window) // 2)),
           st.tuples(*[st.integers(0, k // 2) for k in window]),
           st.tuples(*[st.tuples(st.integers(0, 2), st.integers(0, 2)) for _ in window])]
  if allow_strings:
    forms.append(st.sampled_from(["VALID", "SAME"]))
  padding = draw(st.one_of(*forms))
  dilation = draw(st.integers(1, 3)) if allow_dilation else 1
  return dict(
      spatial=spatial, window=window, strides=strides, padding=padding, dilation=dilation,
      ceil_mode=draw(st.booleans()),
      data_format=draw(st.sampled_from(["channels_last", "channels_first"])),
      batch=draw(st.sampled_from([(), (2,), (1, 2)])), channels=draw(st.integers(1, 3)))


def _valid(c):
  """Independent validity: every output >= 1 and no window reads only padding."""
  x = np.zeros((1, 1) + c["spatial"])
  sizes, strides, dilation, pads, outs = ref._geometry(x, c["window"], c["strides"],
                                                      c["padding"], c["dilation"],
                                                      c["ceil_mode"])
  if min(outs) < 1:
    return False
  for n, k, s, r, (lo, _), o in zip(sizes, c["window"], strides, dilation, pads, outs):
    for i in range(o):
      if not any(0 <= i * s - lo + j * r < n for j in range(k)):
        return False
  return True


def _data(c, seed, ties=False):
  rng = np.random.default_rng(seed)
  shape = c["batch"] + (c["channels"],) + c["spatial"]  # channels_first
  x = rng.integers(-2, 3, size=shape) if ties else rng.standard_normal(shape)
  x = x.astype(np.float32)
  xs = x if c["data_format"] == "channels_first" else np.moveaxis(x, len(c["batch"]), -1)
  flat = x.reshape((int(np.prod(c["batch"])),) + x.shape[len(c["batch"]):])
  return xs, flat


def _to_ref(y, c):
  y = np.asarray(y)
  if c["data_format"] == "channels_last":
    y = np.moveaxis(y, -1, len(c["batch"]))
  return y.reshape((int(np.prod(c["batch"])),) + y.shape[len(c["batch"]):])


def _kw(c):
  return dict(window_shape=c["window"], strides=c["strides"], padding=c["padding"],
              dilation=c["dilation"], ceil_mode=c["ceil_mode"], data_format=c["data_format"])


def _ref_args(c):
  return (c["window"], c["strides"], c["padding"], c["dilation"], c["ceil_mode"])


@SETTINGS
@given(configs(), st.integers(0, 2**16), st.booleans())
def test_max_with_indices_matches_reference_or_rejects(c, seed, ties):
  xs, flat = _data(c, seed, ties)
  if not _valid(c):
    with pytest.raises(ValueError):
      jaxpool.max_pool_with_indices(xs, **_kw(c))
    return
  v, i = jax.jit(lambda a: jaxpool.max_pool_with_indices(a, **_kw(c)))(xs)
  want_v, want_i = ref.max_pool_with_indices(flat, *_ref_args(c))
  np.testing.assert_array_equal(_to_ref(v, c), want_v)
  np.testing.assert_array_equal(_to_ref(i, c), want_i)


@SETTINGS
@given(configs(), st.integers(0, 2**16), st.booleans(), st.sampled_from([None, 1, 3]))
def test_avg_matches_reference(c, seed, include, override):
  assume(_valid(c))
  xs, flat = _data(c, seed)
  y = jaxpool.avg_pool(xs, count_include_pad=include, divisor_override=override, **_kw(c))
  want = ref.avg_pool(flat, *_ref_args(c), count_include_pad=include, divisor_override=override)
  np.testing.assert_allclose(_to_ref(y, c), want, rtol=1e-5, atol=1e-6)


@SETTINGS
@given(configs(), st.integers(0, 2**16), st.sampled_from([1.0, 2.0, 2.5]))
def test_lp_matches_reference(c, seed, p):
  assume(_valid(c))
  xs, flat = _data(c, seed)
  y = jaxpool.lp_pool(np.abs(xs) + 0.1, p, **_kw(c))
  np.testing.assert_allclose(_to_ref(y, c), ref.lp_pool(np.abs(flat) + 0.1, p, *_ref_args(c)),
                             rtol=1e-5, atol=1e-6)


@SETTINGS
@given(configs(), st.integers(0, 2**16))
def test_max_of_negation_is_negated_min(c, seed):
  assume(_valid(c))
  xs, _ = _data(c, seed)
  np.testing.assert_array_equal(jaxpool.max_pool(-xs, **_kw(c)),
                                -np.asarray(jaxpool.min_pool(xs, **_kw(c))))


@SETTINGS
@given(configs(), st.floats(-5, 5, width=32))
def test_avg_of_constant_without_pad_count_is_the_constant(c, value):
  assume(_valid(c))
  xs = np.full(_data(c, 0)[0].shape, value, np.float32)
  y = jaxpool.avg_pool(xs, count_include_pad=False, **_kw(c))
  np.testing.assert_allclose(y, value, rtol=1e-6, atol=1e-6)


@SETTINGS
@given(configs(allow_dilation=False, allow_strings=False), st.integers(0, 2**16))
def test_unpool_of_pool_keeps_maxima(c, seed):
  assume(_valid(c))
  xs, _ = _data(c, seed)
  kw = _kw(c)
  kw.pop("dilation")
  ceil = kw.pop("ceil_mode")
  v, i = jaxpool.max_pool_with_indices(xs, ceil_mode=ceil, **kw)
  try:
    out = jaxpool.max_unpool(v, i, output_size=c["spatial"], **kw)
  except ValueError as e:  # ceil_mode can put the input size out of unpool's range
    assert "out of range" in str(e)
    return
  out = np.asarray(out)
  kept = out != 0
  np.testing.assert_array_equal(out[kept], xs[kept])
  # every window's max appears in place
  assert np.isin(np.asarray(v)[np.asarray(v) != 0], out[kept]).all()


@st.composite
def adaptive_configs(draw):
  d = draw(st.integers(1, 3))
  spatial = tuple(draw(st.integers(1, 9 if d < 3 else 5)) for _ in range(d))
  size = tuple(draw(st.one_of(st.none(), st.integers(1, 2 * n + 1))) for n in spatial)
  return dict(spatial=spatial, size=size, batch=draw(st.sampled_from([(), (2,)])),
              channels=draw(st.integers(1, 3)),
              data_format=draw(st.sampled_from(["channels_last", "channels_first"])))


@SETTINGS
@given(adaptive_configs(), st.integers(0, 2**16), st.booleans())
def test_adaptive_matches_reference(c, seed, ties):
  xs, flat = _data(c, seed, ties)
  df = c["data_format"]
  avg = jaxpool.adaptive_avg_pool(xs, c["size"], data_format=df)
  np.testing.assert_allclose(_to_ref(avg, c), ref.adaptive_avg_pool(flat, c["size"]),
                             rtol=1e-5, atol=1e-6)
  v, i = jaxpool.adaptive_max_pool_with_indices(xs, c["size"], data_format=df)
  want_v, want_i = ref.adaptive_max_pool_with_indices(flat, c["size"])
  np.testing.assert_array_equal(_to_ref(v, c), want_v)
  np.testing.assert_array_equal(_to_ref(i, c), want_i)


@SETTINGS
@given(adaptive_configs(), st.integers(0, 2**16))
def test_adaptive_to_input_size_is_identity(c, seed):
  xs, _ = _data(c, seed)
  df = c["data_format"]
  np.testing.assert_array_equal(jaxpool.adaptive_avg_pool(xs, c["spatial"], data_format=df), xs)
  np.testing.assert_array_equal(jaxpool.adaptive_max_pool(xs, c["spatial"], data_format=df), xs)


@SETTINGS
@given(configs(), st.integers(0, 2**16))
def test_grad_of_max_sums_to_cotangent(c, seed):
  """Each window routes its whole cotangent to one element."""
  assume(_valid(c))
  xs, _ = _data(c, seed, ties=True)
  y = jaxpool.max_pool(xs, **_kw(c))
  g = np.random.default_rng(seed).standard_normal(y.shape).astype(np.float32)
  dx = jax.grad(lambda a: jnp.sum(jaxpool.max_pool(a, **_kw(c)) * g))(xs)
  np.testing.assert_allclose(np.sum(dx), np.sum(g), rtol=1e-4, atol=1e-4)
