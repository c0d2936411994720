"""Every public function and module, on a geometry of each lowering it can take, under
every JAX transform: jit, vmap (leading and inner axis), grad and jvp (checked against
finite differences), jacfwd == jacrev, hessian, checkpoint inside scan, pmap, export for
cpu/cuda/tpu, and debug_nans on zero windows, -inf and padding. ``shard_map`` runs in
``sharding_check.py`` (it needs 8 devices from the start of a process).
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export, lax

import jaxpool
from jaxpool import linen as pl
from jaxpool import nnx as pn


def _unpool(x, window, strides=None, padding=0, **kw):
  v, i = jaxpool.max_pool_with_indices(x, window, strides, padding)
  spatial = x.shape[1:-1] if x.ndim == len(window) + 2 else x.shape[:-1]
  return jaxpool.max_unpool(v, i, window, strides, padding, output_size=spatial, **kw)


def _linen(module, *args):
  return lambda x: module.apply({}, x, *args)


def _linen_unpool(x):
  v, i = pl.MaxPoolWithIndices((2, 2)).apply({}, x)
  return pl.MaxUnpool((2, 2)).apply({}, v, i, x.shape[-3:-1])


def _nnx_unpool(x):
  v, i = pn.MaxPoolWithIndices((2, 2))(x)
  return pn.MaxUnpool((2, 2))(v, i, x.shape[-3:-1])


S2, S1, S3 = (2, 6, 5, 2), (2, 9, 3), (1, 3, 4, 4, 2)
LEN2, LEN1, LEN3 = np.array([[4, 5], [6, 2]]), np.array([5, 9]), np.array([[2, 3, 4]])
U2, U1 = (np.random.default_rng(4).random(s).astype(np.float32) for s in [(2, 2, 2), (2, 9, 1)])
IDS = np.array([[0, 0, 2, -1, 2, 1, 1, 1, -1], [1, 2, 0, 0, 0, 3, 1, -1, 2]])
# name: (function of x, shape of x, whether the input must be positive)
ROWS = {
    # max/min: non-overlapping, overlapping, padded (tiles), ceil_mode overhang, large
    # window (reduce_window chain), dilation, 1-D, 3-D, channels_first
    "max_2x2": (lambda x: jaxpool.max_pool(x, (2, 2)), S2, False),
    "max_3x3s2": (lambda x: jaxpool.max_pool(x, (3, 3), 2), S2, False),
    "max_3x3s1p1": (lambda x: jaxpool.max_pool(x, (3, 3), 1, 1), S2, False),
    "max_3x3s2p1_ceil": (lambda x: jaxpool.max_pool(x, (3, 3), 2, 1, ceil_mode=True), S2,
                         False),
    "max_5x5s1p2": (lambda x: jaxpool.max_pool(x, (5, 5), 1, 2), S2, False),
    "max_6x5": (lambda x: jaxpool.max_pool(x, (6, 5), 1), S2, False),
    "max_dilated": (lambda x: jaxpool.max_pool(x, (2, 2), 1, dilation=2), S2, False),
    "max_1d": (lambda x: jaxpool.max_pool(x, (3,), 2, 1), S1, False),
    "max_3d": (lambda x: jaxpool.max_pool(x, (2, 3, 2), (1, 2, 2), (1, 1, 0)), S3, False),
    "max_channels_first": (lambda x: jaxpool.max_pool(x, (2, 2), 1,
                                                      data_format="channels_first"), S2,
                           False),
    "min_3x3s1p1": (lambda x: jaxpool.min_pool(x, (3, 3), 1, 1), S2, False),
    "min_2x2": (lambda x: jaxpool.min_pool(x, (2, 2)), S2, False),
    # avg: each divisor rule, strided unpadded (JAX's transpose), large, dilated, 1-D, 3-D
    "avg_3x3s1p1": (lambda x: jaxpool.avg_pool(x, (3, 3), 1, 1), S2, False),
    "avg_3x3s1p1_nopad": (lambda x: jaxpool.avg_pool(x, (3, 3), 1, 1,
                                                     count_include_pad=False), S2, False),
    "avg_2x2": (lambda x: jaxpool.avg_pool(x, (2, 2)), S2, False),
    "avg_ceil_override": (lambda x: jaxpool.avg_pool(x, (3, 3), 2, 1, ceil_mode=True,
                                                     divisor_override=4), S2, False),
    "avg_6x5": (lambda x: jaxpool.avg_pool(x, (6, 5), 1), S2, False),
    "avg_dilated": (lambda x: jaxpool.avg_pool(x, (2, 2), 1, dilation=2), S2, False),
    "avg_1d": (lambda x: jaxpool.avg_pool(x, (3,), 2, 1), S1, False),
    "avg_3d": (lambda x: jaxpool.avg_pool(x, (2, 2, 2), 1, 1), S3, False),
    "lp_p2": (lambda x: jaxpool.lp_pool(x, 2.0, (2, 2)), S2, True),
    "lp_p1.5_overlap": (lambda x: jaxpool.lp_pool(x, 1.5, (3, 3), 1, 1), S2, True),
    "lp_p3_1d": (lambda x: jaxpool.lp_pool(x, 3.0, (3,), 2), S1, True),
    # indices: one-pass blocks, padded tiles, large windows (chain), 3-D, by rows
    "indices_2x2": (lambda x: jaxpool.max_pool_with_indices(x, (2, 2)), S2, False),
    "indices_3x3s2p1": (lambda x: jaxpool.max_pool_with_indices(x, (3, 3), 2, 1), S2, False),
    "indices_6x5": (lambda x: jaxpool.max_pool_with_indices(x, (6, 5), 1), S2, False),
    "indices_3d": (lambda x: jaxpool.max_pool_with_indices(x, (2, 2, 2)), S3, False),
    "indices_rows_16x16": (lambda x: jaxpool.max_pool_with_indices(x, (16, 16)),
                           (1, 16, 16, 3), False),
    # 32+ rows: values and their derivative two-level by rows (residual="block_rows")
    "indices_rows_32x32": (lambda x: jaxpool.max_pool_with_indices(x, (32, 32)),
                           (1, 32, 32, 3), False),
    "global_max_rows_32x32": (lambda x: jaxpool.global_max_pool(x, 2), (1, 32, 32, 3),
                              False),
    # unpool: scatter (both data paths of the default), the in-window select, overlapping
    "unpool_2x2": (lambda x: _unpool(x, (2, 2)), S2, False),
    "unpool_2x2_in_window": (lambda x: _unpool(x, (2, 2), indices_in_window=True), S2, False),
    "unpool_3x3s2p1": (lambda x: _unpool(x, (3, 3), 2, 1), S2, False),
    # overlapping windows by the select (16 channels: a lone CPU device's plan)
    "unpool_3x3s2p1_in_window": (lambda x: _unpool(x, (3, 3), 2, 1, indices_in_window=True),
                                 (1, 5, 4, 16), False),
    "unpool_1d": (lambda x: _unpool(x, (2,)), S1, False),
    # adaptive: equal bins, irregular (overlapping) bins, output > input, 1-D, 3-D
    "adaptive_avg_3x5": (lambda x: jaxpool.adaptive_avg_pool(x, (3, 5)), S2, False),
    "adaptive_avg_4x7": (lambda x: jaxpool.adaptive_avg_pool(x, (4, 7)), S2, False),
    "adaptive_avg_3d": (lambda x: jaxpool.adaptive_avg_pool(x, (3, 2, None)), S3, False),
    "adaptive_max_3x5": (lambda x: jaxpool.adaptive_max_pool(x, (3, 5)), S2, False),
    "adaptive_max_4x7": (lambda x: jaxpool.adaptive_max_pool(x, (4, 7)), S2, False),
    "adaptive_max_1d": (lambda x: jaxpool.adaptive_max_pool(x, (4,)), S1, False),
    "adaptive_indices_4x3": (lambda x: jaxpool.adaptive_max_pool_with_indices(x, (4, 3)), S2,
                             False),
    # global and channel
    "global_avg": (lambda x: jaxpool.global_avg_pool(x, 2), S2, False),
    "global_max": (lambda x: jaxpool.global_max_pool(x, 2, keepdims=True), S2, False),
    "global_max_3d": (lambda x: jaxpool.global_max_pool(x, 3), S3, False),
    "channel_max": (lambda x: jaxpool.channel_pool(x, "max"), S2, False),
    "channel_avg": (lambda x: jaxpool.channel_pool(x, "avg"), S2, False),
    "channel_avg_first": (lambda x: jaxpool.channel_pool(  # C=9 >= L=8: CPU folds
        x, "avg", data_format="channels_first", num_spatial_dims=1), (2, 9, 8), False),
    # runtime extents (lengths) and packed segments: the ids and lengths are constants
    # here; test_extents.py runs them as changing runtime values
    "adaptive_max_lengths": (lambda x: jaxpool.adaptive_max_pool(x, (4, 3), lengths=LEN2),
                             S2, False),
    "adaptive_indices_lengths_cf": (
        lambda x: jaxpool.adaptive_max_pool_with_indices(x, (3,), lengths=LEN1,
                                                         data_format="channels_first"),
        S1, False),
    "adaptive_avg_lengths_3d": (lambda x: jaxpool.adaptive_avg_pool(x, (2, 3, 2), lengths=LEN3),
                                S3, False),
    "global_avg_lengths": (lambda x: jaxpool.global_avg_pool(x, 2, lengths=LEN2), S2, False),
    "global_max_lengths": (lambda x: jaxpool.global_max_pool(x, 1, lengths=LEN1), S1, False),
    "segment_max": (lambda x: jaxpool.segment_pool(x, IDS, 3, "max"), S1, False),
    "segment_sum_features": (lambda x: jaxpool.segment_pool(x, IDS[:, :6], 3, "sum"), S2, False),
    # fractional max (samples fixed here; test_layers.py changes them at run time)
    "fractional_2d": (lambda x: jaxpool.fractional_max_pool(x, (2, 2), (3, 3), samples=U2), S2,
                      False),
    "fractional_indices_1d_cf": (
        lambda x: jaxpool.fractional_max_pool_with_indices(x, (2,), (2,), samples=U1,
                                                           data_format="channels_first"),
        S1, False),
    # GeM (x here; p in test_layers.py), average+max, blur
    "gem_eps_clip": (lambda x: jaxpool.gem_pool(x - 1.0, 2, 2.0, eps=0.25), S2, True),
    "avgmax_4x3": (lambda x: jaxpool.adaptive_avgmax_pool(x, (4, 3)), S2, False),
    "catavgmax_1x1": (lambda x: jaxpool.adaptive_catavgmax_pool(x, (1, 1)), S2, False),
    "blur_3": (lambda x: jaxpool.blur_pool(x, 3), S2, False),
    "max_blur_3x3": (lambda x: jaxpool.max_blur_pool(x, 3, data_format="channels_first"), S2,
                     False),
    # every module, linen and nnx
    "linen.MaxPool": (_linen(pl.MaxPool((3, 3), 2, 1)), S2, False),
    "linen.MinPool": (_linen(pl.MinPool((2, 2))), S2, False),
    "linen.AvgPool": (_linen(pl.AvgPool((3, 3), 1, 1, count_include_pad=False)), S2, False),
    "linen.LPPool": (_linen(pl.LPPool(2.0, (2, 2))), S2, True),
    "linen.MaxPoolWithIndices": (_linen(pl.MaxPoolWithIndices((2, 2))), S2, False),
    "linen.MaxUnpool": (_linen_unpool, S2, False),
    "linen.AdaptiveAvgPool": (_linen(pl.AdaptiveAvgPool((4, 3))), S2, False),
    "linen.AdaptiveMaxPool": (_linen(pl.AdaptiveMaxPool((4, 3))), S2, False),
    "linen.GlobalAvgPool": (_linen(pl.GlobalAvgPool(2)), S2, False),
    "linen.GlobalMaxPool": (_linen(pl.GlobalMaxPool(2)), S2, False),
    "linen.ChannelPool": (_linen(pl.ChannelPool("max")), S2, False),
    "linen.AdaptiveMaxPool_lengths": (_linen(pl.AdaptiveMaxPool((4, 3)), LEN2), S2, False),
    "linen.SegmentPool": (_linen(pl.SegmentPool(3, "max"), IDS), S1, False),
    "linen.GeMPool": (lambda x: pl.GeMPool(2).apply({"params": {"p": np.float32(3.0)}}, x), S2,
                      True),
    "linen.MaxBlurPool": (_linen(pl.MaxBlurPool(3)), S2, False),
    "linen.FractionalMaxPool": (_linen(pl.FractionalMaxPool((2, 2), (3, 3)), U2), S2, False),
    "nnx.MaxPool": (pn.MaxPool((3, 3), 2, 1), S2, False),
    "nnx.MinPool": (pn.MinPool((2, 2)), S2, False),
    "nnx.AvgPool": (pn.AvgPool((3, 3), 1, 1, count_include_pad=False), S2, False),
    "nnx.LPPool": (pn.LPPool(2.0, (2, 2)), S2, True),
    "nnx.MaxPoolWithIndices": (pn.MaxPoolWithIndices((2, 2)), S2, False),
    "nnx.MaxUnpool": (_nnx_unpool, S2, False),
    "nnx.AdaptiveAvgPool": (pn.AdaptiveAvgPool((4, 3)), S2, False),
    "nnx.AdaptiveMaxPool": (pn.AdaptiveMaxPool((4, 3)), S2, False),
    "nnx.GlobalAvgPool": (pn.GlobalAvgPool(2), S2, False),
    "nnx.GlobalMaxPool": (pn.GlobalMaxPool(2), S2, False),
    "nnx.ChannelPool": (pn.ChannelPool("max"), S2, False),
    "nnx.GlobalAvgPool_lengths": (lambda x: pn.GlobalAvgPool(2)(x, LEN2), S2, False),
    "nnx.SegmentPool": (lambda x: pn.SegmentPool(3)(x, IDS), S1, False),
    "nnx.AdaptiveCatAvgMaxPool": (pn.AdaptiveCatAvgMaxPool((2, 2)), S2, False),
    "nnx.BlurPool": (pn.BlurPool(2), S2, False),
    "nnx.FractionalMaxPool": (lambda x: pn.FractionalMaxPool((2, 2), (3, 3))(x, U2), S2, False),
}
NAMES = list(ROWS)
# Modules are one-line partial applications of the functions above (test_modules.py
# checks module == function): they run through jit, vmap and both modes of autodiff; the
# other columns would compile the functions' programs again.
FUNCTIONS = [n for n in NAMES if "." not in n]
MODULES = [n for n in NAMES if "." in n]
# The second-round rows share their machinery within a family (runtime extents, segments,
# fractional, GeM, avg+max, blur): every row runs jit, vmap and both modes against finite
# differences; one row per family also runs the costlier columns below (jacfwd/hessian,
# checkpoint in scan, pmap, export, debug_nans), which compile the same programs again.
SECOND_ROUND_ONLY_CORE = {
    "adaptive_indices_lengths_cf", "adaptive_avg_lengths_3d", "global_avg_lengths",
    "global_max_lengths", "segment_sum_features", "fractional_indices_1d_cf",
    "catavgmax_1x1", "max_blur_3x3"}
EVERY_COLUMN = [n for n in FUNCTIONS if n not in SECOND_ROUND_ONLY_CORE]
# pmap and checkpoint-inside-scan wrap the op's program in the transform's own machinery
# (a mapped axis, rematerialisation in a loop) without changing what the op lowers to:
# one row per public function (and per second-round family) carries them. The columns
# that see each plan's own rules and lowerings (jacfwd/hessian, export for every
# platform, debug_nans) run on every EVERY_COLUMN row.
ONE_PER_FUNCTION = [
    "max_3x3s2p1_ceil", "min_3x3s1p1", "avg_ceil_override", "lp_p1.5_overlap",
    "indices_3x3s2p1", "unpool_2x2", "adaptive_avg_4x7", "adaptive_max_4x7",
    "adaptive_indices_4x3", "global_avg", "global_max", "channel_max",
    "adaptive_max_lengths", "segment_max", "fractional_2d", "gem_eps_clip", "avgmax_4x3",
    "blur_3"]
# the rows whose output is piecewise linear in x (the hessian of sum(w * f**2) is 2 J'WJ)
LINEAR = [n for n in NAMES if not n.startswith(("lp", "gem")) and "LPPool" not in n
          and "GeMPool" not in n]
# Overlapping unpool windows can put two (equal) values at one index: the scatter writes
# one of them while the derivative, PyTorch's, gathers the cotangent into both, so finite
# differences disagree by design there (jacfwd == jacrev still holds).
CONVENTION = {"unpool_3x3s2p1", "unpool_3x3s2p1_in_window"}


def test_one_per_function_covers_every_function():
  import inspect

  called = {fn for n in ONE_PER_FUNCTION
            for fn in re.findall(r"jaxpool\.(\w+)\(", inspect.getsource(ROWS[n][0]))}
  called |= {"max_unpool"}  # through _unpool
  assert called >= set(jaxpool.__all__) - {"fractional_max_pool_with_indices",
                                           "adaptive_catavgmax_pool", "max_blur_pool"}


def _input(name, dtype=np.float32, seed=0):
  _, shape, positive = ROWS[name]
  x = np.random.default_rng(seed).standard_normal(shape)
  return (np.abs(x) + 0.5 if positive else x).astype(dtype)


def _first(name):
  """The row's differentiable output (values, for the rows that also return indices)."""
  fn = ROWS[name][0]

  def f(x):
    out = fn(x)
    return out[0] if isinstance(out, tuple) else out
  return f


