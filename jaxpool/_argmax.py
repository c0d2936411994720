"""``max_pool_with_indices``: max pooling plus PyTorch-convention argmax indices."""

from __future__ import annotations

from typing import Any

import jax
from jax.typing import ArrayLike

from jaxpool import _geometry as geo
from jaxpool._engine import pool_with_indices


def indexed_select(fn: str, x: jax.Array, lay: geo.Layout,
                   taps: tuple[geo.AxisTaps, ...]) -> tuple[jax.Array, jax.Array]:
  """Differentiable max values and int32 flat indices of the first maxima."""
  spatial = lay.spatial_shape(x.shape)
  geo.spatial_volume(fn, spatial)
  with jax.named_scope(fn):
    return pool_with_indices(x, lay.spatial_axes, taps, spatial)


def max_pool_with_indices(x: ArrayLike, window_shape, strides=None, padding: Any = 0, *,
                          dilation=1, ceil_mode: bool = False,
                          data_format: str = "channels_last") -> tuple[jax.Array, jax.Array]:
  """Max pooling that also returns PyTorch-convention argmax indices.

  Shapes: ``x`` is ``(*batch, *spatial, C)`` or ``(*batch, C, *spatial)``; both outputs
  have the pooled shape.

  Args:
    x, window_shape, strides, padding, dilation, ceil_mode, data_format: as
      :func:`jaxpool.max_pool` (float, int or bool input).

  Returns:
    ``(values, indices)``. ``values`` equals ``max_pool(x, ...)`` (bit for bit, except
    that where a window's max is a zero of both signs either sign may come back) and is
    differentiable. ``indices`` (int32, no gradient) is, for each output element, the
    flat row-major index of the chosen element within the unpadded spatial volume of its
    own (batch, channel) slice: 1-D ``l``, 2-D ``h*W + w``, 3-D ``(t*H + h)*W + w``
    (PyTorch's ``return_indices=True`` convention, interchangeable with it). Ties go to
    the first maximum in row-major window order; a window holding a NaN gives NaN and the
    index of its first NaN (PyTorch CPU picks its last NaN).

  Raises:
    ValueError: bad arguments, or a spatial volume too large for int32 indices.

  Lowering: values as :func:`jaxpool.max_pool` on each backend; indices from strided
  slices, compares and selects that carry a window offset (one axis at a time for
  windows over 32 elements). On CPU, unpadded non-overlapping windows (SegNet's 2x2/2)
  take values and indices in one pass, a variadic ``reduce`` over the stacked window
  offsets; windows that tile one or two axes in 16+ rows of 16+ columns (a global max),
  where not differentiated, take each row's max, then read the first row holding the
  window's max again for its column.

  Example:
    >>> import jax.numpy as jnp, jaxpool
    >>> x = jnp.array([[1., 5.], [7., 2.]])[None, :, :, None]
    >>> v, i = jaxpool.max_pool_with_indices(x, (2, 2))
    >>> float(v[0, 0, 0, 0]), int(i[0, 0, 0, 0])
    (7.0, 2)
  """
  fn = "max_pool_with_indices"
  x = geo.as_array(fn, x, kinds="any")
  lay, taps = geo.window_geometry(fn, x.shape, window_shape, strides, padding, dilation,
                                  ceil_mode, data_format)
  return indexed_select(fn, x, lay, taps)
