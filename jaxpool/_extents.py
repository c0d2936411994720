"""Adaptive and global pooling over runtime extents (``lengths=``): padded batches.

Each example's valid region is the leading ``lengths[..., k]`` positions of spatial dim
``k``; its adaptive bins are PyTorch's for that length, ``[floor(i*n/o),
ceil((i+1)*n/o))``, so they are runtime values. Shapes stay static: a bin of ``o`` over
at most ``L`` positions spans at most ``min(L, ceil(L/o) + 1)`` of them, so every bin is
read as one contiguous slice of that static width and a mask of its runtime extent. A
dim pooled to one bin (global pooling) needs no slice: it starts at 0, so it is a mask.

Both reduce one dim at a time (the bins are boxes). The max finds, per dim from the
last, each bin's first maximum and carries its index, so the result is the first
maximum in row-major order; its value is one gather at that index, whose derivative
sends the cotangent there and nowhere else.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxpool import _geometry as geo
from jaxpool._engine.values import folds
from jaxpool._engine.views import expand, identity


def check_lengths(fn: str, lengths, batch: tuple[int, ...],
                  spatial: tuple[int, ...]) -> jax.Array:
  """``lengths`` as int32 ``(*batch, d)``, clipped to ``[1, L]`` per dim (a traced value
  cannot be checked)."""
  if not hasattr(lengths, "shape") or not hasattr(lengths, "dtype"):
    lengths = np.asarray(lengths)
  d = len(spatial)
  if not jnp.issubdtype(lengths.dtype, jnp.integer):
    raise TypeError(f"{fn}: lengths must be an integer array (the valid extent of each "
                    f"example per spatial dim), got dtype {lengths.dtype}.")
  shape = tuple(lengths.shape)
  wanted = [batch + (d,)] + ([batch] if d == 1 else [])
  if shape not in wanted:
    alt = f" or {batch}" if d == 1 else ""
    raise ValueError(f"{fn}: lengths must have shape {batch + (d,)}{alt} (the batch "
                     f"shape of x, then one length per spatial dim), got {shape}.")
  lengths = jnp.asarray(lengths, jnp.int32).reshape(batch + (d,))
  return jnp.clip(lengths, 1, np.array(spatial, np.int32).reshape((1,) * len(batch) + (d,)))


def _bins(n: jax.Array, size: int, out: int) -> tuple[jax.Array, jax.Array]:
  """Where each of ``out`` bins over the first ``n`` of ``size`` positions begins its
  static-width window ``(out,)`` (moved left where the window would pass the end), and
  which window offsets lie inside the bin ``(out, width)``."""
  j = np.arange(size if out == 1 else min(size, -(-size // out) + 1))
  if out == 1:
    return jnp.zeros((1,), np.int32), (jnp.asarray(j) < n)[None]
  i = jnp.arange(out)
  starts = (i * n) // out
  ends = -((-(i + 1) * n) // out)
  begin = jnp.minimum(starts, size - len(j))
  pos = begin[:, None] + j[None]
  return begin, (pos >= starts[:, None]) & (pos < ends[:, None])


def _on_axis(a: jax.Array, k: int, ndim: int) -> jax.Array:
  """``a`` of shape (o, ...) placed at axis ``k`` of an ``ndim`` array (1s elsewhere)."""
  return expand(a, ndim, k, a.ndim)


def _windows(a: jax.Array, k: int, begin: jax.Array, width: int) -> jax.Array:
  """The ``width`` positions from each ``begin`` along axis ``k``: ``(..., o, width,
  ...)``. Contiguous slices (one gather index per bin), whose transpose adds whole
  slices back; a gather of single positions transposes into a scatter-add per element,
  several times slower on XLA:CPU."""
  if width == a.shape[k]:  # every window is the whole axis (begin is 0)
    return jnp.broadcast_to(jnp.expand_dims(a, k), a.shape[:k] + begin.shape + a.shape[k:])
  sliced = jax.vmap(lambda b: jax.lax.dynamic_slice_in_dim(a, b, width, axis=k))(begin)
  return jnp.moveaxis(sliced, 0, k)


def _avg_one(x: jax.Array, n: jax.Array, out: tuple[int, ...]) -> jax.Array:
  """Adaptive average of one example ``(*spatial, C)`` with valid extents ``n``."""
  d, count = len(out), jnp.ones((1,) * (x.ndim), x.dtype)
  for k, o in enumerate(out):
    begin, valid = _bins(n[k], x.shape[k], o)
    g = _windows(x, k, begin, valid.shape[1])
    x = jnp.where(_on_axis(valid, k, g.ndim), g, 0).sum(axis=k + 1)
    count = count * _on_axis(valid.sum(axis=1).astype(x.dtype), k, d + 1)
  return x / count


def _first_of(g: jax.Array, best: jax.Array, valid, axis: int) -> jax.Array:
  """The first valid offset along ``axis`` where ``g`` equals ``best`` (a NaN matches a
  NaN): a compare and a min, which XLA:CPU runs far faster than a variadic argmax."""
  hit = g == best
  if jnp.issubdtype(g.dtype, jnp.floating):
    hit = hit | (jnp.isnan(g) & jnp.isnan(best))
  offset = jax.lax.broadcasted_iota(np.int32, g.shape, axis)
  return jnp.where(hit & valid, offset, g.shape[axis]).min(axis=axis, keepdims=True)


def _argmax_one(x: jax.Array, n: jax.Array, out: tuple[int, ...]) -> jax.Array:
  """Flat row-major index (in the padded volume) of each bin's first maximum."""
  d, spatial = len(out), x.shape[:-1]
  if all(o == 1 for o in out):  # one bin from the origin: a prefix mask, flat
    inside = functools.reduce(jnp.logical_and, [
        _on_axis(jnp.arange(size) < n[k], k, d) for k, size in enumerate(spatial)])
    inside = inside.reshape(-1, 1)
    g = jnp.where(inside, x.reshape(-1, x.shape[-1]), identity("max", x.dtype))
    return _first_of(g, _max(g, 0), inside, 0).reshape(out + x.shape[-1:])
  return first_max_index(x, [_bins(n[k], spatial[k], o) for k, o in enumerate(out)])


