"""``max_unpool``: scatter pooled values back to their argmax positions."""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from jaxpool import _geometry as geo
from jaxpool._engine import plan as planner
from jaxpool._engine.dispatch import on_backends
from jaxpool._engine.plan import Plan
from jaxpool._engine.views import Windows
from jaxpool._linear import computed_once, transposed_jvp
from jaxpool._scatter import flat_spatial, gather, scatter


def _scatter(v, idx, m: int, axis: int, address: str) -> jax.Array:
  return scatter(v, idx, m, axis, address)


def _scatter_backward(v, operands, y, m, axis, address):
  # PyTorch's max_unpool backward: every value reads the cotangent at its index.
  (idx,) = operands
  return lambda g: gather(g, idx, axis, address)


# The unpool scatter; its derivative gathers at the indices (forward mode: the transpose,
# a scatter-add, so tangents of values that share an index add up).
_unpool_scatter = transposed_jvp(_scatter, _scatter_backward, operands=1, static=3)


def _overlapping(window: tuple[int, ...], stride: tuple[int, ...]) -> bool:
  """Whether windows overlap along some axis (a position lies in several windows)."""
  return any(k > s for k, s in zip(window, stride))


def _select_in_window(v: jax.Array, idx: jax.Array, axes: tuple[int, ...],
                      window: tuple[int, ...], stride: tuple[int, ...],
                      pads: tuple[tuple[int, int], ...], size: tuple[int, ...],
                      address: str) -> jax.Array:  # address: the backward's
  """Scatter-free unpooling of indices that lie in their own windows.

  The output, each axis of stride ``s > 1`` viewed as rows of ``s`` positions over the
  padded extent (``(..., q, s, ...)``), takes at each position the value of each window
  covering it whose index names that position: per window offset ``t`` (the window
  ``q - t`` along each axis, ``0 <= t < ceil(window / stride)``; one offset where the
  windows do not overlap), one compare against the static flat index of every position
  and a select; then a reshape and a pad (or crop) to ``size``. Where overlapping
  windows name the same position, the window last in row-major order is written, as a
  serial scatter writes it. Indices outside their window match nothing and are
  dropped. Plain element-wise HLO on every backend. The gradient gathers the
  cotangent at each index that lies in its window (:func:`_in_window_backward`).
  """
  reach = tuple(-(-k // s) for k, s in zip(window, stride))  # windows covering a row
  rows = tuple(v.shape[a] + r - 1 for a, r in zip(axes, reach))
  grown = list(v.shape)                           # v with each pooled axis as its rows
  for a, n in zip(axes, rows):
    grown[a] = n
  cand = np.zeros((), np.int64)                   # each position's flat output index
  for n, s, (lo, _), st in zip(rows, stride, pads, geo.row_major_strides(size)):
    cand = np.add.outer(cand, (np.arange(n)[:, None] * s - lo + np.arange(s)) * st)
  cand = np.clip(cand, -2**31, 2**31 - 1).astype(np.int32)  # out-of-range rows are cropped
  # the view: each pooled axis as (rows, stride), or as rows alone where the stride is
  # 1 (XLA:CPU did not vectorize a select over unit axes); the pooled axes are adjacent
  view, expanded = [], []
  for n, s in zip(rows, stride):
    view += [n, s] if s > 1 else [n]
    if s > 1:
      expanded.append(axes[0] + len(view) - 1)
  cgrid = [1] * axes[0] + view + [1] * (v.ndim - axes[-1] - 1)
  zero = np.zeros((), v.dtype)
  shifted = _overlapping(window, stride)
  if shifted:
    # v and idx padded by reach - 1 rows on both sides, into memory once; each offset
    # reads a slice of them (pads fused per offset XLA:CPU did not vectorize)
    config = [(0, 0, 0)] * v.ndim
    for a, r in zip(axes, reach):
      config[a] = (r - 1, r - 1, 0)
    vp = computed_once(lax.pad(v, zero, config), v)
    ip = computed_once(lax.pad(idx, np.int32(-1), config), v)
  out = None
  # offsets in descending row-major order: the last select that hits is the window
  # latest in row-major order (the least offset)
  for t in reversed(list(np.ndindex(*reach))):
    vt, it = v, idx
    if shifted:  # the window t rows back, at each row
      start = [0] * v.ndim
      for a, ti, r in zip(axes, t, reach):
        start[a] = r - 1 - ti
      limit = [b + n for b, n in zip(start, grown)]
      vt, it = lax.slice(vp, start, limit), lax.slice(ip, start, limit)
    hit = jnp.expand_dims(it, tuple(expanded)) == cand.reshape(cgrid)
    # a window covers position j of the row t rows on where t * stride + j < window
    valid = np.ones((), bool)
    for n, ti, k, s in zip(rows, t, window, stride):
      valid = np.logical_and.outer(valid, np.broadcast_to(np.arange(s) + ti * s < k, (n, s)))
    if not valid.all():
      hit = hit & valid.reshape(cgrid)
    out = jnp.where(hit, jnp.expand_dims(vt, tuple(expanded)),
                    zero if out is None else out)
  merged = list(grown)
  for a, s in zip(axes, stride):
    merged[a] *= s
  out = out.reshape(merged)
  config = [(0, 0, 0)] * v.ndim
  for a, (lo, _), n in zip(axes, pads, size):
    config[a] = (-lo, n - (merged[a] - lo), 0)
  return jax.lax.pad(out, zero, config)


def _count(flags: jax.Array, parts: int = 8) -> jax.Array:
  """The sum of an int32 array: ``parts`` equal slices of its first axis at least that
  long added elementwise (one pass that XLA:CPU splits over its threads and
  vectorizes), then the rest reduced; XLA:CPU's reduce of the whole array took most of
  the in-window check's time (benchmarks/README.md, "The in-window check by slices").

  >>> _count(jnp.ones((9, 7), jnp.int32))
  Array(63, dtype=int32)
  """
  axis = next((a for a, n in enumerate(flags.shape) if n >= parts), None)
  if axis is None:
    return jnp.sum(flags)
  q = flags.shape[axis] // parts
  head = functools.reduce(jnp.add, [lax.slice_in_dim(flags, k * q, (k + 1) * q, axis=axis)
                                    for k in range(parts)])
  return jnp.sum(head) + jnp.sum(lax.slice_in_dim(flags, q * parts, None, axis=axis))


def _unpool_taps(shape, axes, window, stride, pads, size) -> tuple[geo.AxisTaps, ...]:
  """The pooling that produced ``shape``-shaped values, as taps over the output."""
  return tuple(geo.AxisTaps(n, shape[a], k, s, 1, lo, hi)
               for a, k, s, (lo, hi), n in zip(axes, window, stride, pads, size))


def _in_own_window(idx, axes, window, stride, pads, size) -> jax.Array:
  """Whether each index is a real (unpadded) position of its own value's window.

  Compares each index's distance from its window's first position
  (:meth:`Windows.origins`) with each position's (:meth:`Windows.deltas`, masked where
  that position is padding) instead of dividing the index into coordinates (integer
  division is slower).
  """
  w = Windows(idx.ndim, axes, _unpool_taps(idx.shape, axes, window, stride, pads, size))
  distance = idx - w.origins(size)
  ok = None
  for k, dk in enumerate(w.deltas(size)):
    hit = distance == np.int32(dk)
    real = w.real_mask(k, idx.shape)
    hit = hit if real is None else hit & real
    ok = hit if ok is None else ok | hit
  return ok


def _in_window_backward(v, operands, y, axes, window, stride, pads, size, address):
  """The exact transpose: each value reads the cotangent at its index when the index is
  a real position of its own window, else 0. A gather reads a quarter of ``g`` (2x2/2);
  JAX's transpose of the compare-and-select reads all of it (3-4x slower on SegNet).
  """
  (idx,) = operands
  ok = _in_own_window(idx, axes, window, stride, pads, size)
  overlapping = _overlapping(window, stride)

  def back(g):
    if overlapping:
      # into memory first: fused, XLA:CPU recomputed a cotangent made from the output
      # (a loss on it) at every gathered index, the select of each covering window
      g = computed_once(g, idx)
    picked = gather(flat_spatial(g, axes), flat_spatial(idx, axes), axes[0], address)
    out = jnp.where(ok, picked.reshape(idx.shape), np.zeros((), g.dtype))
    # into memory once: fused, XLA:CPU recomputed the window check (a compare per
    # window position) for every element of the pooling's derivative that reads it
    return computed_once(out, idx) if overlapping else out
  return back


_unpool_in_window = transposed_jvp(_select_in_window, _in_window_backward, operands=1,
                                   static=6)


def max_unpool(values: ArrayLike, indices: ArrayLike, window_shape, strides=None,
               padding: Any = 0, *, output_size=None, data_format: str = "channels_last",
               indices_in_window: bool = False) -> jax.Array:
  """Inverse of max pooling: scatter ``values`` into zeros at ``indices``.

  Shapes: ``values`` and ``indices`` are ``(*batch, *spatial_in, C)`` (or
  ``(*batch, C, *spatial_in)``); the output is ``(*batch, *spatial_out, C)``.

  Indices that do not fit the output (outside ``[0, prod(spatial_out))``, as after an
  odd-sized input unpooled to the default size) are an error wherever they can be seen:
  a ``ValueError`` when the call runs eagerly on concrete indices, a ``checkify``
  out-of-bounds error under :func:`jax.experimental.checkify.checkify` with its index
  checks (``errors=checkify.index_checks`` or ``all_checks``, as for JAX's own
  scatters). **Inside plain** ``jit`` **they cannot be checked, and their values are
  dropped.** The check adds no effect to the program, so ``jit`` keeps its fast dispatch.

  Lowering: one scatter (forward) and one gather (backward). With several devices their
  batch and channel axes are batching dimensions, so SPMD partitioning along them needs
  no communication; on a lone CPU device they run on the flattened array (XLA:CPU's
  serial scatter loop is faster so), and for non-overlapping windows a ``lax.cond``
  first checks whether every index lies in its own window and then skips the scatter
  (same result). With ``indices_in_window`` and non-overlapping windows: one fused
  compare-and-select, a reshape and a pad instead, on every backend; the backward is
  the same gather, masked to the indices that lie in their window. With
  ``indices_in_window`` and small overlapping windows (at most 9 elements, over one
  axis or strided on every axis, 32/64-bit values, at least 16 elements after the
  spatial axes) on a lone CPU device, the same select with one compare per window
  covering a position. Measurements: ``benchmarks/README.md``.

  Args:
    values: pooled values (float, int or bool).
    indices: integer flat indices within each (batch, channel) slice's output spatial
      volume, PyTorch's convention (as from :func:`max_pool_with_indices` or from a
      PyTorch model's ``return_indices=True``).
    window_shape, strides, padding: the pooling's arguments; they fix the default
      output size ``(in - 1) * stride - (lo + hi) + window`` per spatial dim. ``"SAME"``
      cannot be inverted without the input size: pass explicit pads and ``output_size``.
    output_size: ``d`` ints (spatial only), or the pooled input's full shape
      (``x.shape``, as PyTorch takes ``x.size()``), that override the default; each
      spatial size must lie strictly within ``default - stride`` and
      ``default + stride`` (PyTorch's rule). Pass it whenever the pooled input's size
      was not a multiple of the stride (15x17 pooled 2x2/2 unpools to 14x16 by
      default).
    data_format: ``"channels_last"`` (default) or ``"channels_first"``.
    indices_in_window: promise that every index lies in the pooling window of its own
      value, as all indices from max pooling with the same ``window_shape``,
      ``strides`` and ``padding`` do (jaxpool's or PyTorch's) when ``output_size`` is
      the pooled input's spatial size. For non-overlapping windows (``strides >=
      window_shape``, e.g. SegNet's 2x2/2) this selects the scatter-free lowering on
      every backend; an index outside its window is then dropped instead of written.
      Overlapping windows keep the scatter, except the small ones above on a lone CPU
      device, where such an index is dropped too: keep the promise. Default ``False``:
      plain scatter semantics.

  Returns:
    The unpooled array, the dtype of ``values``. Where several values share an index,
    one of them is written (they are equal for indices from max pooling). The
    derivative with respect to ``values`` gathers the (co)tangent at each index (as
    PyTorch's backward; in forward mode, tangents of values sharing an index add up);
    ``indices`` get none.

  Raises:
    ValueError, TypeError: bad arguments, mismatched shapes, or (eagerly) indices
    outside the output.

  Example:
    >>> import jax.numpy as jnp, jaxpool
    >>> x = jnp.array([[1., 5.], [7., 2.]])[None, :, :, None]
    >>> v, i = jaxpool.max_pool_with_indices(x, (2, 2))
    >>> jaxpool.max_unpool(v, i, (2, 2))[0, :, :, 0]
    Array([[0., 0.],
           [7., 0.]], dtype=float32)
  """
  fn = "max_unpool"
  values = geo.as_array(fn, values, kinds="any")
  # a concrete array before jnp stages it into a trace (None: a traced value)
  host = None if isinstance(indices, jax.core.Tracer) else indices
  indices = jnp.asarray(indices)
  if not jnp.issubdtype(indices.dtype, jnp.integer):
    raise TypeError(f"{fn}: indices must have an integer dtype, got {indices.dtype}.")
  if indices.shape != values.shape:
    raise ValueError(f"{fn}: indices must have the shape of values, got values "
                     f"{values.shape} and indices {indices.shape}.")
  window = geo.shape_tuple(fn, "window_shape", window_shape)
  d = len(window)
  lay = geo.layout(fn, values.shape, d, data_format)
  stride = window if strides is None else geo.int_tuple(fn, "strides", strides, d, 1)
  if isinstance(padding, str) and padding.upper() == "SAME":
    raise ValueError(f"{fn}: padding='SAME' depends on the pooled input's size; pass the "
                     f"explicit (lo, hi) pairs and output_size instead.")
  pads = geo.parse_padding(fn, padding, window, stride, (1,) * d, (0,) * d)
  spatial_in = lay.spatial_shape(values.shape)
  default = tuple((n - 1) * s - (lo + hi) + k
                  for n, s, (lo, hi), k in zip(spatial_in, stride, pads, window))
  if output_size is None:
    size = default
    if min(size) < 1:
      raise ValueError(f"{fn}: default output size {size} has a dim < 1 (input {spatial_in}, "
                       f"window {window}, stride {stride}, padding {pads}).")
  else:
    size = geo.shape_tuple(fn, "output_size", output_size)
    if len(size) == values.ndim:  # the pooled input's full shape (PyTorch's x.size())
      size = lay.spatial_shape(size)
    if len(size) != d:
      raise ValueError(f"{fn}: output_size must have {d} entries (the spatial dims) or "
                       f"{values.ndim} (the pooled input's shape), got {output_size!r}.")
    for i, (n, dflt, s) in enumerate(zip(size, default, stride)):
      if not dflt - s < n < dflt + s:
        raise ValueError(
            f"{fn}: output_size={tuple(size)} is out of range on spatial dim {i}: must be "
            f"strictly between {dflt - s} and {dflt + s} (default {dflt}, stride {s}), "
            f"for values of spatial size {spatial_in} unpooled with window {window}, "
            f"strides {stride} and padding {pads}; if output_size is right, the window, "
            f"strides or padding may not match the pooling that produced the indices.")
  m = geo.spatial_volume(fn, size)
  _check_indices(fn, indices, m, tuple(size))
  in_window = geo.check_bool(fn, "indices_in_window", indices_in_window)
  blocks = (lay.spatial_axes, window, stride, pads, tuple(size))
  if (not in_window and host is not None and isinstance(values, jax.core.Tracer)
      and not _overlapping(window, stride)):
    # indices that are a constant of a traced program: their in-window check on the host,
    # once, instead of a conditional that XLA constant-folds at length (seconds); the
    # select then serves every backend (benchmarks/README.md, "Unpool's in-window check")
    with jax.ensure_compile_time_eval():
      in_window = bool(jnp.all(_in_own_window(jnp.asarray(host, np.int32), *blocks)))
  with jax.named_scope(fn):
    return unpool(values, indices.astype(np.int32), blocks,
                  lay.with_spatial(values.shape, size), in_window)


def _check_indices(fn: str, indices: jax.Array, m: int, size: tuple[int, ...]) -> None:
  """Indices outside ``[0, m)``: a ``ValueError`` when they are concrete (an eager call),
  an out-of-bounds error under ``checkify`` with its index checks; inside plain ``jit``
  nothing can see them.

  Traced, the indices read a dummy ``(m,)`` array through one gather whose result is
  unused: ``checkify``'s index checks flag it exactly when an index lies outside
  ``[0, m)``, as for JAX's own scatters, and plain ``jit`` drops it. A
  ``checkify.debug_check`` would also fire under ``user_checks``, but its effect makes
  every ``jit`` around ``max_unpool`` leave JAX's C++ dispatch path (measured in
  ``benchmarks/README.md``).
  """
  if isinstance(indices, jax.core.Tracer):
    lax.gather(np.zeros((m,), np.int8), indices.reshape(-1, 1),
               lax.GatherDimensionNumbers(offset_dims=(), collapsed_slice_dims=(0,),
                                          start_index_map=(0,)),
               slice_sizes=(1,), mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS)
    return
  hint = (f"the output's spatial volume is {m} (output size {size}); if the pooled input "
          f"had an odd size, pass its shape as output_size=x.shape (PyTorch raises 'Found "
          f"an invalid max index' here)")
  flat = np.asarray(indices).ravel()
  bad = np.flatnonzero((flat < 0) | (flat >= m))
  if bad.size:
    raise ValueError(f"{fn}: indices must lie in [0, {m}), got {int(flat[bad[0]])} (and "
                     f"{bad.size - 1} more outside): {hint}.")


@functools.partial(jax.jit, static_argnums=(2, 3, 4), static_argnames=("plan",))
def unpool(values, idx, blocks, shape: tuple[int, ...], in_window: bool, *,
           plan: Plan | None = None) -> jax.Array:
  """The unpooling of checked arguments in the plan's form (``plan=`` forces one).

  ``"scatter"``: one scatter. ``"select"``: :func:`_unpool_in_window`.
  ``"check_select"``: a ``lax.cond`` on whether every index lies in its own window (as
  max pooling's do), taking the compare-and-select then (same result as the scatter,
  which XLA:CPU runs as a serial loop) and the scatter otherwise; under ``vmap`` the
  check is per example and ``cond`` becomes a select of both.
  """
  axes = blocks[0]
  taps = _unpool_taps(values.shape, *blocks)
  m = math.prod(blocks[-1])

  def run(p):
    def scatter_all(v, i):
      if p.fence:
        v, i = computed_once(v, v), computed_once(i, v)
      out = _unpool_scatter(flat_spatial(v, axes), flat_spatial(i, axes), m, axes[0],
                            p.address)
      return out.reshape(shape)

    def select(v, i):
      return _unpool_in_window(v, i, *blocks, p.address)

    def check_first(v, i):
      # a count of the indices outside: XLA:CPU sums int32 faster than it reduces `and`
      outside = _count(jnp.where(_in_own_window(i, *blocks), 0, 1))
      return jax.lax.cond(outside == 0, select, scatter_all, v, i)

    return {"scatter": scatter_all, "select": select, "check_select": check_first}[p.unpool]

  if plan is not None:
    return run(planner.forced(plan, "unpool", taps))(values, idx)
  plans = planner.plans("unpool", taps, values.dtype, size=math.prod(shape),
                        in_window=in_window, inner=math.prod(values.shape[axes[-1] + 1:]))
  return on_backends(run, plans, values, idx)
