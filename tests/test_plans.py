"""The planner: every plan it can name, forced on CPU through the private entry points'
``plan=``, against the NumPy reference (values, indices, gradients); and per backend,
the program each platform gets (``jax.export`` lowers for cuda and tpu without one)."""

from __future__ import annotations

import dataclasses
import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref
from jax import export
from jax.test_util import check_grads
from util import from_layout, randn, ties, to_layout

import jaxpool
from jaxpool import _geometry as geo
from jaxpool._adaptive import bin_taps
from jaxpool._engine import axis_sum, pool_with_indices, select_pool, sum_pool
from jaxpool._engine import plan as planner
from jaxpool._engine.values import bin_sum, folds
from jaxpool._linear import computed_once, fence_cotangent, unfold_cotangent, unfolded
from jaxpool._unpool import unpool

# name: (spatial size, window, strides, padding, dilation, ceil_mode)
WINDOWS = {
    "2x2": ((6, 5), (2, 2), (2, 2), 0, 1, False),                 # blocked, ceil overhang-free
    "2x2p1": ((6, 5), (2, 2), (2, 2), 1, 1, False),               # blocked, padded
    "3x3s2": ((9, 8), (3, 3), (2, 2), 0, 1, False),               # overlapping, unpadded
    "3x3s2p1_ceil": ((8, 7), (3, 3), (2, 2), 1, 1, True),         # padded tiles, overhang
    "3x2_dilated": ((9, 8), (3, 2), (1, 1), 0, (1, 2), False),
    "2x2p1_dilated": ((7, 6), (2, 2), (1, 1), 1, 2, False),
    "5x5s1p2": ((7, 6), (5, 5), (1, 1), 2, 1, False),             # padded, over the tiles
    "7x6_s52": ((9, 8), (7, 6), (5, 2), 0, 1, False),             # 42 elements: the chain
    "1d_3s2p1": ((9,), (3,), (2,), 1, 1, False),
    "3d": ((4, 5, 4), (2, 3, 2), (1, 2, 1), (1, 1, 0), 1, False),
}
ADAPTIVE = {"bins_4x5": ((10, 9), (4, 5)), "bins_6": ((13,), (6,)),
            "bins_3x4x2": ((5, 6, 7), (3, 4, 2)), "bins_2x3_even": ((8, 9), (2, 3))}


def _geometry(name):
  if name in ADAPTIVE:
    size, out = ADAPTIVE[name]
    return size, tuple(bin_taps(n, o) for n, o in zip(size, out)), None
  size, window, strides, padding, dilation, ceil_mode = WINDOWS[name]
  lay, taps = geo.window_geometry("max_pool", (2, 3) + size, window, strides, padding,
                                  dilation, ceil_mode, "channels_first")
  return size, taps, (window, strides, padding, dilation, ceil_mode)


def _reference_indices(x, taps, args, kind="max"):
  if args is not None:
    return ref.max_pool_with_indices(x, *args, kind=kind)
  if kind == "min":
    v, i = ref.adaptive_max_pool_with_indices(-x, tuple(t.out for t in taps))
    return -v, i
  return ref.adaptive_max_pool_with_indices(x, tuple(t.out for t in taps))


def _routed(x, g, idx):
  """d/dx sum(pool(x) * g) when each window's g goes to the flat index ``idx``."""
  n = int(np.prod(x.shape[2:]))
  dx = np.zeros((6, n))
  np.add.at(dx, (np.arange(6)[:, None], idx.reshape(6, -1)), g.reshape(6, -1))
  return dx.reshape(x.shape)


def _routed_last(x, g, idx):
  """:func:`_routed` for channels_last ``x`` and ``g``, channels_first result: each
  window's ``g`` summed at the channels_first flat spatial index ``idx``."""
  first = from_layout(x, "channels_last")
  planes, n = x.shape[0] * x.shape[-1], math.prod(first.shape[2:])
  dx = np.zeros((planes, n))
  np.add.at(dx, (np.arange(planes)[:, None], idx.reshape(planes, -1)),
            from_layout(g, "channels_last").reshape(planes, -1))
  return dx.reshape(first.shape)


def _plan_ids(plans):
  return [",".join(f"{k}={v}" for k, v in vars(p).items() if v not in (None, False))
          for p in plans]


def _cases(op, per_form: int = 1):
  """Each geometry under its GPU and TPU plans (the CPU plan runs in every other test),
  and each other form of each field on the first ``per_form`` geometries it can serve."""
  names = list(WINDOWS) + list(ADAPTIVE)
  used: dict = {}
  for name in names:
    size, taps, _ = _geometry(name)
    size_all = 6 * int(np.prod(size))
    base = planner.plan(op, taps, np.float32, planner.Target("cpu", True), size=size_all)
    keep = {planner.plan(op, taps, np.float32, planner.Target(p, True), size=size_all)
            for p in ("gpu", "accelerator")}
    for p in planner.candidates(op, taps, np.float32, size=size_all):
      change = tuple((k, v) for k, v in vars(p).items() if getattr(base, k) != v)
      if p == base or (p not in keep and used.get(change, 0) >= per_form):
        continue
      used[change] = used.get(change, 0) + 1
      yield pytest.param(name, p, id=f"{name}-{_plan_ids([p])[0]}")


@pytest.mark.parametrize("name,plan", list(_cases("max")))
def test_every_max_plan_matches_the_reference(rng, name, plan):
  """Values, the gradient to each window's first max, and forward mode (jvp) agree."""
  size, taps, args = _geometry(name)
  axes = tuple(range(2, 2 + len(size)))
  kind = "min" if len(name) % 2 else "max"  # min shares every form: some cases each
  x = ties(rng, (2, 3) + size)
  want, idx = _reference_indices(x, taps, args, kind)
  g = randn(rng, want.shape)
  t = randn(rng, x.shape)

  @jax.jit
  def run(x, g, t):
    def f(v):
      return select_pool(v, axes, taps, kind, plan=plan)
    y, vjp = jax.vjp(f, x)
    return y, vjp(g)[0], jax.jvp(f, (x,), (t,))[1]

  y, dx, dy = run(x, g, t)
  np.testing.assert_array_equal(y, want)
  np.testing.assert_allclose(dx, _routed(x, g, idx), rtol=1e-6, atol=1e-6)
  picked = np.take_along_axis(t.reshape(6, -1), idx.reshape(6, -1), 1).reshape(want.shape)
  if plan.backward != "jax":
    np.testing.assert_array_equal(dy, picked)
    return
  # JAX's own forward rule (select_and_gather_add) takes the tangent of one of the tied
  # maxima, which one XLA leaves open: first-max exact without ties, a max at ties.
  np.testing.assert_array_equal(run(x, g, x)[2], want)
  distinct = rng.permutation(x.size).reshape(x.shape).astype(np.float32)
  _, idx = _reference_indices(distinct, taps, args, kind)
  picked = np.take_along_axis(t.reshape(6, -1), idx.reshape(6, -1), 1).reshape(want.shape)
  np.testing.assert_array_equal(run(distinct, g, t)[2], picked)


@pytest.mark.parametrize("name,plan", list(_cases("sum")))
def test_every_sum_plan_matches_the_reference(rng, name, plan):
  """Averages (count_include_pad=False divisors) and their gradient, by vjp against the
  reference's transpose: <g, A x> == <A^T g, x> for random x and g."""
  size, taps, args = _geometry(name)
  axes = tuple(range(2, 2 + len(size)))
  x = randn(rng, (2, 3) + size)
  if args is None:
    want = ref.adaptive_avg_pool(x, tuple(t.out for t in taps))
  else:
    want = ref.avg_pool(x, *args, count_include_pad=False)
  g = randn(rng, want.shape)

  @jax.jit
  def run(x, g):
    y, vjp = jax.vjp(lambda v: sum_pool(v, axes, taps, (False, None), plan=plan), x)
    return y, vjp(g)[0]

  y, dx = run(x, g)
  np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.vdot(dx, x), np.vdot(g, want), rtol=1e-4)
  e = np.zeros(x.shape, np.float32)  # and entrywise: one input at a time through the ref
  e.flat[7] = 1.0
  probe = ref.adaptive_avg_pool(e, tuple(t.out for t in taps)) if args is None else \
      ref.avg_pool(e, *args, count_include_pad=False)
  np.testing.assert_allclose(np.asarray(dx).flat[7], np.vdot(g, probe), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,plan", list(_cases("indices")))
def test_every_indices_plan_matches_the_reference(rng, name, plan):
  size, taps, args = _geometry(name)
  axes = tuple(range(2, 2 + len(size)))
  x = ties(rng, (2, 3) + size)
  x[0, 0].flat[3] = np.nan
  want, want_idx = _reference_indices(x, taps, args)
  g = randn(rng, want.shape)

  @jax.jit
  def run(x, g):
    (y, i), vjp = jax.vjp(lambda v: pool_with_indices(v, axes, taps, size, plan=plan), x,
                          has_aux=False)
    return y, i, vjp((g, np.zeros(i.shape, jax.dtypes.float0)))[0]

  y, i, dx = run(x, g)
  np.testing.assert_array_equal(y, want)
  np.testing.assert_array_equal(i, want_idx)
  finite = np.isfinite(want).reshape(6, -1).all(1).reshape(2, 3)
  np.testing.assert_allclose(np.asarray(dx)[finite], _routed(x, g, want_idx)[finite],
                             rtol=1e-6, atol=1e-6)


UNPOOLS = {"2x2": ((6, 4), (2, 2), (2, 2), ((0, 0), (0, 0))),
           "2x3p_gap": ((7, 9), (2, 3), (3, 3), ((1, 0), (0, 1))),
           "3x3s2p1": ((7, 7), (3, 3), (2, 2), ((1, 1), (1, 1))),
           "1d": ((8,), (2,), (2,), ((0, 0),))}


def _unpool_cases():
  """As :func:`_cases`: the GPU/TPU plan of each geometry, every other form once."""
  used = set()
  for name, (size, window, stride, pads) in UNPOOLS.items():
    lay, taps = geo.window_geometry("max_pool", (2, 3) + size, window, stride, pads, 1,
                                    False, "channels_first")
    del lay
    utaps = tuple(geo.AxisTaps(n, t.out, k, s, 1, lo, hi)
                  for n, t, k, s, (lo, hi) in zip(size, taps, window, stride, pads))
    for in_window in (False, True):
      kw = dict(size=6 * int(np.prod(size)), in_window=in_window)
      base = planner.plan("unpool", utaps, np.float32, planner.Target("cpu", True), **kw)
      keep = planner.plan("unpool", utaps, np.float32, planner.Target("gpu", True), **kw)
      for p in planner.candidates("unpool", utaps, np.float32, **kw):
        form = (p.unpool, p.address, planner.blocked(utaps))  # overlapping ones too
        if p == base or (p != keep and form in used):
          continue
        used.add(form)
        yield pytest.param(name, in_window, p, id=f"{name}-{in_window}-{_plan_ids([p])[0]}")


@pytest.mark.parametrize("name,in_window,plan", list(_unpool_cases()))
def test_every_unpool_plan_matches_the_reference(rng, name, in_window, plan):
  size, window, stride, pads = UNPOOLS[name]
  x = randn(rng, (2, 3) + size)
  v, i = ref.max_pool_with_indices(x, window, stride, pads)
  v, i = v.astype(np.float32), i.astype(np.int32)
  blocks = (tuple(range(2, 2 + len(size))), window, stride, pads, size)
  g = randn(rng, x.shape)

  @jax.jit
  def run(v, i, g):
    y, vjp = jax.vjp(lambda a: unpool(a, i, blocks, x.shape, in_window, plan=plan), v)
    return y, vjp(g)[0]

  y, dv = run(v, i, g)
  np.testing.assert_array_equal(y, ref.max_unpool(v, i, size))
  want = np.take_along_axis(g.reshape(6, -1), i.reshape(6, -1), 1).reshape(v.shape)
  np.testing.assert_array_equal(dv, want)


def test_a_forced_plan_is_checked_against_the_geometry():
  _, taps, _ = _geometry("3x3s2")
  bad = planner.Plan(values="tiles", residual="match_blocks", backward="block")
  with pytest.raises(ValueError, match="match_blocks"):
    select_pool(jnp.zeros((2, 3, 9, 8)), (2, 3), taps, "max", plan=bad)
  with pytest.raises(ValueError, match="values must be None or one of"):
    planner.Plan(values="fast")


def test_candidates_cover_every_form():
  """Between them the test geometries reach every form of every field."""
  seen = {f: set() for f in ("values", "residual", "backward", "indices", "unpool",
                             "address", "fence", "unfold", "fold", "order", "bins")}
  for op in ("max", "sum", "indices"):
    for name in list(WINDOWS) + list(ADAPTIVE):
      size, taps, _ = _geometry(name)
      for p in planner.candidates(op, taps, np.float32, size=100):
        for f in seen:
          seen[f].add(getattr(p, f))
  for in_window in (False, True):
    for p in planner.candidates("unpool", _geometry("2x2")[1], np.float32, size=100,
                                in_window=in_window):
      seen["unpool"].add(p.unpool)
      seen["address"].add(p.address)
  assert seen["values"] >= set(planner.VALUES)
  assert seen["residual"] >= set(planner.RESIDUALS)
  assert seen["backward"] >= set(planner.BACKWARDS)
  assert seen["indices"] >= set(planner.INDICES)
  assert seen["unpool"] >= set(planner.UNPOOLS)
  assert seen["address"] >= set(planner.ADDRESSES)
  assert seen["fence"] == {False, True}
  assert seen["unfold"] == {False, True}
  assert seen["fold"] == {None, *planner.FOLDS}
  assert seen["order"] == {None, *planner.ORDERS}
  assert seen["bins"] >= set(planner.BINS)


# ----------------------------------------------------------------------------- per backend


def _ops(text: str) -> set[str]:
  return set(re.findall(r"stablehlo\.([a-z_]+)", text))


def _program(fn, x, platform):
  return export.export(jax.jit(fn), platforms=(platform,))(x).mlir_module()


def _grad(f):
  return jax.grad(lambda v: jnp.sum(jax.tree.leaves(f(v))[0].astype(jnp.float32) ** 2))


ACCELERATED = {  # ops whose windows are regular: one reduce_window, JAX's own derivative
    "max_3x3s2p1": lambda x: jaxpool.max_pool(x, (3, 3), 2, 1),
    "max_3x3s1_ceil": lambda x: jaxpool.max_pool(x, (3, 3), 2, ceil_mode=True),
    "min_2x2": lambda x: jaxpool.min_pool(x, (2, 2)),
    "max_7x7": lambda x: jaxpool.max_pool(x, (7, 7), 1, 3),
    "avg_3x3s1p1": lambda x: jaxpool.avg_pool(x, (3, 3), 1, 1, count_include_pad=False),
    "avg_2x2_dilated": lambda x: jaxpool.avg_pool(x, (2, 2), 1, dilation=2),
    "lp_3x3s2": lambda x: jaxpool.lp_pool(jnp.abs(x) + 1, 2.0, (3, 3), 2),
    "adaptive_max_even": lambda x: jaxpool.adaptive_max_pool(x, (4, 4)),
    "adaptive_avg_even": lambda x: jaxpool.adaptive_avg_pool(x, (2, 4)),
    "global_max": lambda x: jaxpool.global_max_pool(x, 2),
    "indices_3x3s2p1": lambda x: jaxpool.max_pool_with_indices(x, (3, 3), 2, 1),
    "avg_4x4": lambda x: jaxpool.avg_pool(x, (4, 4)),
}


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
@pytest.mark.parametrize("name", list(ACCELERATED))
def test_accelerators_get_reduce_window(name, platform):
  """The GPU/TPU program holds its plan: reduce_window forward in the input dtype and no
  CPU-only form (tiles concatenate, flat scatters, a float32 copy of a bfloat16 max).
  The max/min derivative is JAX's select_and_scatter on TPU; on CUDA for windows over
  ``SMALL`` elements only (smaller ones measured faster through the phase planes).
  CUDA reduces non-overlapping windows over ``SMALL`` elements as blocks (a reshape and
  a reduce: ``test_cuda_reduces_large_blocks``) and sums overlapping ones by the CPU
  plan's forms (``test_cuda_sums_overlapping_windows_by_slices``)."""
  fn = ACCELERATED[name]
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 8, 3)), jnp.bfloat16)
  fwd, grad = _program(fn, x, platform), _program(_grad(fn), x, platform)
  assert not _ops(fwd) & {"scatter"} and "scatter" not in _ops(grad)
  blocks = platform == "cuda" and name in CUDA_BLOCKS
  sliced = platform == "cuda" and name in CUDA_SLICED
  assert ("reduce_window" in _ops(fwd)) != (blocks or sliced)
  if sliced:  # the CPU plan's slices and phase planes (test_cuda_sums_overlapping_...)
    assert "reduce_window" not in _ops(grad)
    return
  assert "concatenate" not in _ops(fwd)
  if name.startswith(("avg", "lp", "adaptive_avg")):
    assert "concatenate" not in _ops(grad)
    return
  assert "f32" not in fwd  # 16-bit max stays 16-bit
  jax_rule = platform == "tpu" or name == "max_7x7"
  assert ("select_and_scatter" in _ops(grad)) == jax_rule
  if jax_rule:
    assert "concatenate" not in _ops(grad)


CUDA_BLOCKS = ("global_max", "avg_4x4")
CUDA_SLICED = ("avg_3x3s1p1", "avg_2x2_dilated")


