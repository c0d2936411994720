"""Selection: each window's first max (or min), as window offsets or flat indices, and
the linear maps that route a cotangent to it.

The first max is PyTorch's: row-major window order, a NaN wins over any number,
padding never wins. Small windows find it all offsets at once (:class:`Windows`);
larger windows and adaptive bins one axis at a time (:func:`select_chain`), last axis
first, so the first maximum along each axis composes into the row-major first one.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxpool._engine import plan as planner
from jaxpool._engine.values import folds, reduce_axis, reduce_window
from jaxpool._engine.views import (
  Windows,
  by_segments,
  expand,
  floor_parts,
  floor_take,
  from_periods,
  gathered,
  identity,
  in_periods,
  input_shape,
  interleave,
  iota,
  period_slices,
  readers,
  stacked,
  tiled,
)
from jaxpool._geometry import AxisTaps
from jaxpool._linear import computed_once, transpose
from jaxpool._scatter import flat_spatial, scatter


def _matches(xw: jax.Array, y: jax.Array) -> jax.Array:
  hit = xw == y
  if jnp.issubdtype(xw.dtype, jnp.inexact):
    hit = hit | jnp.isnan(xw)
  return hit


# ----------------------------------------------------------------------------- one axis


def _first_match_axis(x, y, axis: int, t: AxisTaps, kind: str, form: str) -> jax.Array:
  """Per output position, the first real window offset along ``axis`` holding ``y``."""
  if form == "tiles":
    return by_segments(axis, t, lambda ins, outs, st: _first_match_axis(
        ins[0], outs[0], axis, st, kind, "slices"), [x], [y])
  if form == "reshape":
    return _match(Windows(x.ndim, (axis,), (t,)), x, y, kind, "match_blocks")
  fill = identity(kind, x.dtype)
  real = t.real()
  if form == "slices":
    off = jnp.zeros(y.shape, jnp.int32)
    parts = Windows(x.ndim, (axis,), (t,)).slices(x, fill)
    for j, xs in reversed(list(enumerate(parts))):
      hit = _matches(xs, y)
      if not real[:, j].all():
        hit = hit & expand(real[:, j], y.ndim, axis, 1)
      off = jnp.where(hit, np.int32(j), off)
    return off
  if form == "floors":
    # no masks (a narrower bin's fill matches only an all-fill bin, at its offset 0 first);
    # no compare for the last offset (some offset holds the max)
    parts = floor_parts(x, axis, t, fill)
    off = jnp.full(y.shape, np.int32(len(parts) - 1), jnp.int32)
    for j in reversed(range(len(parts) - 1)):
      off = jnp.where(_matches(parts[j], y), np.int32(j), off)
    return off
  if form == "periods":
    offs = []
    for parts, yb in zip(period_slices(x, axis, t), in_periods(y, axis, t)):
      off = jnp.zeros(yb.shape, jnp.int32)
      for k in reversed(range(len(parts))):
        off = jnp.where(_matches(parts[k], yb), np.int32(k), off)
      offs.append(off)
    return from_periods(offs, axis)
  xw = gathered(x, axis, t, fill)
  hit = _matches(xw, jnp.expand_dims(y, axis + 1))
  if not real.all():
    hit = hit & expand(real, xw.ndim, axis, 2)
  ids = expand(np.arange(t.window, dtype=np.int32), xw.ndim, axis + 1, 1)
  return jnp.min(jnp.where(hit, ids, np.int32(t.window)), axis=axis + 1)


def _select_axis(e, off, axis: int, t: AxisTaps, form: str) -> jax.Array:
  """``e``'s value at window offset ``off`` along ``axis`` (linear in ``e``)."""
  if form == "tiles":
    return by_segments(axis, t, lambda ins, outs, st: _select_axis(
        ins[0], outs[0], axis, st, "slices"), [e], [off])
  zero = np.zeros((), e.dtype)
  if form == "floors":
    return functools.reduce(lax.add, [jnp.where(off == j, part, zero)
                                      for j, part in enumerate(floor_parts(e, axis, t, zero))])
  if form == "periods":  # a sum of masked slices: its transpose pads, no scatter
    return from_periods([functools.reduce(lax.add, [
        jnp.where(ob == k, part, zero) for k, part in enumerate(parts)])
        for parts, ob in zip(period_slices(e, axis, t), in_periods(off, axis, t))], axis)
  if form != "gather":
    return select_at(Windows(e.ndim, (axis,), (t,)), e, off)
  ew = gathered(e, axis, t, zero)
  ids = expand(np.arange(t.window, dtype=np.int32), ew.ndim, axis + 1, 1)
  picked = jnp.where(jnp.expand_dims(off, axis + 1) == ids, ew, zero)
  return jnp.sum(picked, axis=axis + 1, dtype=e.dtype)  # int32 stays int32 under x64


