"""Separable window reductions: the one compute core behind every pooling op.

A pooling window is a product of per-axis tap sets, so every reduction here runs one
spatial axis at a time (last axis first). Along one axis the windows are viewed in one
of three ways, chosen at trace time from the static :class:`~jaxpool._geometry.AxisTaps`:

* ``reshape``: non-overlapping, undilated windows (``stride >= window``): pad or crop
  the axis to ``out * stride``, split it into ``(out, stride)`` and keep ``window``.
  Pure layout ops; XLA fuses them into the reduction.
* ``slices``: up to ``MAX_UNROLL`` strided slices, one per window offset, combined
  elementwise (a fused loop on CPU/GPU/TPU, no ``reduce_window``).
* ``gather``: one static ``take`` of the ``(out, window)`` positions (adaptive bins
  of two widths, or very large overlapping windows).

Values-only max/min/sum of large overlapping windows use a 1-D ``lax.reduce_window``.

Max/min selection is row-major first-max: along each axis the first offset whose value
equals the axis maximum (or is NaN) wins, and processing the last axis first makes the
combined choice the first maximum in row-major window order (PyTorch's rule). The same
per-axis offsets select tangents (the JVP of max pooling, which JAX transposes into a
scatter-free backward of pads and selects) and carry flat indices for
``max_pool_with_indices``. No op here is backend specific: all lower to standard HLO
(pad, slice, reshape, select, reduce, gather) on CPU, GPU and TPU.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxpool._geometry import AxisTaps

MAX_UNROLL = 16
_COMBINE = {"max": lax.max, "min": lax.min, "sum": lax.add}


def identity(kind: str, dtype) -> np.ndarray:
  """The reduction's identity as a NumPy scalar of ``dtype`` (keeps JAX's AD rules)."""
  dtype = np.dtype(dtype)
  if kind == "sum":
    return np.zeros((), dtype)
  if dtype == np.bool_:
    return np.array(kind == "min")
  if jnp.issubdtype(dtype, jnp.integer):
    info = np.iinfo(dtype)
    return np.array(info.min if kind == "max" else info.max, dtype)
  return np.array(-np.inf if kind == "max" else np.inf, dtype)


def _mode(t: AxisTaps, need_offsets: bool) -> str:
  if t.regular and t.dilation == 1 and t.stride >= t.window:
    return "reshape"
  if t.regular and t.window <= MAX_UNROLL:
    return "slices"
  if t.regular and not need_offsets:
    return "reduce_window"
  return "gather"


def _pad_axis(x: jax.Array, axis: int, lo: int, hi: int, fill: np.ndarray) -> jax.Array:
  if lo == 0 and hi == 0:
    return x
  config = [(0, 0, 0)] * x.ndim
  config[axis] = (lo, hi, 0)
  return lax.pad(x, fill.astype(x.dtype), config)


def _expand(a: np.ndarray, ndim: int, axis: int, n: int) -> np.ndarray:
  """Place a static ``(out, ...)`` array at ``axis`` of an ``ndim`` array."""
  shape = [1] * ndim
  shape[axis:axis + n] = a.shape
  return a.reshape(shape)


def _stack(x: jax.Array, axis: int, t: AxisTaps, fill: np.ndarray, mode: str) -> jax.Array:
  """Windows along ``axis`` as a new axis ``axis + 1``: ``(..., out, window, ...)``."""
  shape = x.shape
  if mode == "reshape":
    total = t.out * t.stride
    xp = _pad_axis(x, axis, t.pad_lo, total - t.size - t.pad_lo, fill)
    xw = xp.reshape(shape[:axis] + (t.out, t.stride) + shape[axis + 1:])
    if t.stride > t.window:
      xw = lax.slice_in_dim(xw, 0, t.window, axis=axis + 1)
    return xw
  pos = t.positions()
  xw = jnp.take(x, np.clip(pos, 0, t.size - 1).ravel(), axis=axis, mode="clip")
  xw = xw.reshape(shape[:axis] + pos.shape + shape[axis + 1:])
  real = t.real()
  if not real.all():
    xw = jnp.where(_expand(real, xw.ndim, axis, 2), xw, fill.astype(x.dtype))
  return xw


def _slices(x: jax.Array, axis: int, t: AxisTaps, fill: np.ndarray) -> list[jax.Array]:
  """One strided slice per window offset, each ``(..., out, ...)``."""
  length = (t.out - 1) * t.stride + t.span
  xp = _pad_axis(x, axis, t.pad_lo, length - t.size - t.pad_lo, fill)
  last = (t.out - 1) * t.stride + 1
  return [lax.slice_in_dim(xp, j * t.dilation, j * t.dilation + last, t.stride, axis)
          for j in range(t.window)]


def _reduce_axis(x: jax.Array, axis: int, t: AxisTaps, kind: str, mode: str) -> jax.Array:
  fill = identity(kind, x.dtype)
  if mode == "slices":
    return functools.reduce(_COMBINE[kind], _slices(x, axis, t, fill))
  if mode == "reduce_window":
    length = (t.out - 1) * t.stride + t.span
    xp = _pad_axis(x, axis, t.pad_lo, length - t.size - t.pad_lo, fill)
    dims, strides, dil = ([1] * x.ndim for _ in range(3))
    dims[axis], strides[axis], dil[axis] = t.window, t.stride, t.dilation
    return lax.reduce_window(xp, fill, _COMBINE[kind], dims, strides, "VALID",
                             window_dilation=dil)
  xw = _stack(x, axis, t, fill, mode)
  if kind == "sum":
    return jnp.sum(xw, axis=axis + 1)
  return (jnp.max if kind == "max" else jnp.min)(xw, axis=axis + 1)


def _matches(xw: jax.Array, y: jax.Array) -> jax.Array:
  hit = xw == y
  if jnp.issubdtype(xw.dtype, jnp.inexact):
    hit = hit | jnp.isnan(xw)
  return hit


def _first_match(x: jax.Array, y: jax.Array, axis: int, t: AxisTaps, kind: str,
                 mode: str) -> jax.Array:
  """Per output position, the first real window offset holding ``y`` (or a NaN)."""
  fill = identity(kind, x.dtype)
  real = t.real()
  if mode == "slices":
    off = jnp.zeros(y.shape, jnp.int32)
    for j, xs in reversed(list(enumerate(_slices(x, axis, t, fill)))):
      hit = _matches(xs, y)
      if not real[:, j].all():
        hit = hit & _expand(real[:, j], y.ndim, axis, 1)
      off = jnp.where(hit, np.int32(j), off)
    return off
  xw = _stack(x, axis, t, fill, mode)
  hit = _matches(xw, jnp.expand_dims(y, axis + 1))
  if not real.all():
    hit = hit & _expand(real, xw.ndim, axis, 2)
  iota = _expand(np.arange(t.window, dtype=np.int32), xw.ndim, axis + 1, 1)
  return jnp.min(jnp.where(hit, iota, np.int32(t.window)), axis=axis + 1)


def _select(e: jax.Array, off: jax.Array, axis: int, t: AxisTaps, mode: str) -> jax.Array:
  """``e``'s value at window offset ``off`` along ``axis`` (linear in ``e``)."""
  zero = np.zeros((), e.dtype)
  if mode == "slices":
    parts = _slices(e, axis, t, zero)
    out = parts[0]
    for j in range(1, t.window):
      out = jnp.where(off == j, parts[j], out)
    return out
  ew = _stack(e, axis, t, zero, mode)
  iota = _expand(np.arange(t.window, dtype=np.int32), ew.ndim, axis + 1, 1)
  picked = jnp.where(jnp.expand_dims(off, axis + 1) == iota, ew, zero)
  return jnp.sum(picked, axis=axis + 1, dtype=e.dtype)  # int32 stays int32 under x64


