"""Window reductions: the one compute core behind every pooling op.

Everything here takes static :class:`~jaxpool._geometry.AxisTaps` (which input positions
each output position reads, per spatial axis) and emits standard HLO only (pad, slice,
reshape, select, reduce, reduce_window, one static gather for irregular adaptive bins):
the same program runs on CPU, GPU and TPU; plans were tuned on XLA:CPU.

Values (:func:`pool_values`): a per-geometry plan (:func:`_values_plan`): strided slices
of the input per :func:`tiled` tile (all offsets at once), separable slices (one axis
at a time) or one ``reduce_window`` per axis. Sums (:func:`sum_pool`) differentiate
into a tiled pool of the cotangent (a ``jax.custom_jvp`` whose tangent map transposes
into it). The entry points are jitted with static geometry, so an eager call runs one
compiled program instead of dispatching each slice.

Max/min selection is row-major first-max (PyTorch's rule), found in one of two ways:

* windows of at most ``JOINT_MAX`` elements (:class:`_Joint`): the first offset, in
  row-major order, whose element equals the window's max (or is NaN);
* larger windows and adaptive bins (:func:`select_chain`): one axis at a time, last axis
  first, so the first maximum along each axis composes into the row-major first one.

The offsets drive the max-pool derivative (:func:`select_pool`, a ``jax.custom_jvp``
whose tangent map is the transpose of the backward: pads, reshapes and selects, dilation
supported; on a lone CPU device a scatter-add for unpadded overlapping windows) and the
flat argmax indices of :func:`pool_with_indices`.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxpool._geometry import AxisTaps, row_major_strides
from jaxpool._linear import transpose, transposed_jvp
from jaxpool._scatter import flat_spatial, lone_cpu, scatter_flat

MAX_UNROLL = 16
_COMBINE = {"max": lax.max, "min": lax.min, "sum": lax.add}


def identity(kind: str, dtype) -> np.ndarray:
  """The reduction's identity as a NumPy scalar of ``dtype`` (keeps JAX's AD rules)."""
  dtype = np.dtype(dtype)
  if kind == "sum":
    return np.zeros((), dtype)
  if dtype == np.bool_:
    return np.array(kind == "min")
  if jnp.issubdtype(dtype, jnp.integer):
    info = np.iinfo(dtype)
    return np.array(info.min if kind == "max" else info.max, dtype)
  return np.array(-np.inf if kind == "max" else np.inf, dtype)


def _mode(t: AxisTaps) -> str:
  if t.regular and t.dilation == 1 and t.stride >= t.window:
    return "reshape"
  if t.regular and t.window <= MAX_UNROLL:
    return "slices"
  return "gather"


def _pad_axis(x: jax.Array, axis: int, lo: int, hi: int, fill: np.ndarray) -> jax.Array:
  if lo == 0 and hi == 0:
    return x
  config = [(0, 0, 0)] * x.ndim
  config[axis] = (lo, hi, 0)
  return lax.pad(x, fill.astype(x.dtype), config)


def _expand(a: np.ndarray, ndim: int, axis: int, n: int) -> np.ndarray:
  """Place a static ``(out, ...)`` array at ``axis`` of an ``ndim`` array."""
  shape = [1] * ndim
  shape[axis:axis + n] = a.shape
  return a.reshape(shape)


def _stack(x: jax.Array, axis: int, t: AxisTaps, fill: np.ndarray, mode: str) -> jax.Array:
  """Windows along ``axis`` as a new axis ``axis + 1``: ``(..., out, window, ...)``."""
  shape = x.shape
  if mode == "reshape":
    total = t.out * t.stride
    xp = _pad_axis(x, axis, t.pad_lo, total - t.size - t.pad_lo, fill)
    xw = xp.reshape(shape[:axis] + (t.out, t.stride) + shape[axis + 1:])
    if t.stride > t.window:
      xw = lax.slice_in_dim(xw, 0, t.window, axis=axis + 1)
    return xw
  pos = t.positions()
  xw = jnp.take(x, np.clip(pos, 0, t.size - 1).ravel(), axis=axis, mode="clip")
  xw = xw.reshape(shape[:axis] + pos.shape + shape[axis + 1:])
  real = t.real()
  if not real.all():
    xw = jnp.where(_expand(real, xw.ndim, axis, 2), xw, fill.astype(x.dtype))
  return xw


def _slices(x: jax.Array, axis: int, t: AxisTaps, fill: np.ndarray) -> list[jax.Array]:
  """One strided slice per window offset, each ``(..., out, ...)``."""
  length = (t.out - 1) * t.stride + t.span
  xp = _pad_axis(x, axis, t.pad_lo, length - t.size - t.pad_lo, fill)
  last = (t.out - 1) * t.stride + 1
  # One output: the stride is moot, and a stride longer than a shard miscompiles under
  # XLA's SPMD partitioner (global max on a spatially sharded input gave wrong values).
  step = t.stride if t.out > 1 else 1
  return [lax.slice_in_dim(xp, j * t.dilation, j * t.dilation + last, step, axis)
          for j in range(t.window)]


def _reduce_axis(x: jax.Array, axis: int, t: AxisTaps, kind: str, mode: str) -> jax.Array:
  fill = identity(kind, x.dtype)
  if mode == "slices":
    return functools.reduce(_COMBINE[kind], _slices(x, axis, t, fill))
  xw = _stack(x, axis, t, fill, mode)
  if kind == "sum":
    return jnp.sum(xw, axis=axis + 1)
  return (jnp.max if kind == "max" else jnp.min)(xw, axis=axis + 1)


def _matches(xw: jax.Array, y: jax.Array) -> jax.Array:
  hit = xw == y
  if jnp.issubdtype(xw.dtype, jnp.inexact):
    hit = hit | jnp.isnan(xw)
  return hit


def _first_match(x: jax.Array, y: jax.Array, axis: int, t: AxisTaps, kind: str,
                 mode: str) -> jax.Array:
  """Per output position, the first real window offset holding ``y`` (or a NaN)."""
  fill = identity(kind, x.dtype)
  real = t.real()
  if mode == "slices":
    off = jnp.zeros(y.shape, jnp.int32)
    for j, xs in reversed(list(enumerate(_slices(x, axis, t, fill)))):
      hit = _matches(xs, y)
      if not real[:, j].all():
        hit = hit & _expand(real[:, j], y.ndim, axis, 1)
      off = jnp.where(hit, np.int32(j), off)
    return off
  xw = _stack(x, axis, t, fill, mode)
  hit = _matches(xw, jnp.expand_dims(y, axis + 1))
  if not real.all():
    hit = hit & _expand(real, xw.ndim, axis, 2)
  iota = _expand(np.arange(t.window, dtype=np.int32), xw.ndim, axis + 1, 1)
  return jnp.min(jnp.where(hit, iota, np.int32(t.window)), axis=axis + 1)


def _select(e: jax.Array, off: jax.Array, axis: int, t: AxisTaps, mode: str) -> jax.Array:
  """``e``'s value at window offset ``off`` along ``axis`` (linear in ``e``)."""
  zero = np.zeros((), e.dtype)
  if mode == "slices":
    parts = _slices(e, axis, t, zero)
    out = parts[0]
    for j in range(1, t.window):
      out = jnp.where(off == j, parts[j], out)
    return out
  ew = _stack(e, axis, t, zero, mode)
  iota = _expand(np.arange(t.window, dtype=np.int32), ew.ndim, axis + 1, 1)
  picked = jnp.where(jnp.expand_dims(off, axis + 1) == iota, ew, zero)
  return jnp.sum(picked, axis=axis + 1, dtype=e.dtype)  # int32 stays int32 under x64