def _once(a: jax.Array, fence: bool) -> jax.Array:
  return computed_once(a, a) if fence else a


def select_chain(x: jax.Array, axes: Sequence[int], taps: Sequence[AxisTaps], kind: str,
                 extras: Sequence[jax.Array], fence: bool = False,
                 bins: str | None = None, fold: str | None = None, segments: bool = False
                 ) -> tuple[jax.Array, list[jax.Array]]:
  """Max/min over the windows, and each of ``extras`` at the first-max position.

  ``extras`` must broadcast against ``x`` (they are padded with 0 and never selected
  from padding). ``fence``: each axis's max and selected extras are computed into
  memory once (:func:`~jaxpool._linear.computed_once`); fused, XLA:CPU recomputes an
  axis's max in every compare of the next axis's windows. ``bins``: the plan's view of
  adaptive bins (:func:`~jaxpool._engine.plan.axis_form`). ``fold``: float max/min
  reduces as folds (:func:`~jaxpool._engine.values.reduce_axes`). ``segments``: padded
  axes per segment (the plan's ``segments``).
  """
  extras = list(extras)
  first = next((a for a, t in zip(axes, taps) if not t.identity), None)
  for axis, t in reversed(list(zip(axes, taps))):
    if t.identity:
      continue
    form = planner.axis_form(t, planner.routing(bins), segments)
    once = fence and form != "floors"
    y = _once(reduce_axis(x, axis, t, kind, form, fold), once)
    off = _first_match_axis(x, y, axis, t, kind, form)
    extras = [_once(_select_axis(e, off, axis, t, form), once) for e in extras]
    x = _once(y, fence and form == "floors" and axis != first)
  return x, extras


# ----------------------------------------------------------------------------- all offsets


def _match(w: Windows, x, y, kind: str, form: str) -> jax.Array:
  """Row-major offset id of the first window element equal to ``y`` (or NaN).

  ``match_blocks``: over the reshape view, padding masked (``match_blocks_f32``: the
  ids reduced as float32, which XLA:CPU reduces faster than int32; ``match_chain``: the
  last window axis by a select chain, the earlier ones folded, :func:`_least_matching`).
  ``match_stacked``: a reduce
  over the stacked offsets of unpadded windows (a bool temp of window x output, which
  XLA:CPU materializes once instead of recomputing a select chain in every backward
  term). ``match_slices``: a select chain without padding masks; a window whose real
  elements all equal the padding value (all ``-inf`` for max) may then pick a padding
  position, which drops its cotangent (its output is ``-inf``, so no finite loss flows
  through it); the masks stop XLA:CPU fusing the backward.
  """
  fill = identity(kind, x.dtype)
  n = np.int32(len(w.offsets))
  if form in ("match_blocks", "match_blocks_f32"):
    hit = _matches(w.blocks(x, fill), w.expand(y))
    real = w.block_real()
    if real is not None:
      hit = hit & real
    if form == "match_blocks_f32":  # ids below 2**24: exact in float32
      ids = w.block_iota(np.arange(n, dtype=np.float32))
      first = jnp.min(jnp.where(hit, ids, np.float32(n)), axis=w.window_axes)
      return first.astype(jnp.int32)
    ids = w.block_iota(np.arange(n, dtype=np.int32))
    return jnp.min(jnp.where(hit, ids, n), axis=w.window_axes)
  if form == "match_chain":
    return _least_matching(w, x, y, kind, range(n), n, chained=True).reshape(y.shape)
  if form == "match_stacked":
    hit = jnp.stack([_matches(xs, y) for xs in w.slices(x, fill)])
    ids = np.arange(n, dtype=np.int32).reshape((-1,) + (1,) * y.ndim)
    return jnp.min(jnp.where(hit, ids, n), axis=0)
  return first_match(w, x, y, kind, masked=False)