def select_chain(x: jax.Array, axes: Sequence[int], taps: Sequence[AxisTaps], kind: str,
                 extras: Sequence[jax.Array] = ()) -> tuple[jax.Array, list[jax.Array]]:
  """Max/min over the windows, and each of ``extras`` at the first-max position.

  ``extras`` must broadcast against ``x`` (they are padded with 0 and never selected
  from padding).
  """
  extras = list(extras)
  for axis, t in reversed(list(zip(axes, taps))):
    if t.identity:
      continue
    mode = _mode(t, need_offsets=bool(extras))
    y = _reduce_axis(x, axis, t, kind, mode)
    if extras:
      off = _first_match(x, y, axis, t, kind, mode)
      extras = [_select(e, off, axis, t, mode) for e in extras]
    x = y
  return x, extras


def sum_pool(x: jax.Array, axes: Sequence[int], taps: Sequence[AxisTaps]) -> jax.Array:
  """Sum over the windows (padding contributes 0)."""
  for axis, t in reversed(list(zip(axes, taps))):
    if not t.identity:
      x = _reduce_axis(x, axis, t, "sum", _mode(t, need_offsets=False))
  return x


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def _select_pool(x: jax.Array, axes: tuple[int, ...], taps: tuple[AxisTaps, ...],
                 kind: str) -> jax.Array:
  return select_chain(x, axes, taps, kind)[0]


@_select_pool.defjvp
def _select_pool_jvp(axes, taps, kind, primals, tangents):
  (x,), (t,) = primals, tangents
  y, (ty,) = select_chain(x, axes, taps, kind, [t])
  return y, ty


def select_pool(x: jax.Array, axes: tuple[int, ...], taps: tuple[AxisTaps, ...],
                kind: str) -> jax.Array:
  """Max/min pooling whose derivative sends each window's tangent to its first max.

  The JVP is linear in the tangent (strided slices and selects), so reverse mode is
  JAX's transpose of it: pads with interior padding and selects, no scatter. Works for
  dilated windows, where JAX's own ``reduce_window`` max has no derivative.
  """
  if jnp.issubdtype(x.dtype, jnp.inexact):
    return _select_pool(x, axes, taps, kind)
  return select_chain(x, axes, taps, kind)[0]