@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
def test_cuda_sums_overlapping_windows_by_slices(layout):
  """On CUDA a sum over overlapping regular windows takes the CPU plan's values and
  derivative forms: adaptive avg 56 -> 5 (12x12 windows at stride 11) took 1.58 ms fwd+bwd
  through one 2-D reduce_window and its transpose on an H100, 0.21 ms one axis at a time
  (benchmarks/README.md,
  "Plans per backend"). ``lp_pool``'s mapped sum keeps reduce_window (it measured slower
  so), and TPU keeps it everywhere. The CUDA plan's sums and their transpose equal
  NumPy's (run here, forced)."""
  x = randn(np.random.default_rng(1), (2, 56, 56, 3) if layout == "channels_last"
            else (2, 3, 56, 56))
  fn = functools.partial(jaxpool.adaptive_avg_pool, output_size=(5, 5), data_format=layout)

  def windows(platform):  # the window of each reduce_window in the gradient's program
    text = _program(_grad(fn), x, platform)
    dims = re.findall(r"window_dimensions = array<i64: ([0-9, ]+)>", text)
    return [tuple(int(d) for d in w.split(", ") if d != "1") for w in dims]

  assert windows("cuda") and all(len(w) == 1 for w in windows("cuda"))  # one axis each
  assert (12, 12) in windows("tpu")
  _, taps = geo.window_geometry("avg_pool", (2, 9, 9, 3), (3, 3), 2, 1, 1, False,
                                "channels_last")
  gpu, tpu = planner.Target("gpu", True), planner.Target("accelerator", True)
  p = planner.plan("sum", taps, np.float32, gpu)
  assert p.values != "window" and p.backward == "planes"
  assert planner.plan("sum", taps, np.float32, gpu, mapped=True).values == "window"
  assert planner.plan("sum", taps, np.float32, tpu).values == "window"
  if layout == "channels_first":
    return  # the forced plan's numbers below do not depend on the layout
  # the CUDA plan of the 12x12 windows at stride 11, run here against NumPy's sums
  x = randn(np.random.default_rng(2), (2, 56, 56, 3))
  taps = (bin_taps(56, 5),) * 2
  p = planner.plan("sum", taps, np.float32, gpu, inner=3)
  assert p.values != "window"
  s, vjp = jax.vjp(lambda v: sum_pool(v, (1, 2), taps, plan=p), x)
  g = randn(np.random.default_rng(3), s.shape)
  want, want_dx = _sums_56_to_5(x, g, channels_last=True)
  np.testing.assert_allclose(s, want, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(vjp(g)[0], want_dx, rtol=1e-5, atol=1e-4)


def _sums_56_to_5(x, g, channels_last):
  """NumPy's sums over the adaptive 56 -> 5 windows (12 wide at stride 11) of ``x``'s
  two spatial axes, and their transpose applied to the cotangent ``g``."""
  xn, gn = np.asarray(x, np.float64), np.asarray(g, np.float64)
  if channels_last:
    xn, gn = np.moveaxis(xn, -1, 1), np.moveaxis(gn, -1, 1)
  want, want_dx = np.zeros(gn.shape), np.zeros(xn.shape)
  for i in range(5):
    for j in range(5):
      rows, cols = slice(11 * i, 11 * i + 12), slice(11 * j, 11 * j + 12)
      want[..., i, j] = xn[..., rows, cols].sum((-2, -1))
      want_dx[..., rows, cols] += gn[..., i, j, None, None]
  if channels_last:
    want, want_dx = np.moveaxis(want, 1, -1), np.moveaxis(want_dx, 1, -1)
  return want, want_dx


def test_cuda_sums_route_back_by_the_cpu_rule():
  """A CUDA sum over overlapping regular windows takes the CPU rule's derivative form,
  given its values form and the elements after the pooled axes. On an H200 (two sweep
  runs, the CPU plan forced beside the planned one): channels_first adaptive avg 56 -> 5
  forward+backward took 1.58-1.77x as long through the ``reduce_window`` transpose as by
  the phase planes one axis at a time, and avg 5x5/1 p2 1.05-1.08x as long through the
  joint planes (benchmarks/README.md, "CUDA sums' derivative: the CPU rule"). Both the
  CUDA program's form and the forced plan's values and gradient are checked here."""
  gpu, cpu = planner.Target("gpu", True), planner.Target("cpu", True)
  bins = (bin_taps(56, 5),) * 2
  _, padded5 = geo.window_geometry("avg_pool", (2, 56, 56, 64), (5, 5), 1, 2, 1, False,
                                   "channels_last")
  _, padded3 = geo.window_geometry("avg_pool", (2, 56, 56, 64), (3, 3), 2, 1, 1, False,
                                   "channels_last")
  cases = [(bins, 1, "axis_planes"), (bins, 64, "jax"), (padded5, 64, "axis_planes"),
           (padded3, 64, "planes")]
  for taps, inner, want in cases:
    p = planner.plan("sum", taps, np.float32, gpu, inner=inner)
    assert p.backward == want, (taps, inner, p)
    assert p.backward == planner.plan("sum", taps, np.float32, cpu, inner=inner).backward
  # windows of at most SMALL elements over one axis keep the canonical plan there (avg
  # 3/2 p1: no gain on an H100, 1.04-1.45x on an H200); larger ones take the row
  for window, stride, pad, want in (((3,), 2, 1, "window"), ((14,), 5, 1, "tiles")):
    _, taps = geo.window_geometry("avg_pool", (2, 1024, 64), window, stride, pad, 1, False,
                                  "channels_last")
    assert planner.plan("sum", taps, np.float32, gpu, inner=64).values == want
  # channels_first 56 -> 5 on CUDA: the gradient's only reduce_windows are the forward's
  x = randn(np.random.default_rng(1), (2, 3, 56, 56))
  fn = functools.partial(jaxpool.adaptive_avg_pool, output_size=(5, 5),
                         data_format="channels_first")
  text = _program(_grad(fn), x, "cuda")
  dims = re.findall(r"window_dimensions = array<i64: ([0-9, ]+)>", text)
  assert sorted(dims) == ["1, 1, 1, 12", "1, 1, 12, 1"], dims
  assert "concatenate" in _ops(text)  # the planes' interleave
  # that plan, forced here, against NumPy's sums and their transpose
  p = planner.plan("sum", bins, np.float32, gpu, inner=1)
  s, vjp = jax.vjp(lambda v: sum_pool(v, (2, 3), bins, plan=p), x)
  g = randn(np.random.default_rng(3), s.shape)
  want, want_dx = _sums_56_to_5(x, g, channels_last=False)
  np.testing.assert_allclose(s, want, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(vjp(g)[0], want_dx, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", CUDA_BLOCKS)
def test_cuda_reduces_large_blocks(name):
  """On CUDA, non-overlapping windows over ``SMALL`` elements are a reshape and one
  reduce (their indices a match of it), and their derivative reads no window:
  reduce_window's transpose (the average) read each cotangent once per window element,
  select_and_scatter (the max) was slower still (benchmarks/README.md, "Plans per
  backend"). The forced plan matches the reference here, value and gradient."""
  fn = ACCELERATED[name]
  x = randn(np.random.default_rng(0), (2, 8, 8, 3))
  grad = _program(_grad(fn), x, "cuda")
  assert not _ops(grad) & {"reduce_window", "select_and_scatter", "scatter"}, _ops(grad)
  _, taps = geo.window_geometry("max_pool", x.shape, (4, 4), 4, 0, 1, False,
                                "channels_last")
  for op in ("sum", "max"):
    cuda = planner.plan(op, taps, np.float32, planner.Target("gpu", True))
    assert cuda.values == "blocks"
    assert cuda.backward == ("jax" if op == "sum" else "block")
    tpu = planner.plan(op, taps, np.float32, planner.Target("accelerator", True))
    assert tpu.values == "window"
  # their indices match the blocks' values (whole axis 56x56 fwd 0.61x the compare chain on
  # an H100); padded blocks keep the canonical indices
  gpu = planner.Target("gpu", True)
  assert planner.plan("indices", taps, np.float32, gpu).indices == "block_match"
  _, padded = geo.window_geometry("max_pool", (2, 10, 10, 3), (4, 4), 4, 1, 1, False,
                                  "channels_last")
  assert (planner.plan("indices", padded, np.float32, gpu).indices
          == planner.plan("indices", padded, np.float32, planner.Target("accelerator", True))
          .indices == "first_max")
  cuda = planner.plan("max", taps, np.float32, planner.Target("gpu", True))
  y, vjp = jax.vjp(lambda v: select_pool(v, (1, 2), taps, "max", plan=cuda), x)
  g = randn(np.random.default_rng(1), y.shape)
  first = from_layout(x, "channels_last")
  np.testing.assert_array_equal(from_layout(y, "channels_last"),
                                ref.max_pool(first, (4, 4), (4, 4), 0))
  want = ref.max_pool_grad(first, from_layout(g, "channels_last"), (4, 4), (4, 4), 0)
  np.testing.assert_array_equal(from_layout(vjp(g)[0], "channels_last"), want)


@pytest.mark.parametrize("shape, window, f32", [
    ((2, 8, 8, 64), (2, 2), True),
    ((2, 9, 9, 32), (3, 3), True),
    ((2, 4, 8, 8, 32), (2, 2, 2), True),
    ((2, 8, 8, 16), (2, 2), False),       # a short run after the pooled axes
    ((2, 64, 8, 8), (2, 2), False),       # channels_first: the pooled axes are minor
    ((2, 16, 64), (2,), False),           # one pooled axis
    ((2, 8, 8, 64), (4, 4), False),       # 10-100 elements: int32 as fast or faster
    ((2, 16, 16, 64), (8, 8), False),
    ((2, 24, 24, 64), (12, 12), True),    # from F32_OFFSETS_LARGE_MIN elements
    ((2, 4, 16, 16, 32), (4, 16, 16), True),
])
def test_blocks_take_float32_offsets_on_cpu(shape, window, f32):
  """On CPU with several devices (a lone one finds them by a select chain, below) the
  first-match offsets of non-overlapping windows over 2+ axes with at least
  ``F32_OFFSETS_INNER_MIN`` elements after them are reduced as float32
  (``match_blocks_f32``: 2x2/2 max fwd+bwd 0.68-0.90x, bf16 0.50-0.67x, 12x12 to whole
  56x56 axes 0.54-0.84x the int32 reduce), except windows of 10-100 elements; over one
  axis or a short minor run the int32 reduce stays (float32 measured 1.4-2.2x slower
  there). Other backends keep int32. Values and gradient equal the reference either way
  (``test_every_max_plan_...`` runs both forms on ties and NaN)."""
  layout = "channels_first" if shape[1] == 64 and len(shape) == 4 else "channels_last"
  _, taps = geo.window_geometry("max_pool", shape, window, None, 0, 1, False, layout)
  inner = 1 if layout == "channels_first" else shape[-1]
  target = {"cpu": planner.Target("cpu", False), "gpu": planner.Target("gpu", True),
            "accelerator": planner.Target("accelerator", True)}
  plans = {k: planner.plan("max", taps, np.float32, t, size=64, inner=inner)
           for k, t in target.items()}
  residual = {k: p.residual for k, p in plans.items()}
  assert residual["cpu"] == ("match_blocks_f32" if f32 else "match_blocks")
  assert residual["gpu"] != "match_blocks_f32" and residual["accelerator"] is None
  if f32:
    x = ties(np.random.default_rng(0), shape)
    x.flat[5] = np.nan
    g = randn(np.random.default_rng(1), (shape[0], *(n // k for n, k in
                                                     zip(shape[1:-1], window)), shape[-1]))
    axes = tuple(range(1, len(shape) - 1))
    def fn(v):
      return select_pool(v, axes, taps, "max", plan=plans["cpu"])
    y, vjp = jax.vjp(fn, jnp.asarray(x))
    first, gf = from_layout(x, "channels_last"), from_layout(g, "channels_last")
    np.testing.assert_array_equal(from_layout(y, "channels_last"),
                                  ref.max_pool(first, window, window, 0))
    want = ref.max_pool_grad(first, gf, window, window, 0)
    np.testing.assert_array_equal(from_layout(vjp(g)[0], "channels_last"), want)


@pytest.mark.parametrize("shape, window, strides, residual", [
    ((2, 12, 12, 8), (4, 4), None, "match_slices"),
    ((2, 20, 22, 3), (10, 10), None, "match_slices"),      # a crop of the input's end
    ((2, 21, 23, 4), (5, 5), (6, 7), "match_slices"),      # gaps between windows
    ((2, 4, 12, 12, 4), (2, 3, 3), None, "match_slices"),  # 3-D
    ((2, 56, 56, 4), (28, 28), None, "match_chain"),       # over MATCH_MAX elements
])
def test_blocks_find_their_offsets_by_a_select_chain_on_cpu(shape, window, strides,
                                                            residual):
  """On a lone CPU device the max/min derivative of unpadded non-overlapping windows
  over 2+ axes, float32/64, with more than one element after the pooled axes, finds
  each window's first-max offset by a select chain computed once (fenced): over every
  offset up to ``MATCH_MAX`` elements, over the last window axis beyond (its earlier
  axes folded). XLA:CPU's reduce over the window axes took up to 5x as long
  (benchmarks/README.md, "The offsets of blocks by a select chain"), so the gradient
  program holds no reduce. Values and gradient equal the reference with ties, NaN and
  an all ``-inf`` window; forward and reverse mode agree with finite differences.
  channels_first, 16-bit input, one pooled axis, padded windows, a last window axis
  over ``CHAINED_MATCH_MAX`` and several devices keep their forms."""
  _, taps = geo.window_geometry("max_pool", shape, window, strides, 0, 1, False,
                                "channels_last")
  cpu, size = planner.Target("cpu", True), math.prod(shape)
  p = planner.plan("max", taps, np.float32, cpu, size=size, inner=shape[-1])
  assert (p.residual, p.backward, p.fence) == (residual, "block", True), p
  chains = {"match_slices", "match_chain"}
  assert planner.plan("min", taps, np.float64, cpu, size=size, inner=2).residual == residual
  for kept in (planner.plan("max", taps, np.float32, planner.Target("cpu", False), size=size,
                            inner=shape[-1]),
               planner.plan("max", taps, np.float32, cpu, size=size, inner=1),
               planner.plan("max", taps, jnp.bfloat16, cpu, size=size, inner=shape[-1])):
    assert kept.residual not in chains, kept
  for kept_shape, kept_window, padding in (((2, 16, 8), (4,), 0), ((2, 12, 12, 8), (4, 4), 1),
                                           ((2, 70, 70, 4), (70, 70), 0)):
    _, t = geo.window_geometry("max_pool", kept_shape, kept_window, None, padding, 1, False,
                               "channels_last")
    kept = planner.plan("max", t, np.float32, cpu, size=64, inner=kept_shape[-1])
    assert kept.residual not in chains, kept
  rng = np.random.default_rng(0)
  first = ties(rng, (shape[0], shape[-1], *shape[1:-1]))
  first[1, 2, (0,) * (len(shape) - 2)] = np.nan
  first[0, 1][tuple(slice(0, k) for k in window)] = -np.inf  # an all -inf window
  x = to_layout(first, "channels_last")
  strides = strides or window

  def f(v):
    return jaxpool.max_pool(v, window, strides)

  assert "reduce" not in _ops(_program(_grad(f), x, "cpu"))
  want, idx = ref.max_pool_with_indices(first, window, strides, 0, 1, False)
  g = randn(np.random.default_rng(1), want.shape)
  y, vjp = jax.vjp(f, jnp.asarray(x))
  np.testing.assert_array_equal(from_layout(y, "channels_last"), want)
  gl = to_layout(g, "channels_last")
  np.testing.assert_allclose(from_layout(vjp(gl)[0], "channels_last"),
                             _routed_last(x, gl, idx), rtol=1e-6, atol=1e-6)
  check_grads(f, (randn(np.random.default_rng(2), x.shape),), order=1, modes=("fwd", "rev"))


@pytest.mark.parametrize("window, strides, padding, backward", [
    ((8, 8), None, 0, "block"),      # the blocks' select chain
    ((3, 3), 2, 0, "scatter"),       # the scatter-add's flat index
    ((5, 5), 1, 2, "scatter"),
])
def test_offsets_stay_computed_once_under_vmap(window, strides, padding, backward):
  """The first-max offsets (or flat indices) that the max derivative computes into
  memory once stay so under ``vmap``: the batch passes one conditional (the predicate's
  ``custom_vmap`` rule in :func:`jaxpool._linear.computed_once`), not a select, which
  XLA:CPU fused into every element the derivative writes or into the serial scatter
  loop (vmapped 5x5/1 p2 forward+backward took 4.8x as long, 8x8/8 blocks 4.6x;
  benchmarks/README.md, "The offsets of blocks by a select chain"). The vmapped
  gradient, and the gradient of the vmapped op, equal the per-example one."""
  x = randn(np.random.default_rng(0), (3, 2, 16, 16, 8))
  _, taps = geo.window_geometry("max_pool", x.shape[1:], window, strides, padding, 1, False,
                                "channels_last")
  p = planner.plan("max", taps, np.float32, planner.Target("cpu", True), size=x[0].size,
                   inner=8)
  assert (p.backward, p.fence) == (backward, True), p

  def loss(v):
    return jnp.sum(jaxpool.max_pool(v, window, strides, padding) ** 2)

  vmapped = jax.vmap(jax.grad(loss))
  of_vmapped = jax.grad(lambda v: jnp.sum(jax.vmap(loss)(v)))
  each = np.stack([jax.grad(loss)(xi) for xi in x])
  for grad in (vmapped, of_vmapped):
    assert "conditional(" in jax.jit(grad).lower(_on_cpu(x)).compile().as_text()
    np.testing.assert_allclose(grad(x), each, rtol=1e-6, atol=1e-6)


def test_period_of_adaptive_bins():
  """Adaptive bins of ``n`` into ``o`` repeat every ``n / gcd(n, o)`` elements."""
  assert planner.period(bin_taps(56, 80)) == (7, 10)
  assert planner.period(bin_taps(10, 4)) == (5, 2)
  assert planner.period(bin_taps(9, 5)) == (9, 5)  # one period: slices, no gather
  assert planner.period(bin_taps(1024, 50)) is None  # 25 bins of ~21: over the budget
  assert planner.period(bin_taps(56, 7)) is None  # regular: a reshape
  # bins that do not repeat (not adaptive ones), and bins crossing a period's end
  assert planner.period(geo.AxisTaps(6, 3, 2, starts=(0, 3, 4), widths=(2, 1, 2))) is None
  assert planner.period(geo.AxisTaps(6, 2, 4, starts=(0, 2), widths=(4, 4))) is None


@pytest.mark.parametrize("op", ["max", "indices"])
@pytest.mark.parametrize("width", [30, 10])
def test_repeating_bins_are_sliced_on_cpu(op, width):
  """Adaptive bins that repeat (56 -> 80 repeats every 7 elements) are read by slices on
  CPU: the values and indices have no gather and no scatter, nor has the gradient a
  gather (the gather and its scatter transpose were 2-2.3x slower, benchmarks/README.md,
  "Adaptive bins that repeat"). Fewer outputs than inputs: the gradient is one
  scatter-add at the chain's flat indices (``chain_scatter``). Where every irregular
  axis's bins are at most ``FLOORS_MAX`` wide (10 -> 4 here, not 30 -> 4), they are read
  as floors instead, and the chain routes the cotangent (no scatter; see
  :func:`test_narrow_adaptive_bins_are_read_as_floors_on_cpu`). Accelerators keep the
  gather."""
  taps = (bin_taps(14, 20), bin_taps(width, 4))
  cpu = "floors" if width == 10 else "periods"
  for platform, bins in (("cpu", cpu), ("gpu", None), ("accelerator", None)):
    assert planner.plan(op, taps, np.float32, planner.Target(platform, True)).bins == bins
  assert planner.plan(op, taps, np.float32, planner.Target("cpu", True)).backward == \
      ("chain" if cpu == "floors" else "chain_scatter")
  x = ties(np.random.default_rng(0), (2, 14, width, 3))

  def f(v):
    if op == "max":
      return jaxpool.adaptive_max_pool(v, (20, 4))
    return jaxpool.adaptive_max_pool_with_indices(v, (20, 4))

  forward = _ops(_program(f, x, "cpu"))
  assert not forward & {"gather", "scatter"}, forward
  text = _program(lambda v: (f(v), _grad(f)(v)), x, "cpu")
  assert not _ops(text) & ({"gather", "scatter"} if cpu == "floors" else {"gather"}), \
      _ops(text)
  assert "gather" in _ops(_program(f, x, "tpu"))
  first = from_layout(x, "channels_last")
  want, idx = ref.adaptive_max_pool_with_indices(first, (20, 4))
  out = jax.tree.leaves(f(x))
  np.testing.assert_array_equal(from_layout(out[0], "channels_last"), want)
  if op == "indices":
    np.testing.assert_array_equal(from_layout(out[1], "channels_last"), idx)
  g = randn(np.random.default_rng(1), out[0].shape)
  dx = jax.vjp(lambda v: jax.tree.leaves(f(v))[0], x)[1](g)[0]
  np.testing.assert_allclose(from_layout(dx, "channels_last"),
                             _routed(first, from_layout(g, "channels_last"), idx),
                             rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("size, out, bins", [((10, 100), (143, 7), "readers"),
                                             ((20, 42), (143, 8), "periods")])
def test_gathered_bins_route_their_cotangent_by_readers_on_cpu(size, out, bins):
  """Adaptive max bins onto more outputs than inputs that do not repeat and are wider
  than ``FLOORS_MAX`` on some axis (100 -> 7: 15-16 elements) are gathered; on CPU the
  chain derivative takes the cotangent at each input's readers: no scatter, where the
  gather's transpose is a scatter-add (72 -> 143 fwd+bwd 0.77x, benchmarks/README.md,
  "Adaptive max bins routed by their readers").
  ``bins="readers"`` where no axis repeats, else the other axes read their periods.
  Accelerators keep the gather and its transpose. Ties and NaN go to the first max, as
  PyTorch routes them."""
  taps = tuple(bin_taps(n, o) for n, o in zip(size, out))
  assert planner.plan("max", taps, np.float32, planner.Target("cpu", True)).bins == bins
  for platform in ("gpu", "accelerator"):
    assert planner.plan("max", taps, np.float32, planner.Target(platform, True)).bins is None
  x = ties(np.random.default_rng(0), (2, *size, 3))
  x[1, 3, 2, 1] = np.nan

  def f(v):
    return jaxpool.adaptive_max_pool(v, out)

  assert "scatter" not in _ops(_program(_grad(f), x, "cpu"))
  assert "scatter" in _ops(_program(_grad(f), x, "tpu"))
  first = from_layout(x, "channels_last")
  want, idx = ref.adaptive_max_pool_with_indices(first, out)
  np.testing.assert_array_equal(from_layout(f(x), "channels_last"), want)
  g = randn(np.random.default_rng(1), want.shape)
  dx = jax.vjp(f, x)[1](to_layout(g, "channels_last"))[0]
  finite = np.isfinite(want).reshape(6, -1).all(1).reshape(2, 3)
  np.testing.assert_allclose(np.asarray(from_layout(dx, "channels_last"))[finite],
                             _routed(first, g, idx)[finite], rtol=1e-6, atol=1e-6)
  check_grads(f, (randn(np.random.default_rng(2), x.shape),), order=1, modes=("fwd", "rev"))


@pytest.mark.parametrize("layout, size, out", [
    ("channels_last", (9, 7), (13, 6)),
    ("channels_last", (16, 13), (9, 5)),
    ("channels_first", (11, 10), (7, 17)),
    ("channels_last", (5, 6, 7), (7, 4, 9)),
    ("channels_last", (10,), (13,)),
])
def test_narrow_adaptive_bins_are_read_as_floors_on_cpu(layout, size, out):
  """Adaptive max bins at most ``FLOORS_MAX`` wide, ``FLOORS_READS_MAX`` elements per
  output, are read on a lone CPU device as floors (:func:`jaxpool._engine.views.floor_take`):
  no gather and no scatter in the values, the indices or the gradient, where the
  gathers, their transposes and the chain's scatter-add took 1.1-8x as long
  (benchmarks/README.md, "Adaptive bins read as floors"). Values and indices are
  PyTorch's, with ties, NaN and integers; the cotangent goes to the first max. Wider
  bins and SPMD targets keep their forms, accelerators the gather."""
  taps = tuple(bin_taps(n, o) for n, o in zip(size, out))
  cpu = planner.Target("cpu", True)
  if len(size) > 1:  # the index chain reduces the minor axis last only when it is pooled
    assert planner.plan("indices", taps, np.float32, cpu, inner=3).order is None
    assert planner.plan("indices", taps, np.float32, cpu, inner=1).order == "minor_last"
  for op in ("max", "indices"):
    p = planner.plan(op, taps, np.float32, cpu)
    assert (p.bins, p.backward) == ("floors", "chain"), p
    assert planner.plan(op, taps, np.float32, planner.Target("cpu", False)).bins != "floors"
    assert planner.plan(op, taps, np.float32, planner.Target("gpu", True)).bins is None
  rng = np.random.default_rng(0)
  first = ties(rng, (2, 3, *size))
  first[1, 2, (0,) * len(size)] = np.nan
  first[0, 1, size[0] // 2] = np.nan
  x = to_layout(first, layout)

  def f(v):
    return jaxpool.adaptive_max_pool_with_indices(v, out, data_format=layout)

  assert not _ops(_program(f, x, "cpu")) & {"gather", "scatter"}
  assert not _ops(_program(_grad(f), x, "cpu")) & {"gather", "scatter"}
  want, idx = ref.adaptive_max_pool_with_indices(first, out)
  values, indices = f(x)
  np.testing.assert_array_equal(from_layout(values, layout), want)
  np.testing.assert_array_equal(from_layout(indices, layout), idx)
  g = randn(np.random.default_rng(1), want.shape)
  dx = jax.vjp(lambda v: f(v)[0], x)[1](to_layout(g, layout))[0]
  finite = np.isfinite(want).reshape(6, -1).all(1).reshape(2, 3)
  np.testing.assert_allclose(from_layout(dx, layout)[finite], _routed(first, g, idx)[finite],
                             rtol=1e-6, atol=1e-6)
  check_grads(lambda v: f(v)[0], (randn(np.random.default_rng(2), x.shape),), order=1,
              modes=("fwd", "rev"))
  ints = ties(rng, first.shape).astype(np.int32) * 1000
  values, indices = f(to_layout(ints, layout))
  want, idx = ref.adaptive_max_pool_with_indices(ints, out)
  np.testing.assert_array_equal(from_layout(values, layout), want)
  np.testing.assert_array_equal(from_layout(indices, layout), idx)


@pytest.mark.parametrize("shape, out", [((4, 71, 71, 16), (104, 104)),
                                        ((8, 64, 64, 64), (30, 30)),
                                        ((2, 10, 10, 10, 16), (17, 17, 17))])
def test_floors_stay_fused(shape, out):
  """Fused too deep, XLA:CPU writes a floor take's broadcast (the input times the output
  along the axis) to memory: 29-108x the input before the chain computed the cotangent
  and each axis's max once between axes. Forward and forward+backward stay within 3x
  their inputs and outputs."""
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  y = jax.eval_shape(lambda v: jaxpool.adaptive_max_pool(v, out), x)
  budget = 3 * 4 * (math.prod(shape) + math.prod(y.shape))
  for fn in (lambda v: jaxpool.adaptive_max_pool(v, out),
             lambda v, g: jax.vjp(lambda u: jaxpool.adaptive_max_pool(u, out), v)[1](g)):
    args = (x,) if fn.__code__.co_argcount == 1 else (x, y)
    temp = jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes
    assert temp <= budget, (temp, budget)


FLOAT64_MAX_OPS = {  # the max/min family, windows over SMALL elements (JAX's rule in f32)
    "max_7x7": lambda x: jaxpool.max_pool(x, (7, 7), 1, 3),
    "min_5x5s2p2": lambda x: jaxpool.min_pool(x, (5, 5), 2, 2),
    "indices_5x5p2": lambda x: jaxpool.max_pool_with_indices(x, (5, 5), 1, 2)[0],
    "adaptive_max_even": lambda x: jaxpool.adaptive_max_pool(x, (2, 2)),
    "adaptive_avgmax": lambda x: jaxpool.adaptive_avgmax_pool(x, (2, 2)),
    "global_max": lambda x: jaxpool.global_max_pool(x, 2),
    "max_3d_3x3x3": lambda x: jaxpool.max_pool(x.reshape(2, 6, 6, 8, 1), (3, 3, 3), 1),
}


@pytest.mark.parametrize("name", list(FLOAT64_MAX_OPS))
def test_cuda_float64_forward_mode_keeps_full_precision(name):
  """JAX's forward-mode max rule lowers on CUDA to a reduce_window over value and tangent
  packed in one 64-bit word: float64 keeps 20 mantissa bits and JAX warns. The CUDA
  plan routes float64 through the custom derivative forms instead (the warning is an
  error in this suite), for jvp and the hessian's jvp-of-grad alike."""
  fn = FLOAT64_MAX_OPS[name]
  with jax.enable_x64(True):
    x = jnp.zeros((2, 12, 12, 2), jnp.float64)
    for f in (lambda v, u: jax.jvp(fn, (v,), (u,))[1],
              lambda v, u: jax.jvp(jax.grad(lambda w: jnp.sum(fn(w) ** 2)), (v,), (u,))[1]):
      export.export(jax.jit(f), platforms=("cuda",))(x, x)  # warns on reduced precision


def test_cuda_float64_plan_is_exact():
  """The float64 CUDA plan of a 7x7 window (reduce_window values, the phase-plane
  derivative), forced here: on distinct inputs its jvp is the tangent at each window's
  maximum, to float64 precision (a central difference agrees to 1e-9)."""
  with jax.enable_x64(True):
    x = jnp.asarray(np.random.default_rng(0).permutation(2 * 12 * 12 * 2)
                    .reshape(2, 12, 12, 2) / 577.0, jnp.float64)
    t = jnp.asarray(np.random.default_rng(1).standard_normal(x.shape), jnp.float64)
    _, taps = geo.window_geometry("max_pool", x.shape, (7, 7), 1, 3, 1, False,
                                  "channels_last")
    cuda = planner.plan("max", taps, np.float64, planner.Target("gpu", True))
    assert cuda.values == "window" and cuda.backward != "jax"
    assert planner.plan("max", taps, np.float32, planner.Target("gpu", True)).backward == "jax"

    def fn(v):
      return select_pool(v, (1, 2), taps, "max", plan=cuda)
    np.testing.assert_array_equal(fn(x), jaxpool.max_pool(x, (7, 7), 1, 3))
    dy = jax.jit(lambda v, u: jax.jvp(fn, (v,), (u,))[1])(x, t)
    eps = 1e-6
    np.testing.assert_allclose(dy, (fn(x + eps * t) - fn(x - eps * t)) / (2 * eps),
                               rtol=1e-9, atol=1e-9)


def test_accelerators_keep_a_custom_rule_only_for_dilation():
  """Dilated max windows: reduce_window values, and the phase-plane rule for the
  derivative (JAX's own raises there); the gradient runs here and is exact."""
  def fn(x):
    return jaxpool.max_pool(x, (2, 2), 1, dilation=2)
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 8, 3)), jnp.float32)
  fwd, grad = _program(fn, x, "cuda"), _program(_grad(fn), x, "cuda")
  assert "reduce_window" in _ops(fwd)
  assert "select_and_scatter" not in _ops(grad)
  _, taps = geo.window_geometry("max_pool", x.shape, (2, 2), 1, 0, 2, False, "channels_last")
  canonical = planner.plan("max", taps, np.float32, planner.Target("accelerator", True))
  assert canonical == planner.Plan(values="window", residual="first_max", backward="planes")
  y = select_pool(x, (1, 2), taps, "max", plan=canonical)
  np.testing.assert_array_equal(y, fn(x))


def test_cpu_keeps_its_tuned_plans():
  """CPU: small windows as tiled slices (no reduce_window), the flat scatter-add
  backward for unpadded overlapping windows on a lone device, max of bfloat16 in
  float32; the program for cpu differs from the one for cuda."""
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 9, 9, 3)), jnp.bfloat16)
  def fn(x):
    return jaxpool.max_pool(x, (3, 3), 2, 1)
  fwd = _program(fn, x, "cpu")
  assert "reduce_window" not in _ops(fwd) and "concatenate" in _ops(fwd)
  assert "f32" in fwd
  _, taps = geo.window_geometry("max_pool", x.shape, (3, 3), 2, 0, 1, False, "channels_last")
  lone = planner.plan("max", taps, np.float32, planner.Target("cpu", True), size=486)
  assert (lone.residual, lone.backward, lone.address) == ("first_max", "scatter", "flat")
  spmd = planner.plan("max", taps, np.float32, planner.Target("cpu", False), size=486)
  assert spmd.backward == "planes" and spmd.address is None


