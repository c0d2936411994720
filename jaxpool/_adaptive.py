"""PyTorch-exact adaptive pooling: bin ``i`` of ``o`` over length ``L`` covers
``[floor(i*L/o), ceil((i+1)*L/o))``.

Each spatial axis gets a trace-time plan from its static ``(L, o)``:

* equal bins at a constant step (``o`` divides ``L``, or e.g. 56 -> 5 is width 12,
  step 11): a regular window, reduced like any pooling window (reshape or strided
  slices);
* otherwise the bins take two widths: one static gather of the ``(o, max width)``
  positions, masked to each bin's width.

The program size depends on the bin width, never on a per-bin loop over ``o``, and no
plan uses a scatter or a matmul in the forward pass.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxpool import _extents
from jaxpool import _geometry as geo
from jaxpool._argmax import indexed_select
from jaxpool._engine import select_pool, sum_pool


@functools.cache
def bin_taps(size: int, out: int) -> geo.AxisTaps:
  """The taps of ``out`` adaptive bins over an axis of length ``size``."""
  starts, ends = geo.adaptive_bounds(size, out)
  widths = ends - starts
  steps = np.diff(starts)
  if out == 1 or ((widths == widths[0]).all() and (steps == steps[0]).all() and steps[0] > 0):
    stride = int(steps[0]) if out > 1 else size
    return geo.AxisTaps(size, out, int(widths[0]), stride)
  return geo.AxisTaps(size, out, int(widths.max()), starts=tuple(int(s) for s in starts),
                      widths=tuple(int(w) for w in widths))


def _geometry(fn: str, x, output_size, data_format, kinds: str):
  x = geo.as_array(fn, x, kinds=kinds)
  size = geo.shape_tuple(fn, "output_size", output_size, 1, allow_none=True, ndim=x.ndim)
  lay = geo.layout(fn, x.shape, len(size), data_format)
  spatial = lay.spatial_shape(x.shape)
  for i, n in enumerate(spatial):
    if n < 1:
      raise ValueError(f"{fn}: input spatial size must be >= 1, got {spatial} (dim {i}).")
  taps = tuple(bin_taps(n, n if o is None else o) for n, o in zip(spatial, size))
  return x, lay, taps


def _sizes(taps) -> tuple[int, ...]:
  return tuple(t.out for t in taps)


_SHAPES = """Shapes: ``x`` is ``(*batch, *spatial, C)`` (``channels_last``) or
  ``(*batch, C, *spatial)``; the output replaces ``*spatial`` by ``output_size``."""


def adaptive_avg_pool(x: ArrayLike, output_size, *, lengths=None,
                      data_format: str = "channels_last") -> jax.Array:
  """Adaptive average pooling with PyTorch's (possibly overlapping) bins.

  {shapes}

  Args:
    x: floating input (float32 accumulation for float16/bfloat16).
    output_size: ``d`` entries, each an int >= 1 (may exceed the input length) or
      ``None`` to keep that dim (its static, padded length when ``lengths`` is given).
    lengths: optional int array ``(*batch, d)`` (or ``(*batch,)`` for 1-D): each
      example's valid extent per spatial dim, the leading positions of each axis (right
      padding). Each example then gets exactly the PyTorch op on its valid region alone,
      with bins computed from its own lengths; positions beyond them never affect the
      result and get zero gradient. Runtime values: changing them never recompiles.
      They are clipped to ``[1, L]``, since a traced value cannot be checked.
    data_format: ``"channels_last"`` (default) or ``"channels_first"``.

  Returns:
    Per bin, the mean of its elements (same dtype as ``x``).

  Raises:
    ValueError, TypeError: bad ``output_size``, rank or dtype.

  Lowering: bins that divide evenly are windows, lowered as :func:`jaxpool.avg_pool`'s
  on each backend; each irregular axis is one static gather and a reduction, whose
  gradient is JAX's transpose of that gather (a scatter-add), on every backend. With
  ``lengths`` every axis is a gather of runtime positions at a static width (at most
  ``ceil(L/o) + 1``) and a mask; an axis pooled to one bin is only a mask.

  Example:
    >>> import jax.numpy as jnp, jaxpool
    >>> x = jnp.arange(5.).reshape(5, 1)
    >>> jaxpool.adaptive_avg_pool(x, (3,))[:, 0]
    Array([0.5, 2. , 3.5], dtype=float32)
    >>> clips = jnp.arange(12.).reshape(2, 6, 1)  # two clips, 6 and 4 steps long
    >>> jaxpool.adaptive_avg_pool(clips, (2,), lengths=jnp.array([6, 4]))[..., 0]
    Array([[1. , 4. ],
           [6.5, 8.5]], dtype=float32)
  """
  fn = "adaptive_avg_pool"
  x, lay, taps = _geometry(fn, x, output_size, data_format, "float")
  with jax.named_scope(fn):
    if lengths is not None:
      return _extents.pool(fn, x, lay, _sizes(taps), lengths, "avg")
    rule = (False, None)  # bins never read padding
    return sum_pool(x.astype(geo.accum_dtype(x.dtype)), lay.spatial_axes, taps,
                    rule, source=x.dtype).astype(x.dtype)


def adaptive_max_pool(x: ArrayLike, output_size, *, lengths=None,
                      data_format: str = "channels_last") -> jax.Array:
  """Adaptive max pooling with PyTorch's bins.

  {shapes}

  Args:
    x: input (float, int or bool).
    output_size, lengths, data_format: as :func:`adaptive_avg_pool`.

  Returns:
    Per bin, its maximum; NaN propagates and the gradient goes to the first maximum in
    row-major order (the element :func:`adaptive_max_pool_with_indices` names).

  Raises:
    ValueError, TypeError: bad ``output_size``, rank or dtype.

  Lowering: as :func:`adaptive_avg_pool`, with max instead of add; the gradient of
  irregular bins routes the cotangent one axis at a time to each bin's first max. With
  ``lengths`` each bin is read whole (one gather of its static-width box), its first
  maximum found with an argmax, and its value taken by one gather at that index.

  Example:
    >>> import jax.numpy as jnp, jaxpool
    >>> x = jnp.array([3., 1., 4., 1., 5.]).reshape(5, 1)
    >>> jaxpool.adaptive_max_pool(x, (2,))[:, 0]
    Array([4., 5.], dtype=float32)
  """
  fn = "adaptive_max_pool"
  x, lay, taps = _geometry(fn, x, output_size, data_format, "any")
  with jax.named_scope(fn):
    if lengths is not None:
      return _extents.pool(fn, x, lay, _sizes(taps), lengths, "max")
    return select_pool(x, lay.spatial_axes, taps, "max")


def adaptive_max_pool_with_indices(x: ArrayLike, output_size, *, lengths=None,
                                   data_format: str = "channels_last"
                                   ) -> tuple[jax.Array, jax.Array]:
  """Adaptive max pooling plus PyTorch-convention int32 argmax indices.

  {shapes}

  Args:
    x, output_size, lengths, data_format: as :func:`adaptive_max_pool`.

  Returns:
    ``(values, indices)``: ``values`` as :func:`adaptive_max_pool`; ``indices`` the flat
    row-major index within each (batch, channel) slice's spatial volume of the first
    maximum (or first NaN), exactly as :func:`jaxpool.max_pool_with_indices`. With
    ``lengths`` the index is flat within the full padded volume (``h*W + w`` with the
    padded ``W``), so it feeds :func:`jaxpool.max_unpool` with the padded size.

  Raises:
    ValueError, TypeError: bad ``output_size``, rank or dtype, or a spatial volume too
    large for int32.

  Lowering: as :func:`adaptive_max_pool`, carrying a flat index through the selects.

  Example:
    >>> import jax.numpy as jnp, jaxpool
    >>> x = jnp.array([3., 1., 4., 1., 5.]).reshape(5, 1)
    >>> v, i = jaxpool.adaptive_max_pool_with_indices(x, (2,))
    >>> i[:, 0]
    Array([2, 4], dtype=int32)
  """
  fn = "adaptive_max_pool_with_indices"
  x, lay, taps = _geometry(fn, x, output_size, data_format, "any")
  if lengths is not None:
    with jax.named_scope(fn):
      return _extents.pool(fn, x, lay, _sizes(taps), lengths, "indices")
  return indexed_select(fn, x, lay, taps)


def adaptive_avgmax_pool(x: ArrayLike, output_size, *,
                         data_format: str = "channels_last") -> jax.Array:
  """The mean of adaptive average and adaptive max pooling (timm's
  ``adaptive_avgmax_pool2d``), N-D: ``0.5 * (avg + max)``.

  {shapes}

  Args:
    x: floating input.
    output_size, data_format: as :func:`adaptive_avg_pool`.

  Returns:
    ``0.5 * (adaptive_avg_pool(x) + adaptive_max_pool(x))``, same dtype as ``x``; the
    max half's gradient goes to each bin's first maximum.

  Raises:
    ValueError, TypeError: bad ``output_size``, rank or dtype.

  Lowering: both pools in one program over the same bins (XLA fuses what reads the
  input twice where it can), on every backend.

  Example:
    >>> import jax.numpy as jnp, jaxpool
    >>> x = jnp.array([1., 2., 3., 6.]).reshape(4, 1)
    >>> jaxpool.adaptive_avgmax_pool(x, (2,))[:, 0]
    Array([1.75, 5.25], dtype=float32)
  """
  fn = "adaptive_avgmax_pool"
  avg, peak = _avg_and_max(fn, x, output_size, data_format)
  return (0.5 * (avg.astype(geo.accum_dtype(avg.dtype)) + peak)).astype(avg.dtype)


def adaptive_catavgmax_pool(x: ArrayLike, output_size, *,
                            data_format: str = "channels_last") -> jax.Array:
  """Adaptive average and adaptive max pooling concatenated on the channel axis, the
  average first (timm's ``adaptive_catavgmax_pool2d``), N-D: ``2 * C`` channels.

  {shapes}

  Args:
    x, output_size, data_format: as :func:`adaptive_avgmax_pool`.

  Returns:
    ``concatenate([avg, max], channel_axis)``, same dtype as ``x``.

  Raises:
    ValueError, TypeError: bad ``output_size``, rank or dtype.

  Lowering: as :func:`adaptive_avgmax_pool`.

  Example:
    >>> import jax.numpy as jnp, jaxpool
    >>> x = jnp.array([1., 2., 3., 6.]).reshape(4, 1)
    >>> jaxpool.adaptive_catavgmax_pool(x, (2,))
    Array([[1.5, 2. ],
           [4.5, 6. ]], dtype=float32)
  """
  fn = "adaptive_catavgmax_pool"
  avg, peak = _avg_and_max(fn, x, output_size, data_format)
  lay = geo.layout(fn, avg.shape, len(output_size), data_format)
  return jnp.concatenate([avg, peak], axis=lay.channel_axis)


def _avg_and_max(fn: str, x, output_size, data_format):
  x, lay, taps = _geometry(fn, x, output_size, data_format, "float")
  with jax.named_scope(fn):
    avg = sum_pool(x.astype(geo.accum_dtype(x.dtype)), lay.spatial_axes, taps,
                   (False, None), source=x.dtype).astype(x.dtype)
    return avg, select_pool(x, lay.spatial_axes, taps, "max")


for _f in (adaptive_avg_pool, adaptive_max_pool, adaptive_max_pool_with_indices,
           adaptive_avgmax_pool, adaptive_catavgmax_pool):
  if _f.__doc__:  # None under python -OO
    _f.__doc__ = _f.__doc__.replace("{shapes}", _SHAPES)
del _f
