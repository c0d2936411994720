"""Fractional max pooling (Graham 2014), exactly as PyTorch's
``F.fractional_max_pool2d/3d``, for any number of spatial dims.

Each (batch, channel) plane draws one sample ``u`` in ``[0, 1)`` per spatial dim. With
``alpha = (L - k) / (o - 1)``, window ``i < o - 1`` starts at ``int((i + u) * alpha) -
int(u * alpha)`` and the last at ``L - k``, in the input's floating dtype as PyTorch's
kernel computes it (float32 for integer input). The starts are runtime values, but each
lies within a few positions of a static one (``_candidates``), so one axis at a time the
op takes every stride-1 window's max and first offset (static slices) and picks, per
window, among those few static candidates with selects. The values are those maxima; the
derivative goes through the first maximum's index (``_at``). All of it is elementwise
over the batch and channels, with no per-plane program.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxpool import _geometry as geo
from jaxpool._engine.views import expand
from jaxpool._extents import take_flat


def _sizes(fn, spatial, window, output_size, output_ratio) -> tuple[int, ...]:
  d = len(window)
  if (output_size is None) == (output_ratio is None):
    raise ValueError(f"{fn}: give exactly one of output_size or output_ratio, got "
                     f"output_size={output_size!r} and output_ratio={output_ratio!r}.")
  if output_size is not None:
    out = geo.int_tuple(fn, "output_size", output_size, d, 1)
  else:
    ratios = output_ratio
    if isinstance(ratios, (int, float, np.number)) and not isinstance(ratios, bool):
      ratios = (ratios,) * d
    if (not isinstance(ratios, (tuple, list)) or len(ratios) != d or not all(
        isinstance(r, (int, float, np.number)) and not isinstance(r, bool) for r in ratios)):
      raise TypeError(f"{fn}: output_ratio must be a float or {d} floats in (0, 1), got "
                      f"{output_ratio!r}.")
    if not all(0 < r < 1 for r in ratios):
      raise ValueError(f"{fn}: output_ratio entries must lie in (0, 1), got "
                       f"{output_ratio!r}.")
    out = tuple(int(n * r) for n, r in zip(spatial, ratios))
    if min(out) < 1:
      raise ValueError(f"{fn}: output_ratio={output_ratio!r} gives output size {out} for "
                       f"input size {spatial}; every entry must be >= 1.")
  for i, (n, k, o) in enumerate(zip(spatial, window, out)):
    if o + k - 1 > n:
      raise ValueError(f"{fn}: output size {o} with window {k} needs an input of at least "
                       f"{o + k - 1} on spatial dim {i} (o + k - 1), got {n}.")
  return out


def _samples(fn, key, samples, shape, dtype) -> jax.Array:
  if (key is None) == (samples is None):
    raise ValueError(f"{fn}: give exactly one of key or samples, got key={key!r} and "
                     f"samples={'None' if samples is None else 'an array'}.")
  if key is not None:
    return jax.random.uniform(key, shape, dtype)
  if not hasattr(samples, "shape") or not hasattr(samples, "dtype"):
    samples = np.asarray(samples)
  if tuple(samples.shape) != shape:
    raise ValueError(f"{fn}: samples must have shape {shape} ((*batch, C, d), PyTorch's "
                     f"_random_samples layout in both data formats), got "
                     f"{tuple(samples.shape)}.")
  if not jnp.issubdtype(samples.dtype, jnp.floating):
    raise TypeError(f"{fn}: samples must be floating (uniform in [0, 1)), got dtype "
                    f"{samples.dtype}.")
  return jax.lax.stop_gradient(jnp.asarray(samples, dtype))


def _starts(u: jax.Array, size: int, out: int, k: int) -> jax.Array:
  """PyTorch's window starts ``(..., out)`` for samples ``u (...)``, in ``u``'s dtype."""
  last = jnp.full(u.shape + (1,), size - k, np.int32)
  if out == 1:
    return last
  dtype = u.dtype
  alpha = np.array(size - k, dtype) / np.array(out - 1, dtype)
  i = np.arange(out - 1).astype(dtype).reshape((1,) * u.ndim + (-1,))
  starts = (((i + u[..., None]) * alpha).astype(np.int32)
            - (u * alpha).astype(np.int32)[..., None])
  return jnp.concatenate([starts, last], axis=-1)


def _candidates(size: int, out: int, k: int, dtype) -> tuple[np.ndarray, int]:
  """Static candidate starts for the runtime windows of one dim: ``(first (out,),
  count)``; window ``i`` starts at one of ``first[i] + t``, ``t < count``.

  In exact arithmetic ``int((i + u) a) - int(u a)`` is ``floor(i a)`` or one more, for
  any ``u``; rounding in ``dtype`` moves each ``int()`` by at most ``ceil(4 L eps)``
  (the three roundings of ``(i + u) * a`` and the two of ``u * a`` each err by at most
  ``L eps``), so ``floor(i a) - dev ... floor(i a) + 1 + dev`` holds every start,
  clipped to the input. ``floor(i a)`` is integer arithmetic, exact.
  """
  dev = math.ceil(4 * size * float(jnp.finfo(dtype).eps))
  count = min(size - k + 1, 2 * dev + 2)
  base = np.array([i * (size - k) // (out - 1) for i in range(out - 1)] + [size - k])
  return np.clip(base - dev, 0, size - k + 1 - count).astype(np.int32), count


def _select(options: list[jax.Array], which: jax.Array) -> jax.Array:
  """``options[which]`` elementwise, as a chain of selects."""
  chosen = options[-1]
  for t in range(len(options) - 2, -1, -1):
    chosen = jnp.where(which == t, options[t], chosen)
  return chosen


@jax.custom_jvp
def _at(x: jax.Array, index: jax.Array, values: jax.Array) -> jax.Array:
  """``values`` (each window's maximum, computed without derivative) with the
  derivative of ``x`` at ``index``: the tangent is a gather, whose transpose is a
  scatter-add, so the cotangent goes to each window's first maximum alone."""
  del x, index
  return values


@_at.defjvp
def _at_jvp(primals, tangents):
  x, index, values = primals
  # the primal through _at again, so that higher orders see the same rule
  return _at(x, index, values), take_flat(tangents[0], index)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _pool(x, u, window, out, channels_first):
  d = len(window)
  if channels_first:
    x = jnp.moveaxis(x, -d - 1, -1)  # (*batch, *spatial, C)
  lead, spatial, c = x.shape[:-d - 1], x.shape[-d - 1:-1], x.shape[-1]
  x = x.reshape((-1,) + spatial + (c,))
  u = u.reshape(-1, c, d)
  # PyTorch: in 2-D samples[..., 0] drives the width; otherwise entry k drives dim k
  which = (1, 0) if d == 2 else tuple(range(d))
  strides = geo.row_major_strides(spatial)
  values, index = jax.lax.stop_gradient(x), None
  for k in reversed(range(d)):  # the last axis first: the row-major first maximum
    ax, w, size = 1 + k, window[k], spatial[k]
    # every stride-1 window of this axis: its max and the first offset holding it
    shifted = [jax.lax.slice_in_dim(values, j, size - w + 1 + j, axis=ax) for j in range(w)]
    peak = functools.reduce(jax.lax.max, shifted)
    first = jnp.full(peak.shape, w - 1, np.int32)
    for j in range(w - 2, -1, -1):
      hit = shifted[j] == peak
      if jnp.issubdtype(peak.dtype, jnp.floating):  # a NaN max is the first NaN
        hit = hit | (jnp.isnan(shifted[j]) & jnp.isnan(peak))
      first = jnp.where(hit, j, first)
    at = first * strides[k]
    if index is not None:  # plus the chosen row's own index
      at = at + _select([jax.lax.slice_in_dim(index, j, size - w + 1 + j, axis=ax)
                         for j in range(w)], first)
    # each window's runtime start, one of a few static candidates
    lo, count = _candidates(size, out[k], w, u.dtype)
    delta = jnp.clip(_starts(u[..., which[k]], size, out[k], w) - lo[None, None], 0, count - 1)
    delta = jnp.moveaxis(delta, 1, -1).reshape(  # (B, C, o) -> on axis ax, C last
        (delta.shape[0],) + (1,) * k + (out[k],) + (1,) * (d - 1 - k) + (c,))
    values = _select([jnp.take(peak, lo + t, axis=ax) for t in range(count)], delta)
    begin = expand(lo, values.ndim, ax, 1) + delta
    index = begin * strides[k] + _select([jnp.take(at, lo + t, axis=ax)
                                          for t in range(count)], delta)
  y = _at(x, index, values)
  y, index = (a.reshape(lead + a.shape[1:]) for a in (y, index))
  if channels_first:
    y, index = (jnp.moveaxis(a, -1, -d - 1) for a in (y, index))
  return y, index


def fractional_max_pool_with_indices(x: ArrayLike, window_shape, output_size=None, *,
                                     output_ratio=None, key=None, samples=None,
                                     data_format: str = "channels_last"
                                     ) -> tuple[jax.Array, jax.Array]:
  """Fractional max pooling plus PyTorch-convention int32 indices.

  Shapes: ``x`` is ``(*batch, *spatial, C)`` (``channels_last``) or
  ``(*batch, C, *spatial)``; both outputs replace ``*spatial`` by the output size.

  Args:
    x: input (float, int or bool).
    window_shape: ``d`` ints, the pooling window (its length fixes ``d``).
    output_size: ``d`` ints; or give ``output_ratio`` instead (exactly one of them).
    output_ratio: a float or ``d`` floats in ``(0, 1)``; ``out = int(L * ratio)``.
    key: a JAX PRNG key; each (batch, channel) plane draws its samples uniform in
      ``[0, 1)`` (exactly one of ``key`` and ``samples``).
    samples: ``(*batch, C, d)`` floats in ``[0, 1)``, PyTorch's ``_random_samples``
      layout in both data formats: the same samples give PyTorch's windows. In 2-D
      ``samples[..., 0]`` drives the width and ``samples[..., 1]`` the height; otherwise
      entry ``k`` drives spatial dim ``k``. Runtime values: new samples never recompile.
    data_format: ``"channels_last"`` (default) or ``"channels_first"``.

  Returns:
    ``(values, indices)``: each window's maximum (NaN propagates; the gradient goes to
    the first maximum in row-major order) and its flat row-major index within the
    plane's spatial volume (``h*W + w`` in 2-D), int32, as
    :func:`jaxpool.max_pool_with_indices`.

  Raises:
    ValueError: both or neither of ``output_size``/``output_ratio`` or of
    ``key``/``samples``; ``o + k - 1 > L`` on a dim (PyTorch's 3-D kernel also rejects
    ``o + k - 1 == L``, which jaxpool accepts as PyTorch's 2-D kernel does); samples of
    the wrong shape; a spatial volume too large for int32.
    TypeError: bad ``window_shape``, ``output_ratio``, dtype or samples dtype.

  Lowering: one axis at a time, every stride-1 window's max and first offset (static
  slices), then per window a select among the few static starts its runtime start can
  take; the derivative is a gather at the first maximum (a scatter-add in reverse
  mode). On every backend.

  Example:
    >>> import jax.numpy as jnp, jaxpool
    >>> x = jnp.arange(25.).reshape(1, 5, 5, 1)
    >>> u = jnp.full((1, 1, 2), 0.5)
    >>> v, i = jaxpool.fractional_max_pool_with_indices(x, (2, 2), (3, 3), samples=u)
    >>> i[0, :, :, 0]
    Array([[ 6,  8,  9],
           [16, 18, 19],
           [21, 23, 24]], dtype=int32)
  """
  fn = "fractional_max_pool_with_indices"
  return _fractional(fn, x, window_shape, output_size, output_ratio, key, samples,
                     data_format)


def fractional_max_pool(x: ArrayLike, window_shape, output_size=None, *, output_ratio=None,
                        key=None, samples=None,
                        data_format: str = "channels_last") -> jax.Array:
  """Fractional max pooling (PyTorch's ``F.fractional_max_pool2d/3d``, any ``d``).

  Arguments and values as :func:`fractional_max_pool_with_indices`, which also returns
  the indices.

  Example:
    >>> import jax, jax.numpy as jnp, jaxpool
    >>> x = jnp.ones((2, 9, 9, 3))
    >>> jaxpool.fractional_max_pool(x, (3, 3), output_ratio=0.5,
    ...                             key=jax.random.key(0)).shape
    (2, 4, 4, 3)
  """
  fn = "fractional_max_pool"
  return _fractional(fn, x, window_shape, output_size, output_ratio, key, samples,
                     data_format)[0]


def _fractional(fn, x, window_shape, output_size, output_ratio, key, samples, data_format):
  x = geo.as_array(fn, x, kinds="any")
  window = geo.shape_tuple(fn, "window_shape", window_shape, 1, ndim=x.ndim)
  lay = geo.layout(fn, x.shape, len(window), data_format)
  spatial = lay.spatial_shape(x.shape)
  geo.spatial_volume(fn, spatial)
  out = _sizes(fn, spatial, window, output_size, output_ratio)
  batch = x.shape[:min(lay.channel_axis, lay.spatial_axes[0])]
  dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else np.dtype(np.float32)
  u = _samples(fn, key, samples, batch + (x.shape[lay.channel_axis], len(window)), dtype)
  with jax.named_scope(fn):
    return _pool(x, u, window, out, lay.channel_axis < lay.spatial_axes[0])
