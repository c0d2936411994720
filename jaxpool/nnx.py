"""``flax.nnx`` modules: each is partial application of the jaxpool function.

Constructors take the function's arguments (same names, order and defaults) and store
them as plain (static) attributes; ``__call__`` calls the function with them. No
``nnx.Param``, no state: the modules work inside ``nnx.jit``, ``nnx.vmap`` and
``nnx.split``/``nnx.merge`` like any stateless layer.

Example:
  >>> import jax.numpy as jnp
  >>> from jaxpool import nnx as pool
  >>> pool.AdaptiveAvgPool((1, 1))(jnp.ones((2, 7, 7, 8))).shape
  (2, 1, 1, 8)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

import jaxpool as F
from jaxpool import _from_torch

__all__ = [
    "AdaptiveAvgPool", "AdaptiveMaxPool", "AvgPool", "ChannelPool", "GlobalAvgPool",
    "GlobalMaxPool", "LPPool", "MaxPool", "MaxPoolWithIndices", "MaxUnpool", "MinPool",
    "SegmentPool", "AdaptiveAvgMaxPool", "AdaptiveCatAvgMaxPool", "BlurPool", "MaxBlurPool",
    "GeMPool", "FractionalMaxPool", "from_torch",
]

Ints = int | Sequence[int]


def _static(value: Any) -> Any:
  """Lists become tuples: nnx treats lists as graph nodes, tuples of ints as static."""
  if isinstance(value, (list, tuple)):
    return tuple(_static(v) for v in value)
  return value


class _Pool(nnx.Module):
  _arg_names: tuple[str, ...] = ()

  def _set(self, args: dict[str, Any]) -> None:
    for name in self._arg_names:
      setattr(self, name, _static(args[name]))

  def _kwargs(self) -> dict[str, Any]:
    return {name: getattr(self, name) for name in self._arg_names}


class MaxPool(_Pool):
  """Equivalent to partial application of :func:`jaxpool.max_pool`."""

  _arg_names = ("window_shape", "strides", "padding", "dilation", "ceil_mode", "data_format")

  def __init__(self, window_shape: Sequence[int], strides: Ints | None = None,
               padding: Any = 0, *, dilation: Ints = 1, ceil_mode: bool = False,
               data_format: str = "channels_last"):
    self._set(locals())

  def __call__(self, x: jax.Array) -> jax.Array:
    return F.max_pool(x, **self._kwargs())


class MinPool(MaxPool):
  """Equivalent to partial application of :func:`jaxpool.min_pool`."""

  def __call__(self, x: jax.Array) -> jax.Array:
    return F.min_pool(x, **self._kwargs())


class MaxPoolWithIndices(MaxPool):
  """Equivalent to partial application of :func:`jaxpool.max_pool_with_indices`.

  ``__call__(x) -> (values, indices)``.
  """

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return F.max_pool_with_indices(x, **self._kwargs())


class AvgPool(_Pool):
  """Equivalent to partial application of :func:`jaxpool.avg_pool`."""

  _arg_names = ("window_shape", "strides", "padding", "dilation", "ceil_mode",
                "count_include_pad", "divisor_override", "data_format")

  def __init__(self, window_shape: Sequence[int], strides: Ints | None = None,
               padding: Any = 0, *, dilation: Ints = 1, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None,
               data_format: str = "channels_last"):
    self._set(locals())

  def __call__(self, x: jax.Array) -> jax.Array:
    return F.avg_pool(x, **self._kwargs())


class LPPool(_Pool):
  """Equivalent to partial application of :func:`jaxpool.lp_pool`."""

  _arg_names = ("p", "window_shape", "strides", "padding", "dilation", "ceil_mode",
                "data_format")

  def __init__(self, p: float, window_shape: Sequence[int], strides: Ints | None = None,
               padding: Any = 0, *, dilation: Ints = 1, ceil_mode: bool = False,
               data_format: str = "channels_last"):
    self._set(locals())

  def __call__(self, x: jax.Array) -> jax.Array:
    return F.lp_pool(x, **self._kwargs())


class MaxUnpool(_Pool):
  """Equivalent to partial application of :func:`jaxpool.max_unpool`.

  ``__call__(values, indices, output_size=None)``; an ``output_size`` given to the call
  overrides the constructor's.
  """

  _arg_names = ("window_shape", "strides", "padding", "output_size", "data_format",
                "indices_in_window")

  def __init__(self, window_shape: Sequence[int], strides: Ints | None = None,
               padding: Any = 0, *, output_size: Sequence[int] | None = None,
               data_format: str = "channels_last", indices_in_window: bool = False):
    self._set(locals())

  def __call__(self, values: jax.Array, indices: jax.Array,
               output_size: Sequence[int] | None = None) -> jax.Array:
    kwargs = self._kwargs()
    if output_size is not None:
      kwargs["output_size"] = output_size
    return F.max_unpool(values, indices, **kwargs)


class AdaptiveAvgPool(_Pool):
  """Equivalent to partial application of :func:`jaxpool.adaptive_avg_pool`."""

  _arg_names = ("output_size", "data_format")

  def __init__(self, output_size: Sequence[int | None], *,
               data_format: str = "channels_last"):
    self._set(locals())

  def __call__(self, x: jax.Array, lengths: jax.Array | None = None) -> jax.Array:
    return F.adaptive_avg_pool(x, lengths=lengths, **self._kwargs())


class AdaptiveMaxPool(_Pool):
  """Equivalent to partial application of :func:`jaxpool.adaptive_max_pool`, or of
  :func:`jaxpool.adaptive_max_pool_with_indices` with ``return_indices=True`` (then
  ``__call__`` returns ``(values, indices)``, as PyTorch's ``AdaptiveMaxPool2d`` does)."""

  _arg_names = ("output_size", "data_format", "return_indices")

  def __init__(self, output_size: Sequence[int | None], *,
               data_format: str = "channels_last", return_indices: bool = False):
    self._set(locals())

  def __call__(self, x: jax.Array, lengths: jax.Array | None = None):
    fn = F.adaptive_max_pool_with_indices if self.return_indices else F.adaptive_max_pool
    return fn(x, self.output_size, lengths=lengths, data_format=self.data_format)


class GlobalAvgPool(_Pool):
  """Equivalent to partial application of :func:`jaxpool.global_avg_pool`."""

  _arg_names = ("num_spatial_dims", "keepdims", "data_format")

  def __init__(self, num_spatial_dims: int, *, keepdims: bool = False,
               data_format: str = "channels_last"):
    self._set(locals())

  def __call__(self, x: jax.Array, lengths: jax.Array | None = None) -> jax.Array:
    return F.global_avg_pool(x, lengths=lengths, **self._kwargs())


class GlobalMaxPool(GlobalAvgPool):
  """Equivalent to partial application of :func:`jaxpool.global_max_pool`."""

  def __call__(self, x: jax.Array, lengths: jax.Array | None = None) -> jax.Array:
    return F.global_max_pool(x, lengths=lengths, **self._kwargs())


class ChannelPool(_Pool):
  """Equivalent to partial application of :func:`jaxpool.channel_pool`."""

  _arg_names = ("op", "keepdims", "data_format", "num_spatial_dims")

  def __init__(self, op: str = "max", *, keepdims: bool = True,
               data_format: str = "channels_last", num_spatial_dims: int | None = None):
    self._set(locals())

  def __call__(self, x: jax.Array) -> jax.Array:
    return F.channel_pool(x, **self._kwargs())


class SegmentPool(_Pool):
  """Equivalent to partial application of :func:`jaxpool.segment_pool`; the ids are a
  call argument (runtime values)."""

  _arg_names = ("num_segments", "op")

  def __init__(self, num_segments: int, op: str = "avg"):
    self._set(locals())

  def __call__(self, x: jax.Array, segment_ids: jax.Array) -> jax.Array:
    return F.segment_pool(x, segment_ids, **self._kwargs())


class AdaptiveAvgMaxPool(AdaptiveAvgPool):
  """Equivalent to partial application of :func:`jaxpool.adaptive_avgmax_pool`."""

  def __call__(self, x: jax.Array) -> jax.Array:
    return F.adaptive_avgmax_pool(x, **self._kwargs())


class AdaptiveCatAvgMaxPool(AdaptiveAvgPool):
  """Equivalent to partial application of :func:`jaxpool.adaptive_catavgmax_pool`."""

  def __call__(self, x: jax.Array) -> jax.Array:
    return F.adaptive_catavgmax_pool(x, **self._kwargs())


class BlurPool(_Pool):
  """Equivalent to partial application of :func:`jaxpool.blur_pool`."""

  _arg_names = ("kernel_size", "strides", "data_format")

  def __init__(self, kernel_size: Ints, strides: Ints = 2, *,
               data_format: str = "channels_last"):
    self._set(locals())

  def __call__(self, x: jax.Array) -> jax.Array:
    return F.blur_pool(x, **self._kwargs())


class MaxBlurPool(_Pool):
  """Equivalent to partial application of :func:`jaxpool.max_blur_pool`."""

  _arg_names = ("kernel_size", "strides", "max_pool_size", "data_format")

  def __init__(self, kernel_size: Ints, strides: Ints = 2, *, max_pool_size: Ints = 2,
               data_format: str = "channels_last"):
    self._set(locals())

  def __call__(self, x: jax.Array) -> jax.Array:
    return F.max_blur_pool(x, **self._kwargs())


class GeMPool(_Pool):
  """:func:`jaxpool.gem_pool` with its exponent an ``nnx.Param`` ``p`` (a float32 scalar,
  initial value ``p``), timm's ``GeM``; ``learnable=False`` keeps ``p`` a fixed float.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool import nnx as pool
    >>> layer = pool.GeMPool(2)
    >>> float(layer.p[...]), layer(jnp.ones((1, 4, 4, 3))).shape
    (3.0, (1, 3))
  """

  _arg_names = ("num_spatial_dims", "eps", "keepdims", "data_format")

  def __init__(self, num_spatial_dims: int, p: float = 3.0, *, eps: float = 1e-6,
               learnable: bool = True, keepdims: bool = False,
               data_format: str = "channels_last"):
    self._set(locals())
    self.p = nnx.Param(jnp.asarray(p, jnp.float32)) if learnable else p

  def __call__(self, x: jax.Array) -> jax.Array:
    p = self.p[...] if isinstance(self.p, nnx.Param) else self.p
    return F.gem_pool(x, p=p, **self._kwargs())


class FractionalMaxPool(_Pool):
  """:func:`jaxpool.fractional_max_pool` with its randomness the way ``nnx.Dropout``
  takes it: an rng stream forked from ``rngs[rng_collection]`` at construction
  (``"dropout"`` by default), or ``rngs`` passed at call time, unless ``samples`` is
  given at call time (``(*batch, C, d)``, PyTorch's ``_random_samples``).

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxpool import nnx as pool
    >>> layer = pool.FractionalMaxPool((2, 2), output_ratio=0.5, rngs=nnx.Rngs(0))
    >>> layer(jnp.ones((1, 8, 8, 3))).shape
    (1, 4, 4, 3)
  """

  _arg_names = ("window_shape", "output_size", "output_ratio", "data_format")

  def __init__(self, window_shape: Sequence[int], output_size: Sequence[int] | None = None,
               *, output_ratio: float | Sequence[float] | None = None,
               return_indices: bool = False, data_format: str = "channels_last",
               rng_collection: str = "dropout", rngs: nnx.Rngs | None = None):
    self._set(locals())
    self.return_indices = return_indices
    self.rng_collection = rng_collection
    self.rngs = rngs[rng_collection].fork() if rngs is not None else nnx.data(None)

  def __call__(self, x: jax.Array, samples: jax.Array | None = None, *,
               rngs: nnx.Rngs | None = None):
    key = None
    if samples is None:
      stream = rngs[self.rng_collection] if rngs is not None else self.rngs
      if stream is None:
        raise ValueError("FractionalMaxPool: no randomness: pass rngs to the constructor "
                         "or the call, or samples to the call.")
      key = stream()
    fn = F.fractional_max_pool_with_indices if self.return_indices else F.fractional_max_pool
    return fn(x, key=key, samples=samples, **self._kwargs())


def from_torch(module: Any, *, data_format: str = "channels_last",
               rngs: nnx.Rngs | None = None) -> nnx.Module:
  """The jaxpool nnx module equivalent to a ``torch.nn`` pooling module instance.

  Ports the classes :func:`jaxpool.linen.from_torch` ports, with identical arguments, to
  the :mod:`jaxpool.nnx` module of the same name (``MaxPool2d(return_indices=True)``
  becomes :class:`MaxPoolWithIndices`). ``rngs`` goes to a ported
  :class:`FractionalMaxPool` (which can also take ``rngs`` or ``samples`` at call time)
  and is ignored otherwise. torch is imported here only.

  Raises:
    TypeError, ValueError: as :func:`jaxpool.linen.from_torch`.

  Example:
    >>> import torch, jax.numpy as jnp
    >>> from jaxpool import nnx as pool
    >>> layer = pool.from_torch(torch.nn.AdaptiveAvgPool2d((None, 1)),
    ...                         data_format="channels_first")
    >>> layer.output_size, layer(jnp.ones((2, 3, 5, 7))).shape
    ((None, 1), (2, 3, 5, 1))
  """
  name, kwargs = _from_torch.module_spec(module, data_format)
  if name == "FractionalMaxPool":
    kwargs["rngs"] = rngs
  return globals()[name](**kwargs)