def first_match(w: Windows, x, y, kind: str, masked: bool = True,
                codes: Sequence[int] | None = None) -> jax.Array:
  """Offset id (or ``codes[id]``) of each window's first element equal to ``y`` (or
  NaN): a select chain over the offsets. ``masked``: padding never matches (an all
  ``-inf`` window matches its first real element, as PyTorch's index); unmasked, see
  :func:`_match`. ``codes`` (one int per offset) lets the chain write, say, each
  offset's flat distance instead of a second chain mapping ids to it."""
  codes = range(len(w.offsets)) if codes is None else codes
  off = jnp.full(y.shape, np.int32(codes[0]), jnp.int32)
  for k, xs in reversed(list(enumerate(w.slices(x, identity(kind, x.dtype))))):
    hit = _matches(xs, y)
    real = w.real_mask(k, xs.shape) if masked else None
    off = jnp.where(hit if real is None else hit & real, np.int32(codes[k]), off)
  return off


def first_max(w: Windows, x, kind: str) -> jax.Array:
  """Offset id of each window's first max (or first NaN), in one compare chain.

  It does not read the pooled values: values and offsets are two independent fusions
  over ``x``. Strict ``>`` keeps the first of equal elements, a NaN wins over a number,
  padding never wins.
  """
  if x.dtype == np.bool_:
    x = x.astype(np.int8)
  better = lax.gt if kind == "max" else lax.lt
  nan = jnp.issubdtype(x.dtype, jnp.inexact)
  best = off = found = None
  for k, xs in enumerate(w.slices(x, identity(kind, x.dtype))):
    real = w.real_mask(k, xs.shape)
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


def offsets(x, y, axes, taps, kind: str, form: str) -> jax.Array:
  """Each window's first-max offset id, in the residual ``form`` the plan names."""
  if form == "first_max_tiled":
    return tiled(x, axes, taps, lambda xt, tt: first_max(Windows(xt.ndim, axes, tt), xt, kind))
  w = Windows(x.ndim, axes, taps)
  if form == "first_max":
    return first_max(w, x, kind)
  if form == "match_real":
    return first_match(w, x, y, kind)
  return _match(w, x, y, kind, form)


def select_at(w: Windows, e, off) -> jax.Array:
  """``e`` at window offset ``off`` (linear in ``e``; transposes without a scatter)."""
  zero = np.zeros((), e.dtype)
  if w.blocked:
    ids = w.block_iota(np.arange(len(w.offsets), dtype=np.int32))
    picked = jnp.where(w.expand(off) == ids, w.blocks(e, zero), zero)
    return jnp.sum(picked, axis=w.window_axes, dtype=e.dtype)
  # A sum of independent masked terms (not a select chain): its transpose masks the
  # cotangent once per offset instead of through every earlier select.
  terms = [jnp.where(off == k, part, zero) for k, part in enumerate(w.slices(e, zero))]
  return functools.reduce(jnp.add, terms)


