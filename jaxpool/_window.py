"""Windowed pooling: ``max_pool``, ``min_pool``, ``avg_pool``, ``lp_pool``."""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from jaxpool import _geometry as geo
from jaxpool._engine import select_pool, sum_pool

_LOWERING = """
  Lowering, chosen per backend when the program is lowered (``jaxpool/_engine/plan.py``
  decides; measurements in ``benchmarks/README.md``). GPU and TPU: one
  ``lax.reduce_window`` over the window dims in the input's dtype, differentiated by
  JAX's own rule (``select_and_scatter`` for max/min), except where JAX has no rule
  with these semantics (dilated max/min), and on CUDA: non-overlapping windows over 9
  elements are a reshape and one reduce, and the max/min gradient of windows of at most
  9 elements (of every window in float64) routes the cotangent through pads and
  selects. CPU:
  small windows as strided slices of the input fused per tile, larger ones as
  separable slices or ``reduce_window`` per axis; max/min of float16/bfloat16 in
  float32 (exact); the max/min gradient a scatter-add on a lone device, else pads and
  selects; the avg/lp gradient a tiled pool of the cotangent. Custom derivatives are
  ``jax.custom_jvp`` rules, so both modes of autodiff work everywhere."""


def _minmax(fn: str, kind: str, x, window_shape, strides, padding, dilation, ceil_mode,
            data_format) -> jax.Array:
  x = geo.as_array(fn, x, kinds="any")
  lay, taps = geo.window_geometry(fn, x.shape, window_shape, strides, padding, dilation,
                                  ceil_mode, data_format)
  with jax.named_scope(fn):
    return select_pool(x, lay.spatial_axes, taps, kind)


def max_pool(x: ArrayLike, window_shape, strides=None, padding: Any = 0, *, dilation=1,
             ceil_mode: bool = False, data_format: str = "channels_last") -> jax.Array:
  """Max pooling over ``len(window_shape)`` spatial dims, PyTorch-exact.

  Shapes: ``x`` is ``(*batch, *spatial, C)`` (``channels_last``) or
  ``(*batch, C, *spatial)`` (``channels_first``); ``*batch`` may be empty.

{lowering}

  Args:
    x: input array (float, int or bool).
    window_shape: ``d`` ints, the window size per spatial dim.
    strides: int or ``d`` ints; ``None`` (default) means ``window_shape`` (PyTorch's
      default; ``flax.linen.max_pool`` defaults to 1).
    padding: int or ``d`` ints (symmetric, at most ``window // 2``), ``d`` ``(lo, hi)``
      pairs, ``"VALID"`` or ``"SAME"``. Padding never wins the max (it is ``-inf``, or
      the dtype's minimum for integers).
    dilation: int or ``d`` ints, spacing between window elements.
    ceil_mode: use ``ceil`` instead of ``floor`` for the output length (PyTorch rule:
      the last window must start inside the input or left padding).
    data_format: ``"channels_last"`` (default) or ``"channels_first"``.

  Returns:
    The pooled array, same dtype, spatial dims replaced by the output sizes. A window
    holding a NaN gives NaN. The gradient sends each window's cotangent to its first
    maximum in row-major window order (PyTorch CPU), also with dilation (where JAX's
    own max-pool gradient raises). Forward mode (``jvp``, ``jacfwd``, ``hessian``)
    takes each window's tangent from that same element; where JAX's own rule runs
    (GPU/TPU, see Lowering) it takes it from one of the tied maxima at exact ties.
    For padded windows too large for the tiled plan on CPU (window elements x border
    tiles > 128, e.g. 5x5/1 p2 or 3x3x3 p1), a window whose real elements all equal
    ``-inf`` may route its cotangent to padding (dropped), where PyTorch picks the
    first real element.

  Raises:
    ValueError, TypeError: bad arguments (named in the message), at trace time.

  Example:
    >>> import jax.numpy as jnp, jaxpool
    >>> x = jnp.arange(16.).reshape(1, 4, 4, 1)
    >>> jaxpool.max_pool(x, (2, 2))[0, :, :, 0]
    Array([[ 5.,  7.],
           [13., 15.]], dtype=float32)
  """
  return _minmax("max_pool", "max", x, window_shape, strides, padding, dilation, ceil_mode,
                 data_format)


def min_pool(x: ArrayLike, window_shape, strides=None, padding: Any = 0, *, dilation=1,
             ceil_mode: bool = False, data_format: str = "channels_last") -> jax.Array:
  """Min pooling; the mirror of :func:`max_pool` (same arguments and rules).

  Padding never wins the min (``+inf``, or the dtype's maximum). NaN propagates; the
  gradient goes to the first minimum in row-major window order. PyTorch has no
  min pooling; ``min_pool(x) == -max_pool(-x)`` for floats.

{lowering}

  Example:
    >>> import jax.numpy as jnp, jaxpool
    >>> jaxpool.min_pool(jnp.array([[3.], [1.], [4.], [1.], [5.]]), (2,), 1)[:, 0]
    Array([1., 1., 1., 1.], dtype=float32)
  """
  return _minmax("min_pool", "min", x, window_shape, strides, padding, dilation, ceil_mode,
                 data_format)


