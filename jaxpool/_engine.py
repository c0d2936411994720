"""Separable window reductions: the one compute core behind every pooling op.

A pooling window is a product of per-axis tap sets, so every reduction here runs one
spatial axis at a time (last axis first). Along one axis the windows are viewed in one
of three ways, chosen at trace time from the static :class:`~jaxpool._geometry.AxisTaps`:

* ``reshape``: non-overlapping, undilated windows (``stride >= window``): pad or crop
  the axis to ``out * stride``, split it into ``(out, stride)`` and keep ``window``.
  Pure layout ops; XLA fuses them into the reduction.
* ``slices``: up to ``MAX_UNROLL`` strided slices, one per window offset, combined
  elementwise (a fused loop on CPU/GPU/TPU, no ``reduce_window``).
* ``gather``: one static ``take`` of the ``(out, window)`` positions (adaptive bins
  of two widths, or very large overlapping windows).

Values-only max/min/sum of large overlapping windows use a 1-D ``lax.reduce_window``.

Max/min selection is row-major first-max: along each axis the first offset whose value
equals the axis maximum (or is NaN) wins, and processing the last axis first makes the
combined choice the first maximum in row-major window order (PyTorch's rule). The same
per-axis offsets select tangents (the JVP of max pooling, which JAX transposes into a
scatter-free backward of pads and selects) and carry flat indices for
``max_pool_with_indices``. No op here is backend specific: all lower to standard HLO
(pad, slice, reshape, select, reduce, gather) on CPU, GPU and TPU.
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

from jaxpool._geometry import AxisTaps

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


def _mode(t: AxisTaps, need_offsets: bool) -> str:
  if t.regular and t.dilation == 1 and t.stride >= t.window:
    return "reshape"
  if t.regular and t.window <= MAX_UNROLL:
    return "slices"
  if t.regular and not need_offsets:
    return "reduce_window"
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
  return [lax.slice_in_dim(xp, j * t.dilation, j * t.dilation + last, t.stride, axis)
          for j in range(t.window)]


def _reduce_axis(x: jax.Array, axis: int, t: AxisTaps, kind: str, mode: str) -> jax.Array:
  fill = identity(kind, x.dtype)
  if mode == "slices":
    return functools.reduce(_COMBINE[kind], _slices(x, axis, t, fill))
  if mode == "reduce_window":
    length = (t.out - 1) * t.stride + t.span
    xp = _pad_axis(x, axis, t.pad_lo, length - t.size - t.pad_lo, fill)
    dims, strides, dil = ([1] * x.ndim for _ in range(3))
    dims[axis], strides[axis], dil[axis] = t.window, t.stride, t.dilation
    return lax.reduce_window(xp, fill, _COMBINE[kind], dims, strides, "VALID",
                             window_dilation=dil)
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
                 extras: Sequence[jax.Array] = ()) -> tuple[jax.Array, list[jax.Array]]:
  """Max/min over the windows, and each of ``extras`` at the first-max position.

  ``extras`` must broadcast against ``x`` (they are padded with 0 and never selected
  from padding).
  """
  extras = list(extras)
  for axis, t in reversed(list(zip(axes, taps))):
    if t.identity:
      continue
    mode = _mode(t, need_offsets=bool(extras))
    y = _reduce_axis(x, axis, t, kind, mode)
    if extras:
      off = _first_match(x, y, axis, t, kind, mode)
      extras = [_select(e, off, axis, t, mode) for e in extras]
    x = y
  return x, extras


# ----------------------------------------------------------------------------- values


def pool_values(x: jax.Array, axes: Sequence[int], taps: Sequence[AxisTaps],
                kind: str) -> jax.Array:
  """Max/min/sum over the windows: one N-D ``reduce_window`` for the regular axes.

  On CPU a single ``reduce_window`` measured fastest for the values (2-4x faster than
  fused strided slices); its padding argument avoids materialising a padded copy.
  Irregular (adaptive two-width) axes follow, one gather each.
  """
  fill = identity(kind, x.dtype)
  regular = [(a, t) for a, t in zip(axes, taps) if t.regular and not t.identity]
  if regular:
    dims, strides, dil = ([1] * x.ndim for _ in range(3))
    pads = [(0, 0)] * x.ndim
    for a, t in regular:
      dims[a], strides[a], dil[a] = t.window, t.stride, t.dilation
      hi = (t.out - 1) * t.stride + t.span - t.size - t.pad_lo
      pads[a] = (t.pad_lo, max(hi, 0))  # hi < 0: trailing inputs unused, output cropped below
    x = lax.reduce_window(x, fill, _COMBINE[kind], dims, strides, pads, window_dilation=dil)
    limits = list(x.shape)
    for a, t in regular:
      limits[a] = t.out
    if limits != list(x.shape):
      x = lax.slice(x, [0] * x.ndim, limits)
  for a, t in zip(axes, taps):
    if not t.regular:
      x = _reduce_axis(x, a, t, kind, "gather")
  return x


def sum_pool(x: jax.Array, axes: Sequence[int], taps: Sequence[AxisTaps]) -> jax.Array:
  """Sum over the windows (padding contributes 0); JAX's transpose rule gives the VJP."""
  return pool_values(x, axes, taps, "sum")


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
    reals = [t.real() for t in taps]
    self.real = [self._grid([r[:, j] for r, j in zip(reals, J)]) for J in self.offsets]
    if self.blocked:
      self.window_axes = tuple(a + i + 1 for i, a in enumerate(self.axes))

  def _grid(self, vectors) -> np.ndarray | None:
    """A static bool array over the output grid (broadcast shape), None if all True."""
    grid = np.ones((), bool)
    for v in vectors:
      grid = np.logical_and.outer(grid, v)
    if grid.all():
      return None
    shape = [1] * self.ndim
    for a, n in zip(self.axes, grid.shape):
      shape[a] = n
    return grid.reshape(shape)

  def slices(self, x, fill):
    xp = _pad_all(x, self.axes, self.taps, fill, blocked=False)
    for J in self.offsets:
      start, limit, step = [0] * x.ndim, list(xp.shape), [1] * x.ndim
      for a, t, j in zip(self.axes, self.taps, J):
        start[a] = j * t.dilation
        limit[a] = start[a] + (t.out - 1) * t.stride + 1
        step[a] = t.stride
      yield lax.slice(xp, start, limit, step)

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
    """Row-major offset id of the first real window element equal to ``y`` (or NaN)."""
    fill = identity(kind, x.dtype)
    if self.blocked:
      hit = _matches(self.blocks(x, fill), self.expand(y))
      real = self.block_real()
      if real is not None:
        hit = hit & real
      ids = self.block_iota(np.arange(len(self.offsets), dtype=np.int32))
      return jnp.min(jnp.where(hit, ids, np.int32(len(self.offsets))), axis=self.window_axes)
    off = jnp.zeros(y.shape, jnp.int32)
    for k, xs in reversed(list(enumerate(self.slices(x, fill)))):
      hit = _matches(xs, y)
      if self.real[k] is not None:
        hit = hit & self.real[k]
      off = jnp.where(hit, np.int32(k), off)
    return off

  def select(self, e, off):
    """``e`` at window offset ``off`` (linear in ``e``; transposes without scatter)."""
    zero = np.zeros((), e.dtype)
    if self.blocked:
      ids = self.block_iota(np.arange(len(self.offsets), dtype=np.int32))
      picked = jnp.where(self.expand(off) == ids, self.blocks(e, zero), zero)
      return jnp.sum(picked, axis=self.window_axes, dtype=e.dtype)
    parts = list(self.slices(e, zero))
    out = parts[0]
    for k in range(1, len(parts)):
      out = jnp.where(off == k, parts[k], out)
    return out

  def flat_index(self, off, spatial: Sequence[int]) -> jax.Array:
    """Flat row-major input index of offset ``off`` of each output window."""
    strides = row_major(spatial)
    base = np.zeros((), np.int64)
    for t, st in zip(self.taps, strides):
      base = np.add.outer(base, (np.arange(t.out) * t.stride - t.pad_lo) * st)
    shape = [1] * self.ndim
    for a, t in zip(self.axes, self.taps):
      shape[a] = t.out
    base = base.astype(np.int32).reshape(shape)
    delta = jnp.zeros(off.shape, jnp.int32)
    for k, J in enumerate(self.offsets):
      dk = sum(j * t.dilation * st for j, t, st in zip(J, self.taps, strides))
      if dk:
        delta = jnp.where(off == k, np.int32(dk), delta)
    return delta + base