@pytest.mark.parametrize("window, stride, residual, backward", [
    ((2, 2), 1, "match_stacked", "planes"),   # an update per input element: planes
    ((3, 2), 1, "match_stacked", "planes"),
    ((5, 5), 1, "first_max", "planes"),       # over SMALL: the compare chain's offsets
    ((3,), 2, "match_stacked", "planes"),     # small 1-D windows
    ((3, 3), 2, "first_max", "scatter"),      # strided 2-D (AlexNet, Inception)
    ((10,), 2, "first_max", "scatter"),       # 1-D over SMALL (two windows: one window
])                                            # has no overlap and plans as blocks)
def test_unpadded_overlapping_windows_scatter_only_where_strided(window, stride, residual,
                                                                 backward):
  """Unpadded overlapping windows on a lone CPU device: the serial scatter-add makes one
  update per output, so stride-1 windows and small 1-D windows take the phase planes
  (2x2/1 5-9x faster, benchmarks/README.md, "The max derivative off the sweep's
  shapes"); strided 2-D windows and wider 1-D ones keep the scatter. Values and
  gradient of the forced plan against the reference."""
  d = len(window)
  x = ties(np.random.default_rng(0), (2,) + (13,) * d + (3,))
  _, taps = geo.window_geometry("max_pool", x.shape, window, stride, 0, 1, False,
                                "channels_last")
  p = planner.plan("max", taps, np.float32, planner.Target("cpu", True), size=x.size)
  assert (p.residual, p.backward) == (residual, backward)
  axes = tuple(range(1, 1 + d))
  first = from_layout(x, "channels_last")
  want, idx = ref.max_pool_with_indices(first, window, stride)
  y, vjp = jax.vjp(lambda v: select_pool(v, axes, taps, "max", plan=p), x)
  np.testing.assert_array_equal(from_layout(y, "channels_last"), want)
  g = randn(np.random.default_rng(1), y.shape)
  np.testing.assert_allclose(from_layout(vjp(g)[0], "channels_last"),
                             _routed(first, from_layout(g, "channels_last"), idx),
                             rtol=1e-6, atol=1e-6)


def test_unpool_checks_indices_first_on_cpu():
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 8, 3)), jnp.float32)

  def fn(x):
    v, i = jaxpool.max_pool_with_indices(x, (2, 2))
    return jaxpool.max_unpool(v, i, (2, 2))

  cases = {}
  for platform in ("cuda", "tpu", "cpu"):
    text = _program(fn, x, platform)
    assert "scatter" in _ops(text)
    cases[platform] = text.count("stablehlo.case")
  # the check's cond, on a lone CPU device, where the scatter is a serial loop
  assert cases["cuda"] == cases["tpu"] == cases["cpu"] - 1
  _, taps = geo.window_geometry("max_pool", x.shape, (2, 2), 2, 0, 1, False, "channels_last")
  forms = {k: (p.unpool, p.address) for k, p in
           planner.plans("unpool", taps, np.float32, size=x.size).items()}
  assert forms == {"cpu": ("check_select", "flat"), "cuda": ("scatter", "iota"),
                   "default": ("scatter", "iota")}
  assert "gather" in _ops(_program(_grad(fn), x, "tpu"))


def _on_cpu(x):
  """``x`` committed to the CPU device: ``jit`` then plans and compiles for XLA:CPU, in a
  GPU process too (the tests of CPU programs run there as well)."""
  return jax.device_put(x, jax.devices("cpu")[0])


def _compiled_ops(fn, x) -> list[str]:
  text = jax.jit(fn).lower(_on_cpu(x)).compile().as_text()
  return sorted(re.findall(r"\s([a-z][a-z\-]*)\(", text))


