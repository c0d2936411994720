"""Window views: how the engine reads the windows of an array.

One of each: padding (:func:`pad`), one strided slice per window offset and the
non-overlapping reshape (:class:`Windows`), the static gather of irregular bins
(:func:`gathered`), the slices of bins that repeat (:func:`period_slices`),
border/interior tiles (:func:`tiled`) and the interleave of stride phases
(:func:`interleave`). Static geometry (offsets, which taps are real, flat index
origins) lives on :class:`Windows` too; what to compute with the views is the layers
above.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxpool._engine.plan import blocked, period, segments
from jaxpool._geometry import AxisTaps, row_major_strides


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


def expand(a: np.ndarray, ndim: int, axis: int, n: int) -> np.ndarray:
  """Place a static ``(out, ...)`` array of ``n`` dims at ``axis`` of an ``ndim`` array."""
  shape = [1] * ndim
  shape[axis:axis + n] = a.shape
  return a.reshape(shape)


def pad(x: jax.Array, axes: Sequence[int], taps: Sequence[AxisTaps], fill,
        whole_blocks: bool = False) -> jax.Array:
  """``x`` padded with ``fill`` to what its windows read: past the last window's end
  (never cropped there: slices read within it, and XLA:CPU copies a crop before
  reading it many times), or cropped to ``out * stride`` for the reshape view."""
  config = [(0, 0, 0)] * x.ndim
  for a, t in zip(axes, taps):
    length = t.out * t.stride if whole_blocks else (t.out - 1) * t.stride + t.span
    hi = length - t.size - t.pad_lo
    config[a] = (t.pad_lo, hi if whole_blocks else max(hi, 0), 0)
  if all(c == (0, 0, 0) for c in config):
    return x
  return lax.pad(x, np.asarray(fill).astype(x.dtype), config)


class Windows:
  """The regular windows of ``taps`` on ``axes`` of an ``ndim`` array.

  Offsets are numbered in row-major window order. Views: one strided slice per offset
  (:meth:`slices`) or, for non-overlapping undilated windows, one reshape
  (:meth:`blocks`, each spatial axis ``a`` becomes ``(out, window)``).
  """

  def __init__(self, ndim: int, axes: Sequence[int], taps: Sequence[AxisTaps]):
    self.ndim, self.axes, self.taps = ndim, tuple(axes), tuple(taps)
    self.blocked = blocked(taps)
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
    self.window_axes = tuple(a + i + 1 for i, a in enumerate(self.axes))

  def slices(self, x, fill) -> list[jax.Array]:
    """One strided slice per window offset, each over the output grid."""
    xp = pad(x, self.axes, self.taps, fill)
    parts = []
    for J in self.offsets:
      start, limit, step = [0] * x.ndim, list(xp.shape), [1] * x.ndim
      for a, t, j in zip(self.axes, self.taps, J):
        start[a] = j * t.dilation
        limit[a] = start[a] + (t.out - 1) * t.stride + 1
        # One output: the stride is moot, and a stride longer than a shard miscompiles
        # under XLA's SPMD partitioner (global max on a spatially sharded input).
        step[a] = t.stride if t.out > 1 else 1
      parts.append(lax.slice(xp, start, limit, step))
    return parts

  def blocks(self, x, fill) -> jax.Array:
    """``(..., out_0, k_0, ..., out_1, k_1, ...)``: window axes right after their axis."""
    xp = pad(x, self.axes, self.taps, fill, whole_blocks=True)
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
    """A static array over the window axes of :meth:`blocks`: ``values[k]`` at offset ``k``."""
    shape = [1] * (self.ndim + len(self.axes))
    for w, t in zip(self.window_axes, self.taps):
      shape[w] = t.window
    return np.asarray(values).reshape(shape)

  def block_real(self) -> np.ndarray | None:
    """Over :meth:`blocks`: whether each tap is real (None where all are)."""
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
    """``y`` over the output grid, broadcastable against :meth:`blocks`."""
    return jnp.expand_dims(y, self.window_axes)

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


def gathered(x: jax.Array, axis: int, t: AxisTaps, fill: np.ndarray) -> jax.Array:
  """Windows along ``axis`` as a new axis ``axis + 1`` by one static gather (any taps,
  adaptive bins included): ``(..., out, window, ...)``, padding taps set to ``fill``."""
  pos = t.positions()
  xw = jnp.take(x, np.clip(pos, 0, t.size - 1).ravel(), axis=axis, mode="clip")
  xw = xw.reshape(x.shape[:axis] + pos.shape + x.shape[axis + 1:])
  real = t.real()
  if not real.all():
    xw = jnp.where(expand(real, xw.ndim, axis, 2), xw, fill.astype(x.dtype))
  return xw


def takes(x: jax.Array, axis: int, pos: np.ndarray, real: np.ndarray,
          fill: np.ndarray) -> list[jax.Array]:
  """Per column ``j`` of the static ``(out, k)`` positions ``pos``, ``x`` taken at
  ``pos[:, j]`` along ``axis`` (``(..., out, ...)``), set to ``fill`` where ``real[:, j]``
  is false (padding, or a bin narrower than ``k``)."""
  parts = []
  for j in range(pos.shape[1]):
    part = jnp.take(x, np.clip(pos[:, j], 0, x.shape[axis] - 1), axis=axis, mode="clip")
    if not real[:, j].all():
      part = jnp.where(expand(real[:, j], x.ndim, axis, 1), part,
                       np.asarray(fill, x.dtype))
    parts.append(part)
  return parts


@functools.cache
def readers(t: AxisTaps) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The transpose of ``t``'s taps: per input position, the outputs that read it, as
  ``(size, k)`` output positions, the window offset at which each reads it, and a mask
  of the real entries (adaptive bins are contiguous and ordered: a few outputs per
  input)."""
  pos, real = t.positions(), t.real()
  found: list[list[tuple[int, int]]] = [[] for _ in range(t.size)]
  for o, j in zip(*np.nonzero(real)):
    found[pos[o, j]].append((int(o), int(j)))
  k = max(1, max(map(len, found)))
  outs, offsets = np.zeros((t.size, k), np.int32), np.zeros((t.size, k), np.int32)
  mask = np.zeros((t.size, k), bool)
  for i, r in enumerate(found):
    if r:
      outs[i, :len(r)], offsets[i, :len(r)] = zip(*r)
      mask[i, :len(r)] = True
  return outs, offsets, mask


