"""Fractional max pooling (Graham 2014), exactly as PyTorch's
``F.fractional_max_pool2d/3d``, for any number of spatial dims.

Each (batch, channel) plane draws one sample ``u`` in ``[0, 1)`` per spatial dim. With
``alpha = (L - k) / (o - 1)``, window ``i < o - 1`` starts at ``int((i + u) * alpha) -
int(u * alpha)`` and the last at ``L - k``, in the input's floating dtype as PyTorch's
kernel computes it (float32 for integer input). The starts are runtime values, so the
windows are read as contiguous slices at a static width ``k``; each window's first
maximum is found one axis at a time (``_extents.first_max_index``) and its value taken
with one gather, whose derivative sends the cotangent there alone.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxpool import _geometry as geo
from jaxpool._extents import first_max_index, take_flat


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
  i = np.arange(out - 1).astype(dtype)[None]  # u is (planes,)
  starts = (((i + u[..., None]) * alpha).astype(np.int32)
            - (u * alpha).astype(np.int32)[..., None])
  return jnp.concatenate([starts, last], axis=-1)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _pool(x, u, lay, window, out, channels_first):
  d = len(window)
  if not channels_first:
    x = jnp.moveaxis(x, -1, -d - 1)  # (*batch, C, *spatial)
  lead, spatial = x.shape[:-d], x.shape[-d:]
  planes = x.reshape((-1,) + spatial + (1,))
  u = u.reshape(-1, d)
  # PyTorch: in 2-D samples[..., 0] drives the width; otherwise entry k drives dim k
  which = (1, 0) if d == 2 else tuple(range(d))
  starts = [_starts(u[:, which[k]], spatial[k], out[k], window[k]) for k in range(d)]
  valid = [np.ones((o, k), bool) for o, k in zip(out, window)]

  def one(plane, *begins):
    return first_max_index(plane, [(b, v) for b, v in zip(begins, valid)])

  idx = jax.vmap(one)(jax.lax.stop_gradient(planes), *starts)
  y = take_flat(planes, idx)
  y, idx = (a.reshape(lead + out) for a in (y, idx))
  if not channels_first:
    y, idx = (jnp.moveaxis(a, -d - 1, -1) for a in (y, idx))
  return y, idx


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

  Lowering: the runtime windows as contiguous slices of static width, each window's
  first maximum one axis at a time (max, then min over matching offsets), its value by
  one gather; on every backend.

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
    return _pool(x, u, lay, window, out, lay.channel_axis < lay.spatial_axes[0])