@pytest.mark.parametrize("shape", [(4, 7, 7, 16), (2, 5, 6, 3, 8), (2, 11, 11, 64)])
@pytest.mark.parametrize("kind", ["avg", "max"])
def test_whole_axis_windows_lower_to_one_reduction(shape, kind):
  """``adaptive_*_pool(x, (1,) * d)``, a window spanning each axis and ``global_*_pool``
  compile to the same program on CPU: no reduce-window (the non-overlapping ``blocks``
  plan: a reshape and one reduce, folds for a float max, slices and adds for a sum of
  up to ``SUM_SLICES_MAX`` elements). For max this holds up to ``BLOCKS_MAX`` window
  elements (or over 3+ axes); larger 1-D/2-D ones are reduced one axis at a time
  (measured faster with few channels)."""
  x = jnp.ones(shape)
  d = len(shape) - 2
  glob, adaptive, window = (getattr(jaxpool, f"global_{kind}_pool"),
                            getattr(jaxpool, f"adaptive_{kind}_pool"),
                            getattr(jaxpool, f"{kind}_pool"))
  want = _compiled_ops(lambda v: glob(v, d, keepdims=True), x)
  assert "reduce-window" not in want
  # a float32 max folds instead of reducing (Plan.fold: XLA:CPU's reduce drops NaN); a
  # float32 sum of at most SUM_SLICES_MAX elements adds slices (Plan.fold: XLA:CPU runs
  # its reduce on one thread), a larger one with 64 channels after it reduces once
  sliced = math.prod(shape[1:-1]) <= planner.SUM_SLICES_MAX
  assert want.count("reduce") == (1 if kind == "avg" and not sliced else 0), want
  if kind == "avg" and sliced:
    assert want.count("slice") >= math.prod(shape[1:-1]), want
  assert _compiled_ops(lambda v: adaptive(v, (1,) * d), x) == want
  assert _compiled_ops(lambda v: window(v, shape[1:-1]), x) == want
  if kind == "max":
    large = (1, planner.BLOCKS_MAX + 1, 2)
    _, taps = geo.window_geometry("max_pool", large, large[1:-1], None, 0, 1, False,
                                  "channels_last")
    assert planner.plan("max", taps, np.float32, planner.Target("cpu", True),
                        inner=2).values == "axes"


@pytest.mark.parametrize("layout, shape, window, blocks", [
    ("channels_last", (1, 11, 11, planner.BLOCKS_INNER_MIN), (11, 11), True),
    ("channels_last", (1, 12, 12, planner.BLOCKS_INNER_MIN // 2), (12, 12), False),
    ("channels_first", (2, 3, 11, 11), (11, 11), True),            # whole trailing axes
    ("channels_first", (1, 2, 22, 22), (11, 11), False),           # not whole
    ("channels_first", (2, 3, planner.BLOCKS_MAX + 1), (planner.BLOCKS_MAX + 1,), True),
])
def test_large_max_windows_reduce_as_blocks_by_their_inner_count(layout, shape, window,
                                                                 blocks):
  """Non-overlapping max windows over ``BLOCKS_MAX`` elements on CPU: as blocks where
  the elements after the pooled axes number at least ``BLOCKS_INNER_MIN`` or the windows
  are whole trailing axes (channels_first global pooling), else one axis at a time;
  either way folded (no reduce, no reduce-window: ``Plan.fold``); values and indices
  equal the reference."""
  x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
  lay, taps = geo.window_geometry("max_pool", x.shape, window, None, 0, 1, False, layout)
  inner = math.prod(x.shape[max(lay.spatial_axes) + 1:])
  p = planner.plan("max", taps, np.float32, planner.Target("cpu", True), inner=inner)
  assert (p.values == "blocks") == blocks and p.fold
  assert p.values == "blocks" or p.values == "axes"
  ops = _ops(_program(lambda v: jaxpool.max_pool(v, window, data_format=layout),
                     jnp.asarray(x), "cpu"))
  assert "reduce_window" not in ops and "reduce" not in ops, ops
  values, indices = jaxpool.max_pool_with_indices(x, window, data_format=layout)
  want_v, want_i = ref.max_pool_with_indices(from_layout(x, layout), window)
  np.testing.assert_array_equal(from_layout(values, layout), want_v)
  np.testing.assert_array_equal(from_layout(indices, layout), want_i)


@pytest.mark.parametrize("layout, shape, window, dtype, form", [
    ("channels_last", (2, 12, 12, 3), (2, 2), jnp.float32, "block"),
    ("channels_last", (2, 12, 12, 3), (3, 3), jnp.float32, "match"),
    ("channels_first", (2, 3, 12, 12), (12, 12), jnp.float32, "match"),
    ("channels_last", (2, 32, 28, 3), (16, 14), jnp.float32, "block_chain"),
    ("channels_first", (1, 2, 14, 70), (14, 70), jnp.float32, "block_match"),
    ("channels_last", (2, 256, 2), (128,), jnp.float32, "block_match"),
    ("channels_last", (2, 12, 12, 3), (4, 4), jnp.bfloat16, "block_match"),
    ("channels_last", (2, 32, 28, 3), (16, 14), jnp.int32, "block_chain"),
    ("channels_last", (2, 32, 32, 3), (16, 16), jnp.float32, "block_rows"),
])
def test_blocked_indices_match_their_max_in_one_pass(layout, shape, window, dtype, form):
  """The indices of unpadded non-overlapping windows on CPU: one variadic reduce up to
  ``BLOCK_ARGMAX_MAX`` elements; then a select chain matching each offset against the
  planned max up to ``MATCH_MAX``; larger windows chain the last window axis's
  positions up to ``CHAINED_MATCH_MAX`` and fold the other window axes; 16-bit floats
  and longer last axes compare every position and fold (``block_match``); windows of
  16+ rows of 16+ columns go two-level by rows where not differentiated
  (``block_rows``). The chains never write the compare over the whole input; every
  form gives the reference's values and first-max indices, ties and NaN included."""
  rng = np.random.default_rng(1)
  x = ties(rng, shape)
  if dtype != jnp.int32:
    x.flat[5] = x.flat[40] = np.nan
  x = jnp.asarray(x, dtype)
  lay, taps = geo.window_geometry("max_pool", x.shape, window, None, 0, 1, False, layout)
  p = planner.plan("indices", taps, dtype, planner.Target("cpu", True), size=x.size,
                   inner=math.prod(x.shape[max(lay.spatial_axes) + 1:]))
  assert p.indices == form and planner.valid(p, "indices", taps) is None
  fn = functools.partial(jaxpool.max_pool_with_indices, window_shape=window,
                         data_format=layout)
  if form in ("match", "block_chain", "block_rows"):
    compiled = jax.jit(fn).lower(_on_cpu(x)).compile()
    assert compiled.memory_analysis().temp_size_in_bytes < x.size, form
  values, indices = fn(x)
  want_v, want_i = ref.max_pool_with_indices(
      from_layout(np.asarray(x.astype(jnp.float32)), layout), window)
  np.testing.assert_array_equal(from_layout(np.asarray(values.astype(jnp.float32)), layout),
                                want_v)
  np.testing.assert_array_equal(from_layout(indices, layout), want_i)


def _rows_input(rng, shape, dtype):
  """Ties in every window, a window whose max lies in a late row and in an earlier row's
  later column, and NaN: one after a larger number, and two in one window."""
  x = ties(rng, shape, np.float64)
  x.reshape(shape[0], -1, shape[-1])[0, :, 0] = 0
  flat = x.reshape(shape[0], -1, shape[-1])
  flat[0, -1, 0] = flat[0, 40, 0] = 5  # row-major first: position 40
  if jnp.issubdtype(dtype, jnp.floating):
    flat[1, 3, 1], flat[1, 77, 1], flat[1, 30, 1] = 9, np.nan, np.nan
  if dtype == jnp.bool_:
    return jnp.asarray(x > 1)
  return jnp.asarray(x, dtype)


@pytest.mark.parametrize("shape, window, dtype", [
    ((2, 32, 32, 3), (32, 32), jnp.float32),       # whole axes
    ((2, 32, 48, 3), (16, 16), jnp.float32),       # 16x16 blocks
    ((2, 256, 3), (256,), jnp.float32),            # 1-D: 16 rows of 16
    ((2, 1024, 3), (512,), jnp.float32),           # 1-D: 16 rows of 32
    ((2, 8192, 3), (8192,), jnp.float32),          # 1-D: 64 rows of 128, folded
    ((2, 80, 80, 3), (80, 80), jnp.float32),       # 80 rows of 80, both folded
    ((2, 32, 32, 3), (32, 32), jnp.bfloat16),
    ((2, 256, 3), (256,), jnp.int32),
    ((2, 256, 3), (256,), jnp.bool_),
])
def test_indices_by_rows(shape, window, dtype):
  """``indices="block_rows"``: windows tiling one or two axes in 16+ rows of 16+ columns
  find each window's max as the max of its rows and the first max in the first row
  holding it, read again. Values and first-max indices equal the reference's (ties
  across rows, NaN); differentiated, the plan's other index form serves and the
  gradient reaches the reference's first max; ``jvp`` gives the same outputs."""
  x = _rows_input(np.random.default_rng(3), shape, dtype)
  lay, taps = geo.window_geometry("max_pool", x.shape, window, None, 0, 1, False,
                                  "channels_last")
  p = planner.plan("indices", taps, dtype, planner.Target("cpu", True), size=x.size,
                   inner=shape[-1])
  assert p.indices == "block_rows" and planner.valid(p, "indices", taps) is None
  fn = functools.partial(jaxpool.max_pool_with_indices, window_shape=window)
  values, indices = jax.jit(fn)(_on_cpu(x))
  wide = np.asarray(x.astype(jnp.float32))
  want_v, want_i = ref.max_pool_with_indices(from_layout(wide, "channels_last"), window)
  np.testing.assert_array_equal(from_layout(np.asarray(values.astype(jnp.float32)),
                                            "channels_last"), want_v)
  np.testing.assert_array_equal(from_layout(indices, "channels_last"), want_i)
  if not jnp.issubdtype(dtype, jnp.floating):
    return
  w = jnp.asarray(np.random.default_rng(4).standard_normal(values.shape), dtype)
  grad = jax.jit(jax.grad(lambda v: jnp.sum((fn(v)[0] * w).astype(jnp.float32))))(x)
  want = np.zeros((shape[0], shape[-1], math.prod(shape[1:-1])))
  flat_i = from_layout(indices, "channels_last").reshape(shape[0], shape[-1], -1)
  flat_w = np.asarray(w.astype(jnp.float32)).reshape(shape[0], -1, shape[-1])
  for n in range(shape[0]):
    for c in range(shape[-1]):
      np.add.at(want[n, c], flat_i[n, c], flat_w[n, :, c])
  np.testing.assert_array_equal(
      np.asarray(grad.astype(jnp.float32)).reshape(shape[0], -1, shape[-1]),
      want.transpose(0, 2, 1))
  (jv, ji), (dv, _) = jax.jit(lambda v, t: jax.jvp(fn, (v,), (t,)))(x, jnp.ones_like(x))
  np.testing.assert_array_equal(np.asarray(ji), np.asarray(indices))
  np.testing.assert_array_equal(np.asarray(jv.astype(jnp.float32)),
                                np.asarray(values.astype(jnp.float32)))
  assert np.all(np.asarray(dv.astype(jnp.float32)) == 1)


def _routed_to(indices, w, shape):
  """``w`` (channels_last pooled) summed at the flat first-max ``indices`` (channels_last
  pooled) of each (n, c) slice: the max's gradient, channels_last."""
  want = np.zeros((shape[0], shape[-1], math.prod(shape[1:-1])))
  flat_i = from_layout(indices, "channels_last").reshape(shape[0], shape[-1], -1)
  flat_w = from_layout(np.asarray(w, np.float64), "channels_last").reshape(
      shape[0], shape[-1], -1)
  for n in range(shape[0]):
    for c in range(shape[-1]):
      np.add.at(want[n, c], flat_i[n, c], flat_w[n, c])
  return np.moveaxis(want, 1, -1).reshape(shape)


ROWS_BACK_CASES = {
    "whole axes": ((2, 32, 32, 3), (32, 32)),
    "32x32 blocks": ((2, 64, 32, 3), (32, 32)),
    "1-D: 32 rows of 32": ((2, 1024, 3), (1024,)),
    "1-D: 64 rows of 128, columns folded": ((2, 8192, 3), (8192,)),
    "80 rows of 80, both folded": ((2, 80, 80, 3), (80, 80)),
}


@pytest.mark.parametrize("name, kind", [
    (name, kind) for name in ROWS_BACK_CASES
    for kind in ("max", "min", "indices", "indices bf16")] + [
    (name, "global") for name in ROWS_BACK_CASES if name != "32x32 blocks"])
def test_max_derivative_by_rows(name, kind):
  """``residual="block_rows"``: windows tiling one or two axes in 32+ rows of 32+
  columns, differentiated, find values and first extremes together two-level by rows.
  Values, gradient (all at the reference's first max/min: ties across rows, NaN) and
  ``jvp`` (the tangent at it) against the NumPy reference; not differentiated, the
  planned values alone give the same."""
  shape, window = ROWS_BACK_CASES[name]
  dtype = jnp.bfloat16 if kind == "indices bf16" else jnp.float32
  x = _rows_input(np.random.default_rng(5), shape, dtype)
  x = -x if kind == "min" else x
  lay, taps = geo.window_geometry("max_pool", x.shape, window, None, 0, 1, False,
                                  "channels_last")
  op = {"max": "max", "min": "min", "global": "max"}.get(kind, "indices")
  p = planner.plan(op, taps, dtype, planner.Target("cpu", True), size=x.size,
                   inner=shape[-1])
  assert p.residual == "block_rows" and planner.valid(p, op, taps) is None
  fn = {"max": lambda v: jaxpool.max_pool(v, window),
        "min": lambda v: jaxpool.min_pool(v, window),
        "global": lambda v: jaxpool.global_max_pool(v, len(window), keepdims=True),
        }.get(kind, lambda v: jaxpool.max_pool_with_indices(v, window)[0])
  wide = from_layout(np.asarray(x.astype(jnp.float32)), "channels_last")
  want_v, want_i = ref.max_pool_with_indices(wide, window, kind="min" if kind == "min"
                                             else "max")
  values = jax.jit(fn)(_on_cpu(x))
  np.testing.assert_array_equal(
      from_layout(np.asarray(values.astype(jnp.float32)), "channels_last"), want_v)
  w = jnp.asarray(np.random.default_rng(4).standard_normal(values.shape), dtype)
  y, vjp = jax.jit(lambda v: jax.vjp(fn, v))(_on_cpu(x))
  np.testing.assert_array_equal(np.asarray(y.astype(jnp.float32)),
                                np.asarray(values.astype(jnp.float32)))
  grad = jax.jit(vjp)(w)[0]
  np.testing.assert_array_equal(np.asarray(grad.astype(jnp.float32)),
                                _routed_to(want_i, np.asarray(w.astype(jnp.float32)),
                                           shape))
  t = jnp.asarray(np.random.default_rng(6).standard_normal(x.shape), dtype)
  jv, dv = jax.jit(lambda v, t: jax.jvp(fn, (v,), (t,)))(_on_cpu(x), t)
  np.testing.assert_array_equal(np.asarray(jv.astype(jnp.float32)),
                                np.asarray(values.astype(jnp.float32)))
  flat_t = np.moveaxis(np.asarray(t.astype(jnp.float32)), -1, 1).reshape(
      shape[0], shape[-1], -1)
  want_dv = np.take_along_axis(flat_t, want_i.reshape(shape[0], shape[-1], -1), -1)
  np.testing.assert_array_equal(
      from_layout(np.asarray(dv.astype(jnp.float32)), "channels_last").reshape(
          want_dv.shape), want_dv)


def test_indices_go_by_rows_where_measured():
  """``block_rows`` where windows tile one or two axes in at least ``ROWS_MIN`` rows of
  ``ROWS_MIN`` columns with ``ROWS_INNER_MIN`` or more elements after them, on a lone
  CPU device (benchmarks/README.md, "Indices by rows");
  the other index forms elsewhere, and where the op is differentiated
  (:func:`~jaxpool._engine.plan.differentiated`)."""
  lone = planner.Target("cpu", True)

  def form(shape, window, strides=None, pad=0, target=lone, dtype=np.float32):
    _, taps = geo.window_geometry("max_pool", shape, window, strides, pad, 1, False,
                                  "channels_last")
    return planner.plan("indices", taps, dtype, target, size=math.prod(shape),
                        inner=shape[-1]).indices, taps

  for shape, window in [((8, 56, 56, 64), (56, 56)), ((8, 64, 64, 64), (16, 16)),
                        ((8, 56, 56, 2048), (56, 56)), ((32, 1024, 64), (1024,)),
                        ((8, 3136, 3), (3136,)), ((64, 256, 64), (256,)),
                        ((8, 56, 56, 64), (28, 28))]:
    got, taps = form(shape, window)
    assert got == "block_rows", (shape, window)
    p = planner.plan("indices", taps, np.float32, lone, inner=shape[-1])
    rows = window[0] >= 32 if len(window) == 2 else planner.rows_split(window[0]) >= 32
    # from 32 rows the same form serves the derivative ("Derivatives by rows")
    assert (p.residual == "block_rows") == rows, (shape, window)
    d = planner.differentiated(p, taps)
    assert d == p if rows else d.indices in ("block_chain", "block_match")
  got, taps = form((8, 64, 64, 64), (16, 16), dtype=jnp.bfloat16)
  assert got == "block_rows"
  p = planner.plan("indices", taps, jnp.bfloat16, lone, inner=64)
  assert planner.differentiated(p, taps, jnp.bfloat16) == dataclasses.replace(
      p, indices="block_match") and p.upcast   # the 16-bit plan without the rule
  p = planner.plan("indices", form((8, 56, 56, 64), (56, 56))[1], jnp.bfloat16, lone,
                   inner=64)
  assert p.residual == "block_rows" and p.upcast  # 32+ rows: the rows form, in float32
  # measured slower: 14x14 with 512 channels (1.08-1.48x), 7x7 with 2048 (1.39-1.64x)
  assert form((32, 14, 14, 512), (14, 14))[0] == "match"
  assert form((64, 7, 7, 2048), (7, 7))[0] == "match"
  assert form((8, 64, 64, 64), (8, 64))[0] == "block_chain"    # 8 rows
  assert form((8, 64, 64, 64), (64, 8))[0] == "block_chain"    # 8 columns
  assert form((64, 240, 64), (240,))[0] == "block_match"       # 15 rows of 16
  assert form((64, 257, 64), (257,))[0] == "block_match"       # prime: one row
  assert form((8, 60, 60, 64), (16, 16))[0] != "block_rows"    # does not tile
  assert form((8, 64, 64, 64), (16, 16), 17)[0] != "block_rows"  # gapped
  assert form((8, 64, 64, 64), (16, 16), 16, 1)[0] != "block_rows"  # padded
  # channels_first (1.22-1.93x)
  _, taps = geo.window_geometry("max_pool", (8, 64, 56, 56), (56, 56), None, 0, 1, False,
                                "channels_first")
  assert planner.plan("indices", taps, np.float32, lone, inner=1).indices != "block_rows"
  assert form((8, 56, 56, 2), (56, 56))[0] != "block_rows"     # 2 channels: not measured
  for target in (planner.Target("cpu", False), planner.Target("gpu", True),
                 planner.Target("accelerator", True)):
    assert form((8, 56, 56, 64), (56, 56), target=target)[0] != "block_rows"


@pytest.mark.parametrize("layout, shape, window, strides, padding, dilation, form", [
    ("channels_last", (2, 15, 15, 3), (7, 7), 2, 0, 1, "match"),          # overlapping
    ("channels_last", (2, 14, 14, 3), (5, 5), 2, 0, 2, "match"),          # dilated
    ("channels_last", (2, 15, 15, 3), (6, 6), 7, 3, 1, "match"),          # padded, gapped
    ("channels_last", (2, 20, 20, 3), (14, 14), 7, 0, 1, "match"),        # one output
    ("channels_last", (2, 15, 15, 3), (7, 7), 4, 3, 1, "chain"),          # padded overlap
    ("channels_last", (2, 15, 15, 3), (6, 6), 12, 2, 2, "chain"),         # padded dilated
    ("channels_first", (2, 3, 16, 16), (8, 8), 4, 0, 1, "chain"),         # minor axis
    ("channels_last", (2, 21, 21, 3), (15, 15), 2, 0, 1, "chain"),        # over MATCH_MAX
])
def test_larger_windows_match_their_indices_where_measured(layout, shape, window, strides,
                                                           padding, dilation, form):
  """Indices of windows over ``JOINT_MAX`` elements on CPU: a select chain matching each
  offset against the planned max up to ``MATCH_MAX`` elements where the windows read no
  padding (or, undilated, do not overlap) and ``MATCH_INNER_MIN`` elements follow them;
  else the compare chain one axis at a time. Values and first-max indices equal the
  reference, ties and NaN included."""
  x = ties(np.random.default_rng(2), shape)
  x.flat[7] = x.flat[50] = np.nan
  lay, taps = geo.window_geometry("max_pool", x.shape, window, strides, padding, dilation,
                                  False, layout)
  p = planner.plan("indices", taps, np.float32, planner.Target("cpu", True), size=x.size,
                   inner=math.prod(x.shape[max(lay.spatial_axes) + 1:]))
  assert p.indices == form and planner.valid(p, "indices", taps) is None
  values, indices = jaxpool.max_pool_with_indices(x, window, strides, padding,
                                                  dilation=dilation, data_format=layout)
  want_v, want_i = ref.max_pool_with_indices(from_layout(x, layout), window, strides,
                                             padding, dilation)
  np.testing.assert_array_equal(from_layout(values, layout), want_v)
  np.testing.assert_array_equal(from_layout(indices, layout), want_i)


def test_match_indices_and_the_scatter_index_are_one_computation():
  """Where the max derivative scatters at the first matches (``residual="match_real"``,
  ``backward="scatter"``) and the indices match too, both are one expression, which XLA
  computes once: the compiled forward+backward of pool and unpool holds one select
  chain, one equality compare per window offset (as two expressions, 5x5/1 p2 took
  2.3x). Values, indices and gradient against the reference."""
  x = ties(np.random.default_rng(4), (2, 12, 12, 3))
  _, taps = geo.window_geometry("max_pool", x.shape, (5, 5), 1, 2, 1, False,
                                "channels_last")
  p = planner.plan("indices", taps, np.float32, planner.Target("cpu", True), size=x.size,
                   inner=3)
  assert (p.residual, p.backward, p.indices) == ("match_real", "scatter", "match")

  def f(v):
    y, i = jaxpool.max_pool_with_indices(v, (5, 5), 1, 2)
    return jaxpool.max_unpool(y, i, (5, 5), 1, 2, output_size=v.shape[1:-1]), y, i

  def fb(v, g):
    (u, y, i), vjp = jax.vjp(f, v)
    return u, y, i, vjp((g, jnp.zeros_like(y), np.zeros(i.shape, jax.dtypes.float0)))[0]

  g = randn(np.random.default_rng(5), x.shape)
  text = jax.jit(fb).lower(_on_cpu(x), g).compile().as_text()
  assert len(re.findall(r"\), direction=EQ", text)) < 2 * 25
  _, y, i, dx = fb(x, g)
  first = from_layout(x, "channels_last")
  want, idx = ref.max_pool_with_indices(first, (5, 5), 1, 2)
  np.testing.assert_array_equal(from_layout(y, "channels_last"), want)
  np.testing.assert_array_equal(from_layout(i, "channels_last"), idx)
  # d/dx of sum(g * unpool(pool(x))): each window's g at its max routed to that max
  gy = np.zeros(want.shape)
  flat_g = from_layout(g, "channels_last").reshape(6, -1)
  gy.reshape(6, -1)[:] = np.take_along_axis(flat_g, idx.reshape(6, -1), axis=1)
  np.testing.assert_allclose(from_layout(dx, "channels_last"), _routed(first, gy, idx),
                             rtol=1e-5, atol=1e-5)


def test_lp_cotangent_is_computed_once_on_cpu_only():
  """``lp_pool``'s sum is ``mapped``: on CPU its cotangent passes through a conditional
  that XLA:CPU keeps (a fusion boundary; ``optimization_barrier`` is dropped there), so
  the root's derivative is computed once instead of in every tap of the transpose.
  Other backends, and sums no map follows (``avg_pool``), get no fence."""
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 9, 9, 3)), jnp.float32)
  _, taps = geo.window_geometry("lp_pool", x.shape, (3, 3), 2, 0, 1, False, "channels_last")
  for target, fence in ((planner.Target("cpu", True), True),
                        (planner.Target("gpu", True), False),
                        (planner.Target("accelerator", True), False)):
    assert planner.plan("sum", taps, np.float32, target, mapped=True).fence == fence
    assert not planner.plan("sum", taps, np.float32, target).fence
  # several CPU devices (SPMD): the fence's read of one element would be a collective
  assert not planner.plan("sum", taps, np.float32, planner.Target("cpu", False),
                          mapped=True).fence

  def lp(v):
    return jaxpool.lp_pool(v, 2.0, (3, 3), 2)

  def avg(v):
    return jaxpool.avg_pool(v, (3, 3), 2)

  def cases(fn, platform):
    return _program(_grad(fn), x, platform).count("stablehlo.case")

  assert cases(lp, "cpu") == cases(lp, "cuda") + 1 == cases(lp, "tpu") + 1
  assert cases(avg, "cpu") == cases(avg, "cuda")
  compiled = jax.jit(_grad(lp)).lower(_on_cpu(x)).compile().as_text()
  assert "conditional(" in compiled


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("first", [0.0, -0.0, np.nan, -np.inf, 1.5])
def test_fenced_cotangent_is_the_identity(dtype, first):
  """Whatever the key's first element (its bits decide the conditional's predicate),
  ``fence_cotangent`` is the identity in value, forward and reverse mode, and batched."""
  y = jnp.asarray(np.r_[first, np.arange(1.0, 6.0)].reshape(2, 3), dtype)
  t = jnp.asarray(np.arange(-3.0, 3.0).reshape(2, 3), dtype)

  def same(a, b):  # in float32: NumPy's NaN-aware comparison knows no bfloat16
    np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))

  same(fence_cotangent(y), y)
  _, dy = jax.jvp(fence_cotangent, (y,), (t,))
  same(dy, t)
  (ct,) = jax.vjp(fence_cotangent, y)[1](t)
  same(ct, t)
  same(jax.vmap(computed_once)(t, y), t)
  same(computed_once(t, jnp.zeros((0,), dtype)), t)
  # unfold_cotangent: the same, its one read from the key
  same(unfold_cotangent(t, y), t)
  _, dy = jax.jvp(unfold_cotangent, (t, y), (y, t))
  same(dy, y)
  ct = jax.vjp(unfold_cotangent, t, y)[1](y)
  same(ct[0], y)
  same(ct[1], jnp.zeros_like(y))
  same(jax.vmap(unfolded)(t, y), t)
  same(unfolded(t, jnp.zeros((0,), dtype)), t)