def select_chain(x: jax.Array, axes: Sequence[int], taps: Sequence[AxisTaps], kind: str,
                 extras: Sequence[jax.Array]) -> tuple[jax.Array, list[jax.Array]]:
  """Max/min over the windows, and each of ``extras`` at the first-max position.

  ``extras`` must broadcast against ``x`` (they are padded with 0 and never selected
  from padding).
  """
  extras = list(extras)
  for axis, t in reversed(list(zip(axes, taps))):
    if t.identity:
      continue
    mode = _mode(t)
    y = _reduce_axis(x, axis, t, kind, mode)
    off = _first_match(x, y, axis, t, kind, mode)
    extras = [_select(e, off, axis, t, mode) for e in extras]
    x = y
  return x, extras


# ----------------------------------------------------------------------------- values


def _unpadded(t: AxisTaps) -> bool:
  return t.pad_lo == 0 and (t.out - 1) * t.stride + t.span <= t.size


def _values_plan(taps: Sequence[AxisTaps]) -> str:
  """How to reduce the regular axes, from measurements on XLA:CPU (benchmarks/).

  * at most 9 elements, or strided windows of at most ``JOINT_MAX``: :func:`tiled`
    strided slices of ``x`` itself, all offsets fused in one loop per tile, the tiles
    concatenated (faster than ``reduce_window`` and than padded shifted reads, which
    branch per element);
  * unpadded stride-1 windows of at most ``SEPARABLE_MAX`` per axis: separable strided
    slices, one axis at a time (faster than ``reduce_window``s there);
  * otherwise one ``reduce_window`` per axis, first axis first (faster than separable
    slices, or last axis first).

  The measurements: ``benchmarks/README.md``, "Where the time goes".
  """
  size = math.prod(t.window for t in taps)
  small = size <= 9 or (size <= JOINT_MAX and any(t.stride > 1 for t in taps))
  if small and size * _tile_count(taps) <= TILED_MAX:
    return "tiles"
  if all(t.window <= SEPARABLE_MAX and t.stride == 1 and _unpadded(t) for t in taps):
    return "separable"
  return "reduce_window"


SEPARABLE_MAX = 5
TILED_MAX = 128  # slices per tiled program (tiles x window elements): bounds compile time


def _tile_count(taps: Sequence[AxisTaps]) -> int:
  return math.prod(len(_segments(t)) for t in taps)


