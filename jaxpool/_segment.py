"""``segment_pool``: pooling per segment of a packed axis (packed sequences, graphs).

Segment ids are runtime values and ``num_segments`` is static, so one program serves
every packing. Each packed row is a segment reduction mapped over the rows: a sum for
avg and sum; for max and min, the extreme, then the first position that holds it, then
one gather at that position, whose derivative sends the cotangent to the first extreme in position
order (``jax.ops.segment_max``'s derivative splits it among ties).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxpool import _geometry as geo

OPS = ("avg", "max", "min", "sum")


def _check(fn: str, x, segment_ids, num_segments, op):
  if not isinstance(op, str) or op not in OPS:
    raise ValueError(f"{fn}: op must be one of {OPS}, got {op!r}.")
  x = geo.as_array(fn, x, kinds="float" if op == "avg" else "any")
  if op == "sum" and x.dtype == np.bool_:
    raise TypeError(f"{fn}: op='sum' needs a numeric input, got dtype bool.")
  if not hasattr(segment_ids, "shape") or not hasattr(segment_ids, "dtype"):
    segment_ids = np.asarray(segment_ids)
  if not jnp.issubdtype(segment_ids.dtype, jnp.integer):
    raise TypeError(f"{fn}: segment_ids must be an integer array, got dtype "
                    f"{segment_ids.dtype}.")
  ids_shape = tuple(segment_ids.shape)
  if not ids_shape or tuple(x.shape[:len(ids_shape)]) != ids_shape:
    raise ValueError(f"{fn}: segment_ids must have the shape of x's leading axes "
                     f"(e.g. {tuple(x.shape[:1])} or {tuple(x.shape[:2])} for x of shape "
                     f"{tuple(x.shape)}), got {ids_shape}.")
  if not geo.is_int(num_segments):
    raise TypeError(f"{fn}: num_segments must be a static int >= 1, got {num_segments!r}.")
  if num_segments < 1:
    raise ValueError(f"{fn}: num_segments must be >= 1, got {num_segments}.")
  return x, jnp.asarray(segment_ids), int(num_segments)


def _first_extreme(data: jax.Array, ids: jax.Array, count: int, op: str) -> jax.Array:
  """Per segment, the flat position of its first max (min) in ``data``'s order; the
  segment-min identity (int32 max) where it is empty. NaN counts as the extreme."""
  ref = jax.lax.stop_gradient(data)
  if ref.dtype == np.bool_:
    ref = ref.astype(np.int8)
  reduce = jax.ops.segment_max if op == "max" else jax.ops.segment_min
  extreme = reduce(ref, ids, count)
  at = jnp.take(extreme, ids, axis=0, mode="fill", fill_value=0)
  hit = ref == at
  if jnp.issubdtype(ref.dtype, jnp.floating):
    hit = hit | (jnp.isnan(ref) & jnp.isnan(at))
  position = jax.lax.broadcasted_iota(np.int32, ref.shape, 0)
  return jax.ops.segment_min(jnp.where(hit, position, np.iinfo(np.int32).max), ids, count)


def segment_pool(x: ArrayLike, segment_ids: ArrayLike, num_segments: int,
                 op: str = "avg") -> jax.Array:
  """Pool each segment of a packed axis: PyG's ``global_*_pool(x, batch, size)``.

  Shapes: ``segment_ids`` (int) has the shape of ``x``'s leading ``k =
  segment_ids.ndim`` axes, and the last of them is reduced per segment:
  ``x: (*lead, L, *features)`` and ``segment_ids: (*lead, L)`` give
  ``(*lead, num_segments, *features)``. Flat ``(N, C)`` node features with ``(N,)`` ids
  (a graph batch) give ``(num_segments, C)``; packed rows ``(B, L, C)`` with ``(B, L)``
  ids give ``(B, num_segments, C)``. Features may be any trailing shape, so a
  ``(B, L, C, H, W)`` packing pools per segment too. There is no ``data_format``: the
  packed axis is located by the ids.

  Args:
    x: input; floating for ``"avg"``, float or int for ``"sum"``, also bool for max/min.
    segment_ids: runtime ids. Ids ``< 0`` or ``>= num_segments`` are dropped (use -1
      for padding tokens). Changing them never recompiles.
    num_segments: static number of segments per row.
    op: ``"avg"`` (default), ``"max"``, ``"min"`` or ``"sum"``.

  Returns:
    Per segment, the op over its elements, same dtype as ``x`` (float16/bfloat16 sums
    accumulate in float32). Empty segments give 0 for every op, PyG's convention
    (``torch.Tensor.scatter_reduce`` with ``include_self=False`` leaves them at the
    initial value). NaN propagates. Gradients: avg and sum are linear; max and min send
    the whole cotangent to the first extreme in position order (``scatter_reduce``'s
    gradient splits it among ties).

  Raises:
    ValueError, TypeError: bad ``op``, dtype, ids shape or dtype, or ``num_segments``.
    Ids themselves are runtime values and are not checked.

  Lowering: segment reductions (scatters) per packed row, mapped over the rows, on
  every backend.

  Example:
    >>> import jax.numpy as jnp, jaxpool
    >>> x = jnp.array([[1.], [2.], [3.], [4.], [9.]])
    >>> ids = jnp.array([0, 0, 1, 1, -1])  # the last token is padding
    >>> jaxpool.segment_pool(x, ids, 3)[:, 0]
    Array([1.5, 3.5, 0. ], dtype=float32)
    >>> jaxpool.segment_pool(x, ids, 3, "max")[:, 0]
    Array([2., 4., 0.], dtype=float32)
  """
  fn = "segment_pool"
  x, ids, segments = _check(fn, x, segment_ids, num_segments, op)
  with jax.named_scope(fn):
    return _segment_pool(x, ids, segments, op)


@functools.partial(jax.jit, static_argnums=(2, 3))  # one program, also when called eagerly
def _segment_pool(x: jax.Array, ids: jax.Array, segments: int, op: str) -> jax.Array:
  lead, length, features = ids.shape[:-1], ids.shape[-1], x.shape[ids.ndim:]
  rows = jax.vmap(_row, (0, 0, None, None))(
      x.reshape((-1, length) + features), ids.reshape(-1, length).astype(np.int32), segments, op)
  return rows.reshape(lead + (segments,) + features)


def _row(data: jax.Array, ids: jax.Array, segments: int, op: str) -> jax.Array:
  """One packed row: ``data (L, *features)``, ``ids (L,)``. Rows are mapped, not
  flattened into one axis of global ids, so a batch-sharded input needs no collective."""
  length, features = data.shape[0], data.shape[1:]
  keep = (ids >= 0) & (ids < segments)
  ids = jnp.where(keep, ids, segments)  # one past the end: every reduction drops it
  if op in ("avg", "sum"):
    acc = geo.accum_dtype(data.dtype) if jnp.issubdtype(data.dtype, jnp.floating) else data.dtype
    y = jax.ops.segment_sum(data.astype(acc), ids, segments)
    if op == "avg":
      n = jax.ops.segment_sum(keep.astype(acc), ids, segments)
      y = y / jnp.maximum(n, 1).reshape((segments,) + (1,) * len(features))
  else:
    first = _first_extreme(data, ids, segments, op)
    y = jnp.take_along_axis(data, jnp.minimum(first, length - 1), axis=0)
    y = jnp.where(first < length, y, np.zeros((), data.dtype))
  return y.astype(data.dtype)