@pytest.mark.parametrize("window,strides,padding,size", [
    ((5, 5), 1, 2, None), ((3, 3), 1, 1, None), ((3, 3), 2, 1, None), (None, None, None, (5, 5))])
def test_a_constant_cotangent_is_not_folded_through_a_sum_transpose(window, strides,
                                                                   padding, size):
  """The gradient of ``sum(avg_pool(x))``: its cotangent is a constant, which XLA would
  fold through the transpose's pads and window sums at compile time, in its slow
  evaluator (30 s or more over (8, 56, 56, 64) for 5x5/1 p2). On CPU the sum's plan
  unfolds it (the windows overlap or read padding), so the compiled gradient still
  reads its input (the unfolding one) instead of being one constant."""
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 16, 16, 3)), jnp.float32)

  def pool(v):
    if size is not None:
      return jaxpool.adaptive_avg_pool(v, size)
    return jaxpool.avg_pool(v, window, strides, padding)

  if size is None:
    _, taps = geo.window_geometry("avg_pool", x.shape, window, strides, padding, 1, False,
                                  "channels_last")
  else:
    taps = tuple(bin_taps(n, out) for n, out in zip(x.shape[1:3], size))
  cpu = planner.Target("cpu", True)
  assert planner.plan("sum", taps, np.float32, cpu).unfold
  assert not planner.plan("sum", taps, np.float32, planner.Target("cpu", False)).unfold
  assert not planner.plan("sum", taps, np.float32, planner.Target("gpu", True)).unfold
  assert not planner.plan("sum", taps, np.float32, cpu, mapped=True).unfold  # fenced

  def sum_grad(v):
    return jax.grad(lambda u: jnp.sum(pool(u)))(v)

  def reads_input(compiled):
    return "parameter(0)" in compiled.as_text().split("ENTRY")[1]

  grad = jax.jit(sum_grad)
  assert reads_input(grad.lower(x).compile())
  want = jax.vjp(pool, x)[1](jnp.ones(jax.eval_shape(pool, x).shape))[0]
  np.testing.assert_allclose(grad(x), want, rtol=1e-6)
  # the same gradient with the plan's unfold off is one folded constant
  plan = planner.plan
  planner.plan = lambda *a, **k: dataclasses.replace(plan(*a, **k), unfold=False)
  try:
    jax.clear_caches()
    folded = jax.jit(sum_grad).lower(x).compile()
  finally:
    planner.plan = plan
    jax.clear_caches()
  assert not reads_input(folded)


def test_cpu_folds_float_max_reductions():
  """Every CPU plan of a float max/min computed in 32 or 64 bits folds its reductions
  (XLA:CPU's YNNPACK reduce drops NaN there: ``test_nan_propagates_through_large_
  reductions``); 16-bit ones kept in 16 bits, integer ones and other backends keep the
  reduce."""
  for window in ((2, 2), (8, 8), (16, 16), (3, 3)):
    _, taps = geo.window_geometry("max_pool", (2, 16, 16, 3), window, None, 0, 1, False,
                                  "channels_last")
    for op in ("max", "min", "indices"):
      for dtype in (np.float32, jnp.bfloat16, np.float16, np.float64):
        for lone in (True, False):
          p = planner.plan(op, taps, dtype, planner.Target("cpu", lone))
          if p.indices != "block":  # one variadic reduce, whose comparator sees NaN
            folds = np.dtype(dtype).itemsize >= 4 or p.upcast
            # the folded result computed once on a lone device (a fence reads one element)
            assert p.fold == (("once" if lone else "fused") if folds else None)
      assert not planner.plan(op, taps, np.int32, planner.Target("cpu", True)).fold
      for platform in ("gpu", "accelerator"):
        assert not planner.plan(op, taps, np.float32, planner.Target(platform, True)).fold
    # a sum folds only over blocks (8x8, 16x16 with its 3 channels; the rule:
    # test_cpu_block_sums_add_slices)
    sum_fold = planner.plan("sum", taps, np.float32, planner.Target("cpu", True),
                            inner=3).fold
    assert sum_fold == ("fused" if window in ((8, 8), (16, 16)) else None)


def test_non_overlapping_sums_are_not_unfolded():
  """Unpadded non-overlapping windows (a reshape; the transpose is a broadcast, which XLA
  does not fold into a constant) keep their plan without the multiply."""
  for window in ((2, 2), (4, 4), (16, 16)):
    _, taps = geo.window_geometry("avg_pool", (2, 16, 16, 3), window, None, 0, 1, False,
                                  "channels_last")
    assert not planner.plan("sum", taps, np.float32, planner.Target("cpu", True)).unfold


def test_folds_reduce_the_whole_axis(rng):
  """Eighths, then halves (an odd length over eight reached by halving in the fewest
  parts up to eight that divide it), then the uneven remainders: every element exactly
  once."""
  fold = jax.jit(folds, static_argnums=(1, 2))
  for n in (1, 2, 3, 7, 8, 9, 15, 16, 17, 23, 49, 98, 100, 343, 513, 1568):
    x = randn(rng, (2, n, 3))
    for kind, want in (("sum", x.sum(1, keepdims=True)), ("max", x.max(1, keepdims=True)),
                       ("min", x.min(1, keepdims=True))):
      got = fold(jnp.asarray(x), 1, kind)
      assert got.shape == (2, 1, 3)
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    ints = rng.integers(-9, 9, (2, n, 3))  # exact: each element counted once
    np.testing.assert_array_equal(fold(jnp.asarray(ints), 1, "sum"),
                                  ints.sum(1, keepdims=True))


def _fusions_reading_the_input(text: str) -> list[str]:
  """The fusions of a compiled program's entry that read its first parameter (or a
  bitcast of it)."""
  entry = text[text.find("ENTRY"):]
  names = {re.search(r"%(\S+) = \S+ parameter\(0\)", entry).group(1)}
  for m in re.finditer(r"%(\S+) = \S+ bitcast\(%(\S+)\)", entry):
    if m.group(2) in names:
      names.add(m.group(1))
  return [m.group(1) for m in re.finditer(r"%(\S+) = \S+ fusion\(([^)]*)\)", entry)
          if {a.strip().lstrip("%") for a in m.group(2).split(",")} & names]


def test_folds_read_the_input_once():
  """The global max over 16x28x28 = 8 x 2^5 x 49 positions folds 49 into 7 parts of 7:
  a remainder taken from that length made XLA:CPU compute the first passes twice, in two
  fusions that each read the whole input (forward about twice as long;
  benchmarks/README.md, "Folds without a remainder"). One fusion reads it now; values
  (NaN too) and the gradient against NumPy."""
  x = randn(np.random.default_rng(0), (2, 16, 28, 28, 3))
  x[1, 5, 6, 7, 2] = np.nan
  fn = functools.partial(jaxpool.global_max_pool, num_spatial_dims=3)
  text = jax.jit(fn).lower(_on_cpu(x)).compile().as_text()
  assert len(_fusions_reading_the_input(text)) == 1, _fusions_reading_the_input(text)
  want = x.max((1, 2, 3))
  np.testing.assert_array_equal(fn(_on_cpu(x)), want)
  g = jax.grad(lambda v: jnp.sum(jnp.nan_to_num(fn(v)) ** 2))(_on_cpu(x[:1]))
  flat = x[0].reshape(-1, 3)
  want_g = np.zeros_like(flat)
  want_g[flat.argmax(0), np.arange(3)] = 2 * flat.max(0)
  np.testing.assert_allclose(np.asarray(g)[0].reshape(-1, 3), want_g, rtol=1e-6)


def test_axis_sum_folds_long_non_minor_axes_on_cpu_only(rng):
  """The channel mean of channels_first input: folded on CPU where the channel axis is at
  least as long as the elements after it, one reduce otherwise and on other backends;
  both forms give the mean, and the folded one's gradient is the broadcast 1/C."""
  cpu, gpu, tpu = (planner.Target(p, True) for p in ("cpu", "gpu", "accelerator"))
  assert planner.axis_sum_form(512, 196, cpu) == "folds"
  assert planner.axis_sum_form(2048, 49, cpu) == "folds"
  assert planner.axis_sum_form(64, 3136, cpu) == "reduce"
  assert planner.axis_sum_form(512, 1, cpu) == "reduce"  # the minor axis: channels_last
  assert {planner.axis_sum_form(512, 196, t) for t in (gpu, tpu)} == {"reduce"}
  def mean(v):
    return jaxpool.channel_pool(v, "avg", data_format="channels_first", num_spatial_dims=2)

  for shape in [(2, 40, 3, 4), (2, 3, 4, 5)]:  # folded, reduced
    x = randn(rng, shape)
    np.testing.assert_allclose(mean(x), x.mean(1, keepdims=True), rtol=1e-5, atol=1e-6)
    w = randn(rng, (2, 1) + shape[2:])
    g = jax.grad(lambda v, w=w: jnp.sum(mean(v) * w))(x)
    np.testing.assert_allclose(g, np.broadcast_to(w / shape[1], shape), rtol=1e-6)
  text = _program(lambda v: axis_sum(v, 1), jnp.zeros((2, 40, 8)), "cpu")
  assert "concatenate" not in _ops(text) and "slice" in _ops(text)
  text = _program(lambda v: axis_sum(v, 1), jnp.zeros((2, 40, 8)), "cuda")
  assert "reduce" in _ops(text) and "slice" not in _ops(text)


