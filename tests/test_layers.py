"""GeM, average+max and blur pooling: against NumPy references, recorded PyTorch 2.13.0
(timm's formulas) and kornia 0.9.0 answers, live torch/kornia when installed, and the
modules (GeMPool's learnable ``p``)."""

import json
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from flax import nnx
from torch_layers import OPS, compare, make_input, run_torch, sample_case
from util import LAYOUTS, from_layout, recorded, to_layout

import jaxpool
import jaxpool.linen as L
import jaxpool.nnx as N

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "torch_layers.npz"


RECORDED = list(recorded(FIXTURES))


def test_fixtures_cover_every_op():
  assert {p.values[0]["op"] for p in RECORDED} == set(OPS)
  meta = json.loads(str(np.load(FIXTURES)["meta"]))
  assert meta["torch"].startswith("2.13.0") and meta["kornia"] == "0.9.0"


@pytest.mark.parametrize("case,x,torch_out,data_format", RECORDED)
def test_recorded_parity(case, x, torch_out, data_format):
  compare(case, x, torch_out, data_format)


@pytest.mark.parametrize("op", OPS)
def test_live_parity(op):
  pytest.importorskip("torch", exc_type=ImportError)
  if op in ("blur", "max_blur"):
    pytest.importorskip("kornia", exc_type=ImportError)
  rng = np.random.default_rng(9)
  for i in range(2):
    case = sample_case(rng, op)
    x = make_input(case, seed=30_000 + i)
    compare(case, x, run_torch(case, x), LAYOUTS[i % 2])


@pytest.mark.parametrize("data_format", LAYOUTS)
@pytest.mark.parametrize("spatial,kernel,strides", [((9,), (3,), (2,)), ((7, 8), (4, 2), (2, 3)),
                                                    ((5, 6, 4), (3, 3, 3), (2, 1, 2)),
                                                    ((6, 5), (1, 1), (1, 1))])
def test_blur_pool_matches_reference(rng, spatial, kernel, strides, data_format):
  x = rng.standard_normal((2, 3) + spatial).astype(np.float32)
  got = jax.jit(lambda v: jaxpool.blur_pool(v, kernel, strides, data_format=data_format))(
      to_layout(x, data_format))
  np.testing.assert_allclose(from_layout(got, data_format),
                             reference.blur_pool(x, kernel, strides), rtol=1e-5, atol=1e-6)


def test_max_blur_pool_is_blur_of_stride_one_max(rng):
  x = rng.standard_normal((2, 9, 7, 3)).astype(np.float32)
  got = jaxpool.max_blur_pool(x, (3, 3), (2, 2), max_pool_size=(2, 3))
  want = jaxpool.blur_pool(jaxpool.max_pool(x, (2, 3), 1), (3, 3), 2)
  chex.assert_trees_all_equal(got, want)


@pytest.mark.parametrize("p", [1.0, 2.5, 3.0])
def test_gem_matches_reference(rng, p):
  x = rng.standard_normal((2, 4, 5, 3, 2)).astype(np.float32)
  got = jaxpool.gem_pool(x, 3, p, data_format="channels_first")
  np.testing.assert_allclose(got, reference.gem_pool(x, p), rtol=1e-5)
  one = jaxpool.gem_pool(np.abs(x) + 0.5, 3, 1.0, data_format="channels_first")
  np.testing.assert_allclose(one, jaxpool.global_avg_pool(np.abs(x) + 0.5, 3,
                                                          data_format="channels_first"),
                             rtol=1e-6)


def test_gem_p_is_differentiable_and_traced(rng):
  x = np.abs(rng.standard_normal((2, 6, 6, 3))) + 0.1
  with jax.enable_x64(True):
    def f(p):
      return jnp.sum(jaxpool.gem_pool(x, 2, p) ** 2)
    grad = jax.jit(jax.grad(f))(3.0)
    numeric = (f(3.0 + 1e-6) - f(3.0 - 1e-6)) / 2e-6
  np.testing.assert_allclose(grad, numeric, rtol=1e-6)


@pytest.mark.parametrize("size", [(1, 1), (3, 4), (9, 2)])
def test_avgmax_match_their_parts(rng, size):
  x = rng.standard_normal((2, 7, 6, 3)).astype(np.float32)
  avg, mx = jaxpool.adaptive_avg_pool(x, size), jaxpool.adaptive_max_pool(x, size)
  np.testing.assert_allclose(jaxpool.adaptive_avgmax_pool(x, size), 0.5 * (avg + mx),
                             rtol=1e-6)
  chex.assert_trees_all_equal(jaxpool.adaptive_catavgmax_pool(x, size),
                              jnp.concatenate([avg, mx], -1))
  cf = jaxpool.adaptive_catavgmax_pool(np.moveaxis(x, -1, 1), size,
                                       data_format="channels_first")
  chex.assert_trees_all_equal(np.moveaxis(np.asarray(cf), 1, -1), jnp.concatenate([avg, mx], -1))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, np.float16])
