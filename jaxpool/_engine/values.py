"""Values: max/min/sum over the windows in the form a plan names, the avg divisor, and
the transpose of a sum pool (the avg/lp derivative's backward)."""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxpool._engine import plan as planner
from jaxpool._engine.views import (
  Windows,
  by_segments,
  floor_parts,
  from_periods,
  identity,
  interleave,
  period_slices,
  readers,
  stacked,
  takes,
  tiled,
)
from jaxpool._geometry import AxisTaps
from jaxpool._linear import computed_once, transposed_jvp

COMBINE = {"max": lax.max, "min": lax.min, "sum": lax.add}
_REDUCE = {"max": jnp.max, "min": jnp.min, "sum": jnp.sum}


def _folding(kind: str, dtype, fold: str | None) -> bool:
  return bool(fold) and jnp.issubdtype(dtype, jnp.inexact)


def _sliced_sum_values(x: jax.Array, axes: tuple[int, ...], slices_max: int) -> jax.Array:
  """The sum over ``axes`` (dropped) by slices and adds, which XLA:CPU fuses into loops
  it splits over its threads (its reduce runs on one): one slice per position of the
  axes up to ``slices_max`` positions, else each axis by :func:`folds`."""
  if math.prod(x.shape[a] for a in axes) <= slices_max:
    parts = []
    for at in itertools.product(*(range(x.shape[a]) for a in axes)):
      starts, limits = [0] * x.ndim, list(x.shape)
      for a, i in zip(axes, at):
        starts[a], limits[a] = i, i + 1
      parts.append(lax.slice(x, starts, limits))
    y = functools.reduce(lax.add, parts)
  else:
    y = x
    for a in reversed(axes):
      y = folds(y, a, "sum")
  return y.reshape([n for i, n in enumerate(x.shape) if i not in axes])


def _sliced_sum_backward(x, operands, y, axes, slices_max):
  return lambda g: jnp.broadcast_to(jnp.expand_dims(g, axes), x.shape)


# The sum by slices or folds, whose reverse mode broadcasts the cotangent (JAX's
# transpose of the slices would pad the cotangent once per slice, of the folds at every
# level): ``sliced_sum(x, axes, slices_max)``.
sliced_sum = transposed_jvp(_sliced_sum_values, _sliced_sum_backward, static=2)


def reduce_axes(x: jax.Array, axes: Sequence[int], kind: str,
                fold: str | None) -> jax.Array:
  """Max/min/sum over ``axes`` (dropped). ``fold`` (``"once"``, ``"fused"`` or
  ``None``, as :class:`~jaxpool._engine.plan.Plan` names it): a float sum by slices
  (:func:`_sliced_sum_values`, whose loops XLA:CPU runs on all its threads), a float
  max/min by :func:`folds`, elementwise maxima of slices, instead of one reduce.
  XLA:CPU hands a large max/min reduce (and a non-overlapping ``reduce_window``, which
  it rewrites into one) to YNNPACK, whose result drops NaN: the max of a window holding
  a NaN comes out as the max of its other elements. Axes with only size-1 axes between
  them fold as one.
  ``"once"``: the folded result computed into memory once
  (:func:`~jaxpool._linear.computed_once`): fused, XLA:CPU recomputes the folds in every
  reader, and a first-max match compares each input element with them
  (benchmarks/README.md, "NaN through large max windows on CPU")."""
  if not _folding(kind, x.dtype, fold):
    return _REDUCE[kind](x, axis=tuple(axes))
  if kind == "sum":
    return sliced_sum(x, tuple(sorted(axes)), planner.SUM_SLICES_MAX)
  groups: list[list[int]] = []
  for a in sorted(axes):
    if groups and all(x.shape[d] == 1 for d in range(groups[-1][1] + 1, a)):
      groups[-1][1] = a
    else:
      groups.append([a, a])
  shape, folded, d = [], [], 0
  for first, last in groups:
    shape += x.shape[d:first]
    folded.append(len(shape))
    shape.append(math.prod(x.shape[first:last + 1]))
    d = last + 1
  shape += x.shape[d:]
  y = x.reshape(shape)
  for a in reversed(folded):
    y = folds(y, a, kind)
  if fold == "once":
    y = computed_once(y, y)
  return y.reshape([n for i, n in enumerate(x.shape) if i not in axes])


