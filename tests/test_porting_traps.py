"""Where a PyTorch user porting a model used to get silently wrong numbers: each trap is
now either right or a clear error."""

import flax.nnx as fnnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

import jaxpool
from jaxpool import nnx as pn


def _x(shape, seed=0):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# --- global and channel pooling no longer guess the spatial rank


def test_global_pool_under_vmap_reduces_the_spatial_dims():
  x = _x((4, 6, 7, 3))
  got = jax.vmap(lambda v: jaxpool.global_avg_pool(v, 2))(x)  # each example is (6, 7, 3)
  assert got.shape == (4, 3)
  np.testing.assert_allclose(got, x.mean(axis=(1, 2)), rtol=1e-5)
  got = jax.vmap(lambda v: jaxpool.global_max_pool(v, 2))(x)
  np.testing.assert_array_equal(got, x.max(axis=(1, 2)))


def test_global_pool_unbatched_and_two_batch_axes():
  x = _x((6, 7, 3))
  np.testing.assert_allclose(jaxpool.global_avg_pool(x, 2), x.mean(axis=(0, 1)), rtol=1e-5)
  y = _x((2, 4, 6, 7, 3))
  assert jaxpool.global_max_pool(y, 2).shape == (2, 4, 3)
  np.testing.assert_array_equal(jaxpool.global_max_pool(y, 2), y.max(axis=(2, 3)))


def test_nnx_global_pool_under_vmap():
  x = _x((4, 6, 7, 3))
  module = pn.GlobalAvgPool(2)
  got = fnnx.vmap(lambda m, v: m(v), in_axes=(None, 0))(module, x)
  np.testing.assert_allclose(got, x.mean(axis=(1, 2)), rtol=1e-5)


@pytest.mark.parametrize("fn", [jaxpool.global_avg_pool, jaxpool.global_max_pool])
def test_global_pool_without_num_spatial_dims_is_an_error(fn):
  with pytest.raises(TypeError, match="num_spatial_dims"):
    fn(_x((2, 6, 7, 3)))
  with pytest.raises(TypeError, match="num_spatial_dims must be an int >= 1"):
    fn(_x((2, 6, 7, 3)), None)


def test_channel_pool_channels_first_unbatched():
  x = _x((3, 6, 7))  # (C, H, W)
  y = jaxpool.channel_pool(x, "max", data_format="channels_first", num_spatial_dims=2)
  assert y.shape == (1, 6, 7)
  np.testing.assert_array_equal(y, x.max(axis=0, keepdims=True))
  with pytest.raises(TypeError, match="num_spatial_dims"):
    jaxpool.channel_pool(x, "max", data_format="channels_first")


def test_channel_pool_mean_is_avg():
  x = _x((2, 5, 4, 3))
  np.testing.assert_array_equal(jaxpool.channel_pool(x, "mean"), jaxpool.channel_pool(x, "avg"))
  np.testing.assert_allclose(jaxpool.channel_pool(x, "mean"), x.mean(-1, keepdims=True),
                             rtol=1e-6)


def test_channel_max_ties_follow_torch_max_not_amax():
  """``torch.max(x, dim=1)`` sends a tie's whole gradient to the first channel."""
  x = jnp.array([[[2.0, 2.0, 1.0]]])  # one position, channels tied at 2
  g = jax.grad(lambda v: jaxpool.channel_pool(v, "max").sum())(x)
  np.testing.assert_array_equal(g[0, 0], [1.0, 0.0, 0.0])


# --- max_unpool: indices that do not fit the output are an error, not a scramble


def _odd_pool():
  x = _x((2, 15, 17, 3))
  v, i = jaxpool.max_pool_with_indices(x, (2, 2))
  return x, v, i


def test_unpool_default_size_after_odd_input_raises_eagerly():
  _, v, i = _odd_pool()
  with pytest.raises(ValueError, match=r"indices must lie in \[0, 224\).*output_size=x.shape"):
    jaxpool.max_unpool(v, i, (2, 2))


@pytest.mark.parametrize("errors", ["index_checks", "all_checks"])
def test_unpool_bad_indices_are_a_checkify_error(errors):
  _, v, i = _odd_pool()
  errors = getattr(checkify, errors)
  checked = checkify.checkify(jax.jit(lambda v, i: jaxpool.max_unpool(v, i, (2, 2))),
                              errors=errors)
  err, _ = checked(v, i)
  assert err.get() is not None and "out-of-bounds" in err.get()
  with pytest.raises(checkify.JaxRuntimeError):
    err.throw()
  ok, _ = checkify.checkify(jax.jit(lambda v, i: jaxpool.max_unpool(v, i, (2, 2),
                                                                    output_size=(15, 17))),
                            errors=errors)(v, i)
  assert ok.get() is None
  negative = checkify.checkify(jax.jit(lambda v, i: jaxpool.max_unpool(v, i, (2, 2),
                                                                       output_size=(15, 17))),
                               errors=errors)(v, jnp.asarray(i).at[0, 0, 0, 0].set(-1))[0]
  assert negative.get() is not None


def test_unpool_accepts_the_pooled_inputs_shape():
  x, v, i = _odd_pool()
  full = jaxpool.max_unpool(v, i, (2, 2), output_size=x.shape)
  spatial = jaxpool.max_unpool(v, i, (2, 2), output_size=(15, 17))
  assert full.shape == x.shape
  np.testing.assert_array_equal(full, spatial)
  # every window maximum is back in place
  back = np.take_along_axis(np.asarray(full).reshape(2, -1, 3),
                            np.asarray(i).reshape(2, -1, 3), axis=1)
  np.testing.assert_array_equal(back, np.asarray(v).reshape(2, -1, 3))


def test_unpool_wrong_window_names_the_likely_cause():
  x = _x((2, 14, 14, 3))
  v, i = jaxpool.max_pool_with_indices(x, (2, 2))
  with pytest.raises(ValueError, match="may not match the pooling that produced the indices"):
    jaxpool.max_unpool(v, i, (3, 3), output_size=x.shape)


@pytest.mark.parametrize("call", [
    lambda x: jaxpool.max_pool(x, 3),
    lambda x: jaxpool.avg_pool(x, 3),
    lambda x: jaxpool.adaptive_max_pool(x, 1),
])
def test_bare_int_shows_the_tuple_to_write(call):
  with pytest.raises(TypeError, match=r"did you mean \((\d), \1\)\?"):
    call(_x((2, 8, 8, 3)))