def test_half_precision_keeps_its_dtype(rng, dtype):
  x = jnp.asarray(np.abs(rng.standard_normal((2, 8, 8, 3))) + 0.1).astype(dtype)
  for y in (jaxpool.gem_pool(x, 2), jaxpool.blur_pool(x, 3), jaxpool.max_blur_pool(x, 3),
            jaxpool.adaptive_avgmax_pool(x, (2, 2)), jaxpool.adaptive_catavgmax_pool(x, (2, 2))):
    assert y.dtype == dtype


def test_modules_equal_the_functions(rng):
  x = np.abs(rng.standard_normal((2, 9, 8, 3)).astype(np.float32)) + 0.1
  pairs = [
      ("AdaptiveAvgMaxPool", dict(output_size=(3, 2)), jaxpool.adaptive_avgmax_pool((x), (3, 2))),
      ("AdaptiveCatAvgMaxPool", dict(output_size=(1, 1)),
       jaxpool.adaptive_catavgmax_pool(x, (1, 1))),
      ("BlurPool", dict(kernel_size=3), jaxpool.blur_pool(x, 3)),
      ("MaxBlurPool", dict(kernel_size=(4, 4), strides=1, max_pool_size=3),
       jaxpool.max_blur_pool(x, (4, 4), 1, max_pool_size=3)),
      ("GeMPool", dict(num_spatial_dims=2, p=2.0, learnable=False), jaxpool.gem_pool(x, 2, 2.0)),
  ]
  for name, kw, want in pairs:
    chex.assert_trees_all_close(getattr(L, name)(**kw).apply({}, x), want, rtol=1e-6)
    chex.assert_trees_all_close(getattr(N, name)(**kw)(x), want, rtol=1e-6)


def test_gem_modules_learn_p(rng):
  x = np.abs(rng.standard_normal((2, 6, 6, 3)).astype(np.float32)) + 0.1
  module = L.GeMPool(2, p=4.0)
  variables = module.init(jax.random.key(0), x)
  assert float(variables["params"]["p"]) == 4.0
  np.testing.assert_allclose(module.apply(variables, x), jaxpool.gem_pool(x, 2, 4.0), rtol=1e-6)
  grad = jax.grad(lambda v: jnp.sum(module.apply(v, x) ** 2))(variables)["params"]["p"]
  assert np.isfinite(grad) and grad != 0

  layer = N.GeMPool(2, p=4.0)
  assert isinstance(layer.p, nnx.Param) and float(layer.p[...]) == 4.0
  np.testing.assert_allclose(layer(x), jaxpool.gem_pool(x, 2, 4.0), rtol=1e-6)
  grads = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(layer)
  np.testing.assert_allclose(grads.p[...], grad, rtol=1e-5)
  assert jax.tree.leaves(nnx.state(N.GeMPool(2, learnable=False))) == []


# ------------------------------------------------------------------ fractional max


@pytest.mark.parametrize("data_format", LAYOUTS)
@pytest.mark.parametrize("spatial,window,out", [((11,), (3,), (5,)), ((9, 7), (2, 3), (4, 5)),
                                                ((6, 5, 7), (2, 2, 3), (3, 2, 4)),
                                                ((5, 4, 4, 3), (2, 1, 2, 1), (2, 3, 2, 3))])
def test_fractional_matches_reference(rng, spatial, window, out, data_format):
  x = rng.integers(-2, 3, size=(2, 3) + spatial).astype(np.float32)  # ties
  u = rng.random((2, 3, len(spatial))).astype(np.float32)
  v, i = jax.jit(lambda a, s: jaxpool.fractional_max_pool_with_indices(
      a, window, out, samples=s, data_format=data_format))(to_layout(x, data_format), u)
  want_v, want_i = reference.fractional_max_pool_with_indices(x, window, out, u)
  np.testing.assert_array_equal(from_layout(v, data_format), want_v)
  np.testing.assert_array_equal(from_layout(i, data_format), want_i)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_fractional_starts_stay_within_the_static_candidates(rng, dtype):
  """The lowering picks each runtime start among a few static candidates; every start
  PyTorch's arithmetic gives in ``dtype`` must be one of them (else a window would
  silently shift)."""
  from jaxpool._fractional import _candidates, _starts

  u = np.concatenate([rng.random(20000), [0.0, 0.5, 1 - 2.0**-24, 1 - 2.0**-8]])
  for size, out, k in [(56, 28, 2), (97, 13, 5), (300, 299, 2), (1000, 700, 3), (9, 4, 2)]:
    starts = np.asarray(_starts(jnp.asarray(u, dtype), size, out, k))
    first, count = _candidates(size, out, k, dtype)
    assert (starts >= first).all() and (starts < first + count).all(), (size, out, k)