def row_major(spatial: Sequence[int]) -> list[int]:
  out, acc = [], 1
  for n in reversed(spatial):
    out.append(acc)
    acc *= n
  return out[::-1]


# ----------------------------------------------------------------------------- selection


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def _select_pool(x: jax.Array, axes: tuple[int, ...], taps: tuple[AxisTaps, ...],
                 kind: str) -> jax.Array:
  return pool_values(x, axes, taps, kind)


@_select_pool.defjvp
def _select_pool_jvp(axes, taps, kind, primals, tangents):
  (x,), (t,) = primals, tangents
  if _joint(taps):
    y = _select_pool(x, axes, taps, kind)  # itself: higher orders use this rule again
    joint = _Joint(x.ndim, axes, taps)
    # Materialise the offsets: otherwise XLA re-derives them inside every consumer of
    # the transposed program (measured 2.5x slower on the ResNet stem).
    off = lax.optimization_barrier(joint.first_match(x, y, kind))
    return y, joint.select(t, off)
  y, (ty,) = select_chain(x, axes, taps, kind, [t])
  return y, ty


def select_pool(x: jax.Array, axes: tuple[int, ...], taps: tuple[AxisTaps, ...],
                kind: str) -> jax.Array:
  """Max/min pooling whose derivative sends each window's tangent to its first max.

  Values come from ``reduce_window``. The JVP is linear in the tangent (strided slices
  or a reshape, and selects), so reverse mode is JAX's transpose of it: pads and
  selects, no scatter. Works for dilated windows, where JAX's own max-pool derivative
  raises.
  """
  if jnp.issubdtype(x.dtype, jnp.inexact):
    return _select_pool(x, axes, taps, kind)
  return pool_values(x, axes, taps, kind)