def reduce_axis(x: jax.Array, axis: int, t: AxisTaps, kind: str, form: str,
                fold: str | None = None) -> jax.Array:
  """One axis reduced through the view :func:`~jaxpool._engine.plan.axis_form` names
  (``fold``: see :func:`reduce_axes`; ``"takes"``: one take per bin offset, combined;
  sums by :func:`bin_sum`; ``"floors"``: max/min of :func:`floor_parts`)."""
  fill = identity(kind, x.dtype)
  if form == "tiles":
    return by_segments(axis, t, lambda ins, outs, st: reduce_axis(
        ins[0], axis, st, kind, "slices"), [x])
  if form == "floors":
    return functools.reduce(COMBINE[kind], floor_parts(x, axis, t, fill))
  if form == "takes":
    if kind == "sum":
      return bin_sum(x, axis, t)
    return functools.reduce(COMBINE[kind], takes(x, axis, t.positions(), t.real(), fill))
  if form == "slices":
    return functools.reduce(COMBINE[kind], Windows(x.ndim, (axis,), (t,)).slices(x, fill))
  if form == "periods":
    return from_periods([functools.reduce(COMBINE[kind], parts)
                         for parts in period_slices(x, axis, t)], axis)
  return reduce_axes(stacked(x, axis, t, fill, form), (axis + 1,), kind, fold)


def _taken_sum(x: jax.Array, axis: int, pos: np.ndarray, real: np.ndarray) -> jax.Array:
  """``sum_j x[pos[:, j]]`` along ``axis`` over the ``real`` taps: one static take per
  column of ``pos`` (:func:`~jaxpool._engine.views.takes`), which XLA fuses into one
  pass writing the output."""
  return functools.reduce(lax.add, takes(x, axis, pos, real, np.zeros((), x.dtype)))


def _bin_sum_values(x, axis, t):
  return _taken_sum(x, axis, t.positions(), t.real())


def _bin_sum_backward(x, operands, y, axis, t):
  outs, _, real = readers(t)
  return lambda g: _taken_sum(g, axis, outs, real)


# Bin sums along one axis as static takes (no gather temp, no reduce), whose transpose is
# again takes (of the cotangent, at each input's readers) instead of scatter-adds.
bin_sum = transposed_jvp(_bin_sum_values, _bin_sum_backward, static=2)
bin_sum.__doc__ = """Sums over the bins ``t`` along ``axis`` (any taps; planned for adaptive
bins on CPU, ``bins="takes"``): per window offset one static take of ``x``, masked where
the bin is narrower, added. Reverse mode takes the cotangent at each input's readers."""


def reduce_window(x: jax.Array, axes: Sequence[int], taps: Sequence[AxisTaps],
                  kind: str, fold: str | None = None) -> jax.Array:
  """One ``lax.reduce_window`` over the regular ``axes`` (JAX's own derivative applies).
  ``fold``: non-overlapping float max/min windows as their blocks, folded
  (:func:`reduce_axes`)."""
  if _folding(kind, x.dtype, fold) and planner.blocked(taps):
    w = Windows(x.ndim, tuple(axes), tuple(taps))
    return reduce_axes(w.blocks(x, identity(kind, x.dtype)), w.window_axes, kind, fold)
  dims, strides, dil = ([1] * x.ndim for _ in range(3))
  pads = [(0, 0)] * x.ndim
  for a, t in zip(axes, taps):
    dims[a], strides[a], dil[a] = t.window, t.stride, t.dilation
    hi = (t.out - 1) * t.stride + t.span - t.size - t.pad_lo
    pads[a] = (t.pad_lo, max(hi, 0))  # hi < 0: trailing inputs unused, cropped below
  y = lax.reduce_window(x, identity(kind, x.dtype), COMBINE[kind], dims, strides, pads,
                        window_dilation=dil)
  limits = list(y.shape)
  for a, t in zip(axes, taps):
    limits[a] = t.out
  return lax.slice(y, [0] * y.ndim, limits) if limits != list(y.shape) else y


def folds(x: jax.Array, axis: int, kind: str) -> jax.Array:
  """Max/min/sum over the whole ``axis`` (kept as size 1) by folding it: its eight
  equal parts combined elementwise (one pass writing an eighth of ``x``), then the
  result's two halves, then theirs, down to one. An odd length over eight reached by
  halving splits into the fewest equal parts, up to eight, that divide it; otherwise
  the remainder of an uneven split is folded alike and joins at the end. Slices and
  elementwise ops only, which XLA fuses into a few passes. (A remainder taken there
  made XLA:CPU compute the first passes twice, reading ``x`` twice: the global max over
  16x28x28 = 8 x 2^5 x 49 positions took about twice as long. Shorter odd lengths, and
  those right after the first pass, keep their remainder: no faster split measured;
  benchmarks/README.md, "Folds without a remainder".)

  >>> import jax.numpy as jnp
  >>> folds(jnp.arange(98.0).reshape(1, 98), 1, "max")
  Array([[97.]], dtype=float32)
  """
  combine, n, parts, rest, halved = COMBINE[kind], x.shape[axis], 8, [], False
  while n > 1:
    parts = min(parts, n)
    if n % parts and halved and n > 8:
      parts = next((p for p in range(3, 9) if n % p == 0), 2)
    halved = parts == 2
    q = n // parts
    if n % parts:
      rest.append(folds(lax.slice_in_dim(x, q * parts, n, axis=axis), axis, kind))
    x = functools.reduce(combine, [lax.slice_in_dim(x, k * q, (k + 1) * q, axis=axis)
                                   for k in range(parts)])
    n, parts = q, 2
  return functools.reduce(combine, rest, x)