def _max(g: jax.Array, axis: int) -> jax.Array:
  """The max over ``axis`` (kept), NaN first: by :func:`~jaxpool._engine.values.folds`,
  not one reduce (XLA:CPU hands a large float max reduce to YNNPACK, which drops NaN;
  see :func:`jaxpool._engine.values.reduce_axes`). Not fenced: this runs on every
  backend, and a conditional's predicate is read by the host on a GPU."""
  return folds(g, axis, "max")


def first_max_index(x: jax.Array, bins) -> jax.Array:
  """Flat row-major index of each window's first maximum in one example ``(*spatial,
  C)``; ``bins[k]`` is ``(begin (o,), valid (o, width))`` for spatial dim ``k``: the
  windows of that dim start at ``begin`` and hold the ``valid`` offsets of ``width``.

  One axis at a time from the last: per window of that axis, the max and the first
  offset holding it, carrying the index found so far. Taking the first matching row of
  the row maxima, then that row's own first, is the row-major first; a NaN matches a NaN
  max, so the first NaN wins.
  """
  spatial = x.shape[:-1]
  low = identity("max", x.dtype)
  values, index = x, None
  for k in reversed(range(len(bins))):
    stride = geo.row_major_strides(spatial)[k]
    begin, valid = bins[k]
    g = _windows(values, k, begin, valid.shape[1])
    valid = _on_axis(valid, k, g.ndim)
    g = jnp.where(valid, g, low)
    best = _max(g, k + 1)
    first = _first_of(g, best, valid, k + 1)
    chosen = (_on_axis(begin[:, None], k, g.ndim) + first) * stride
    if index is not None:  # the chosen row's own index: one match per bin
      offset = jax.lax.broadcasted_iota(np.int32, g.shape, k + 1)
      inner = _windows(index, k, begin, valid.shape[k + 1])
      chosen = chosen + jnp.where(offset == first, inner, 0).sum(axis=k + 1, keepdims=True)
    values, index = best.squeeze(k + 1), chosen.squeeze(k + 1)
  return index


def take_flat(x: jax.Array, index: jax.Array) -> jax.Array:
  """``x (N, *spatial, C)`` at the flat spatial ``index (N, *out, C)``: one gather,
  whose derivative sends each cotangent to that element alone."""
  flat = index.reshape(index.shape[0], -1, index.shape[-1])
  y = jnp.take_along_axis(x.reshape(x.shape[0], -1, x.shape[-1]), flat, axis=1)
  return y.reshape(index.shape)


def pool(fn: str, x: jax.Array, lay: geo.Layout, out: tuple[int, ...], lengths,
         op: str) -> jax.Array | tuple[jax.Array, jax.Array]:
  """Adaptive ``op`` ("avg", "max" or "indices") to ``out`` bins per example's extents.

  ``x`` is in ``lay``'s layout; the result too. ``"indices"`` returns ``(values,
  indices)``.
  """
  d = len(out)
  batch = x.shape[:lay.spatial_axes[0] if lay.channel_axis > lay.spatial_axes[0]
                 else lay.channel_axis]
  spatial = lay.spatial_shape(x.shape)
  n = check_lengths(fn, lengths, batch, spatial).reshape(-1, d)
  if op != "avg":
    geo.spatial_volume(fn, spatial)
  # one program even when called eagerly: op by op, the gathers and masks of every
  # axis would each compile on their own
  return _pool(x, n, lay, out, op)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _pool(x: jax.Array, n: jax.Array, lay: geo.Layout, out: tuple[int, ...], op: str):
  d = len(out)
  channels_first = lay.channel_axis < lay.spatial_axes[0]
  if channels_first:
    x = jnp.moveaxis(x, lay.channel_axis, -1)
  batch = x.shape[:-d - 1]
  xs = x.reshape((-1,) + x.shape[-d - 1:])
  if op == "avg":
    y = jax.vmap(_avg_one, (0, 0, None))(xs.astype(geo.accum_dtype(x.dtype)), n, out)
    outs = (y.astype(x.dtype),)
  else:
    idx = jax.vmap(_argmax_one, (0, 0, None))(jax.lax.stop_gradient(xs), n, out)
    y = take_flat(xs, idx)
    outs = (y, idx) if op == "indices" else (y,)
  outs = tuple(o.reshape(batch + o.shape[1:]) for o in outs)
  if channels_first:
    outs = tuple(jnp.moveaxis(o, -1, lay.channel_axis) for o in outs)
  return outs if op == "indices" else outs[0]
