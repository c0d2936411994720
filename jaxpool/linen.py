"""``flax.linen`` modules: each is partial application of the jaxpool function.

Every module's attributes are that function's arguments (same names, same defaults) and
its ``__call__`` calls the function with them; no parameters, no state, so ``init``
returns empty variables and ``apply`` equals the function.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxpool import linen as pool
  >>> layer = pool.MaxPool((3, 3), strides=2, padding=1)
  >>> x = jnp.ones((1, 8, 8, 4))
  >>> layer.apply({}, x).shape
  (1, 4, 4, 4)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

import jaxpool as F
from jaxpool import _from_torch

__all__ = [
    "AdaptiveAvgPool", "AdaptiveMaxPool", "AvgPool", "ChannelPool", "GlobalAvgPool",
    "GlobalMaxPool", "LPPool", "MaxPool", "MaxPoolWithIndices", "MaxUnpool", "MinPool",
    "SegmentPool", "AdaptiveAvgMaxPool", "AdaptiveCatAvgMaxPool", "BlurPool", "MaxBlurPool",
    "GeMPool", "FractionalMaxPool", "from_torch",
]

Ints = int | Sequence[int]


def _kwargs(module: nn.Module) -> dict[str, Any]:
  """The module's own fields (the function's arguments)."""
  return {f.name: getattr(module, f.name) for f in dataclasses.fields(module)
          if f.name not in ("parent", "name")}


class MaxPool(nn.Module):
  """Equivalent to partial application of :func:`jaxpool.max_pool`."""

  window_shape: Sequence[int]
  strides: Ints | None = None
  padding: Any = 0
  dilation: Ints = 1
  ceil_mode: bool = False
  data_format: str = "channels_last"

  def __call__(self, x: jax.Array) -> jax.Array:
    return F.max_pool(x, **_kwargs(self))


class MinPool(MaxPool):
  """Equivalent to partial application of :func:`jaxpool.min_pool`."""

  def __call__(self, x: jax.Array) -> jax.Array:
    return F.min_pool(x, **_kwargs(self))


class MaxPoolWithIndices(MaxPool):
  """Equivalent to partial application of :func:`jaxpool.max_pool_with_indices`.

  ``__call__(x) -> (values, indices)``.
  """

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return F.max_pool_with_indices(x, **_kwargs(self))


class AvgPool(nn.Module):
  """Equivalent to partial application of :func:`jaxpool.avg_pool`."""

  window_shape: Sequence[int]
  strides: Ints | None = None
  padding: Any = 0
  dilation: Ints = 1
  ceil_mode: bool = False
  count_include_pad: bool = True
  divisor_override: int | None = None
  data_format: str = "channels_last"

  def __call__(self, x: jax.Array) -> jax.Array:
    return F.avg_pool(x, **_kwargs(self))


class LPPool(nn.Module):
  """Equivalent to partial application of :func:`jaxpool.lp_pool`."""

  p: float
  window_shape: Sequence[int]
  strides: Ints | None = None
  padding: Any = 0
  dilation: Ints = 1
  ceil_mode: bool = False
  data_format: str = "channels_last"

  def __call__(self, x: jax.Array) -> jax.Array:
    return F.lp_pool(x, **_kwargs(self))


class MaxUnpool(nn.Module):
  """Equivalent to partial application of :func:`jaxpool.max_unpool`.

  ``__call__(values, indices, output_size=None)``; an ``output_size`` given to the call
  overrides the attribute.
  """

  window_shape: Sequence[int]
  strides: Ints | None = None
  padding: Any = 0
  output_size: Sequence[int] | None = None
  data_format: str = "channels_last"
  indices_in_window: bool = False

  def __call__(self, values: jax.Array, indices: jax.Array,
               output_size: Sequence[int] | None = None) -> jax.Array:
    return F.max_unpool(values, indices, **{**_kwargs(self), **(
        {"output_size": output_size} if output_size is not None else {})})


class AdaptiveAvgPool(nn.Module):
  """Equivalent to partial application of :func:`jaxpool.adaptive_avg_pool`."""

  output_size: Sequence[int | None]
  data_format: str = "channels_last"

  def __call__(self, x: jax.Array, lengths: jax.Array | None = None) -> jax.Array:
    return F.adaptive_avg_pool(x, lengths=lengths, **_kwargs(self))


class AdaptiveMaxPool(AdaptiveAvgPool):
  """Equivalent to partial application of :func:`jaxpool.adaptive_max_pool`, or of
  :func:`jaxpool.adaptive_max_pool_with_indices` with ``return_indices=True`` (then
  ``__call__`` returns ``(values, indices)``, as PyTorch's ``AdaptiveMaxPool2d`` does)."""

  return_indices: bool = False

  def __call__(self, x: jax.Array, lengths: jax.Array | None = None):
    fn = F.adaptive_max_pool_with_indices if self.return_indices else F.adaptive_max_pool
    return fn(x, self.output_size, lengths=lengths, data_format=self.data_format)


class GlobalAvgPool(nn.Module):
  """Equivalent to partial application of :func:`jaxpool.global_avg_pool`."""

  num_spatial_dims: int
  keepdims: bool = False
  data_format: str = "channels_last"

  def __call__(self, x: jax.Array, lengths: jax.Array | None = None) -> jax.Array:
    return F.global_avg_pool(x, lengths=lengths, **_kwargs(self))


class GlobalMaxPool(GlobalAvgPool):
  """Equivalent to partial application of :func:`jaxpool.global_max_pool`."""

  def __call__(self, x: jax.Array, lengths: jax.Array | None = None) -> jax.Array:
    return F.global_max_pool(x, lengths=lengths, **_kwargs(self))


class ChannelPool(nn.Module):
  """Equivalent to partial application of :func:`jaxpool.channel_pool`."""

  op: str = "max"
  keepdims: bool = True
  data_format: str = "channels_last"
  num_spatial_dims: int | None = None

  def __call__(self, x: jax.Array) -> jax.Array:
    return F.channel_pool(x, **_kwargs(self))


class SegmentPool(nn.Module):
  """Equivalent to partial application of :func:`jaxpool.segment_pool`; the ids are a
  call argument (runtime values)."""

  num_segments: int
  op: str = "avg"

  def __call__(self, x: jax.Array, segment_ids: jax.Array) -> jax.Array:
    return F.segment_pool(x, segment_ids, **_kwargs(self))


class AdaptiveAvgMaxPool(nn.Module):
  """Equivalent to partial application of :func:`jaxpool.adaptive_avgmax_pool`."""

  output_size: Sequence[int | None]
  data_format: str = "channels_last"

  def __call__(self, x: jax.Array) -> jax.Array:
    return F.adaptive_avgmax_pool(x, **_kwargs(self))


class AdaptiveCatAvgMaxPool(AdaptiveAvgMaxPool):
  """Equivalent to partial application of :func:`jaxpool.adaptive_catavgmax_pool`."""

  def __call__(self, x: jax.Array) -> jax.Array:
    return F.adaptive_catavgmax_pool(x, **_kwargs(self))


class BlurPool(nn.Module):
  """Equivalent to partial application of :func:`jaxpool.blur_pool`."""

  kernel_size: Ints
  strides: Ints = 2
  data_format: str = "channels_last"

  def __call__(self, x: jax.Array) -> jax.Array:
    return F.blur_pool(x, **_kwargs(self))


class MaxBlurPool(nn.Module):
  """Equivalent to partial application of :func:`jaxpool.max_blur_pool`."""

  kernel_size: Ints
  strides: Ints = 2
  max_pool_size: Ints = 2
  data_format: str = "channels_last"

  def __call__(self, x: jax.Array) -> jax.Array:
    return F.max_blur_pool(x, **_kwargs(self))


class GeMPool(nn.Module):
  """:func:`jaxpool.gem_pool` with its exponent a learnable parameter ``"p"`` (a float32
  scalar, initial value ``p``), timm's ``GeM``; ``learnable=False`` keeps ``p`` fixed
  and the module parameter-free.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxpool import linen as pool
    >>> variables = pool.GeMPool(2).init(jax.random.key(0), jnp.ones((1, 4, 4, 3)))
    >>> float(variables["params"]["p"])
    3.0
  """

  num_spatial_dims: int
  p: float = 3.0
  eps: float = 1e-6
  learnable: bool = True
  keepdims: bool = False
  data_format: str = "channels_last"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    p = self.param("p", lambda _: jnp.asarray(self.p, jnp.float32)) if self.learnable else self.p
    return F.gem_pool(x, self.num_spatial_dims, p, eps=self.eps, keepdims=self.keepdims,
                      data_format=self.data_format)


class FractionalMaxPool(nn.Module):
  """:func:`jaxpool.fractional_max_pool` with its randomness the way ``nn.Dropout`` takes
  it: a key from the ``rng_collection`` rng stream (``"dropout"`` by default, so the
  usual ``apply(..., rngs={"dropout": key})`` drives it), unless ``samples`` is given
  at call time (``(*batch, C, d)``, PyTorch's ``_random_samples``), which makes a run
  reproducible.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxpool import linen as pool
    >>> layer = pool.FractionalMaxPool((2, 2), output_ratio=0.5)
    >>> layer.apply({}, jnp.ones((1, 8, 8, 3)), rngs={"dropout": jax.random.key(0)}).shape
    (1, 4, 4, 3)
  """

  window_shape: Sequence[int]
  output_size: Sequence[int] | None = None
  output_ratio: float | Sequence[float] | None = None
  return_indices: bool = False
  data_format: str = "channels_last"
  rng_collection: str = "dropout"

  def __call__(self, x: jax.Array, samples: jax.Array | None = None):
    key = self.make_rng(self.rng_collection) if samples is None else None
    fn = F.fractional_max_pool_with_indices if self.return_indices else F.fractional_max_pool
    return fn(x, self.window_shape, self.output_size, output_ratio=self.output_ratio, key=key,
              samples=samples, data_format=self.data_format)


def from_torch(module: Any, *, data_format: str = "channels_last") -> nn.Module:
  """The jaxpool linen module equivalent to a ``torch.nn`` pooling module instance.

  Ports ``MaxPool1/2/3d`` (``return_indices=True`` gives :class:`MaxPoolWithIndices`),
  ``AvgPool*``, ``LPPool*``, ``AdaptiveAvgPool*``, ``AdaptiveMaxPool*`` (with
  ``return_indices``), ``MaxUnpool*`` and ``FractionalMaxPool2d/3d`` with identical
  arguments. The result computes what the torch module computes on the same data in the
  layout ``data_format`` (channels_last by default: transpose NCHW input, or pass
  ``data_format="channels_first"`` to feed PyTorch's layout). torch is imported here
  only; jaxpool does not depend on it.

  Args:
    module: an instance of one of the torch classes above (exactly: a subclass may
      override ``forward``, so it is refused).
    data_format: the layout the jaxpool module will be called with.

  Returns:
    An unbound :mod:`jaxpool.linen` module. A ported ``FractionalMaxPool`` draws its
    samples from the ``"dropout"`` rng collection (pass ``rngs={"dropout": key}`` to
    ``apply``) or takes ``samples`` at call time.

  Raises:
    TypeError: ``module`` is not one of the torch pooling classes above.
    ValueError: a ``FractionalMaxPool`` holds fixed ``_random_samples`` (pass them as
      ``samples`` at call time); an ``LPPool`` has ``ceil_mode=True`` (PyTorch rescales a
      partial window's sum there and jaxpool deliberately does not, so the port could
      differ silently); ``data_format`` is not a layout name.

  Example:
    >>> import torch, jax.numpy as jnp
    >>> from jaxpool import linen as pool
    >>> layer = pool.from_torch(torch.nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True))
    >>> layer
    MaxPool(
        # attributes
        window_shape = (3, 3)
        strides = (2, 2)
        padding = (1, 1)
        dilation = (1, 1)
        ceil_mode = True
        data_format = 'channels_last'
    )
    >>> layer.apply({}, jnp.ones((1, 8, 8, 3))).shape
    (1, 5, 5, 3)
  """
  name, kwargs = _from_torch.module_spec(module, data_format)
  return globals()[name](**kwargs)