def test_chains_compute_each_axis_once_on_cpu_where_windows_share_elements():
  """A max chain over bins that overlap (adaptive 56 -> 5) fences each axis's max and
  offsets on CPU (fused, XLA:CPU recomputes them in every compare of the next axis); a
  chain of reshapes (56 -> 7) reads each element once and is not fenced, nor is any
  chain on the canonical backends."""
  cpu, tpu = planner.Target("cpu", True), planner.Target("accelerator", True)
  overlapping = tuple(bin_taps(56, 5) for _ in range(2))
  divisible = tuple(bin_taps(56, 7) for _ in range(2))
  assert planner.plan("max", overlapping, np.float32, cpu, size=100).fence
  assert planner.plan("indices", overlapping, np.float32, cpu, size=100).fence
  assert not planner.plan("max", divisible, np.float32, cpu, size=100).fence
  assert not planner.plan("max", overlapping, np.float32, tpu, size=100).fence
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 56, 56, 3)), jnp.float32)

  def conditionals(out):
    grad = _grad(lambda v: jaxpool.adaptive_max_pool(v, out))
    return jax.jit(grad).lower(_on_cpu(x)).compile().as_text().count("conditional(")

  # each folded max is one conditional too (Plan.fold "once"); the fenced chain adds more
  assert conditionals((5, 5)) > conditionals((7, 7)) > 0


@pytest.mark.parametrize("name, shape, pool, backward, fence", [
    # fewer outputs than inputs, bins over FLOORS_MAX wide: one scatter-add
    ("adaptive 28->5", (2, 28, 28, 3), lambda v: jaxpool.adaptive_max_pool_with_indices(
        v, (5, 5)), "chain_scatter", True),
    # more outputs than inputs, bins over FLOORS_MAX wide on an axis: the chain, unfenced
    ("adaptive 10x100->143x7", (2, 10, 100, 3),
     lambda v: jaxpool.adaptive_max_pool_with_indices(v, (143, 7)), "chain", False),
    # bins up to FLOORS_MAX wide, both ways: read as floors, the chain fenced
    ("adaptive 28->15", (2, 28, 28, 3), lambda v: jaxpool.adaptive_max_pool_with_indices(
        v, (15, 15)), "chain", True),
    ("adaptive 20->30", (2, 20, 20, 3), lambda v: jaxpool.adaptive_max_pool_with_indices(
        v, (30, 30)), "chain", True),
    # regular windows wider than CHAIN_WINDOW_MAX: one scatter-add; up to it, the chain
    ("max 9x9/4", (2, 21, 21, 3), lambda v: jaxpool.max_pool_with_indices(v, (9, 9), 4),
     "chain_scatter", True),
    ("max 8x8/4", (2, 20, 20, 3), lambda v: jaxpool.max_pool_with_indices(v, (8, 8), 4),
     "chain", True),
    # padded windows: one scatter-add at stride 1 (SPP), the chain when strided; per-axis
    # windows of 5 (3-D) keep the chain
    ("max 7x7/1 p3", (2, 12, 12, 3), lambda v: jaxpool.max_pool_with_indices(
        v, (7, 7), 1, 3), "chain_scatter", True),
    ("max 9x9/4 p4", (2, 21, 21, 3), lambda v: jaxpool.max_pool_with_indices(
        v, (9, 9), 4, 4), "chain", True),
    # padded strided windows that read each element at most twice: one scatter-add over
    # 2+ axes, the chain over one
    ("max 12x12/10 p4", (2, 28, 28, 3), lambda v: jaxpool.max_pool_with_indices(
        v, (12, 12), 10, 4), "chain_scatter", True),
    ("max 40/30 p10", (2, 200, 3), lambda v: jaxpool.max_pool_with_indices(
        v, (40,), 30, 10), "chain", True),
    ("max 5x5x5/2", (2, 9, 9, 9, 1), lambda v: jaxpool.max_pool_with_indices(
        v, (5, 5, 5), 2), "chain", True),
])
def test_max_derivative_form_by_outputs_and_window(name, shape, pool, backward, fence):
  """On a lone CPU device, the max derivative of large windows is one scatter-add at the
  chain's flat indices where that measured faster than routing the cotangent axis by
  axis: adaptive bins with no more outputs than inputs, unpadded regular windows wider
  than ``CHAIN_WINDOW_MAX`` on an axis, padded ones at stride 1 and padded ones over 2+
  axes that read each element at most ``CHAIN_READS`` times; upsampling bins route by
  the chain without fences (benchmarks/README.md, "The max derivative off the sweep's
  shapes", "Padded chain axes by segments"); bins read as floors by the chain, the
  cotangent fenced between axes ("Adaptive bins read as floors"). Values, indices and
  gradient against the reference."""
  x = ties(np.random.default_rng(0), shape)
  seen = []
  original = planner.plans

  def spy(op, taps, dtype, **kw):
    seen.append(planner.plan(op, taps, dtype, planner.Target("cpu", True), **kw))
    return original(op, taps, dtype, **kw)

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(planner, "plans", spy)
    v, i = jax.jit(pool)(_on_cpu(x))
  assert [(p.backward, p.fence) for p in seen] == [(backward, fence)], (name, seen)
  first = from_layout(x, "channels_last")
  if name.startswith("adaptive"):
    want, idx = ref.adaptive_max_pool_with_indices(first, v.shape[1:-1])
  else:
    window, stride, pad = {"max 9x9/4": ((9, 9), 4, 0), "max 8x8/4": ((8, 8), 4, 0),
                           "max 7x7/1 p3": ((7, 7), 1, 3),
                           "max 9x9/4 p4": ((9, 9), 4, 4), "max 5x5x5/2": ((5, 5, 5), 2, 0),
                           "max 12x12/10 p4": ((12, 12), 10, 4),
                           "max 40/30 p10": ((40,), 30, 10)}[name]
    want, idx = ref.max_pool_with_indices(first, window, stride, pad)
  np.testing.assert_array_equal(from_layout(v, "channels_last"), want)
  np.testing.assert_array_equal(from_layout(i, "channels_last"), idx)
  g = randn(np.random.default_rng(1), v.shape)
  dx = jax.vjp(lambda u: pool(u)[0], _on_cpu(x))[1](g)[0]
  np.testing.assert_allclose(from_layout(dx, "channels_last"), _routed_last(x, g, idx),
                             rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape, window, stride, pad, ceil, kind, residual", [
    ((2, 20, 20, 32), (6, 6), 6, 2, False, "max", "f32"),      # padded, 36 elements
    ((2, 16, 16, 64), (7, 7), 7, 0, True, "min", "f32"),       # ceil_mode overhang only
    ((2, 20, 20, 3), (6, 6), 8, 2, False, "max", "int32"),     # gapped, 3 channels
    ((2, 9, 9, 9, 2), (4, 4, 4), 4, 1, False, "max", "int32"),  # 3-D, 2 channels
    ((2, 9, 9, 32), (4, 4), 5, 1, False, "max", "f32"),        # 16 elements
    ((2, 15, 15, 32), (2, 2), 2, 0, True, "min", "f32"),       # ceil_mode, 4 elements
    ((2, 30, 64), (40,), 40, 5, False, "max", "int32"),        # 1-D
])
def test_padded_blocks_route_back_by_blocks(shape, window, stride, pad, ceil, kind,
                                            residual):
  """Non-overlapping windows that read padding (or a ``ceil_mode`` overhang) take the
  block derivative on a lone CPU device (windows over ``JOINT_MAX`` elements took the
  chain, up to 1.9x slower), its offsets as float32 over 2+ axes with at least
  ``F32_OFFSETS_INNER_MIN`` elements after them at every window size (int32 took up to
  1.7x; fewer channels and 1-D windows keep int32: benchmarks/README.md, "Chain order
  and padded blocks"). Values, indices and gradient against the reference, on ties and
  NaN."""
  rng = np.random.default_rng(0)
  x = ties(rng, shape)
  x.flat[rng.choice(x.size, 5, replace=False)] = np.nan
  seen = []
  original = planner.plans

  def spy(op, taps, dtype, **kw):
    seen.append(planner.plan(op, taps, dtype, planner.Target("cpu", True), **kw))
    return original(op, taps, dtype, **kw)

  kw = dict(window_shape=window, strides=stride, padding=pad, ceil_mode=ceil)
  pool = functools.partial(jaxpool.max_pool if kind == "max" else jaxpool.min_pool, **kw)
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(planner, "plans", spy)
    v, vjp = jax.vjp(pool, _on_cpu(x))
  want_residual = "match_blocks_f32" if residual == "f32" else "match_blocks"
  assert [(p.residual, p.backward) for p in seen] == [(want_residual, "block")], seen
  first = from_layout(x, "channels_last")
  want, idx = ref.max_pool_with_indices(first, window, stride, pad, 1, ceil, kind=kind)
  np.testing.assert_array_equal(from_layout(v, "channels_last"), want)
  g = randn(rng, v.shape)
  np.testing.assert_allclose(from_layout(vjp(g)[0], "channels_last"),
                             _routed_last(x, g, idx), rtol=1e-6, atol=1e-6)
  if kind == "max":
    _, i = jax.jit(lambda u: jaxpool.max_pool_with_indices(u, **kw))(_on_cpu(x))
    np.testing.assert_array_equal(from_layout(i, "channels_last"), idx)


def _largest_pad(fn, x) -> int:
  """Elements of the largest ``pad`` result in ``fn``'s compiled CPU program."""
  text = jax.jit(fn).lower(_on_cpu(x)).compile().as_text()
  shapes = re.findall(r"= [a-z0-9]+\[([\d,]*)\]\S* pad\(", text)
  return max((math.prod(int(n) for n in s.split(",") if n) for s in shapes), default=0)