def test_fractional_long_axis_with_nan(rng):
  x = rng.standard_normal((2, 3, 200)).astype(np.float32)
  x[rng.random(x.shape) < 0.05] = np.nan
  u = rng.random((2, 3, 1)).astype(np.float32)
  v, i = jaxpool.fractional_max_pool_with_indices(x, (3,), (150,), samples=u,
                                                  data_format="channels_first")
  want_v, want_i = reference.fractional_max_pool_with_indices(x, (3,), (150,), u)
  np.testing.assert_array_equal(v, want_v)
  np.testing.assert_array_equal(i, want_i)


def test_fractional_key_ratio_and_one_compile(rng):
  x = rng.standard_normal((2, 10, 9, 3)).astype(np.float32)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(v, u):
    return jax.value_and_grad(lambda a: jnp.sum(jaxpool.fractional_max_pool(
        a, (2, 2), output_ratio=(0.5, 0.7), samples=u) ** 2))(v)

  chex.clear_trace_counter()
  grads = [step(x, np.random.default_rng(s).random((2, 3, 2)).astype(np.float32))[1]
           for s in range(3)]
  assert not np.array_equal(grads[0], grads[1])
  a = jaxpool.fractional_max_pool(x, (2, 2), output_ratio=0.5, key=jax.random.key(0))
  b = jaxpool.fractional_max_pool(x, (2, 2), output_ratio=0.5, key=jax.random.key(0))
  c = jaxpool.fractional_max_pool(x, (2, 2), output_ratio=0.5, key=jax.random.key(1))
  assert a.shape == (2, 5, 4, 3)
  chex.assert_trees_all_equal(a, b)
  assert not np.array_equal(a, c)


def test_fractional_integer_input(rng):
  x = rng.integers(-50, 50, size=(2, 8, 8, 3)).astype(np.int32)
  u = rng.random((2, 3, 2)).astype(np.float32)
  v, i = jaxpool.fractional_max_pool_with_indices(x, (2, 2), (4, 4), samples=u)
  want_v, want_i = reference.fractional_max_pool_with_indices(np.moveaxis(x, -1, 1), (2, 2),
                                                              (4, 4), u)
  assert v.dtype == jnp.int32
  np.testing.assert_array_equal(np.moveaxis(np.asarray(v), -1, 1), want_v)
  np.testing.assert_array_equal(np.moveaxis(np.asarray(i), -1, 1), want_i)


def test_fractional_modules_take_randomness_the_flax_way(rng):
  x = rng.standard_normal((2, 9, 9, 3)).astype(np.float32)
  u = rng.random((2, 3, 2)).astype(np.float32)
  want = jaxpool.fractional_max_pool(x, (2, 2), output_ratio=0.5, samples=u)
  layer = L.FractionalMaxPool((2, 2), output_ratio=0.5)
  chex.assert_trees_all_equal(layer.apply({}, x, u), want)
  one = layer.apply({}, x, rngs={"dropout": jax.random.key(0)})
  two = layer.apply({}, x, rngs={"dropout": jax.random.key(1)})
  assert one.shape == want.shape and not np.array_equal(one, two)
  module = N.FractionalMaxPool((2, 2), output_ratio=0.5, rngs=nnx.Rngs(0))
  chex.assert_trees_all_equal(module(x, u), want)
  assert not np.array_equal(module(x), module(x))  # the stream advances
  v, i = N.FractionalMaxPool((2, 2), (4, 4), return_indices=True)(x, u)
  chex.assert_trees_all_equal((v, i), jaxpool.fractional_max_pool_with_indices(
      x, (2, 2), (4, 4), samples=u))
  with pytest.raises(ValueError, match="no randomness"):
    N.FractionalMaxPool((2, 2), (4, 4))(x)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_live_half_precision_fractional_windows_are_pytorchs(rng, dtype):
  """PyTorch computes the window starts in the input's dtype; so does jaxpool, and the
  same half-precision samples give the same windows (indices), on long axes too."""
  torch = pytest.importorskip("torch")
  import torch.nn.functional as TF

  for h, w, oh, ow in [(23, 97, 9, 40), (120, 64, 50, 7), (41, 41, 20, 20)]:
    x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
    u = rng.random((2, 3, 2)).astype(np.float32)
    xt, ut = (torch.from_numpy(a).to(getattr(torch, dtype)) for a in (x, u))
    _, want = TF.fractional_max_pool2d(xt, 2, output_size=(oh, ow), return_indices=True,
                                       _random_samples=ut)
    _, got = jaxpool.fractional_max_pool_with_indices(
        jnp.asarray(xt.float().numpy(), dtype), (2, 2), (oh, ow),
        samples=jnp.asarray(ut.float().numpy(), dtype), data_format="channels_first")
    np.testing.assert_array_equal(got, want.numpy())
