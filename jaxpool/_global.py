"""Global pooling over every spatial dim, and channel ("depth-wise") pooling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxpool import _extents
from jaxpool import _geometry as geo
from jaxpool._engine import axis_sum, select_pool, sum_pool


def _spatial_layout(fn: str, x: jax.Array, num_spatial_dims, data_format) -> geo.Layout:
  """The layout for ``num_spatial_dims`` spatial dims, which must be given: the rank of
  ``x`` cannot tell an unbatched ``(H, W, C)`` from a batch of sequences ``(N, L, C)``,
  and under ``jax.vmap`` every example loses its batch axis."""
  if not geo.is_int(num_spatial_dims):
    raise TypeError(f"{fn}: num_spatial_dims must be an int >= 1 (the number of spatial "
                    f"dims of x, e.g. 2 for images), got {num_spatial_dims!r}; it is "
                    f"required because the rank of x (shape {x.shape}) cannot tell "
                    f"batch axes from spatial ones.")
  if num_spatial_dims < 1:
    raise ValueError(f"{fn}: num_spatial_dims must be >= 1, got {num_spatial_dims}.")
  return geo.layout(fn, x.shape, int(num_spatial_dims), data_format)


def _whole(axes, shape) -> tuple[geo.AxisTaps, ...]:
  return tuple(geo.AxisTaps(shape[a], 1, shape[a], shape[a]) for a in axes)


def _finish(y: jax.Array, axes, keepdims: bool) -> jax.Array:
  return y if keepdims else jnp.squeeze(y, axis=tuple(axes))


def global_avg_pool(x: ArrayLike, num_spatial_dims: int, *, keepdims: bool = False,
                    lengths=None, data_format: str = "channels_last") -> jax.Array:
  """Mean over every spatial dim.

  Shapes: ``(*batch, *spatial, C) -> (*batch, C)`` (``channels_last``; with
  ``keepdims`` the spatial dims stay as 1s), or ``(*batch, C, *spatial)``.

  Args:
    x: floating input (float32 accumulation for float16/bfloat16).
    num_spatial_dims: how many axes next to the channel axis are spatial (2 for
      images). Required: the rank of ``x`` cannot tell an unbatched ``(H, W, C)`` from
      a batch of sequences ``(N, L, C)``, and under ``jax.vmap`` each example has no
      batch axis.
    keepdims: keep the reduced dims as size 1.
    lengths: optional int array ``(*batch, d)`` (or ``(*batch,)`` when ``d == 1``):
      each example's valid extent per spatial dim (right padding). Each example is
      reduced over its valid region alone; padding never affects the result and gets
      zero gradient. Runtime values, clipped to ``[1, L]`` (a traced value cannot be
      checked).
    data_format: ``"channels_last"`` (default) or ``"channels_first"``.

  Returns:
    The means, same dtype as ``x``.

  Lowering: as :func:`jaxpool.avg_pool` with the whole spatial extent as one window, on
  each backend (with ``lengths``: a mask, then the reduction).

  Example:
    >>> import jax.numpy as jnp, jaxpool
    >>> jaxpool.global_avg_pool(jnp.ones((2, 7, 7, 3)), 2).shape
    (2, 3)
    >>> jaxpool.global_avg_pool(jnp.ones((7, 7, 3)), 2).shape  # unbatched
    (3,)
  """
  fn = "global_avg_pool"
  x = geo.as_array(fn, x)
  keepdims = geo.check_bool(fn, "keepdims", keepdims)
  lay = _spatial_layout(fn, x, num_spatial_dims, data_format)
  with jax.named_scope(fn):
    if lengths is not None:
      y = _extents.pool(fn, x, lay, (1,) * lay.num_spatial, lengths, "avg")
      return _finish(y, lay.spatial_axes, keepdims)
    # One window spanning the spatial axes: the planned sum, as adaptive_avg_pool(x, 1)
    # and avg_pool over whole axes lower (one reduce, or slices on CPU).
    axes = lay.spatial_axes
    y = sum_pool(x.astype(geo.accum_dtype(x.dtype)), axes, _whole(axes, x.shape),
                 (True, None), source=x.dtype).astype(x.dtype)
    return _finish(y, axes, keepdims)


def global_max_pool(x: ArrayLike, num_spatial_dims: int, *, keepdims: bool = False,
                    lengths=None, data_format: str = "channels_last") -> jax.Array:
  """Max over every spatial dim; arguments as :func:`global_avg_pool`.

  Float, int or bool input. NaN propagates; the gradient goes to the first maximum in
  row-major order (not split among ties, unlike ``jnp.max``), like PyTorch's
  ``adaptive_max_pool(x, 1)``. ``lengths`` as :func:`global_avg_pool`.

  Lowering: as :func:`jaxpool.max_pool` with the whole spatial extent as one window, on
  each backend.

  Example:
    >>> import jax.numpy as jnp, jaxpool
    >>> jaxpool.global_max_pool(jnp.arange(8.).reshape(1, 2, 4, 1), 2)
    Array([[7.]], dtype=float32)
    >>> jaxpool.global_max_pool(jnp.arange(8.).reshape(1, 2, 4, 1), 2,
    ...                         lengths=jnp.array([[2, 3]]))  # rows 0-1, columns 0-2
    Array([[6.]], dtype=float32)
  """
  fn = "global_max_pool"
  x = geo.as_array(fn, x, kinds="any")
  keepdims = geo.check_bool(fn, "keepdims", keepdims)
  lay = _spatial_layout(fn, x, num_spatial_dims, data_format)
  with jax.named_scope(fn):
    if lengths is not None:
      y = _extents.pool(fn, x, lay, (1,) * lay.num_spatial, lengths, "max")
    else:
      y = select_pool(x, lay.spatial_axes, _whole(lay.spatial_axes, x.shape), "max")
    return _finish(y, lay.spatial_axes, keepdims)


def gem_pool(x: ArrayLike, num_spatial_dims: int, p=3.0, *, eps: float = 1e-6,
             keepdims: bool = False, data_format: str = "channels_last") -> jax.Array:
  """Generalized-mean (GeM) pooling over every spatial dim (timm's ``GeM``).

  ``mean(clip(x, eps) ** p) ** (1 / p)`` over the spatial dims: ``p = 1`` is the
  average, large ``p`` tends to the max (Radenović et al. 2018).

  Shapes: as :func:`global_avg_pool`.

  Args:
    x: floating input (float32 accumulation for float16/bfloat16).
    num_spatial_dims: how many axes next to the channel axis are spatial (required, as
      for :func:`global_avg_pool`).
    p: the exponent: a Python number > 0, or a traced scalar (a learnable parameter;
      the result is differentiable with respect to it).
    eps: values below ``eps`` are raised to it first, PyTorch's ``clamp(min=eps)``: the
      gradient flows where ``x > eps`` (at ``x == eps`` exactly, half of it, JAX's rule
      for a max; PyTorch passes all of it), and NaN passes through.
    keepdims: keep the reduced dims as size 1.
    data_format: ``"channels_last"`` (default) or ``"channels_first"``.

  Returns:
    The generalized means, same dtype as ``x``.

  Raises:
    TypeError, ValueError: bad ``p`` (not a real scalar, or a concrete value <= 0),
    ``eps``, ``num_spatial_dims``, rank or dtype.

  Lowering: elementwise power, one reduction, a root: one fused program on every
  backend.

  Example:
    >>> import jax.numpy as jnp, jaxpool
    >>> x = jnp.array([1., 2., 3., 4.]).reshape(1, 2, 2, 1)
    >>> jaxpool.gem_pool(x, 2, p=1.0)
    Array([[2.5]], dtype=float32)
    >>> round(float(jaxpool.gem_pool(x, 2)[0, 0]), 4)  # p = 3: toward the max
    2.924
  """
  fn = "gem_pool"
  x = geo.as_array(fn, x)
  keepdims = geo.check_bool(fn, "keepdims", keepdims)
  lay = _spatial_layout(fn, x, num_spatial_dims, data_format)
  if isinstance(p, (bool, np.bool_)) or not (
      isinstance(p, (int, float, np.number)) or (hasattr(p, "dtype") and np.ndim(p) == 0
                                                 and jnp.issubdtype(p.dtype, jnp.number))):
    raise TypeError(f"{fn}: p must be a real scalar (a number > 0 or a scalar array), got "
                    f"{p!r}.")
  if isinstance(p, (int, float, np.number)) and not (float(p) > 0 and np.isfinite(p)):
    raise ValueError(f"{fn}: p must be finite and > 0, got p={p!r}.")
  if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, (int, float, np.floating)):
    raise TypeError(f"{fn}: eps must be a float, got {eps!r}.")
  with jax.named_scope(fn):
    acc = geo.accum_dtype(x.dtype)
    v = x.astype(acc)
    power = jnp.asarray(p, acc)
    # lax.max (not a select, which XLA:CPU runs at half the speed here); NaN propagates
    v = jnp.maximum(v, np.array(eps, acc)) ** power
    axes = lay.spatial_axes
    mean = jnp.mean(v, axis=axes, keepdims=True) ** (1 / power)
    return _finish(mean.astype(x.dtype), axes, keepdims)


_OPS = {"max": "max", "avg": "avg", "mean": "avg"}  # "mean": PyTorch's name


def channel_pool(x: ArrayLike, op: str = "max", *, keepdims: bool = True,
                 data_format: str = "channels_last",
                 num_spatial_dims: int | None = None) -> jax.Array:
  """Reduce the channel axis ("global depth-wise pooling", which PyTorch lacks).

  Shapes: ``(*batch, *spatial, C) -> (*batch, *spatial, 1)`` (``channels_last``) or
  ``(*batch, C, *spatial) -> (*batch, 1, *spatial)``; without ``keepdims`` the channel
  axis is dropped.

  Args:
    x: input (``op="max"``: float, int or bool; ``op="avg"``: floating).
    op: ``"max"`` or ``"avg"`` (also spelled ``"mean"``, PyTorch's name). Ties in
      ``"max"`` send the whole gradient to the first maximal channel, like
      ``torch.max(x, dim=1)``; ``x.amax(dim=1)`` splits it evenly among them.
    keepdims: keep the channel axis as size 1 (default ``True``).
    data_format: ``"channels_last"`` (channel is the last axis) or ``"channels_first"``.
    num_spatial_dims: required for ``channels_first``, where it locates the channel
      axis (``ndim - 1 - num_spatial_dims``): the rank cannot tell an unbatched
      ``(C, H, W)`` from a batched ``(N, C, L)``. Unused for ``channels_last``.

  Returns:
    The channel max or mean, same dtype. Max: NaN propagates, gradient to the first
    maximum.

  Lowering: one reduction (plus first-max selects for the gradient) on every backend;
  on CPU the mean over a channel axis at least as long as the elements after it (the
  channels_first case) folds the axis instead (:func:`jaxpool._engine.plan.axis_sum_form`).

  Example:
    >>> import jax.numpy as jnp, jaxpool
    >>> x = jnp.array([[1., 4.], [3., 2.]])[None]  # (1, 2 positions, 2 channels)
    >>> jaxpool.channel_pool(x, "max")[0, :, 0], jaxpool.channel_pool(x, "avg")[0, :, 0]
    (Array([4., 3.], dtype=float32), Array([2.5, 2.5], dtype=float32))
  """
  fn = "channel_pool"
  if not isinstance(op, str) or op not in _OPS:
    raise ValueError(f"{fn}: op must be one of {tuple(_OPS)}, got {op!r}.")
  op = _OPS[op]
  x = geo.as_array(fn, x, kinds="any" if op == "max" else "float")
  keepdims = geo.check_bool(fn, "keepdims", keepdims)
  if data_format not in geo.DATA_FORMATS:
    raise ValueError(f"{fn}: data_format must be one of {geo.DATA_FORMATS}, got "
                     f"{data_format!r}.")
  if data_format == "channels_last":
    if x.ndim < 2:
      raise ValueError(f"{fn}: input must have at least 2 dims (spatial and channel), got "
                       f"shape {x.shape}.")
    axis = x.ndim - 1
  else:
    axis = _spatial_layout(fn, x, num_spatial_dims, data_format).channel_axis
  with jax.named_scope(fn):
    if op == "max":
      y = select_pool(x, (axis,), _whole((axis,), x.shape), "max")
    else:
      total = axis_sum(x.astype(geo.accum_dtype(x.dtype)), axis)
      y = (total / np.array(x.shape[axis], total.dtype)).astype(x.dtype)
    return _finish(y, (axis,), keepdims)