@pytest.mark.parametrize("shape, window, stride, pad, ceil", [
    ((2, 53, 53, 3), (15, 15), 11, 6, True),
    ((2, 37, 37, 3), (11, 11), 4, 1, False),
    ((2, 300, 3), (33,), 1, 16, False),
    ((2, 12, 14, 13, 2), (5, 5, 5), 2, 2, False),
])
def test_padded_chain_axes_read_by_segments(shape, window, stride, pad, ceil):
  """On CPU, a chain's flat index reads each axis whose windows read padding per border
  and interior segment (``Plan.segments``, ``axis_form`` ``"tiles"``): only the few
  border rows are padded, never a padded copy of the input (which XLA:CPU wrote, then
  read twice, for the chain's max and its first match: indices 15x15/11 p6 took 1.7x,
  benchmarks/README.md, "Padded chain axes by segments"). Other backends keep the
  slices (not measured there). Values, indices and gradient against the reference, on
  ties and NaN."""
  rng = np.random.default_rng(0)
  x = ties(rng, shape)
  x.flat[rng.choice(x.size, 4, replace=False)] = np.nan
  kw = dict(window_shape=window, strides=stride, padding=pad, ceil_mode=ceil)
  _, taps = geo.window_geometry("max_pool", shape, window, stride, pad, 1, ceil,
                                "channels_last")
  assert {planner.axis_form(t, None, True) for t in taps} == {"tiles"}
  assert {planner.axis_form(t) for t in taps} == {"slices"}
  for platform, segments in (("cpu", True), ("gpu", False), ("accelerator", False)):
    p = planner.plan("indices", taps, np.float32, planner.Target(platform, True),
                     size=x.size, inner=shape[-1])
    assert p.indices == "chain" and p.segments == segments, (platform, p)

  def pool(u):
    return jaxpool.max_pool_with_indices(u, **kw)

  assert _largest_pad(pool, x) < x.size // 2
  (v, i), vjp = jax.vjp(pool, _on_cpu(x))
  first = from_layout(x, "channels_last")
  want, idx = ref.max_pool_with_indices(first, window, stride, pad, 1, ceil)
  np.testing.assert_array_equal(from_layout(v, "channels_last"), want)
  np.testing.assert_array_equal(from_layout(i, "channels_last"), idx)
  g = randn(rng, v.shape)
  dx = vjp((g, np.zeros(i.shape, jax.dtypes.float0)))[0]
  np.testing.assert_allclose(from_layout(dx, "channels_last"), _routed_last(x, g, idx),
                             rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("window, stride, pad", [((33,), 1, 16), ((20, 20), 4, 0)])
def test_wide_regular_windows_chain_by_slices(window, stride, pad):
  """A chain reads regular windows up to ``UNROLL_MAX`` wide per axis as slices, not a
  gather (XLA:CPU's gather was 2-14x slower: 1-D 33/1 p16 164 ms against 12 ms,
  benchmarks/README.md, "The max derivative off the sweep's shapes"): the program of
  indices and gradient has no gather. Values, indices and gradient against the
  reference."""
  d = len(window)
  x = ties(np.random.default_rng(0), (2,) + (40,) * d + (3,))

  def f(v):
    return jaxpool.max_pool_with_indices(v, window, stride, pad)

  assert max(window) <= planner.UNROLL_MAX
  text = _program(lambda v: (f(v), _grad(f)(v)), x, "cpu")
  assert "gather" not in _ops(text), _ops(text)
  first = from_layout(x, "channels_last")
  want, idx = ref.max_pool_with_indices(first, window, stride, pad)
  v, i = f(x)
  np.testing.assert_array_equal(from_layout(v, "channels_last"), want)
  np.testing.assert_array_equal(from_layout(i, "channels_last"), idx)
  g = randn(np.random.default_rng(1), v.shape)
  dx = jax.vjp(lambda u: f(u)[0], x)[1](g)[0]
  np.testing.assert_allclose(from_layout(dx, "channels_last"),
                             _routed(first, from_layout(g, "channels_last"), idx),
                             rtol=1e-6, atol=1e-6)


def test_matched_indices_skip_padding_and_find_the_first_nan():
  """The ``match`` indices (untiled padded windows): an all ``-inf`` window's index is
  its first real element, a NaN window's its first NaN, as the reference (PyTorch's
  rule)."""
  x = np.full((1, 1, 7, 7), -np.inf, np.float32)
  x[0, 0, 5:, 5:] = 1.0
  x[0, 0, 0, 3] = x[0, 0, 1, 1] = np.nan
  _, taps = geo.window_geometry("max_pool", x.shape, (5, 5), 1, 2, 1, False,
                                "channels_first")
  assert planner.plan("indices", taps, np.float32, planner.Target("cpu", True),
                      size=x.size).indices == "match"
  v, i = jaxpool.max_pool_with_indices(x, (5, 5), 1, 2, data_format="channels_first")
  want_v, want_i = ref.max_pool_with_indices(x, (5, 5), 1, 2)
  np.testing.assert_array_equal(v, want_v)
  np.testing.assert_array_equal(i, want_i)


def test_large_padded_windows_scatter_their_cotangent_on_a_lone_cpu():
  """Padded windows past the tiles' budget and over ``PLANES_MAX`` elements: the first
  real match's flat index and one scatter-add; smaller ones, and SPMD, keep the planes."""
  def taps(window, stride, pad):
    return geo.window_geometry("max_pool", (8, 56, 56, 64), window, stride, pad, 1, False,
                               "channels_last")[1]

  lone, spmd = planner.Target("cpu", True), planner.Target("cpu", False)
  for window, stride, pad in (((5, 5), 1, 2), ((5, 5), 2, 2)):
    p = planner.plan("max", taps(window, stride, pad), np.float32, lone, size=1605632)
    assert (p.residual, p.backward, p.address) == ("match_real", "scatter", "flat")
    p = planner.plan("max", taps(window, stride, pad), np.float32, spmd, size=1605632)
    assert p.backward == "planes"
  p = planner.plan("max", taps((4, 4), 2, 1), np.float32, lone, size=1605632)
  assert p.backward == "planes"


def test_scatters_read_indices_made_once_on_cpu():
  """Unpool's scatter (overlapping windows) and the ``match_real`` scatter-add read
  indices computed into memory first on CPU: fused, XLA:CPU computes them inside its
  serial scatter loop. The compare-and-select unpool and other backends are unfenced."""
  _, taps = geo.window_geometry("max_pool", (2, 9, 9, 3), (3, 3), 2, 1, 1, False,
                                "channels_last")
  plans = planner.plans("unpool", taps, np.float32, size=486)
  assert plans["cpu"].fence and not plans["cuda"].fence and not plans["default"].fence
  blocked = planner.plans("unpool", _geometry("2x2")[1], np.float32, size=100)
  assert blocked["cpu"].unpool == "check_select" and not blocked["cpu"].fence
  _, big = geo.window_geometry("max_pool", (8, 56, 56, 64), (5, 5), 1, 2, 1, False,
                               "channels_last")
  assert planner.plan("max", big, np.float32, planner.Target("cpu", True),
                      size=1605632).fence


def test_promised_overlapping_unpool_selects_on_a_lone_cpu():
  """Unpooling promised indices of overlapping windows: the compare-and-select on a lone
  CPU device for 32/64-bit values over windows of at most ``SMALL`` elements, over one
  axis or strided on every axis, with at least ``SELECT_INNER_MIN`` elements after them; the
  scatter otherwise and on every other backend (benchmarks/README.md, "Unpooling
  overlapping windows by compare-and-select")."""
  lone, spmd = planner.Target("cpu", True), planner.Target("cpu", False)

  def form(window, stride, pad, inner, target=lone, in_window=True, dtype=np.float32):
    d = len(window)
    _, taps = geo.window_geometry("max_pool", (8,) + (56,) * d + (inner,), window, stride,
                                  pad, 1, False, "channels_last")
    return planner.plan("unpool", taps, dtype, target, size=8 * 56**d * inner,
                        in_window=in_window, inner=inner).unpool

  assert form((3, 3), 2, 1, 64) == "select"
  assert form((3, 3), 2, 1, 16, dtype=np.float64) == "select"
  assert form((3, 3), 2, 1, 16, dtype=np.int32) == "select"
  assert form((5,), 2, 2, 64) == "select"
  assert form((7,), 1, 3, 64) == "select"
  # measured slower forward+backward: stride-1 2-D windows (2x4/1 1.26-1.30x), 16-bit
  # input (1.01-1.13x); forward: 8 channels after the windows (1.06-1.67x), 16-element
  # windows (2.3-2.4x), 25 (3.9-4.3x)
  assert form((3, 3), 1, 1, 64) == "scatter"
  assert form((3, 3), 2, 1, 64, dtype=jnp.bfloat16) == "scatter"
  assert form((3, 3), 2, 1, 8) == "scatter"
  assert form((4, 4), 2, 1, 64) == "scatter"
  assert form((3, 3), 2, 1, 64, in_window=False) == "scatter"
  assert form((3, 3), 2, 1, 64, target=spmd) == "scatter"
  for platform in ("gpu", "accelerator"):
    assert form((3, 3), 2, 1, 64, target=planner.Target(platform, True)) == "scatter"
  assert form((2, 2), 2, 0, 1) == "select"             # non-overlapping: every backend


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("n, out, layout", [(16, (2, 2), "channels_last"),
                                            (8, (1, 1), "channels_last"),
                                            (16, (2, 2), "channels_first")])
def test_sixteen_bit_dense_blocks_stay_sixteen_bit_on_cpu(dtype, n, out, layout):
  """Non-overlapping windows over ``JOINT_MAX`` elements in 16 bits: the CPU plan reduces
  and routes the cotangent in 16 bits (one select on the reshape view: each element
  receives at most one cotangent, so nothing is rounded), with no float32 copy; values
  and gradient equal the float32 computation cast back, ties to the first max."""
  shape = (2, n, n, 3) if layout == "channels_last" else (2, 3, n, n)
  x = jnp.asarray(ties(np.random.default_rng(2), shape), dtype)
  axes = (1, 2) if layout == "channels_last" else (2, 3)
  taps = tuple(bin_taps(x.shape[a], o) for a, o in zip(axes, out))
  inner = 3 if layout == "channels_last" else 1
  cpu = planner.plan("max", taps, dtype, planner.Target("cpu", True), size=x.size,
                     inner=inner)
  assert (cpu.upcast, cpu.residual, cpu.backward) == (False, "match_blocks", "block")
  w = jnp.asarray(np.random.default_rng(3).standard_normal(
      jax.eval_shape(lambda v: jaxpool.adaptive_max_pool(v, out, data_format=layout),
                     x).shape), dtype)

  def pool(v):
    return jaxpool.adaptive_max_pool(v, out, data_format=layout)

  def vjp(v, g):
    return jax.vjp(pool, v)[1](g)[0]

  compiled = jax.jit(vjp).lower(x, w).compile()
  assert "scatter" not in compiled.as_text()
  # XLA converts inside its fusions; a float32 copy of the input would be 2x its bytes
  assert compiled.memory_analysis().temp_size_in_bytes < x.nbytes
  y16, y32 = pool(x), pool(x.astype(jnp.float32))
  g16, g32 = jax.jit(vjp)(x, w), jax.jit(vjp)(x.astype(jnp.float32), w.astype(jnp.float32))
  assert y16.dtype == g16.dtype == dtype
  np.testing.assert_array_equal(np.asarray(y16, np.float32), np.asarray(y32, np.float32))
  np.testing.assert_array_equal(np.asarray(g16, np.float32), np.asarray(g32, np.float32))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_sixteen_bit_max_runs_in_float32_on_cpu(dtype):
  """The CPU plan upcasts 16-bit max/min: values, offsets and the cotangent routing run
  in float32 (overlapping windows sum their cotangents there, rounded once), so value,
  gradient and indices equal the float32 computation cast back."""
  x = _on_cpu(jnp.asarray(ties(np.random.default_rng(2), (2, 9, 9, 3)), dtype))
  w = _on_cpu(jnp.asarray(np.random.default_rng(3).standard_normal((2, 5, 5, 3)), dtype))

  def loss(v, f):
    return jnp.sum(f(v).astype(jnp.float32) * w.astype(jnp.float32))

  def pool(v):
    return jaxpool.max_pool(v, (3, 3), 2, 1)

  grad = jax.jit(jax.grad(loss), static_argnums=1)
  g16 = grad(x, pool)
  g32 = grad(x.astype(jnp.float32), pool)
  assert g16.dtype == dtype
  np.testing.assert_array_equal(np.asarray(g16, np.float32),
                                np.asarray(g32.astype(dtype), np.float32))
  with_indices = jax.jit(lambda v: jaxpool.max_pool_with_indices(v, (3, 3), 2, 1))
  v, i = with_indices(x)
  v32, i32 = with_indices(x.astype(jnp.float32))
  assert v.dtype == dtype
  np.testing.assert_array_equal(np.asarray(v, np.float32), np.asarray(v32, np.float32))
  np.testing.assert_array_equal(i, i32)


def test_chains_reduce_the_last_pooled_axis_last_where_it_paid():
  """A chain's flat index (``chain_scatter``, ``"chain"`` indices) over two or more pooled
  axes reduces the last pooled axis last on CPU where that axis is the array's minor
  one (``inner == 1``, channels_first), and where the windows read no padding (adaptive
  bins, unpadded windows) and at most ``MINOR_LAST_INNER_MAX`` elements follow the
  pooled axes. Padded windows and wider rows over channels_last input, one pooled axis
  and other backends keep the last axis first."""
  bins = tuple(bin_taps(56, 5) for _ in range(2))
  padded = tuple(geo.AxisTaps(56, 15, 11, 4, 1, 5) for _ in range(2))  # 11x11/4 p5
  cpu = planner.Target("cpu", True)
  size = 8 * 64 * 56 * 56
  for op in ("max", "indices"):
    for inner in (1, 64):
      p = planner.plan(op, bins, np.float32, cpu, size=size, inner=inner)
      assert (p.backward == "chain_scatter" or p.indices == "chain") and p.order == "minor_last"
    wide = planner.MINOR_LAST_INNER_MAX + 1
    assert planner.plan(op, bins, np.float32, cpu, size=size, inner=wide).order is None
    p = planner.plan(op, padded, np.float32, cpu, size=size, inner=64)
    assert p.backward in ("chain", "chain_scatter") or p.indices == "chain"
    assert p.order is None
    if op == "indices":  # (the max derivative of these windows is the chain: no index)
      assert planner.plan(op, padded, np.float32, cpu, size=size, inner=1).order == "minor_last"
    assert planner.plan(op, bins[:1], np.float32, cpu, size=size // 56, inner=1).order is None
    for platform in ("gpu", "accelerator"):
      assert planner.plan(op, bins, np.float32, planner.Target(platform, True),
                          inner=1).order is None


# geometries whose chain views each axis by slices, a reshape, periods and a gather
ORDERED = {"slices": ((13, 12), ((7, 6), (3, 2))),  # sizes, (windows, strides) or outputs
           "reshape": ((8, 9), ((4, 3), (4, 3))),
           "periods": ((10, 9), (4, 6)), "gather": ((10, 12), (4, 5)),
           "3-D": ((5, 6, 7), (3, 4, 2))}


@pytest.mark.parametrize("view", list(ORDERED))
@pytest.mark.parametrize("kind", ["max", "min"])
def test_the_minor_last_order_finds_the_row_major_first_max(rng, view, kind):
  """With the last pooled axis reduced last, the flat index is still PyTorch's: the
  row-major first max (first NaN), on tie-heavy input, through each axis view; the
  gradient goes there too (against the reference, not the other order)."""
  size, spec = ORDERED[view]
  if view in ("slices", "reshape"):
    windows, strides = spec
    taps = tuple(geo.AxisTaps(n, (n - k) // s + 1, k, s, 1, 0)
                 for n, k, s in zip(size, windows, strides))
    args = (windows, strides, 0, 1, False)
  else:
    taps, args = tuple(bin_taps(n, o) for n, o in zip(size, spec)), None
  axes = tuple(range(2, 2 + len(size)))
  x = ties(rng, (2, 3) + size)
  x[0, 1].flat[5] = x[1, 2].flat[17] = np.nan
  want, want_idx = _reference_indices(x, taps, args, kind)
  g = randn(rng, want.shape)
  bins = "periods" if view == "periods" else None
  base = dataclasses.replace(
      planner.plan("indices", taps, np.float32, planner.Target("cpu", True), size=x.size,
                   inner=1), residual="input", backward="chain_scatter", address="flat",
      bins=bins, order="minor_last")
  for name, p in (("values", dataclasses.replace(base, indices=None)),
                  ("indices", dataclasses.replace(base, indices="chain"))):
    if view != "3-D":
      assert {planner.axis_form(t, bins) for t in taps} == {view}
    if name == "values":
      y, vjp = jax.vjp(lambda v, p=p: select_pool(v, axes, taps, kind, plan=p), x)
    else:
      if kind == "min":
        continue
      (y, i), vjp_both = jax.vjp(
          lambda v, p=p: pool_with_indices(v, axes, taps, size, plan=p), x)
      np.testing.assert_array_equal(i, want_idx)
      vjp = functools.partial(
          lambda g, f, z: f((g, z)), f=vjp_both, z=np.zeros(i.shape, jax.dtypes.float0))
    np.testing.assert_array_equal(y, want)
    np.testing.assert_allclose(vjp(g)[0], _routed(x, g, want_idx), rtol=1e-6, atol=1e-6)


def test_cpu_sums_take_adaptive_bins_and_route_back_without_scatter():
  """On CPU, sums over adaptive bins up to ``TAKES_MAX`` wide take each bin offset
  (``bins="takes"``); their reverse mode takes the cotangent at each input's bins: the
  gradient program holds no scatter, where the gathered bins' transpose is one. Max/min
  values take narrow repeating bins (``SELECT_TAKES_MAX``)."""
  cpu = planner.Target("cpu", True)
  narrow, wide = bin_taps(7, 10), bin_taps(512, 9)
  assert planner.plan("sum", (narrow, narrow), np.float32, cpu).bins == "takes"
  assert planner.plan("sum", (wide,), np.float32, cpu).bins is None
  assert planner.axis_form(wide, "takes") == "gather"
  for platform in ("gpu", "accelerator"):
    assert planner.plan("sum", (narrow,), np.float32, planner.Target(platform, True)).bins \
        is None
  # max/min: values by takes for narrow repeating bins only, the chain by their periods,
  # where they are not read as floors (over FLOORS_READS_MAX elements per output)
  assert planner.plan("max", (narrow,), np.float32, cpu).bins == "floors"
  assert planner.plan("max", (bin_taps(10, 4),) * 3, np.float32, cpu).bins == "takes"
  assert planner.routing("takes") == "periods"
  assert planner.plan("max", (bin_taps(56, 3),), np.float32, cpu).bins == "periods"
  # bins that do not repeat: gathered; a chain derivative would route them by readers
  assert planner.plan("max", (bin_taps(1024, 50),), np.float32, cpu).bins == "readers"
  taps, axes = (narrow, bin_taps(7, 3)), (1, 2)
  x = jnp.ones((2, 7, 7, 3))

  def grad_ops(plan):
    f = jax.grad(lambda v: jnp.sum(sum_pool(v, axes, taps, (False, None), plan=plan) ** 2))
    return _ops(_program(f, x, "cpu"))

  p = planner.plan("sum", taps, np.float32, cpu)
  assert "scatter" not in grad_ops(p) and "gather" in grad_ops(p)
  assert "scatter" in grad_ops(dataclasses.replace(p, bins=None))


@pytest.mark.parametrize("size,out", [(7, 10), (13, 5), (10, 4)])
def test_bin_sum_derivatives_in_both_modes(rng, size, out):
  """``bin_sum``'s custom rule: values against the reference's bin sums, its reverse mode
  the transpose of its forward (<g, A x> == <A^T g, x>), and both modes against finite
  differences to second order."""
  t = bin_taps(size, out)
  x = randn(rng, (2, size, 3)).astype(np.float64)
  with jax.enable_x64(True):
    f = functools.partial(bin_sum, axis=1, t=t)
    y = f(jnp.asarray(x))
    want = np.stack([x[:, s:s + w].sum(1) for s, w in zip(t.starts, t.widths)], 1)
    np.testing.assert_allclose(y, want, rtol=1e-12)
    g = randn(rng, y.shape).astype(np.float64)
    (dx,) = jax.vjp(f, jnp.asarray(x))[1](jnp.asarray(g))
    np.testing.assert_allclose(np.vdot(dx, x), np.vdot(g, want), rtol=1e-12)
    check_grads(f, (jnp.asarray(x),), order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize("size,out", [((7, 10, 10), (10, 4, 4)), ((10, 10, 10), (4, 4, 4))])
def test_max_values_by_takes_keep_the_first_max_and_nan(rng, size, out):
  """Max over narrow repeating bins by takes (values), with the chain reading their
  periods (index, gradient), where they are not read as floors (over
  ``FLOORS_READS_MAX`` elements per output): values, indices and gradient against the
  reference, NaN propagated (XLA's elementwise max keeps it)."""
  taps = tuple(bin_taps(n, o) for n, o in zip(size, out))
  axes = tuple(range(2, 2 + len(size)))
  x = ties(rng, (2, 3) + size)
  x[1, 0].flat[4] = np.nan
  want, want_idx = ref.adaptive_max_pool_with_indices(x, out)
  p = planner.plan("indices", taps, np.float32, planner.Target("cpu", True), size=x.size)
  assert p.bins == "takes", p
  g = randn(rng, want.shape)
  (y, i), vjp = jax.vjp(lambda v: pool_with_indices(v, axes, taps, size, plan=p), x)
  np.testing.assert_array_equal(y, want)
  np.testing.assert_array_equal(i, want_idx)
  finite = np.isfinite(want).reshape(6, -1).all(1).reshape(2, 3)
  dx = vjp((g, np.zeros(i.shape, jax.dtypes.float0)))[0]
  np.testing.assert_allclose(np.asarray(dx)[finite], _routed(x, g, want_idx)[finite],
                             rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(jaxpool.adaptive_max_pool(x, out, data_format="channels_first"),
                                want)



@pytest.mark.parametrize("shape, op, window, stride, ceil", [
    ((2, 48, 48, 8), "avg", (5, 5), 5, False),   # the windows read 45 of 48
    ((2, 48, 48, 8), "avg", (5, 5), 3, False),   # 47 of 48
    ((3, 15, 15, 8), "max", (4, 4), 5, True),    # 14 of 15
    ((2, 64, 8), "min", (6,), 4, False),         # 62 of 64
])
def test_tiles_read_the_input_uncropped(shape, op, window, stride, ceil):
  """Where the windows stop short of the input's end, the tiled slices read the input
  itself, not a crop of it: XLA:CPU copies a crop before reading it once per window
  offset (avg 5x5/5 on 48: 1.6 ms against 0.4, benchmarks/README.md, "Strided sums").
  The forward program's temp memory stays a fraction of the input (the crop took 0.88x
  of it and more); values against the reference."""
  x = randn(np.random.default_rng(0), shape)

  def pool(v):
    return getattr(jaxpool, f"{op}_pool")(v, window, stride, ceil_mode=ceil)

  _, taps = geo.window_geometry("max_pool", shape, window, stride, 0, 1, ceil,
                                "channels_last")
  kind = "sum" if op == "avg" else "max"
  assert planner.values_form(taps, kind, shape[-1]) == "tiles"
  assert any((t.out - 1) * t.stride + t.span < t.size for t in taps)
  compiled = jax.jit(pool).lower(_on_cpu(x)).compile()
  assert compiled.memory_analysis().temp_size_in_bytes < x.nbytes // 4
  want = getattr(ref, f"{op}_pool")(from_layout(x, "channels_last"), window, stride,
                                     ceil_mode=ceil)
  np.testing.assert_allclose(from_layout(pool(x), "channels_last"), want, rtol=1e-5,
                             atol=1e-6)


@pytest.mark.parametrize("op, shape, window, stride, pad, dtype, values", [
    ("max", (2, 20, 20, 16), (6, 6), 6, 0, jnp.float32, "separable"),  # a crop of the end
    ("avg", (2, 20, 20, 3), (6, 6), 6, 0, jnp.float32, "separable"),
    ("max", (2, 27, 27, 16), (6, 6), 7, 0, jnp.float32, "separable"),  # gapped
    ("max", (2, 27, 27, 3), (6, 6), 7, 0, jnp.float32, "separable"),   # 3 channels
    ("avg", (2, 27, 27, 16), (6, 6), 7, 0, jnp.float32, "blocks"),     # a gapped sum
    ("max", (2, 24, 24, 16), (6, 6), 6, 0, jnp.float32, "blocks"),     # the blocks tile it
    ("max", (2, 20, 20, 16), (6, 6), 6, 0, jnp.bfloat16, "blocks"),    # native 16-bit
    ("max", (2, 14, 14, 14, 16), (4, 4, 4), 4, 0, jnp.float32, "blocks"),  # 3-D
    ("max", (2, 27, 27, 16), (6, 6), 7, 3, jnp.float32, "blocks"),     # padded: real bins
])
def test_blocks_that_do_not_tile_the_input_read_it_by_slices(op, shape, window, stride,
                                                             pad, dtype, values):
  """Non-overlapping windows over two axes whose blocks are not a reshape of the input (a
  gap between windows, or a crop of the input's end) take separable slices on CPU: the
  blocks copied the input before reshaping it (max 8x8/8 on 60: 2.6-3x slower forward,
  benchmarks/README.md, "Blocks that do not tile the input"). Gapped sums, 16-bit
  max, padded windows (their real bins) and 1-D/3-D blocks keep the blocks. The forward
  program's temp memory stays under a quarter of the input; values and gradients
  against the reference."""
  rng = np.random.default_rng(3)
  x = jnp.asarray(ties(rng, shape) if op == "max" else randn(rng, shape), dtype)
  lay, taps = geo.window_geometry("max_pool", shape, window, stride, pad, 1, False,
                                  "channels_last")
  p = planner.plan("sum" if op == "avg" else op, taps, dtype, planner.Target("cpu", True),
                   size=x.size, inner=shape[-1])
  assert p.values == values and planner.valid(p, "sum" if op == "avg" else op, taps) is None
  pool = functools.partial(getattr(jaxpool, f"{op}_pool"), window_shape=window,
                           strides=stride, padding=pad)
  if values == "separable":
    compiled = jax.jit(pool).lower(_on_cpu(x)).compile()
    assert compiled.memory_analysis().temp_size_in_bytes < x.nbytes // 4
  first = from_layout(np.asarray(x.astype(jnp.float32)), "channels_last")
  if op == "avg":
    _check_linear_pool(
        pool, lambda v: ref.avg_pool(from_layout(v, "channels_last"), window, stride),
        np.asarray(x), rng)
    return
  want, idx = ref.max_pool_with_indices(first, window, stride, pad)
  y, vjp = jax.vjp(pool, _on_cpu(x))
  np.testing.assert_array_equal(from_layout(np.asarray(y.astype(jnp.float32)),
                                            "channels_last"), want)
  g = jnp.asarray(randn(rng, y.shape), dtype)
  dx = from_layout(np.asarray(vjp(g)[0].astype(jnp.float32)), "channels_last")
  np.testing.assert_allclose(
      dx, _routed_last(np.asarray(x), np.asarray(g.astype(jnp.float32)), idx),
      rtol=1e-6, atol=1e-6)


def _check_linear_pool(pool, reference, x, rng):
  """A linear channels_last ``pool`` against its channels_first NumPy ``reference``:
  values, and the gradient by ``<g, A x> == <A^T g, x>`` and entrywise at three inputs
  (one input at a time through the reference)."""
  y, vjp = jax.vjp(pool, _on_cpu(x))
  np.testing.assert_allclose(from_layout(y, "channels_last"), reference(x), rtol=1e-5,
                             atol=1e-6)
  g = randn(rng, y.shape)
  (dx,) = vjp(g)
  np.testing.assert_allclose(np.vdot(dx, x), np.vdot(g, np.asarray(y)), rtol=1e-4)
  for k in (0, 7, x.size - 1):
    e = np.zeros(x.shape, np.float32)
    e.flat[k] = 1.0
    probe = to_layout(reference(e), "channels_last")
    np.testing.assert_allclose(np.asarray(dx).flat[k], np.vdot(g, probe), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("shape, window, stride, pad, backward", [
    ((2, 20, 20, 3), (3, 3), 2, 0, "jax"),        # SMALL or fewer elements: the transpose
    ((2, 20, 20, 3), (2, 2), 2, 0, "jax"),
    ((2, 20, 20, 3), (10, 10), 10, 0, "jax"),     # blocks: a broadcast
    ((2, 20, 20, 3), (4, 4), 4, 0, "planes"),     # larger tiled slices: the phase planes
    ((2, 20, 20, 3), (4, 4), 2, 0, "planes"),
    ((2, 64, 3), (16,), 8, 0, "planes"),
    ((2, 200, 3), (40,), 20, 0, "planes"),        # a 1-D reduce_window: the planes
    ((2, 20, 20, 3), (5, 5), 3, 0, "axis_planes"),  # over PLANES_MAX, 2+ axes: per axis
    ((2, 40, 40, 3), (16, 16), 6, 0, "axis_planes"),
    ((2, 20, 20, 3), (5, 5), 1, 2, "axis_planes"),
    ((2, 12, 12, 12, 3), (3, 3, 3), 2, 1, "axis_planes"),
    ((2, 25, 25, 16), (12, 12), 11, 0, "jax"),    # reduce_window axes up to 13, 16+ after
    ((2, 25, 25, 3), (12, 12), 11, 0, "axis_planes"),  # 3 channels after them
    ((2, 40, 40, 16), (14, 14), 7, 0, "axis_planes"),  # wider than 13
])
def test_cpu_sums_route_back_by_the_measured_form(shape, window, stride, pad, backward):
  """On CPU, a sum's derivative is JAX's transpose of its values form only where that
  measured faster (unpadded strided windows of at most ``SMALL`` elements, and blocks:
  a broadcast); the phase planes elsewhere, one axis at a time for overlapping or gapped
  windows over 2+ axes of more than ``PLANES_MAX`` elements; one ``reduce_window`` per
  axis keeps its transpose up to ``TRANSPOSE_WINDOW_MAX`` per axis with at least
  ``TRANSPOSE_INNER_MIN`` channels. The transpose of larger tiled slices or of a 1-D
  ``reduce_window`` took 3-30x (avg 4x4/4 11.7 ms against 1.7), that of wider
  ``reduce_window`` axes up to 16x, joint planes of large windows up to 5.6x
  (benchmarks/README.md, "Strided sums"). TPU keeps its plan; CUDA takes this rule's form
  except over blocks (its own blocks row: a broadcast) and 1-D windows of at most
  ``SMALL`` elements (the canonical plan; "CUDA sums' derivative: the CPU rule"). Values
  and gradient (count_include_pad=False divisors) against the reference."""
  _, taps = geo.window_geometry("avg_pool", shape, window, stride, pad, 1, False,
                                "channels_last")
  cpu = planner.plan("sum", taps, np.float32, planner.Target("cpu", True), inner=shape[-1])
  assert cpu.backward == backward, cpu
  assert planner.plan("sum", taps, np.float32, planner.Target("accelerator", True),
                      inner=shape[-1]).backward == "jax"
  assert planner.plan("sum", taps, np.float32, planner.Target("gpu", True),
                      inner=shape[-1]).backward == ("jax" if planner.blocked(taps) else backward)
  rng = np.random.default_rng(0)
  x = randn(rng, shape)

  def pool(v):
    return jaxpool.avg_pool(v, window, stride, pad, count_include_pad=False)

  def reference(v):
    return ref.avg_pool(from_layout(v, "channels_last"), window, stride, pad,
                        count_include_pad=False)

  _check_linear_pool(pool, reference, x, rng)


@pytest.mark.parametrize("shape, window, stride, residual, backward", [
    ((2, 11, 11, 3), (3, 3), 1, "match_slices", "planes"),   # 9 offsets: not stacked
    ((2, 40, 3), (9,), 1, "match_slices", "planes"),
    ((2, 11, 11, 3), (3, 3), 2, "first_max", "scatter"),     # the scatter's flat index
    ((2, 40, 3), (12,), 2, "first_max", "scatter"),
])
def test_max_offsets_are_computed_once_on_a_lone_cpu(shape, window, stride, residual,
                                                     backward):
  """On a lone CPU device the max derivative's offsets are computed into memory once
  (``Plan.fence``) where fused, XLA:CPU recomputed them: a scatter-add's flat index
  (recomputed inside the serial scatter loop) and the phase planes' offsets of unpadded
  9-element windows, as a select chain (stacked, XLA:CPU split the 9 matches into one
  fusion each, each recomputing the max: 3x3/1 took 2.3-5.5x, benchmarks/README.md,
  "Offsets computed once"). Several devices keep the unfenced plan (``match_stacked``
  for the planes). The compiled gradient has the fence's conditional and no stacked
  matches; values and gradient against the reference, on ties and NaN."""
  rng = np.random.default_rng(0)
  x = ties(rng, shape)
  x.flat[rng.choice(x.size, 3, replace=False)] = np.nan
  _, taps = geo.window_geometry("max_pool", shape, window, stride, 0, 1, False,
                                "channels_last")
  lone = planner.plan("max", taps, np.float32, planner.Target("cpu", True), size=x.size,
                      inner=shape[-1])
  assert (lone.residual, lone.backward, lone.fence) == (residual, backward, True), lone
  spmd = planner.plan("max", taps, np.float32, planner.Target("cpu", False), size=x.size,
                      inner=shape[-1])
  assert (spmd.residual, spmd.backward, spmd.fence) == ("match_stacked", "planes", False)

  def pool(v):
    return jaxpool.max_pool(v, window, stride)

  g = randn(rng, jax.eval_shape(pool, x).shape)

  def vjp(v, w):
    return jax.vjp(pool, v)[1](w)[0]

  text = jax.jit(vjp).lower(_on_cpu(x), g).compile().as_text()
  assert "conditional(" in text
  assert not re.search(r"pred\[9,", text)  # no stacked matches
  first = from_layout(x, "channels_last")
  want, idx = ref.max_pool_with_indices(first, window, stride)
  np.testing.assert_array_equal(from_layout(pool(_on_cpu(x)), "channels_last"), want)
  np.testing.assert_allclose(from_layout(vjp(_on_cpu(x), g), "channels_last"),
                             _routed_last(x, g, idx), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape, window, stride, pad, ceil, takes", [
    ((2, 11, 11, 8), (8, 8), 8, 2, True, True),      # every window reads padding
    ((2, 20, 20, 8), (4, 4), 4, 1, False, True),
    ((2, 23, 23, 8), (10, 10), 10, 1, True, True),
    ((2, 10, 10, 10, 3), (4, 4, 4), 4, 1, False, True),
    ((2, 20, 23, 8), (10, 10), 10, (0, 1), False, True),  # one axis padded: blocks, bins
    ((2, 13, 13, 8), (3, 3), 3, 1, False, False),    # SMALL windows keep their tiles
    ((2, 40, 8), (10,), 10, 3, False, False),        # one axis keeps its blocks
])
def test_padded_block_sums_read_their_real_elements(shape, window, stride, pad, ceil, takes):
  """On CPU, a sum over padded non-overlapping windows of more than ``SMALL`` elements
  over 2+ axes reads each window's real elements as an irregular bin (``bins="takes"``,
  :func:`~jaxpool._engine.plan.real_bins`): no padded copy of the input (avg 8x8/8 p2
  ``ceil_mode`` on 11: 2.2 ms against 0.29, benchmarks/README.md, "Strided sums"). Other
  backends keep their plans. Values and gradient against the reference, for every
  divisor rule."""
  _, taps = geo.window_geometry("avg_pool", shape, window, stride, pad, 1, ceil,
                                "channels_last")
  assert any(map(planner.reads_real_bins, taps)) or not takes
  cpu = planner.plan("sum", taps, np.float32, planner.Target("cpu", True), inner=shape[-1])
  assert (cpu.bins == "takes") == takes, cpu
  for platform in ("gpu", "accelerator"):
    assert planner.plan("sum", taps, np.float32, planner.Target(platform, True),
                        inner=shape[-1]).bins is None
  rng = np.random.default_rng(0)
  x = randn(rng, shape)
  for include_pad, override in ((True, None), (False, None), (True, 7)):
    def pool(v, include_pad=include_pad, override=override):
      return jaxpool.avg_pool(v, window, stride, pad, ceil_mode=ceil,
                              count_include_pad=include_pad, divisor_override=override)

    def reference(v, include_pad=include_pad, override=override):
      return ref.avg_pool(from_layout(v, "channels_last"), window, stride, pad,
                          ceil_mode=ceil, count_include_pad=include_pad,
                          divisor_override=override)

    if takes:
      assert _largest_pad(pool, x) < x.size // 2
    _check_linear_pool(pool, reference, x, rng)


@pytest.mark.parametrize("shape, window, stride, pad, ceil, kind, takes", [
    ((2, 23, 23, 16), (10, 10), 10, 1, True, "max", True),
    ((2, 11, 11, 16), (8, 8), 8, 2, True, "min", True),
    ((2, 10, 10, 10, 16), (9, 9, 9), 9, 1, False, "max", True),
    ((2, 20, 23, 16), (10, 10), 10, (0, 1), False, "max", True),  # one axis padded
    ((2, 13, 13, 16), (4, 4), 4, 1, False, "max", False),  # JOINT_MAX or fewer elements
    ((2, 23, 23, 3), (10, 10), 10, 1, True, "max", False),  # 3 channels after them
])
def test_padded_max_blocks_read_their_real_elements(shape, window, stride, pad, ceil, kind,
                                                    takes):
  """On CPU, max/min values over padded non-overlapping windows of more than
  ``JOINT_MAX`` elements over 2+ axes, with ``REAL_BINS_INNER_MIN`` or more elements
  after them, reduce the bins of their real elements (``bins="takes"``): no padded copy
  in the forward program (8x8/8 p2 ``ceil_mode`` forward 1.31 ms against 0.29,
  benchmarks/README.md, "Strided sums"). Smaller windows and 3 channels keep their plan
  (they lost forward+backward). Values and gradient against the reference, on ties and
  NaN."""
  _, taps = geo.window_geometry("max_pool", shape, window, stride, pad, 1, ceil,
                                "channels_last")
  cpu = planner.plan(kind, taps, np.float32, planner.Target("cpu", True), inner=shape[-1])
  assert (cpu.bins == "takes") == takes, cpu
  assert planner.plan("indices", taps, np.float32, planner.Target("cpu", True),
                      inner=shape[-1]).bins is None
  rng = np.random.default_rng(0)
  x = ties(rng, shape)
  x.flat[rng.choice(x.size, 3, replace=False)] = np.nan

  def pool(v):
    return getattr(jaxpool, f"{kind}_pool")(v, window, stride, pad, ceil_mode=ceil)

  if takes:
    assert _largest_pad(pool, x) < x.size // 2
  first = from_layout(x, "channels_last")
  want, idx = ref.max_pool_with_indices(first, window, stride, pad, ceil_mode=ceil, kind=kind)
  y, vjp = jax.vjp(pool, _on_cpu(x))
  np.testing.assert_array_equal(from_layout(y, "channels_last"), want)
  g = randn(rng, y.shape)
  np.testing.assert_allclose(from_layout(vjp(g)[0], "channels_last"),
                             _routed_last(x, g, idx), rtol=1e-6, atol=1e-6)


def _sum_plan(shape, window, strides, dtype=np.float32, platform="cpu", inner=None, **kw):
  """The plan of a channels_last sum over ``shape`` (``inner``: 1 for channels_first)."""
  _, taps = geo.window_geometry("avg_pool", shape, window, strides, 0, 1, False,
                                "channels_last")
  return planner.plan("sum", taps, dtype, planner.Target(platform, True),
                      inner=shape[-1] if inner is None else inner, **kw)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("shape,window,strides", [
    ((2, 3, 16, 16), (8, 8), None),       # 64 block elements: one slice each
    ((2, 3, 16, 20), (8, 10), None),      # 80 elements, rectangular
    ((2, 3, 18, 18), (8, 8), 9),          # gaps between the blocks
    ((2, 5, 14, 14), (14, 14), None),     # 196 elements, 5 after them: folded
    ((2, 3, 4, 8, 8), (4, 4, 4), None),   # 3-D
])
def test_cpu_block_sums_add_slices(shape, window, strides, data_format, rng):
  """On CPU a float32/64 sum over blocks of up to ``SUM_SLICES_MAX`` elements, or larger
  ones with at most ``SUM_FOLD_INNER_MAX`` elements after them, adds slices
  (``Plan.fold``) instead of one reduce: XLA:CPU runs a reduce on one thread and the
  fused slices on all of them. Its values, gradient and NaN match the reference; its
  reverse mode is the blocks' broadcast."""
  d = len(window)
  cl = (shape[0], *shape[2:], shape[1])
  # larger blocks fold only with 2+ elements after them (not over the minor axis)
  sliced = data_format == "channels_last" or math.prod(window) <= planner.SUM_SLICES_MAX
  inner = shape[1] if data_format == "channels_last" else 1
  plan = _sum_plan(cl, window, strides, inner=inner)
  assert (plan.values, plan.fold) == ("blocks", "fused" if sliced else None)
  assert not _sum_plan(cl, window, strides, dtype=jnp.bfloat16).fold  # a widened copy
  assert not _sum_plan(cl, window, strides, mapped=True).fold         # lp_pool's map
  assert not _sum_plan(cl, window, strides, platform="gpu").fold
  assert not _sum_plan(cl, window, strides, platform="accelerator").fold
  x_cf = randn(rng, shape, np.float32)
  x_cf[0, 0, 1, 2] = np.nan
  x_cf[1, 1, 0, 0] = np.inf
  x = jnp.asarray(to_layout(x_cf, data_format))
  fn = functools.partial(jaxpool.avg_pool, window_shape=window, strides=strides,
                         data_format=data_format)
  want = ref.avg_pool(x_cf, window, strides)
  got = from_layout(fn(x), data_format)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  first = (0,) * d
  assert np.isnan(got[(0, 0, *first)]) and np.isinf(got[(1, 1, *first)])
  ops = _compiled_ops(fn, x)
  assert "reduce-window" not in ops and ("reduce" in ops) != sliced, ops
  if sliced:
    assert ops.count("slice") >= min(math.prod(window), 8), ops
    assert "reduce" in _compiled_ops(fn, x.astype(jnp.bfloat16))  # widened: the reduce
  g = randn(rng, fn(x).shape, np.float32)
  grad = jax.vjp(fn, x)[1](jnp.asarray(g))[0]
  spans = [(s if isinstance(strides, int) else w) if strides else w
           for w, s in zip(window, [strides] * d)]
  kept = tuple(slice(0, o * st) for o, st in zip(from_layout(fn(x), data_format).shape[2:],
                                                 spans))
  dense = from_layout(g, data_format) / math.prod(window)
  for a, (w, st) in enumerate(zip(window, spans)):  # each output spread over its block
    dense = np.repeat(dense, st, axis=2 + a)
    pos = np.arange(dense.shape[2 + a]) % st < w
    dense = dense * pos.reshape((-1,) + (1,) * (d - 1 - a))
  want_grad = np.zeros(shape)
  want_grad[(slice(None), slice(None)) + kept] = dense
  np.testing.assert_allclose(from_layout(grad, data_format), want_grad, rtol=1e-6)
  with jax.enable_x64(True):
    finite = jnp.asarray(to_layout(randn(rng, shape, np.float64), data_format))
    check_grads(fn, (finite,), 1, modes=("fwd", "rev"))


def test_large_block_sums_fold_only_with_few_elements_after_them():
  """Blocks over ``SUM_SLICES_MAX`` elements fold only where 2 to
  ``SUM_FOLD_INNER_MAX`` elements follow them and each axis is at least
  ``SUM_FOLD_AXIS_MIN`` wide (elsewhere the reduce measured as fast forward and faster
  forward+backward, or faster forward over the minor axis and 6x6x6 blocks)."""
  few = (2, 12, 12, planner.SUM_FOLD_INNER_MAX)
  many = (2, 12, 12, planner.SUM_FOLD_INNER_MAX + 1)
  assert _sum_plan(few, (12, 12), None).fold == "fused"
  assert _sum_plan(many, (12, 12), None).fold is None
  assert _sum_plan((2, 12, 12, 1), (12, 12), None).fold is None  # the minor axis
  assert _sum_plan((2, 6, 6, 6, 16), (6, 6, 6), None).fold is None  # narrow axes
  assert _sum_plan((2, 8, 8, 8, 16), (8, 8, 8), None).fold == "fused"
  assert _sum_plan((2, 20, 20, 64), (10, 10), None).fold == "fused"  # SUM_SLICES_MAX
  assert _sum_plan((2, 16, 16, 64), (2, 2), None).fold is None  # tiles, not blocks
  # padded blocks route their derivative by phase planes, whose rule reduces the values
  _, padded = geo.window_geometry("avg_pool", (2, 24, 24, 24, 8), (2, 2, 2), 2, 1, 1,
                                  False, "channels_last")
  plan = planner.plan("sum", padded, np.float32, planner.Target("cpu", True), inner=8)
  assert (plan.values, plan.backward, plan.fold) == ("blocks", "planes", None)
  assert planner.valid(dataclasses.replace(plan, fold="fused"), "sum", padded)