def floor_take(x: jax.Array, axis: int, n: int, step: int, div: int, offset: int,
               fill) -> jax.Array:
  """``x`` at positions ``(step * o + offset) // div`` for ``o < n`` along ``axis``,
  without a gather: ``x`` repeated ``div`` times along ``axis`` (a broadcast, which XLA
  fuses into the reader), then one strided slice. Positions past ``x``'s end read
  ``fill``. Adaptive bins (:func:`~jaxpool._engine.plan.floors`) and their readers are
  such positions."""
  first, rows = offset // div, ((n - 1) * step + offset) // div + 1
  offset -= first * div
  size = x.shape[axis]
  if rows > size:
    config = [(0, 0, 0)] * x.ndim
    config[axis] = (0, rows - size, 0)
    x = lax.pad(x, np.asarray(fill, x.dtype), config)
  if first or rows < size:
    x = lax.slice_in_dim(x, first, rows, axis=axis)
  rows -= first
  if div > 1:
    shape = x.shape
    x = jnp.broadcast_to(jnp.expand_dims(x, axis + 1), shape[:axis + 1] + (div,) + shape[axis + 1:])
    x = x.reshape(shape[:axis] + (rows * div,) + shape[axis + 1:])
  return lax.slice_in_dim(x, offset, offset + (n - 1) * step + 1, step, axis=axis)


def floor_parts(x: jax.Array, axis: int, t: AxisTaps, fill) -> list[jax.Array]:
  """Adaptive bins (:func:`~jaxpool._engine.plan.floors`) along ``axis``, one
  ``(..., out, ...)`` part per bin offset ``j``, ``fill`` where the bin is narrower: bin
  ``o`` starts at ``o * size // out``, so offset ``j`` reads ``(o * size + j * out) //
  out`` (:func:`floor_take`); the last offset reads each bin's last element, ``((o + 1) *
  size - 1) // out``, which needs no padding past the input's end."""
  widths = np.asarray(t.widths)
  parts = []
  for j in range(t.window):
    offset = t.size - 1 if j == t.window - 1 else j * t.out
    part = floor_take(x, axis, t.out, t.size, t.out, offset, fill)
    if not (widths > j).all():
      part = jnp.where(expand(widths > j, x.ndim, axis, 1), part, np.asarray(fill, x.dtype))
    parts.append(part)
  return parts