def _segments(t: AxisTaps) -> list[tuple[int, int, AxisTaps]]:
  """Split one axis's outputs into a padded head, an interior and a padded tail.

  Each segment is ``(lo, hi, taps)``: the input range ``[lo, hi)`` its windows read and
  the taps of the segment as a pooling of that range. The interior's windows lie wholly
  inside the input, so its taps have no padding at all.
  """
  s, p, span = t.stride, t.pad_lo, t.span
  a = min(-(-p // s), t.out)                                   # first unpadded output
  b = min(t.out, (t.size - span + p) // s + 1) if t.size - span + p >= 0 else a
  b = max(a, b)
  segments = []
  for o0, o1 in ((0, a), (a, b), (b, t.out)):
    if o1 > o0:
      lo = min(max(0, o0 * s - p), t.size)
      hi = max(lo, min(t.size, (o1 - 1) * s - p + span))
      segments.append((lo, hi, AxisTaps(hi - lo, o1 - o0, t.window, s, t.dilation,
                                        max(0, p - o0 * s))))
  return segments


def tiled(x, axes: Sequence[int], taps: Sequence[AxisTaps], fn) -> jax.Array:
  """``fn(x_tile, taps_tile)`` on each tile of the output grid, concatenated.

  ``x`` may be a list of arrays with the same extents along ``axes``: each is tiled
  alike and ``fn`` gets the list of tiles.

  Per axis the outputs split into up to three :func:`_segments`; a tile is one segment
  per axis. Only border tiles pad (a few rows of ``x``); the interior reads ``x``
  itself. XLA:CPU emits a per-element branch for every padded read, which kept padded
  shifted reads 3x slower than this on Inception avg 3x3/1 p1.
  """
  segments = [_segments(t) for t in taps]

  def build(i, xc, cur):
    if i == len(axes):
      return fn(xc, tuple(cur))
    parts = [build(i + 1, _slice_all(xc, lo, hi, axes[i]), cur + [st])
             for lo, hi, st in segments[i]]
    return parts[0] if len(parts) == 1 else lax.concatenate(parts, axes[i])

  return build(0, x, [])


def _slice_all(x, lo: int, hi: int, axis: int):
  if isinstance(x, list):
    return [lax.slice_in_dim(v, lo, hi, axis=axis) for v in x]
  return lax.slice_in_dim(x, lo, hi, axis=axis)


def _compute_dtype(dtype, kind: str):
  """XLA:CPU is slow on 16-bit arithmetic: max/min of float16/bfloat16 run in float32
  (exact, and 1.7-8x faster); sums are promoted by their callers already."""
  dtype = np.dtype(dtype)
  if kind != "sum" and jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize < 4:
    return np.dtype(np.float32)
  return dtype


def pool_values(x: jax.Array, axes: Sequence[int], taps: Sequence[AxisTaps],
                kind: str) -> jax.Array:
  """Max/min/sum over the windows of the regular axes, then each irregular axis."""
  dtype = x.dtype
  x = x.astype(_compute_dtype(dtype, kind))
  fill = identity(kind, x.dtype)
  regular = [(a, t) for a, t in zip(axes, taps) if t.regular and not t.identity]
  plan = _values_plan([t for _, t in regular]) if regular else None
  ra = tuple(a for a, _ in regular)
  if plan == "tiles":
    def tile(xt, tt):
      return functools.reduce(_COMBINE[kind], _Joint(xt.ndim, ra, tt).slices(xt, fill))
    x = tiled(x, ra, [t for _, t in regular], tile)
  elif plan == "separable":
    for a, t in reversed(regular):
      x = _reduce_axis(x, a, t, kind, "slices")
  elif plan == "reduce_window":
    for a, t in regular:
      x = _reduce_window_axis(x, a, t, kind)
  for a, t in zip(axes, taps):
    if not t.regular:
      x = _reduce_axis(x, a, t, kind, "gather")
  return x.astype(dtype)


def _reduce_window_axis(x: jax.Array, a: int, t: AxisTaps, kind: str) -> jax.Array:
  """One regular axis reduced by ``lax.reduce_window``."""
  dims, strides, dil = ([1] * x.ndim for _ in range(3))
  pads = [(0, 0)] * x.ndim
  dims[a], strides[a], dil[a] = t.window, t.stride, t.dilation
  hi = (t.out - 1) * t.stride + t.span - t.size - t.pad_lo
  pads[a] = (t.pad_lo, max(hi, 0))  # hi < 0: trailing inputs unused, output cropped below
  x = lax.reduce_window(x, identity(kind, x.dtype), _COMBINE[kind], dims, strides, pads,
                        window_dilation=dil)
  return lax.slice_in_dim(x, 0, t.out, axis=a) if x.shape[a] != t.out else x


def divisor(ndim: int, axes: Sequence[int], taps: Sequence[AxisTaps], include_pad: bool,
            override: int | None) -> int | jax.Array:
  """The avg-pool divisor of each window (PyTorch's rule): an int when it is uniform,
  else an int32 array over the output grid, the product of per-axis counts computed
  from iotas in the graph (a constant divisor array measured 4x slower on CPU)."""
  if override is not None:
    return int(override)
  counts = [t.count(include_pad) for t in taps]
  if all((c == c[0]).all() for c in counts):
    return math.prod(int(c[0]) for c in counts)
  result = np.int32(1)
  for a, t, c in zip(axes, taps, counts):
    if not (c == c[0]).all():
      shape = [1] * ndim
      shape[a] = t.out
      result = result * t.count_of(lax.broadcasted_iota(jnp.int32, shape, a), include_pad)
    else:
      result = result * np.int32(c[0])
  return result


def _divide(total: jax.Array, d: int | jax.Array) -> jax.Array:
  return total / (np.array(d, total.dtype) if isinstance(d, int) else d.astype(total.dtype))


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def sum_pool(x: jax.Array, axes: Sequence[int], taps: Sequence[AxisTaps],
             rule: tuple[bool, int | None] | None = None) -> jax.Array:
  """Sum over the windows (padding contributes 0), divided by :func:`divisor` when
  ``rule = (include_pad, override)`` is given (average pooling).

  With regular windows the derivative is a ``jax.custom_jvp`` whose tangent map is
  the transpose of :func:`_sum_pool_transpose`: reverse mode transposes it back into
  that function, a tiled pool of the cotangent with the divisor applied per tap (JAX's
  transpose of the tiles pads slices that branch per element, and dividing first
  materializes a copy; measurements in ``benchmarks/README.md``).
  Forward mode and ``vmap`` work as for any JAX function; higher derivatives too, the
  tangent map being linear. Unpadded strided windows (VGG 2x2/2, AlexNet's adaptive
  13 -> 6) keep JAX's transpose, which measured faster there.
  """
  axes, taps = tuple(axes), tuple(taps)
  strided = all(t.stride > 1 and _unpadded(t) for t in taps if not t.identity)
  if all(t.regular for t in taps) and not strided:
    return _mean_pool(x, axes, taps, rule)
  total = pool_values(x, axes, taps, "sum")
  return total if rule is None else _divide(total, divisor(x.ndim, axes, taps, *rule))


def _mean_values(x, axes, taps, rule):
  total = pool_values(x, axes, taps, "sum")
  return total if rule is None else _divide(total, divisor(x.ndim, axes, taps, *rule))


def _mean_backward(x, operands, y, axes, taps, rule):
  return functools.partial(_sum_pool_transpose, axes=axes, taps=taps, rule=rule)


_mean_pool = transposed_jvp(_mean_values, _mean_backward, static=3)


def _transpose_taps(t: AxisTaps, r: int) -> tuple[int, AxisTaps] | None:
  """The windows that land on input phase ``r`` (positions ``m*stride + r``).

  Offset ``j`` of output ``o`` lands on ``p = o*stride - pad_lo + j*dilation``; on phase
  ``r`` that is block ``m = o - c_j`` with ``c_j = (r + pad_lo - j*dilation) / stride``
  for the ``j`` that divide evenly. Those ``j`` are evenly spaced, so phase ``r`` is a
  regular stride-1 window over the cotangent: ``(skip, taps)`` where the first ``skip``
  cotangent entries are never read. ``None`` when no offset lands on the phase.
  """
  s, d, p = t.stride, t.dilation, t.pad_lo
  js = [j for j in range(t.window) if (r + p - j * d) % s == 0]
  if not js:
    return None
  c_first, c_last = ((r + p - j * d) // s for j in (js[0], js[-1]))
  dil = 1 if len(js) == 1 else (c_first - c_last) // (len(js) - 1)
  skip = min(max(c_last, 0), t.out)
  return skip, AxisTaps(t.out - skip, -(-t.size // s), len(js), 1, dil, skip - c_last)


def _sum_pool_transpose(g: jax.Array, axes: tuple[int, ...], taps: tuple[AxisTaps, ...],
                        rule) -> jax.Array:
  """Transpose of :func:`sum_pool`: per stride phase a pool of ``g``, interleaved.

  The divisor is read per tap next to ``g`` (padded with 1), so no divided copy of
  ``g`` is materialized.
  """
  d = 1 if rule is None else divisor(g.ndim, axes, taps, *rule)
  grid = [1] * g.ndim
  for a, t in zip(axes, taps):
    grid[a] = t.out
  d = None if isinstance(d, int) and d == 1 else jnp.broadcast_to(
      jnp.asarray(d, jnp.int32), grid).astype(g.dtype)
  planes = {}
  for R in itertools.product(*[range(t.stride) for t in taps]):
    parts = [_transpose_taps(t, r) for t, r in zip(taps, R)]
    if any(part is None or part[1].size == 0 for part in parts):
      continue  # no window lands on this phase: zeros
    arrays = [g] if d is None else [g, d]
    for a, (skip, _) in zip(axes, parts):
      if skip:
        arrays = [lax.slice_in_dim(v, skip, v.shape[a], axis=a) for v in arrays]
    planes[R] = _divided_sum(arrays, axes, tuple(tp for _, tp in parts))
  return _interleave(planes, g, axes, taps)


def _interleave(planes: dict, g: jax.Array, axes: Sequence[int],
                taps: Sequence[AxisTaps]) -> jax.Array:
  """The input-space array whose stride phases are ``planes``.

  ``planes[R]`` holds, per axis ``a``, the input positions ``m * stride + R[a]`` for
  ``m < ceil(size / stride)`` (``g``'s shape elsewhere); a missing phase is zero. The
  phases are stacked last axis first (axis ``a``'s phase right after its block axis),
  one concatenate that XLA keeps, then merged by a reshape and cropped to ``size``.
  """
  blocks = [-(-t.size // t.stride) for t in taps]
  shape = list(g.shape)
  for a, nb in zip(axes, blocks):
    shape[a] = nb
  planes = {R: planes[R] if R in planes else jnp.zeros(shape, g.dtype)
            for R in itertools.product(*[range(t.stride) for t in taps])}
  for i in reversed(range(len(axes))):
    if taps[i].stride == 1:
      planes = {R[:i]: v for R, v in planes.items()}
      continue
    groups: dict[tuple[int, ...], list] = {}
    for R in sorted(planes):
      groups.setdefault(R[:i], []).append(planes[R])
    planes = {R: jnp.stack(v, axis=axes[i] + 1) for R, v in groups.items()}
  merged = list(g.shape)
  for a, nb, t in zip(axes, blocks, taps):
    merged[a] = nb * t.stride
  dx = planes[()].reshape(merged)
  limits = list(merged)
  for a, t in zip(axes, taps):
    limits[a] = t.size
  return lax.slice(dx, [0] * dx.ndim, limits) if limits != merged else dx


def _divided_sum(arrays, axes, taps) -> jax.Array:
  """Window sums of ``g / d`` for ``arrays = [g]`` or ``[g, d]`` (``d`` over ``g``'s grid).

  Small windows read ``d`` per tap in the tiles; larger ones divide once, then pool."""
  if len(arrays) == 2 and math.prod(t.window for t in taps) * _tile_count(taps) > TILED_MAX:
    arrays = [arrays[0] / arrays[1]]  # large windows: one divided copy, then any plan
  if len(arrays) == 1:
    return pool_values(arrays[0], axes, taps, "sum")
  zero, one = np.zeros((), arrays[0].dtype), np.ones((), arrays[0].dtype)

  def tile(parts, tt):
    joint = _Joint(parts[0].ndim, axes, tt)
    terms = [a / b for a, b in zip(joint.slices(parts[0], zero), joint.slices(parts[1], one))]
    return functools.reduce(lax.add, terms)

  return tiled(arrays, axes, taps, tile)


# ----------------------------------------------------------------------------- joint windows

JOINT_MAX = 32  # windows of at most this many elements are matched all offsets at once


def _joint(taps: Sequence[AxisTaps]) -> bool:
  return all(t.regular for t in taps) and math.prod(t.window for t in taps) <= JOINT_MAX


def _blocked(taps: Sequence[AxisTaps]) -> bool:
  """Non-overlapping, undilated windows: the window grid is a reshape of the input."""
  return all(t.dilation == 1 and t.stride >= t.window for t in taps)


def _pad_all(x, axes, taps, fill, blocked: bool):
  config = [(0, 0, 0)] * x.ndim
  for a, t in zip(axes, taps):
    length = t.out * t.stride if blocked else (t.out - 1) * t.stride + t.span
    config[a] = (t.pad_lo, length - t.size - t.pad_lo, 0)
  if all(c == (0, 0, 0) for c in config):
    return x
  return lax.pad(x, np.asarray(fill).astype(x.dtype), config)


class _Joint:
  """All window offsets of regular taps at once (row-major offset order).

  ``blocked`` windows are viewed by one reshape (each spatial axis ``a`` becomes
  ``(out, window)``), others by one strided slice per offset.
  """

  def __init__(self, ndim: int, axes: Sequence[int], taps: Sequence[AxisTaps]):
    self.ndim, self.axes, self.taps = ndim, tuple(axes), tuple(taps)
    self.blocked = _blocked(taps)
    self.offsets = list(itertools.product(*[range(t.window) for t in taps]))
    # Per offset, the output interval [first, last] whose tap is real, per axis.
    reals = [t.real() for t in taps]
    self.intervals = []
    for J in self.offsets:
      spans = []
      for a, t, r, j in zip(self.axes, taps, reals, J):
        ok = np.flatnonzero(r[:, j])
        if not len(ok):  # this offset reads padding for every output: never matches
          spans.append((a, 1, 0))
        elif len(ok) < t.out:
          spans.append((a, int(ok.min()), int(ok.max())))
      self.intervals.append(spans)
    if self.blocked:
      self.window_axes = tuple(a + i + 1 for i, a in enumerate(self.axes))

  def slices(self, x, fill):
    """One strided slice per window offset, each over the output grid."""
    xp = _pad_all(x, self.axes, self.taps, fill, blocked=False)
    for J in self.offsets:
      start, limit, step = [0] * x.ndim, list(xp.shape), [1] * x.ndim
      for a, t, j in zip(self.axes, self.taps, J):
        start[a] = j * t.dilation
        limit[a] = start[a] + (t.out - 1) * t.stride + 1
        step[a] = t.stride if t.out > 1 else 1  # see _slices
      yield lax.slice(xp, start, limit, step)

  def scatter_back(self, g, off):
    """Transpose of :meth:`select`: each window's ``g`` to its offset ``off``.

    Built per phase plane, in unpadded coordinates: along each axis input position
    ``p = m*stride + r``; offset ``j`` of output ``o`` lands in plane
    ``r = (j*dilation - pad_lo) % stride`` at block ``o + (j*dilation - pad_lo) // stride``.
    Each plane sums only its own offsets (plain pads) and the planes are stacked into a
    concatenate that XLA keeps: on the ResNet stem this measured 3x faster than the sum
    of interior-padded slices that JAX's automatic transpose gives.
    """
    zero = np.zeros((), g.dtype)
    blocks = [-(-t.size // t.stride) for t in self.taps]
    planes: dict[tuple[int, ...], jax.Array] = {}
    for k, J in enumerate(self.offsets):
      config, R = [(0, 0, 0)] * g.ndim, []
      for a, t, j, nb in zip(self.axes, self.taps, J, blocks):
        q, r = divmod(j * t.dilation - t.pad_lo, t.stride)
        config[a] = (q, nb - q - t.out, 0)
        R.append(r)
      term = lax.pad(jnp.where(off == k, g, zero), zero, config)
      R = tuple(R)
      planes[R] = term if R not in planes else planes[R] + term
    return _interleave(planes, g, self.axes, self.taps)

  def blocks(self, x, fill):
    """``(..., out_0, k_0, ..., out_1, k_1, ...)``: window axes right after their axis."""
    xp = _pad_all(x, self.axes, self.taps, fill, blocked=True)
    shape = []
    for d, n in enumerate(xp.shape):
      if d in self.axes:
        t = self.taps[self.axes.index(d)]
        shape += [t.out, t.stride]
      else:
        shape.append(n)
    xw = xp.reshape(shape)
    limits = list(xw.shape)
    for w, t in zip(self.window_axes, self.taps):
      limits[w] = t.window
    return lax.slice(xw, [0] * xw.ndim, limits) if limits != list(xw.shape) else xw

  def block_iota(self, values) -> np.ndarray:
    """A static array over the window axes of ``blocks``: ``values[k]`` at offset ``k``."""
    shape = [1] * (self.ndim + len(self.axes))
    for w, t in zip(self.window_axes, self.taps):
      shape[w] = t.window
    return np.asarray(values).reshape(shape)

  def block_real(self) -> np.ndarray | None:
    grid = np.ones((), bool)
    for t in self.taps:
      grid = np.logical_and.outer(grid, t.real())
    if grid.all():
      return None
    # grid axes are (o_0, k_0, o_1, k_1, ...): place them after the leading axes
    shape, it = [], iter(grid.shape)
    for d in range(self.ndim):
      if d in self.axes:
        shape += [next(it), next(it)]
      else:
        shape.append(1)
    return grid.reshape(shape)

  def expand(self, y):
    return jnp.expand_dims(y, self.window_axes)

  def first_match(self, x, y, kind):
    """Row-major offset id of the first window element equal to ``y`` (or NaN).

    The gradient path's residual where :func:`_gradient_offsets` does not tile. Padded
    windows here skip the padding masks: a window whose real elements all equal the
    padding value (all ``-inf`` for max) may then pick a padding position, which drops
    its cotangent (its output is ``-inf``, so no finite loss flows through it); the masks
    stop XLA from fusing the backward well (2.7x slower). Indices use
    :meth:`first_max`, which masks.
    """
    fill = identity(kind, x.dtype)
    if self.blocked:
      hit = _matches(self.blocks(x, fill), self.expand(y))
      real = self.block_real()
      if real is not None:
        hit = hit & real
      ids = self.block_iota(np.arange(len(self.offsets), dtype=np.int32))
      return jnp.min(jnp.where(hit, ids, np.int32(len(self.offsets))), axis=self.window_axes)
    if all(_unpadded(t) for t in self.taps):
      # A reduce over the stacked offsets, which XLA:CPU materializes once; the select
      # chain below is fused into every backward term and recomputed there (3x faster
      # on AlexNet's max 3x3/2; with padding, tiles do better: see _gradient_offsets).
      # Cost: a bool temp of window x output.
      hit = jnp.stack([_matches(xs, y) for xs in self.slices(x, fill)])
      ids = np.arange(len(self.offsets), dtype=np.int32).reshape((-1,) + (1,) * y.ndim)
      return jnp.min(jnp.where(hit, ids, np.int32(len(self.offsets))), axis=0)
    off = jnp.zeros(y.shape, jnp.int32)
    for k, xs in reversed(list(enumerate(self.slices(x, fill)))):
      off = jnp.where(_matches(xs, y), np.int32(k), off)
    return off

  def first_max(self, x, kind: str) -> jax.Array:
    """Offset id of each window's first max (or first NaN), in one compare chain.

    It does not read the pooled values: values and offsets are two independent fusions
    over ``x``, neither waiting on the other (faster than matching against the max).
    Strict ``>`` keeps the first of equal elements,
    a NaN wins over a number, padding never wins.
    """
    if x.dtype == np.bool_:
      x = x.astype(np.int8)
    better = lax.gt if kind == "max" else lax.lt
    nan = jnp.issubdtype(x.dtype, jnp.inexact)
    best = off = found = None
    for k, xs in enumerate(self.slices(x, identity(kind, x.dtype))):
      real = self.real_mask(k, xs.shape)
      if best is None:
        best, off, found = xs, jnp.zeros(xs.shape, jnp.int32), real
        continue
      take = better(xs, best)
      if nan:
        take = take | (jnp.isnan(xs) & ~jnp.isnan(best))
      if found is not None:
        take = take | ~found
      if real is not None:
        take = take & real
      found = None if found is None or real is None else found | real
      best, off = jnp.where(take, xs, best), jnp.where(take, np.int32(k), off)
    return off

  def select(self, e, off):
    """``e`` at window offset ``off`` (linear in ``e``; transposes without scatter)."""
    zero = np.zeros((), e.dtype)
    if self.blocked:
      ids = self.block_iota(np.arange(len(self.offsets), dtype=np.int32))
      picked = jnp.where(self.expand(off) == ids, self.blocks(e, zero), zero)
      return jnp.sum(picked, axis=self.window_axes, dtype=e.dtype)
    # A sum of independent masked terms (not a select chain): its transpose masks the
    # cotangent once per offset instead of through every earlier select.
    terms = [jnp.where(off == k, part, zero) for k, part in enumerate(self.slices(e, zero))]
    return functools.reduce(jnp.add, terms)

  def real_mask(self, k: int, shape: Sequence[int]) -> jax.Array | None:
    """Over the output grid ``shape``: whether offset ``k`` reads a real element (None
    where it always does)."""
    real = None
    for a, first, last in self.intervals[k]:
      o = lax.broadcasted_iota(np.int32, shape, a)
      r = (o >= first) & (o <= last)
      real = r if real is None else real & r
    return real

  def origins(self, spatial: Sequence[int]) -> np.ndarray:
    """Flat row-major input index of each output window's first (offset 0) position,
    a static array broadcastable over the output."""
    base = np.zeros((), np.int64)
    for t, st in zip(self.taps, row_major_strides(spatial)):
      base = np.add.outer(base, (np.arange(t.out) * t.stride - t.pad_lo) * st)
    shape = [1] * self.ndim
    for a, t in zip(self.axes, self.taps):
      shape[a] = t.out
    return base.astype(np.int32).reshape(shape)

  def deltas(self, spatial: Sequence[int]) -> list[int]:
    """Per window offset, its flat distance from the window's first position."""
    strides = row_major_strides(spatial)
    return [sum(j * t.dilation * st for j, t, st in zip(J, self.taps, strides))
            for J in self.offsets]

  def flat_index(self, off, spatial: Sequence[int]) -> jax.Array:
    """Flat row-major input index of offset ``off`` of each output window."""
    delta = jnp.zeros(off.shape, jnp.int32)
    for k, dk in enumerate(self.deltas(spatial)):
      if dk:
        delta = jnp.where(off == k, np.int32(dk), delta)
    return delta + self.origins(spatial)

  def offset_of(self, idx, spatial: Sequence[int]) -> jax.Array:
    """Inverse of :meth:`flat_index` for indices inside their own window."""
    delta = idx - self.origins(spatial)
    off = jnp.zeros(idx.shape, jnp.int32)
    for k, dk in enumerate(self.deltas(spatial)):
      if k:
        off = jnp.where(delta == dk, np.int32(k), off)
    return off


# ----------------------------------------------------------------------------- selection


def _select_residual(x, y, axes, taps, kind):
  """What the backward keeps of the forward: first-max offsets, or ``x`` for the chain."""
  if _joint(taps):
    if not _scatters_back(_Joint(x.ndim, axes, taps)):
      return _gradient_offsets(x, y, axes, taps, kind)
    return lone_cpu(functools.partial(_scatter_offsets, axes=axes, taps=taps, kind=kind),
                    functools.partial(_gradient_offsets, axes=axes, taps=taps, kind=kind),
                    x.size)(x, y)
  return x


def _scatters_back(joint: _Joint) -> bool:
  """Overlapping (or gapped) unpadded windows: on a lone CPU device their backward is
  :func:`_scatter_add_back`. Padded windows keep the phase planes, which measured faster
  there (on the ResNet stem the scatter's zero-filled output costs more)."""
  return not joint.blocked and all(_unpadded(t) for t in joint.taps)


def _scatter_offsets(x, y, axes, taps, kind):
  """The residual for :func:`_scatter_add_back`: the compare chain of
  :meth:`_Joint.first_max`, which only feeds the scatter's indices, so XLA computes it
  once (where it would recompute it in every phase-plane term)."""
  del y
  return _first_max_offsets(x, axes, taps, kind)


def _scatter_add_back(g, off, axes, taps):
  """PyTorch's max-pool backward on a lone CPU device: one scatter-add of ``g`` at each
  window's first-max flat index (XLA:CPU's serial loop, deterministic): about 2x
  faster than the phase planes there (``benchmarks/README.md``)."""
  idx = _Joint(g.ndim, axes, taps).flat_index(off, tuple(t.size for t in taps))
  return _scatter_add_at(g, idx, axes, taps)


def _scatter_add_at(g, idx, axes, taps):
  """``g`` summed into zeros of the input's shape at flat spatial indices ``idx``."""
  spatial = tuple(t.size for t in taps)
  out = scatter_flat(flat_spatial(g, axes), flat_spatial(idx, axes), math.prod(spatial),
                     axes[0], add=True)
  return out.reshape(_input_shape(g.shape, axes, taps))


def _gradient_offsets(x, y, axes, taps, kind):
  """The VJP's residual: each window's first-max offset id.

  Padded windows take it per :func:`tiled` tile (:func:`_tiled_first_max`), computed
  once, where an untiled chain is fused into, and recomputed by, every term of the
  backward (2-8x faster fwd+bwd; ``benchmarks/README.md``).
  """
  joint = _Joint(x.ndim, axes, taps)
  if _tiles_first_max(joint, taps):
    return _tiled_first_max(x, axes, taps, kind)
  return joint.first_match(x, y, kind)


def _tiles_first_max(joint: _Joint, taps: Sequence[AxisTaps]) -> bool:
  tiles = _tile_count(taps)
  return not joint.blocked and tiles > 1 and len(joint.offsets) * tiles <= TILED_MAX


def _first_max_offsets(x, axes, taps, kind):
  """:meth:`_Joint.first_max`, per :func:`tiled` tile where that is in budget."""
  joint = _Joint(x.ndim, axes, taps)
  if _tiles_first_max(joint, taps):
    return _tiled_first_max(x, axes, taps, kind)
  return joint.first_max(x, kind)


def _tiled_first_max(x, axes, taps, kind):
  """:meth:`_Joint.first_max` per :func:`tiled` tile (only border tiles mask padding)."""
  return tiled(x, axes, taps, lambda xt, tt: _Joint(xt.ndim, axes, tt).first_max(xt, kind))


def _select_backward(x, operands, y, axes, taps, kind):
  """The max/min VJP ``g -> dx``: each window's ``g`` to its first max."""
  residual = _select_residual(x, y, axes, taps, kind)
  if _joint(taps):
    joint, off = _Joint(x.ndim, axes, taps), residual
    if joint.blocked:  # the reshape form's own transpose is one broadcast-and-select
      return lambda g: transpose(lambda t: joint.select(t, off), x, g)
    if not _scatters_back(joint):
      return lambda g: joint.scatter_back(g, off)
    return lambda g: lone_cpu(functools.partial(_scatter_add_back, axes=axes, taps=taps),
                              joint.scatter_back, x.size)(g, off)
  chain = functools.partial(_chain_scatter_back, axes=axes, taps=taps, kind=kind)
  if not _chain_scatters(taps):
    return lambda g: chain(x, g=g)
  return lambda g: lone_cpu(functools.partial(_chain_scatter_add, axes=axes, taps=taps,
                                              kind=kind),
                            lambda x, g: chain(x, g=g), x.size)(x, g)


# Max/min pooling whose derivative routes each window's tangent from, and cotangent to,
# its first max: the jvp transposes the fast VJP above (both modes, dilation supported).
_select_pool = transposed_jvp(pool_values, _select_backward, static=3)


def _chain_scatters(taps: Sequence[AxisTaps]) -> bool:
  """Large windows or adaptive bins that :func:`_chain_scatter_add` serves on a lone
  CPU device: no padding read, each element read at most twice on average."""
  reads = math.prod(t.out * t.window for t in taps)
  return reads <= 2 * math.prod(t.size for t in taps) and all(map(_reads_no_padding, taps))


def _reads_no_padding(t: AxisTaps) -> bool:
  p = t.positions()
  return bool((p >= 0).all() and (p < t.size).all())


def _chain_scatter_add(x, g, axes, taps, kind):
  """Large unpadded windows and adaptive bins on a lone CPU device: the flat index of
  each first max (:func:`select_chain`, as the indices), then one scatter-add of ``g``
  there (faster than :func:`_chain_scatter_back` for adaptive max 56 -> 5 and k=28).
  Used only where the windows read each element at most twice on average and never
  read padding: the chain measured faster for dense (8x8/4) and padded (7x7/2 p3)
  windows, where computing the indices costs more (``benchmarks/README.md``)."""
  return _scatter_add_at(g, _chain_flat_index(x, axes, taps, kind, g.shape), axes, taps)


def _chain_flat_index(x, axes, taps, kind, out_shape) -> jax.Array:
  """int32 flat spatial index of each window's first max (min), by :func:`select_chain`."""
  spatial = tuple(t.size for t in taps)
  _, (idx,) = select_chain(x, axes, taps, kind, [_iota(x.ndim, axes, spatial)])
  return jnp.broadcast_to(idx, out_shape).astype(jnp.int32)


def _chain_scatter_back(x, axes, taps, kind, g):
  """VJP of :func:`select_chain`'s values: route ``g`` back one axis at a time.

  The forward chain's offsets are recomputed from ``x``; each strided-slice axis routes
  its cotangent with one-axis phase planes (:meth:`_Joint.scatter_back`), the reshape
  and gather axes with the transpose of their select. JAX's transpose of the whole chain
  pads every slice's cotangent with interior padding, several times slower on CPU.
  """
  steps = []
  for axis, t in reversed(list(zip(axes, taps))):
    if t.identity:
      continue
    mode = _mode(t)
    if mode == "slices":
      # reduce_window and the offsets' forms are computed once; a max over slices
      # would be fused into, and recomputed by, every consumer
      y = _reduce_window_axis(x, axis, t, kind)
      off = _gradient_offsets(x, y, (axis,), (t,), kind)
    else:
      y = _reduce_axis(x, axis, t, kind, mode)
      off = _first_match(x, y, axis, t, kind, mode)
    steps.append((axis, t, mode, x, off))
    x = y
  for axis, t, mode, xa, off in reversed(steps):
    if mode == "slices":
      g = _Joint(g.ndim, (axis,), (t,)).scatter_back(g, off)
    else:
      g = transpose(functools.partial(_select, off=off, axis=axis, t=t, mode=mode), xa, g)
  return g


def _input_shape(out_shape, axes, taps):
  shape = list(out_shape)
  for a, t in zip(axes, taps):
    shape[a] = t.size
  return tuple(shape)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def select_pool(x: jax.Array, axes: tuple[int, ...], taps: tuple[AxisTaps, ...],
                kind: str) -> jax.Array:
  """Max/min pooling whose gradient sends each window's cotangent to its first max.

  Values come from :func:`pool_values`. The derivative (a ``jax.custom_jvp``, see
  :func:`jaxpool._linear.transposed_jvp`) keeps the first-max offsets of each window and
  routes the cotangent with pads, reshapes and selects, dilation supported (JAX's own
  max-pool VJP raises there); on a lone CPU device unpadded overlapping windows
  scatter-add it (:func:`_scatter_add_back`). Its tangent map is the transpose of that
  backward, so forward mode takes each window's tangent from its first max.
  """
  if jnp.issubdtype(x.dtype, jnp.inexact):
    return _select_pool(x, axes, taps, kind)
  return pool_values(x, axes, taps, kind)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def pool_with_indices(x: jax.Array, axes: tuple[int, ...], taps: tuple[AxisTaps, ...],
                      spatial: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
  """Differentiable max values and int32 flat indices of the first maxima.

  Unpadded non-overlapping windows (SegNet's 2x2/2) take both from one variadic reduce
  (:func:`_block_argmax`). Elsewhere values and indices are two fusions over ``x``: the
  values as :func:`select_pool`, the indices from :meth:`_Joint.first_max` (per
  :func:`tiled` tile where the windows are padded: faster than untiled) or
  from :func:`select_chain` for larger windows and adaptive bins.
  """
  if _joint(taps):
    joint = _Joint(x.ndim, axes, taps)
    if joint.blocked and all(_unpadded(t) for t in taps):
      if jnp.issubdtype(x.dtype, jnp.inexact):
        return _block_argmax(x, axes, taps, spatial)
      return _window_argmax(x, joint, spatial)
  values = select_pool(x, axes, taps, "max")
  xs = lax.stop_gradient(x)
  if _joint(taps):
    idx = joint.flat_index(_first_max_offsets(xs, axes, taps, "max"), spatial)
    return values, jnp.broadcast_to(idx, values.shape).astype(jnp.int32)
  return values, _chain_flat_index(xs, axes, taps, "max", values.shape)


_NO_INDEX = np.int32(np.iinfo(np.int32).max)


def _window_argmax(x: jax.Array, joint: _Joint, spatial: Sequence[int]):
  """Each window's max and the flat index of its first max (or first NaN), in one pass.

  One variadic ``lax.reduce`` over the stacked window offsets carries (value, flat
  index); its comparator orders by value (NaN above all) and then by lower index, a total
  order, so the result does not depend on XLA's reduction order. One read of the input
  instead of two fusions that each read it (XLA:CPU does not merge them). Used for
  unpadded non-overlapping windows only: with overlapping or padded windows XLA:CPU
  materialises the stack.
  """
  dtype = x.dtype
  x = x.astype(np.int8 if dtype == np.bool_ else _compute_dtype(dtype, "max"))
  fill = identity("max", x.dtype)
  origins = joint.origins(spatial)
  parts = list(joint.slices(x, fill))
  ids = [jnp.broadcast_to(origins + np.int32(dk), parts[0].shape)
         for dk in joint.deltas(spatial)]
  nan = jnp.issubdtype(x.dtype, jnp.inexact)

  def first_max(a, b):
    (va, ia), (vb, ib) = a, b
    later = vb > va
    same = vb == va
    if nan:
      na, nb = va != va, vb != vb
      later = later | (nb & ~na)
      same = same | (na & nb)
    take = later | (same & (ib < ia))
    return lax.select(take, vb, va), lax.select(take, ib, ia)

  values, idx = lax.reduce((jnp.stack(parts), jnp.stack(ids)),
                           (fill, _NO_INDEX), first_max, (0,))
  return values.astype(dtype), idx


def _block_argmax_values(x, axes, taps, spatial):
  return _window_argmax(x, _Joint(x.ndim, axes, taps), spatial)


def _block_argmax_backward(x, operands, out, axes, taps, spatial):
  joint = _Joint(x.ndim, axes, taps)
  off = joint.offset_of(out[1], spatial)
  return lambda g: transpose(lambda t: joint.select(t, off), x, g)


# :func:`_window_argmax` whose values route their (co)tangent through the index.
_block_argmax = transposed_jvp(_block_argmax_values, _block_argmax_backward, static=3)


def _iota(ndim: int, axes: Sequence[int], spatial: Sequence[int]) -> jax.Array:
  """Row-major flat index of every spatial position, broadcastable over ``ndim`` dims."""
  shape = [1] * ndim
  for a, n in zip(axes, spatial):
    shape[a] = n
  idx = jnp.zeros(shape, jnp.int32)
  for a, st in zip(axes, row_major_strides(spatial)):
    idx = idx + lax.broadcasted_iota(jnp.int32, shape, a) * np.int32(st)
  return idx
