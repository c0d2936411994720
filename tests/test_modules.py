"""Flax linen and nnx modules behave exactly like the functions they wrap."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from util import randn

import jaxpool
import jaxpool.linen as L
import jaxpool.nnx as N

# (module name, constructor kwargs, function, function kwargs)
SPECS = [
    ("MaxPool", dict(window_shape=(3, 3), strides=2, padding=1, ceil_mode=True),
     jaxpool.max_pool, {}),
    ("MinPool", dict(window_shape=(2, 2), dilation=2), jaxpool.min_pool, {}),
    ("AvgPool", dict(window_shape=(3, 3), strides=2, padding=1, count_include_pad=False),
     jaxpool.avg_pool, {}),
    ("AvgPool", dict(window_shape=(2, 2), divisor_override=3), jaxpool.avg_pool, {}),
    ("LPPool", dict(p=2.0, window_shape=(2, 2)), jaxpool.lp_pool, {}),
    ("MaxPoolWithIndices", dict(window_shape=(2, 2)), jaxpool.max_pool_with_indices, {}),
    ("AdaptiveAvgPool", dict(output_size=(3, 5)), jaxpool.adaptive_avg_pool, {}),
    ("AdaptiveMaxPool", dict(output_size=(None, 3)), jaxpool.adaptive_max_pool, {}),
    ("GlobalAvgPool", dict(num_spatial_dims=2, keepdims=True), jaxpool.global_avg_pool, {}),
    ("GlobalMaxPool", dict(num_spatial_dims=2), jaxpool.global_max_pool, {}),
    ("ChannelPool", dict(op="avg"), jaxpool.channel_pool, {}),
    ("ChannelPool", dict(op="max", keepdims=False), jaxpool.channel_pool, {}),
]
IDS = [f"{s[0]}-{i}" for i, s in enumerate(SPECS)]


def _call(fn, x, kw):
  return fn(x, **kw)


@pytest.mark.parametrize("name,kw,fn,_", SPECS, ids=IDS)
def test_linen_equals_function(rng, name, kw, fn, _):
  x = np.abs(randn(rng, (2, 9, 10, 4))) + 0.1
  module = getattr(L, name)(**kw)
  variables = module.init(jax.random.key(0), x)
  assert jax.tree.leaves(variables) == []  # no params, no state
  chex.assert_trees_all_equal(module.apply(variables, x), _call(fn, x, kw))


@pytest.mark.parametrize("name,kw,fn,_", SPECS, ids=IDS)
def test_nnx_equals_function(rng, name, kw, fn, _):
  x = np.abs(randn(rng, (2, 9, 10, 4))) + 0.1
  module = getattr(N, name)(**kw)
  chex.assert_trees_all_equal(module(x), _call(fn, x, kw))
  assert jax.tree.leaves(nnx.state(module)) == []


@pytest.mark.parametrize("name,kw,fn,_", [s for s in SPECS if not s[0].startswith("Global")],
                         ids=[i for s, i in zip(SPECS, IDS) if not s[0].startswith("Global")])
def test_unbatched_input(rng, name, kw, fn, _):
  x = np.abs(randn(rng, (9, 10, 4))) + 0.1
  chex.assert_trees_all_equal(getattr(L, name)(**kw).apply({}, x), _call(fn, x, kw))
  chex.assert_trees_all_equal(getattr(N, name)(**kw)(x), _call(fn, x, kw))


def test_unpool_modules(rng):
  x = randn(rng, (2, 9, 9, 3))
  v, i = jaxpool.max_pool_with_indices(x, (2, 2))
  want = jaxpool.max_unpool(v, i, (2, 2), output_size=(9, 9))
  chex.assert_trees_all_equal(L.MaxUnpool((2, 2)).apply({}, v, i, output_size=(9, 9)), want)
  chex.assert_trees_all_equal(L.MaxUnpool((2, 2), output_size=(9, 9)).apply({}, v, i), want)
  chex.assert_trees_all_equal(N.MaxUnpool((2, 2))(v, i, output_size=(9, 9)), want)
  chex.assert_trees_all_equal(N.MaxUnpool((2, 2), output_size=[9, 9])(v, i), want)
  fast = dict(output_size=(9, 9), indices_in_window=True)
  chex.assert_trees_all_equal(L.MaxUnpool((2, 2), **fast).apply({}, v, i), want)
  chex.assert_trees_all_equal(N.MaxUnpool((2, 2), **fast)(v, i), want)


def test_module_attributes_are_the_function_arguments():
  m = L.AvgPool((3, 3), 2, 1, count_include_pad=False)
  assert (m.window_shape, m.strides, m.padding, m.count_include_pad) == ((3, 3), 2, 1, False)
  n = N.LPPool(2.0, [2, 2], padding=[[1, 0], [0, 1]])
  assert (n.p, n.window_shape, n.padding) == (2.0, (2, 2), ((1, 0), (0, 1)))


def test_nnx_inside_jit_vmap_split_merge(rng):
  class Net(nnx.Module):
    def __init__(self, rngs):
      self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)
      self.pool = N.MaxPool((2, 2), ceil_mode=True)
      self.head = N.AdaptiveAvgPool((1, 1))

    def __call__(self, x):
      return self.head(self.pool(self.conv(x)))

  net = Net(nnx.Rngs(0))
  x = randn(rng, (2, 7, 7, 3))
  eager = net(x)
  chex.assert_trees_all_close(nnx.jit(lambda m, v: m(v))(net, x), eager, rtol=1e-6)
  graphdef, state = nnx.split(net)
  chex.assert_trees_all_close(nnx.merge(graphdef, state)(x), eager, rtol=1e-6)
  per_example = nnx.vmap(lambda m, v: m(v[None])[0], in_axes=(None, 0))(net, x)
  chex.assert_trees_all_close(per_example, eager, rtol=1e-6)


def test_linen_inside_a_model_with_grad(rng):
  class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.Conv(4, (3, 3))(x)
      x = L.MaxPool((3, 3), 2, 1, dilation=1)(x)
      return L.GlobalAvgPool(2)(x).sum()

  x = randn(rng, (2, 8, 8, 3))
  params = Net().init(jax.random.key(0), x)
  grads = jax.grad(lambda p: Net().apply(p, x))(params)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("api", ["linen", "nnx"])
def test_modules_do_not_retrace(rng, api):
  x = randn(rng, (2, 8, 8, 3))
  if api == "linen":
    module = L.MaxPool((2, 2))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(v):
      return module.apply({}, v)
  else:
    module = N.AvgPool((2, 2))

    @nnx.jit
    @chex.assert_max_traces(n=1)
    def f(v):
      return module(v)

  for _ in range(3):
    f(x)
    f(jnp.asarray(x) + 1)