def pool_values(x: jax.Array, axes: Sequence[int], taps: Sequence[AxisTaps], kind: str,
                form: str | None, bins: str | None = None,
                fold: str | None = None) -> jax.Array:
  """Max/min/sum over the windows: the regular axes in ``form``, then each irregular
  axis in the view :func:`~jaxpool._engine.plan.axis_form` names for ``bins``
  (``fold``: see :func:`reduce_axes`). With ``bins="takes"``, padded non-overlapping
  windows reduce the bins of their real elements
  (:func:`~jaxpool._engine.plan.real_bins`: padding adds nothing to a sum and never
  wins a max, and no padded copy of the input is made)."""
  if bins == "takes":
    taps = tuple(planner.real_bins(t) if planner.reads_real_bins(t) else t for t in taps)
  fill = identity(kind, x.dtype)
  regular = [(a, t) for a, t in zip(axes, taps) if t.regular and not t.identity]
  ra, rt = tuple(a for a, _ in regular), tuple(t for _, t in regular)
  if regular and form == "tiles":
    def tile(xt, tt):
      return functools.reduce(COMBINE[kind], Windows(xt.ndim, ra, tt).slices(xt, fill))
    x = tiled(x, ra, rt, tile)
  elif regular and form == "separable":
    for a, t in reversed(regular):
      x = reduce_axis(x, a, t, kind, "slices")
  elif regular and form == "blocks":
    w = Windows(x.ndim, ra, rt)
    x = reduce_axes(w.blocks(x, fill), w.window_axes, kind, fold)
  elif regular and form == "axes":
    for a, t in regular:
      x = reduce_window(x, (a,), (t,), kind, fold)
  elif regular:
    x = reduce_window(x, ra, rt, kind, fold)
  for a, t in zip(axes, taps):
    if not t.regular:
      x = reduce_axis(x, a, t, kind, planner.axis_form(t, bins), fold)
  return x


# ----------------------------------------------------------------------------- averages


def divisor(ndim: int, axes: Sequence[int], taps: Sequence[AxisTaps], include_pad: bool,
            override: int | None) -> int | jax.Array:
  """The avg-pool divisor of each window (PyTorch's rule): an int when it is uniform,
  else an int32 array over the output grid, the product of per-axis counts computed
  from iotas in the graph (cheaper than loading a constant divisor array)."""
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


def divide(total: jax.Array, d: int | jax.Array) -> jax.Array:
  return total / (np.array(d, total.dtype) if isinstance(d, int) else d.astype(total.dtype))


def mean_values(x, axes, taps, rule, form, bins=None, fold=None):
  """Window sums, divided by :func:`divisor` when ``rule = (include_pad, override)``;
  irregular axes (and padded blocks) in the view ``bins`` names, blocks summed by
  slices where ``fold`` is set (as :func:`pool_values`)."""
  total = pool_values(x, axes, taps, "sum", form, bins, fold)
  return total if rule is None else divide(total, divisor(x.ndim, axes, taps, *rule))


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


def sum_transpose(g: jax.Array, axes: tuple[int, ...], taps: tuple[AxisTaps, ...],
                  rule) -> jax.Array:
  """Transpose of :func:`mean_values`: per stride phase a pool of ``g``, interleaved.

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
  return interleave(planes, g, axes, taps)


def axis_sum_transpose(g: jax.Array, axes: tuple[int, ...], taps: tuple[AxisTaps, ...],
                       rule) -> jax.Array:
  """:func:`sum_transpose` one axis at a time, last axis first: the windows and the
  divisor are both products over the axes, so the transpose is too."""
  if rule is not None and rule[1] is not None:
    g, rule = divide(g, int(rule[1])), None
  for a, t in reversed(list(zip(axes, taps))):
    if not t.identity:
      g = sum_transpose(g, (a,), (t,), None if rule is None else (rule[0], None))
  return g


def _divided_sum(arrays, axes, taps) -> jax.Array:
  """Window sums of ``g / d`` for ``arrays = [g]`` or ``[g, d]`` (``d`` over ``g``'s grid).

  Windows within the tiles' budget read ``d`` per tap in the tiles; larger ones divide
  once, then pool in the form the planner gives those windows."""
  if len(arrays) == 2 and not planner.tiles_fit(taps):
    arrays = [arrays[0] / arrays[1]]
  if len(arrays) == 1:
    regular = [t for t in taps if not t.identity]
    form = planner.values_form(regular, "sum") if regular else None
    return pool_values(arrays[0], axes, taps, "sum", form)
  zero, one = np.zeros((), arrays[0].dtype), np.ones((), arrays[0].dtype)

  def tile(parts, tt):
    w = Windows(parts[0].ndim, axes, tt)
    terms = [a / b for a, b in zip(w.slices(parts[0], zero), w.slices(parts[1], one))]
    return functools.reduce(lax.add, terms)

  return tiled(arrays, axes, taps, tile)