def planes_back(w: Windows, g, off) -> jax.Array:
  """Transpose of :func:`select_at`: each window's ``g`` to its offset ``off``.

  Built per phase plane, in unpadded coordinates: along each axis input position
  ``p = m*stride + r``; offset ``j`` of output ``o`` lands in plane
  ``r = (j*dilation - pad_lo) % stride`` at block ``o + (j*dilation - pad_lo) // stride``.
  Each plane sums only its own offsets (plain pads) and the planes are stacked into a
  concatenate that XLA keeps (JAX's automatic transpose gives a sum of
  interior-padded slices instead).
  """
  zero = np.zeros((), g.dtype)
  blocks = [-(-t.size // t.stride) for t in w.taps]
  planes: dict[tuple[int, ...], jax.Array] = {}
  for k, J in enumerate(w.offsets):
    config, R = [(0, 0, 0)] * g.ndim, []
    for a, t, j, nb in zip(w.axes, w.taps, J, blocks):
      q, r = divmod(j * t.dilation - t.pad_lo, t.stride)
      config[a] = (q, nb - q - t.out, 0)
      R.append(r)
    term = lax.pad(jnp.where(off == k, g, zero), zero, config)
    R = tuple(R)
    planes[R] = term if R not in planes else planes[R] + term
  return interleave(planes, g, w.axes, w.taps)


def block_back(w: Windows, g, off, like) -> jax.Array:
  """Transpose of :func:`select_at` on the reshape view: one broadcast-and-select."""
  return transpose(lambda t: select_at(w, t, off), like, g)


# ----------------------------------------------------------------------------- flat indices


def flat_index(w: Windows, off, spatial: Sequence[int]) -> jax.Array:
  """Flat row-major input index of offset ``off`` of each output window."""
  delta = jnp.zeros(off.shape, jnp.int32)
  for k, dk in enumerate(w.deltas(spatial)):
    if dk:
      delta = jnp.where(off == k, np.int32(dk), delta)
  return delta + w.origins(spatial)


def first_index(w: Windows, x, y, kind: str, spatial: Sequence[int]) -> jax.Array:
  """Flat row-major input index of each window's first real element equal to ``y`` (or
  NaN): :func:`first_match` writing each offset's flat distance, one select chain."""
  return first_match(w, x, y, kind, codes=w.deltas(spatial)) + w.origins(spatial)


def offset_of(w: Windows, idx, spatial: Sequence[int]) -> jax.Array:
  """Inverse of :func:`flat_index` for indices inside their own window."""
  delta = idx - w.origins(spatial)
  off = jnp.zeros(idx.shape, jnp.int32)
  for k, dk in enumerate(w.deltas(spatial)):
    if k:
      off = jnp.where(delta == dk, np.int32(k), off)
  return off


def scatter_add_at(g, idx, axes, taps, address: str) -> jax.Array:
  """``g`` summed into zeros of the input's shape at flat spatial indices ``idx``
  (PyTorch's max-pool backward)."""
  m = math.prod(t.size for t in taps)
  out = scatter(flat_spatial(g, axes), flat_spatial(idx, axes), m, axes[0], address,
                add=True)
  return out.reshape(input_shape(g.shape, axes, taps))


_NO_INDEX = np.int32(np.iinfo(np.int32).max)


def _least_matching(w: Windows, x, y, kind: str, codes: Sequence[int], none,
                    chained: bool) -> jax.Array:
  """Over the blocked view of non-overlapping windows, the least of ``codes`` (one per
  offset, rising in row-major offset order) among each window's real positions that
  match ``y`` (or NaN), ``none`` where none does; keeps the window axes as size 1.
  A compare, then a min folded over each window axis
  (:func:`~jaxpool._engine.values.folds`; XLA:CPU's reduce over these non-minor axes
  is slower). ``chained``: the last window axis is matched by a select chain over its
  positions instead (one pass over ``x`` writing a window-axis fraction of it; the
  compare is otherwise written in full for the folds to read), and only the earlier
  window axes are folded."""
  xb, ye = w.blocks(x, identity(kind, x.dtype)), w.expand(y)
  rel = w.block_iota(np.asarray(codes, np.int32))
  real = w.block_real()
  folded = w.window_axes
  if chained:
    *folded, last = folded
    first = none
    for j in reversed(range(xb.shape[last])):
      hit = _matches(lax.index_in_dim(xb, j, last), ye)
      if real is not None:
        hit = hit & np.take(real, [j], axis=last)
      first = jnp.where(hit, np.take(rel, [j], axis=last), first)
  else:
    hit = _matches(xb, ye)
    first = jnp.where(hit if real is None else hit & real, rel, none)
  for a in reversed(folded):
    first = folds(first, a, "min")
  return first


def block_first_index(x, w: Windows, y, spatial: Sequence[int],
                      chained: bool = False) -> jax.Array:
  """int32 flat spatial index of each non-overlapping, unpadded window's first maximum
  ``y``: the least relative index among the window's positions that match it (the
  first NaN when ``y`` is NaN), :func:`_least_matching`."""
  first = _least_matching(w, x, y, "max", w.deltas(spatial), _NO_INDEX, chained)
  return (first.reshape(y.shape) + w.origins(spatial)).astype(jnp.int32)


def _first_hit(hit: jax.Array, axis: int) -> jax.Array:
  """The first position along ``axis`` (kept as size 1) where ``hit`` holds, for ``hit``
  true somewhere along it: a select chain over its positions, or up to
  ``CHAINED_MATCH_MAX`` of them; past that, the least matching position folded (a
  program that grows with the log of the axis, not with it)."""
  n = hit.shape[axis]
  if n > planner.CHAINED_MATCH_MAX:
    pos = lax.broadcasted_iota(np.int32, hit.shape, axis)
    return folds(jnp.where(hit, pos, np.int32(n)), axis, "min")
  first = np.int32(n - 1)
  for j in reversed(range(n - 1)):
    first = jnp.where(lax.index_in_dim(hit, j, axis), np.int32(j), first)
  return jnp.broadcast_to(first, hit.shape[:axis] + (1,) + hit.shape[axis + 1:])


def block_rows_first(x: jax.Array, w: Windows, spatial: Sequence[int],
                     kind: str = "max") -> tuple[jax.Array, jax.Array, jax.Array]:
  """Each window's max (min; NaN-propagating), the int32 flat spatial index of its first
  max (or first NaN) and that element's offset in the window (row-major, as
  :func:`block_back` takes it), for windows that tile one or two axes, two-level by rows.

  A window's rows are its positions along its first axis (a 1-D window is split into
  :func:`~jaxpool._engine.plan.rows_split` rows). One pass over ``x`` writes each row's
  max; the window's max is the max of its rows and its first max lies in the first row
  holding it (or a NaN). That row alone is read again (``take_along_axis``, a gather of
  one row per window) and its first match is the column. The row maxima, the max and
  the chosen row's number are each computed into memory once
  (:func:`~jaxpool._linear.computed_once`; a lone CPU device): fused, XLA:CPU
  recomputes each in every reader.

  >>> import jax.numpy as jnp
  >>> from jaxpool._geometry import AxisTaps
  >>> x = jnp.array([[3., 1., 7., 7.]])[..., None]
  >>> taps = (AxisTaps(size=4, out=1, window=4, stride=4),)
  >>> y, i, off = block_rows_first(x, Windows(3, (1,), taps), (4,))
  >>> float(y[0, 0, 0]), int(i[0, 0, 0]), int(off[0, 0, 0])
  (7.0, 2, 2)
  """
  dtype = x.dtype
  x = x.astype(np.int8) if dtype == np.bool_ else x
  xb = w.blocks(x, identity(kind, x.dtype))
  once = functools.partial(computed_once, key=x)
  if len(w.axes) == 1:
    row, col = w.window_axes[0], w.window_axes[0] + 1
    rows = planner.rows_split(w.taps[0].window)
    xb = xb.reshape(xb.shape[:row] + (rows, -1) + xb.shape[row + 1:])
    step = cols = xb.shape[col]
  else:
    (row, col), step, cols = w.window_axes, spatial[1], w.taps[1].window
  tops = once(folds(xb, col, kind))
  y = once(folds(tops, row, kind))
  r = once(_first_hit(_matches(tops, y), row))
  line = jnp.take_along_axis(xb, r, row, mode="promise_in_bounds")
  c = _first_hit(_matches(line, y), col)
  y = y.reshape(tuple(n for a, n in enumerate(y.shape) if a not in (row, col)))
  idx = (r * np.int32(step) + c).reshape(y.shape) + w.origins(spatial)
  off = (r * np.int32(cols) + c).reshape(y.shape)
  return y.astype(dtype), idx.astype(jnp.int32), off


def chain_flat_index(x, axes, taps, kind: str, out_shape, fence: bool = False,
                     bins: str | None = None, fold: str | None = None,
                     order: str | None = None, segments: bool = False) -> jax.Array:
  """int32 flat spatial index of each window's first max (min), by :func:`select_chain`
  (``order=None``), or with the last pooled axis reduced last (``"minor_last"``), each
  axis keeping the least flat index among its matches (:func:`_least_index_axis`)."""
  spatial = tuple(t.size for t in taps)
  idx = iota(x.ndim, axes, spatial)
  if order is None:
    _, (idx,) = select_chain(x, axes, taps, kind, [idx], fence, bins, fold, segments)
  else:
    steps = list(zip(axes, taps))
    for axis, t in [*reversed(steps[:-1]), steps[-1]]:
      if t.identity:
        continue
      form = planner.axis_form(t, planner.routing(bins), segments)
      y = _once(reduce_axis(x, axis, t, kind, form, fold), fence)
      idx = _once(_least_index_axis(x, y, idx, axis, t, kind, form), fence)
      x = y
  return jnp.broadcast_to(idx, out_shape).astype(jnp.int32)


def _least_index_axis(x, y, idx, axis: int, t: AxisTaps, kind: str, form: str) -> jax.Array:
  """Per output position along ``axis``, the least of ``idx`` (flat indices broadcast
  against ``x``) among the window elements holding ``y`` (or NaN). Whatever order the
  axes are reduced in, the least index among the matches is the row-major first max."""
  fill = identity(kind, x.dtype)
  idx = jnp.broadcast_to(idx, x.shape)
  if form == "tiles":
    return by_segments(axis, t, lambda ins, outs, st: _least_index_axis(
        ins[0], outs[0], ins[1], axis, st, kind, "slices"), [x, idx], [y])

  def least(parts, ids, yb):
    return functools.reduce(jnp.minimum, [jnp.where(_matches(a, yb), i, _NO_INDEX)
                                          for a, i in zip(parts, ids)])

  if form == "slices":
    w = Windows(x.ndim, (axis,), (t,))
    return least(w.slices(x, fill), w.slices(idx, _NO_INDEX), y)
  if form == "floors":
    return least(floor_parts(x, axis, t, fill), floor_parts(idx, axis, t, _NO_INDEX), y)
  if form == "periods":
    return from_periods([least(px, pi, yb) for px, pi, yb in zip(
        period_slices(x, axis, t), period_slices(idx, axis, t), in_periods(y, axis, t))], axis)
  hit = _matches(stacked(x, axis, t, fill, form), jnp.expand_dims(y, axis + 1))
  ids = stacked(idx, axis, t, _NO_INDEX, form)
  return jnp.min(jnp.where(hit, ids, _NO_INDEX), axis=axis + 1)


def _readers_back(g, off, axis: int, t: AxisTaps, floors: bool = False) -> jax.Array:
  """Transpose of :func:`_select_axis` over adaptive bins: each input position sums the
  cotangent of the bins that read it (:func:`readers`, a few per position) where their
  first max lies on it. ``g`` and ``off`` are read at each input's ``k``-th reader by a
  static take (bins read by a gather, whose own transpose is a scatter-add, serial on
  XLA:CPU) or, with ``floors``, by :func:`~jaxpool._engine.views.floor_take` (that
  reader is output ``i * out // size + k``, :func:`~jaxpool._engine.plan.floors`)."""
  outs, at, real = readers(t)
  at = np.where(real, at, t.window)  # no offset: not a reader (or past the end)
  zero = np.zeros((), g.dtype)
  dx = None
  for k in range(at.shape[1]):
    if floors:
      def reader(a, fill, k=k):
        return floor_take(a, axis, t.size, t.out, t.size, k * t.size, fill)
    else:
      def reader(a, fill, k=k):
        return jnp.take(a, outs[:, k], axis=axis)
    hit = reader(off, 0) == expand(at[:, k], off.ndim, axis, 1)
    term = jnp.where(hit, reader(g, zero), zero)
    dx = term if dx is None else dx + term
  return dx


def chain_back(x, axes, taps, kind: str, g, fence: bool = False,
               bins: str | None = None, fold: str | None = None) -> jax.Array:
  """VJP of :func:`select_chain`'s values: route ``g`` back one axis at a time.

  The forward chain's offsets are recomputed from ``x``; each strided-slice axis routes
  its cotangent with one-axis phase planes (:func:`planes_back`), the reshape and gather
  axes with the transpose of their select, except that adaptive axes read by a gather
  take the cotangent at each input's readers (:func:`_readers_back`) where ``bins`` names
  a form other than the gather (CPU plans), and axes read as floors the same way.
  (JAX's transpose of the whole chain pads every slice's cotangent with interior
  padding.) ``fence``: for floors axes, the max the next axis reads and
  the cotangent between axes are computed once, not the offsets (fused deeper, XLA:CPU
  wrote a broadcast the size of the input times the output along the axis).
  """
  steps = []
  first = next((a for a, t in zip(axes, taps) if not t.identity), None)
  for axis, t in reversed(list(zip(axes, taps))):
    if t.identity:
      continue
    form = planner.axis_form(t, planner.routing(bins))
    if form == "slices":
      # reduce_window and the offsets' forms are computed once; a max over slices
      # would be fused into, and recomputed by, every consumer
      y = reduce_window(x, (axis,), (t,), kind, fold)
      off = offsets(x, y, (axis,), (t,), kind, planner.offsets_form((t,)))
    else:
      once = fence and form != "floors"
      y = _once(reduce_axis(x, axis, t, kind, form, fold), once)
      off = _once(_first_match_axis(x, y, axis, t, kind, form), once)
      y = _once(y, fence and form == "floors" and axis != first)
    steps.append((axis, t, form, x, off))
    x = y
  for i, (axis, t, form, xa, off) in enumerate(reversed(steps)):
    if form == "slices":
      g = planes_back(Windows(g.ndim, (axis,), (t,)), g, off)
    elif form == "gather" and not t.regular and bins not in (None, "gather"):
      g = _readers_back(g, off, axis, t)
    elif form == "floors":
      g = _readers_back(g, off, axis, t, floors=True)
      if fence and i < len(steps) - 1:
        g = computed_once(g, off)
    else:
      g = transpose(functools.partial(_select_axis, off=off, axis=axis, t=t, form=form),
                    xa, g)
  return g


# ----------------------------------------------------------------------------- values + index


def window_argmax(x: jax.Array, w: Windows, spatial: Sequence[int],
                  upcast: bool) -> tuple[jax.Array, jax.Array]:
  """Each window's max and the flat index of its first max (or first NaN), in one pass.

  One variadic ``lax.reduce`` over the stacked window offsets carries (value, flat
  index); its comparator orders by value (NaN above all) and then by lower index, a total
  order, so the result does not depend on XLA's reduction order.
  """
  dtype = x.dtype
  x = x.astype(np.int8 if dtype == np.bool_ else np.float32 if upcast else dtype)
  fill = identity("max", x.dtype)
  origins = w.origins(spatial)
  parts = w.slices(x, fill)
  ids = [jnp.broadcast_to(origins + np.int32(dk), parts[0].shape) for dk in w.deltas(spatial)]
  nan = jnp.issubdtype(x.dtype, jnp.inexact)

  def first_of(a, b):
    (va, ia), (vb, ib) = a, b
    later = vb > va
    same = vb == va
    if nan:
      na, nb = va != va, vb != vb
      later = later | (nb & ~na)
      same = same | (na & nb)
    take = later | (same & (ib < ia))
    return lax.select(take, vb, va), lax.select(take, ib, ia)

  values, idx = lax.reduce((jnp.stack(parts), jnp.stack(ids)), (fill, _NO_INDEX), first_of,
                           (0,))
  return values.astype(dtype), idx