def _weights(f, x, seed=1):
  out = jax.eval_shape(f, x)
  return np.random.default_rng(seed).standard_normal(out.shape).astype(out.dtype)


def _same(a, b, **tol):
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    assert u.shape == v.shape and u.dtype == v.dtype, (u.shape, v.shape, u.dtype, v.dtype)
    np.testing.assert_allclose(np.asarray(u), np.asarray(v), **(tol or {"rtol": 0, "atol": 0}))


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


@pytest.mark.parametrize("name", NAMES)
def test_jit(name):
  """jit equals the eager call, and the program has no effects: an effect (a
  ``checkify.debug_check``, a callback) sends every call of the jitted function through
  JAX's Python dispatch path instead of its C++ one."""
  fn, x = ROWS[name][0], _input(name)
  jitted = jax.jit(fn)
  assert not jitted.trace(x).jaxpr.effects
  _same(jitted(x), fn(x), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_vmap(name):
  """vmap over a leading and over an inner axis of a stack of three inputs."""
  fn = ROWS[name][0]
  xs = [_input(name, seed=s) for s in range(3)]
  got = jax.jit(lambda a, b: (jax.vmap(fn)(a), jax.vmap(fn, in_axes=2)(b)))(
      np.stack(xs), np.stack(xs, axis=2))
  one = jax.jit(fn)  # test_jit compares it with the eager call
  want = jax.tree.map(lambda *a: jnp.stack(a), *[one(x) for x in xs])
  _same(got, (want, want), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ONE_PER_FUNCTION + ["lp_p2", "max_2x2", "max_5x5s1p2"])
def test_grad_of_vmap(name):
  """The gradient of the vmapped op is the per-example gradient. Reverse mode through
  ``vmap`` transposes the batched tangent map, where a fence (``lp_pool``'s cotangent,
  the floors chain's) once became a select whose operand JAX wraps in
  ``stop_gradient``, which has no transpose."""
  f = _first(name)
  xs = np.stack([_input(name, seed=s) for s in range(3)])
  w = _weights(jax.vmap(f), xs)
  got = jax.jit(jax.grad(lambda v: jnp.sum(w * jax.vmap(f)(v))))(xs)
  one = jax.jit(jax.grad(lambda v, wi: jnp.sum(wi * f(v))))
  _same(got, np.stack([one(x, wi) for x, wi in zip(xs, w)]), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", [n for n in FUNCTIONS if n not in CONVENTION])
def test_grad_and_jvp_match_finite_differences(name, x64):
  """Along random directions ``t``: ``<w, jvp(t)> == <vjp(w), t>`` == the central
  difference of ``<w, f>`` (float64; random inputs have no ties, so ``f`` is smooth
  there). ``jax.test_util.check_grads`` does the same, in many more programs."""
  f, x = _first(name), _input(name, np.float64)
  w = _weights(f, x)
  ts = np.random.default_rng(5).standard_normal((3,) + x.shape)
  eps = 1e-6

  @jax.jit
  def derivatives(v):
    def one(t):
      dy = jax.jvp(f, (v,), (t,))[1]
      fd = (jnp.sum(w * f(v + eps * t)) - jnp.sum(w * f(v - eps * t))) / (2 * eps)
      return jnp.sum(w * dy), fd
    forward, numeric = jax.vmap(one)(ts)
    return forward, numeric, jax.grad(lambda u: jnp.sum(w * f(u)))(v)

  forward, numeric, grad = derivatives(x)
  reverse = np.tensordot(ts, np.asarray(grad), axes=x.ndim)
  np.testing.assert_allclose(forward, reverse, rtol=1e-10, atol=1e-10)
  np.testing.assert_allclose(forward, numeric, rtol=1e-6, atol=1e-6)
  assert np.abs(grad).sum() > 0


@pytest.mark.parametrize("name", MODULES)
def test_module_jvp_and_vjp_agree(name):
  """<jvp(t), w> == <t, vjp(w)>: forward and reverse mode give one derivative."""
  f, x = _first(name), _input(name)
  w, t = _weights(f, x), _weights(lambda v: v, x, seed=2)

  @jax.jit
  def both(v):
    y, dy = jax.jvp(f, (v,), (t,))
    return dy, jax.vjp(f, v)[1](w)[0]

  dy, dx = both(x)
  assert np.isfinite(dx).all() and np.abs(dx).sum() > 0
  np.testing.assert_allclose(np.sum(dy * w), np.sum(t * dx), rtol=1e-4)


@pytest.mark.parametrize("name", EVERY_COLUMN)
def test_jacfwd_jacrev_and_hessian(name, x64):
  """jacfwd == jacrev, and the hessian of ``sum(w * f**2)``: ``2 J' diag(w) J`` where f
  is piecewise linear, else jacrev of jacfwd (forward over reverse vs the reverse)."""
  f, x = _first(name), _input(name, np.float64)
  w = _weights(f, x)

  def loss(v):
    return jnp.sum(w * f(v) ** 2)

  @jax.jit
  def derivatives(v):  # one program: each jit compiles once, and compiling dominates
    other = None if name in LINEAR else jax.jacrev(jax.jacfwd(loss))(v)
    return jax.jacfwd(f)(v), jax.jacrev(f)(v), jax.hessian(loss)(v), other

  jac_fwd, jac, h, other = derivatives(x)
  np.testing.assert_allclose(jac_fwd, jac, rtol=1e-12, atol=1e-12)
  if name in LINEAR:
    j = np.asarray(jac).reshape(w.size, x.size)
    other = (2 * j.T @ (w.reshape(-1, 1) * j)).reshape(h.shape)
  np.testing.assert_allclose(h, other, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ONE_PER_FUNCTION)
def test_checkpoint_inside_scan(name):
  f, x = _first(name), _input(name)
  w = _weights(f, x)

  def unrolled(v):
    return jnp.sum(w * f(v)) + jnp.sum(w * f(-2.0 * v))

  def scanned(v):
    def step(carry, scale):
      return carry + jnp.sum(w * jax.checkpoint(f)(v * scale)), None
    return lax.scan(step, jnp.zeros((), v.dtype), jnp.array([1.0, -2.0], v.dtype))[0]

  got, want = jax.jit(lambda v: (jax.value_and_grad(scanned)(v),
                                jax.value_and_grad(unrolled)(v)))(x)
  _same(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ONE_PER_FUNCTION)
def test_pmap(name):
  fn, f, x = ROWS[name][0], _first(name), _input(name)
  w = _weights(f, x)

  def both(v):
    return fn(v), jax.grad(lambda u: jnp.sum(w * f(u)))(v)

  got = jax.pmap(both)(x[None])
  _same(got, jax.tree.map(lambda a: a[None], jax.jit(both)(x)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", EVERY_COLUMN)
def test_export_for_every_platform(name):
  """Forward and gradient lower for cpu, cuda and tpu at once (lowering only: it needs
  no accelerator)."""
  fn, f, x = ROWS[name][0], _first(name), _input(name)
  w = _weights(f, x)

  def both(v):
    return fn(v), jax.grad(lambda u: jnp.sum(w * f(u)))(v)

  exp = export.export(jax.jit(both), platforms=("cpu", "cuda", "tpu"))(x)
  assert exp.platforms == ("cpu", "cuda", "tpu")
  want = jax.eval_shape(both, x)
  assert [(a.shape, a.dtype) for a in exp.out_avals] == [
      (a.shape, a.dtype) for a in jax.tree.leaves(want)]
  assert "stablehlo" in exp.mlir_module()


def _special(name):
  """All-zero windows, -inf values (not for lp: its power of inf is inf - inf in the
  derivative, in PyTorch too) and the row's own padding."""
  x = _input(name)
  x[:, :3] = 0.0
  if not ROWS[name][2]:
    x[:, -1, ..., :1] = -np.inf
  return x


@pytest.mark.parametrize("name", EVERY_COLUMN)
def test_debug_nans_quiet(name):
  f = _first(name)
  x = _special(name)
  w = np.abs(_weights(f, x)) + 0.1

  def both(v):
    y = f(v)
    return y, jax.grad(lambda u: jnp.sum(jnp.where(jnp.isfinite(y), w * f(u), 0.0)))(v)

  with jax.debug_nans(True):
    y, g = jax.jit(both)(x)
  assert not np.isnan(np.asarray(y)).any()
  assert np.isfinite(np.asarray(g)).all()


def test_lp_pool_zero_window_gradient_is_zero():
  """Right after a ReLU whole windows are 0: PyTorch's gradient there is 0, not NaN."""
  x = np.zeros((1, 4, 4, 1), np.float32)
  x[0, 2:, 2:, 0] = [[1.0, 2.0], [3.0, 4.0]]
  for p in (1.5, 2.0, 3.0):
    with jax.debug_nans(True):
      g = jax.grad(lambda v, p=p: jaxpool.lp_pool(v, p, (2, 2)).sum())(x)
    block = x[0, 2:, 2:, 0]
    want = block ** (p - 1) * np.sum(block ** p) ** (1 / p - 1)
    np.testing.assert_allclose(g[0, 2:, 2:, 0], want, rtol=1e-5)
    assert (np.asarray(g)[0, :2] == 0).all() and (np.asarray(g)[0, :, :2] == 0).all()


def test_forward_mode_of_max_pool_routes_to_first_max():
  x = jnp.array([[1.0, 3.0, 3.0, 0.0]])[..., None]  # a tie in the second window
  t = jnp.array([[10.0, 20.0, 30.0, 40.0]])[..., None]
  y, dy = jax.jvp(lambda v: jaxpool.max_pool(v, (2,), 1), (x,), (t,))
  np.testing.assert_array_equal(y[0, :, 0], [3.0, 3.0, 3.0])
  np.testing.assert_array_equal(dy[0, :, 0], [20.0, 20.0, 30.0])


def test_linearize_and_vjp_agree():
  f = functools.partial(jaxpool.max_pool, window_shape=(3, 3), strides=1, padding=1)
  x = _input("max_3x3s1p1")
  t = np.random.default_rng(3).standard_normal(x.shape).astype(np.float32)
  y, lin = jax.linearize(f, x)
  w = _weights(f, x)
  (ct,) = jax.vjp(f, x)[1](w)
  np.testing.assert_allclose(np.sum(lin(t) * w), np.sum(t * ct), rtol=1e-5)