def period_slices(x: jax.Array, axis: int, t: AxisTaps) -> list[list[jax.Array]]:
  """Repeating bins (:func:`~jaxpool._engine.plan.period`) by slices: ``x`` viewed as
  ``(..., groups, elements, ...)`` along ``axis``, and per bin of one period the
  ``(..., groups, 1, ...)`` slices of its offsets (its real ones only)."""
  elements, bins = period(t)
  xg = x.reshape(x.shape[:axis] + (t.size // elements, elements) + x.shape[axis + 1:])
  return [[lax.slice_in_dim(xg, s + k, s + k + 1, axis=axis + 1) for k in range(w)]
          for s, w in zip(t.starts[:bins], t.widths[:bins])]


def in_periods(y: jax.Array, axis: int, t: AxisTaps) -> list[jax.Array]:
  """An output-shaped ``y`` as :func:`period_slices` sees its bins: one
  ``(..., groups, 1, ...)`` slice per bin of a period."""
  _, bins = period(t)
  yg = y.reshape(y.shape[:axis] + (t.out // bins, bins) + y.shape[axis + 1:])
  return [lax.slice_in_dim(yg, b, b + 1, axis=axis + 1) for b in range(bins)]


def from_periods(parts: Sequence[jax.Array], axis: int) -> jax.Array:
  """Per-bin results shaped as :func:`in_periods` gives them, back to ``(..., out, ...)``."""
  y = jnp.concatenate(parts, axis=axis + 1)
  return y.reshape(y.shape[:axis] + (-1,) + y.shape[axis + 2:])


def stacked(x: jax.Array, axis: int, t: AxisTaps, fill: np.ndarray, form: str) -> jax.Array:
  """Windows along ``axis`` as a new axis ``axis + 1``, by a ``"reshape"`` or a
  ``"gather"``."""
  if form == "reshape":
    return Windows(x.ndim, (axis,), (t,)).blocks(x, fill)
  return gathered(x, axis, t, fill)


def tiled(x, axes: Sequence[int], taps: Sequence[AxisTaps], fn) -> jax.Array:
  """``fn(x_tile, taps_tile)`` on each tile of the output grid, concatenated.

  ``x`` may be a list of arrays with the same extents along ``axes``: each is tiled
  alike and ``fn`` gets the list of tiles.

  Per axis the outputs split into up to three :func:`~jaxpool._engine.plan.segments`; a
  tile is one segment per axis. Only border tiles pad (a few rows of ``x``); the
  interior reads ``x`` itself (XLA:CPU emits a per-element branch for every padded
  read).
  """
  listed = isinstance(x, list)

  def build(i, xs, cur):
    if i == len(axes):
      return fn(xs if listed else xs[0], tuple(cur))
    return by_segments(axes[i], taps[i], lambda ins, outs, st: build(i + 1, ins, cur + [st]),
                       xs)

  return build(0, x if listed else [x], [])


def by_segments(axis: int, t: AxisTaps, fn, inputs: Sequence[jax.Array],
                outputs: Sequence[jax.Array] = ()) -> jax.Array:
  """``fn(inputs, outputs, taps)`` per :func:`~jaxpool._engine.plan.segments` of one
  axis (a padded head, the interior, a padded tail), concatenated along ``axis``.

  ``inputs`` are input-shaped along ``axis`` and sliced to the range each segment's
  windows read; ``outputs`` are output-shaped and sliced to the segment's outputs. Only
  the border segments pad, a few rows each: padding the whole input would write a
  padded copy of it, which XLA:CPU materializes where two fusions read it (the chain's
  max and its first match)."""
  parts, o = [], 0
  for lo, hi, st in segments(t):
    ins = [lax.slice_in_dim(a, lo, hi, axis=axis) for a in inputs]
    outs = [lax.slice_in_dim(a, o, o + st.out, axis=axis) for a in outputs]
    parts.append(fn(ins, outs, st))
    o += st.out
  return parts[0] if len(parts) == 1 else lax.concatenate(parts, axis)


def interleave(planes: dict, g: jax.Array, axes: Sequence[int],
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


def iota(ndim: int, axes: Sequence[int], spatial: Sequence[int]) -> jax.Array:
  """Row-major flat index of every spatial position, broadcastable over ``ndim`` dims."""
  shape = [1] * ndim
  for a, n in zip(axes, spatial):
    shape[a] = n
  idx = jnp.zeros(shape, jnp.int32)
  for a, st in zip(axes, row_major_strides(spatial)):
    idx = idx + lax.broadcasted_iota(jnp.int32, shape, a) * np.int32(st)
  return idx


def input_shape(out_shape, axes, taps) -> tuple[int, ...]:
  shape = list(out_shape)
  for a, t in zip(axes, taps):
    shape[a] = t.size
  return tuple(shape)