def avg_pool(x: ArrayLike, window_shape, strides=None, padding: Any = 0, *, dilation=1,
             ceil_mode: bool = False, count_include_pad: bool = True,
             divisor_override: int | None = None,
             data_format: str = "channels_last") -> jax.Array:
  """Average pooling with PyTorch's divisors.

  Shapes as :func:`max_pool`. Sums accumulate in float32 for float16/bfloat16 (the
  output keeps the input dtype).

{lowering}

  Args:
    x: floating input.
    window_shape, strides, padding, dilation, ceil_mode, data_format: as
      :func:`max_pool`.
    count_include_pad: divide by the window size clipped to the padded input (the part
      of a ``ceil_mode`` window past the padding is never counted), as PyTorch. With
      ``False``, divide by the number of real input elements in the window.
    divisor_override: an int > 0 that replaces every divisor.

  Returns:
    The averages. Divisors are computed from static shapes at trace time. PyTorch's
    ``avg_pool`` has no dilation; here a dilated window counts its taps by the same
    rules.

  Raises:
    ValueError, TypeError: bad arguments; integer input is a ``TypeError`` (as in
    PyTorch).

  Example:
    >>> import jax.numpy as jnp, jaxpool
    >>> x = jnp.ones((1, 3, 3, 1))
    >>> jaxpool.avg_pool(x, (2, 2), 1, 1, count_include_pad=True)[0, :, :, 0]
    Array([[0.25, 0.5 , 0.5 , 0.25],
           [0.5 , 1.  , 1.  , 0.5 ],
           [0.5 , 1.  , 1.  , 0.5 ],
           [0.25, 0.5 , 0.5 , 0.25]], dtype=float32)
  """
  fn = "avg_pool"
  x = geo.as_array(fn, x)
  lay, taps = geo.window_geometry(fn, x.shape, window_shape, strides, padding, dilation,
                                  ceil_mode, data_format)
  include = geo.check_bool(fn, "count_include_pad", count_include_pad)
  if divisor_override is not None:
    if not geo.is_int(divisor_override):
      raise TypeError(f"{fn}: divisor_override must be None or an int > 0, got "
                      f"{divisor_override!r}.")
    if divisor_override <= 0:
      raise ValueError(f"{fn}: divisor_override must be > 0, got {divisor_override!r}.")
  acc = geo.accum_dtype(x.dtype)
  with jax.named_scope(fn):
    rule = (include, divisor_override)
    return sum_pool(x.astype(acc), lay.spatial_axes, taps, rule,
                    source=x.dtype).astype(x.dtype)


def lp_pool(x: ArrayLike, p: float, window_shape, strides=None, padding: Any = 0, *,
            dilation=1, ceil_mode: bool = False,
            data_format: str = "channels_last") -> jax.Array:
  """Power-average pooling: ``(sum over window of x**p) ** (1/p)``.

  Shapes as :func:`max_pool`; padding contributes 0. With ``ceil_mode=False`` and no
  padding this equals PyTorch's ``lp_pool*d``. With ``ceil_mode=True`` PyTorch scales
  partial windows by ``window_size / real_size`` (it computes an average times the
  full window size); jaxpool deliberately sums the real elements only.
  As in PyTorch, ``x**p`` of a negative ``x`` with non-integer ``p`` is NaN.

{lowering}

  Args:
    x: floating input.
    p: the norm degree, a finite float > 0 (``p=inf`` is :func:`max_pool`).
    window_shape, strides, padding, dilation, ceil_mode, data_format: as
      :func:`max_pool`.

  Returns:
    The pooled array, same dtype (float32 accumulation for float16/bfloat16).

  Example:
    >>> import jax.numpy as jnp, jaxpool
    >>> jaxpool.lp_pool(jnp.array([[3.], [4.]]), 2.0, (2,))[:, 0]
    Array([5.], dtype=float32)
  """
  fn = "lp_pool"
  if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
    raise TypeError(f"{fn}: p must be a finite float > 0, got {p!r}.")
  if math.isinf(p):
    raise ValueError(f"{fn}: p must be finite, got p={p!r}; for p=inf use jaxpool.max_pool "
                     f"(of abs(x)).")
  if not p > 0:
    raise ValueError(f"{fn}: p must be a finite float > 0, got p={p!r}.")
  x = geo.as_array(fn, x)
  lay, taps = geo.window_geometry(fn, x.shape, window_shape, strides, padding, dilation,
                                  ceil_mode, data_format)
  xa = x.astype(geo.accum_dtype(x.dtype))
  p = float(p)
  with jax.named_scope(fn):
    xp = lax.integer_pow(xa, int(p)) if p.is_integer() else _power(xa, p)
    total = sum_pool(xp, lay.spatial_axes, taps, mapped=p != 1, source=x.dtype)
    out = total if p == 1 else _power(total, 1 / p)
    return out.astype(x.dtype)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _power(a: jax.Array, q: float) -> jax.Array:
  """``a ** q`` whose derivative at ``a == 0`` is 0, not ``inf * 0 = NaN``.

  A window of zeros (every window after a ReLU that kills it) has a zero sum, and
  ``d/da a**(1/p)`` is infinite there. PyTorch's ``lp_pool`` goes through
  ``relu(abs(sum))``, whose derivative at 0 is 0: so does this. Negative ``a`` keeps
  ``a ** q`` (NaN for non-integer ``q``), as PyTorch. The derivative is
  ``q * a**q / a``: XLA:CPU's ``pow`` with an exponent other than 0.5 is a scalar loop,
  several times slower than the division.
  """
  zero = a == 0
  safe = jnp.where(zero, np.ones((), a.dtype), a)
  return jnp.where(zero, np.zeros((), a.dtype), safe ** np.array(q, a.dtype))


@_power.defjvp
def _power_jvp(q, primals, tangents):
  (a,), (da,) = primals, tangents
  y = _power(a, q)
  zero = a == 0
  slope = np.array(q, a.dtype) * y / jnp.where(zero, np.ones((), a.dtype), a)
  return y, jnp.where(zero, np.zeros((), a.dtype), slope) * da


for _f in (max_pool, min_pool, avg_pool, lp_pool):
  if _f.__doc__:  # None under python -OO
    _f.__doc__ = _f.__doc__.replace("{lowering}", _LOWERING.strip("\n"))
del _f