def pool_with_indices(x: jax.Array, axes: tuple[int, ...], taps: tuple[AxisTaps, ...],
                      spatial: Sequence[int]) -> tuple[jax.Array, jax.Array]:
  """Differentiable max values and int32 flat indices of the first maxima."""
  values = select_pool(x, axes, taps, "max")
  xs = lax.stop_gradient(x)
  if _joint(taps):
    joint = _Joint(x.ndim, axes, taps)
    idx = joint.flat_index(joint.first_match(xs, pool_values(xs, axes, taps, "max"), "max"),
                           spatial)
  else:
    _, (idx,) = select_chain(xs, axes, taps, "max", [_iota(x.ndim, axes, spatial)])
  return values, jnp.broadcast_to(idx, values.shape).astype(jnp.int32)


def _iota(ndim: int, axes: Sequence[int], spatial: Sequence[int]) -> jax.Array:
  """Row-major flat index of every spatial position, broadcastable over ``ndim`` dims."""
  shape = [1] * ndim
  for a, n in zip(axes, spatial):
    shape[a] = n
  idx = jnp.zeros(shape, jnp.int32)
  for a, st in zip(axes, row_major(spatial)):
    idx = idx + lax.broadcasted_iota(jnp.int32, shape, a) * np.int32(st)
  return idx
