"""Adaptive and global pooling over runtime extents (``lengths=``): padded batches.

Each example's valid region is the leading ``lengths[..., k]`` positions of spatial dim
``k``; its adaptive bins are PyTorch's for that length, ``[floor(i*n/o),
ceil((i+1)*n/o))``, so they are runtime values. Shapes stay static: a bin of ``o`` over
at most ``L`` positions spans at most ``min(L, ceil(L/o) + 1)`` of them, so every bin is
read through one gather of that static width and a mask of its runtime width. A dim
pooled to one bin (global pooling) needs no gather: it starts at 0, so it is a mask.

Averages reduce one dim at a time (the bins are boxes); the max reads each box whole so
that its argmax is the first maximum in row-major order, and takes its value with one
gather at that index, whose derivative sends the cotangent there and nowhere else.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxpool import _geometry as geo


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
  """Positions ``(out, width)`` of ``out`` bins over the first ``n`` of ``size``
  positions (clipped into the axis), and which of them lie inside their bin."""
  j = np.arange(size if out == 1 else min(size, -(-size // out) + 1))
  if out == 1:
    return jnp.asarray(j[None]), (jnp.asarray(j) < n)[None]
  i = jnp.arange(out)
  starts = (i * n) // out
  ends = -((-(i + 1) * n) // out)
  pos = starts[:, None] + j[None]
  return jnp.minimum(pos, size - 1), pos < ends[:, None]


def _on_axis(a: jax.Array, k: int, ndim: int) -> jax.Array:
  """``a`` of shape (o, ...) placed at axis ``k`` of an ``ndim`` array (1s elsewhere)."""
  return a.reshape((1,) * k + a.shape + (1,) * (ndim - k - a.ndim))


def _avg_one(x: jax.Array, n: jax.Array, out: tuple[int, ...]) -> jax.Array:
  """Adaptive average of one example ``(*spatial, C)`` with valid extents ``n``."""
  d, count = len(out), jnp.ones((1,) * (x.ndim), x.dtype)
  for k, o in enumerate(out):
    pos, valid = _bins(n[k], x.shape[k], o)
    if o == 1:
      x = jnp.where(_on_axis(valid[0], k, x.ndim), x, 0).sum(axis=k, keepdims=True)
    else:
      g = jnp.take(x, pos.reshape(-1), axis=k).reshape(x.shape[:k] + pos.shape + x.shape[k + 1:])
      x = jnp.where(_on_axis(valid, k, g.ndim), g, 0).sum(axis=k + 1)
    count = count * _on_axis(valid.sum(axis=1).astype(x.dtype), k, d + 1)
  return x / count


def _lowest(dtype) -> np.ndarray:
  dtype = np.dtype(dtype)
  if dtype == np.bool_:
    return np.array(False)
  if jnp.issubdtype(dtype, jnp.integer):
    return np.array(np.iinfo(dtype).min, dtype)
  return np.array(-np.inf, dtype)


def _argmax_one(x: jax.Array, n: jax.Array, out: tuple[int, ...]) -> jax.Array:
  """Flat row-major index (in the padded volume) of each bin's first maximum."""
  d, spatial, channels = len(out), x.shape[:-1], x.shape[-1]
  flat, valid = np.zeros((1,) * 2 * d, np.int32), np.ones((1,) * 2 * d, bool)
  for k, (o, stride) in enumerate(zip(out, geo.row_major_strides(spatial))):
    pos, ok = _bins(n[k], spatial[k], o)
    at = (1,) * k + (o,) + (1,) * (d - 1) + (pos.shape[1],) + (1,) * (d - k - 1)
    flat = flat + (pos * stride).reshape(at)
    valid = valid & ok.reshape(at)
  window = math.prod(flat.shape[d:])
  flat = jnp.broadcast_to(flat, out + flat.shape[d:]).reshape(out + (window, 1))
  valid = jnp.broadcast_to(valid, out + valid.shape[d:]).reshape(out + (window, 1))
  xs = x.reshape(-1, channels)
  if all(o == 1 for o in out):  # the window is the whole volume, in order
    g = xs.reshape(out + xs.shape)
  else:
    g = jnp.take(xs, flat.reshape(-1), axis=0).reshape(out + (window, channels))
  first = jnp.argmax(jnp.where(valid, g, _lowest(x.dtype)), axis=-2, keepdims=True)
  return jnp.take_along_axis(jnp.broadcast_to(flat, first.shape[:-2] + (window, channels)),
                             first, axis=-2)[..., 0, :]


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
    flat_idx = idx.reshape(idx.shape[0], -1, idx.shape[-1])
    y = jnp.take_along_axis(xs.reshape(xs.shape[0], -1, xs.shape[-1]), flat_idx, axis=1)
    outs = (y.reshape(idx.shape), idx) if op == "indices" else (y.reshape(idx.shape),)
  outs = tuple(o.reshape(batch + o.shape[1:]) for o in outs)
  if channels_first:
    outs = tuple(jnp.moveaxis(o, -1, lay.channel_axis) for o in outs)
  return outs if op == "indices" else outs[0]
