"""Argument normalisation and trace-time geometry shared by every pooling op.

Every public function turns its arguments into a :class:`Layout` (where the batch,
channel and spatial axes are) plus one :class:`AxisTaps` per spatial axis (which
input positions each output position reads). Both are frozen and hashable, so they
can be static arguments of ``jax.custom_jvp`` and ``jax.jit``. All numbers here are
Python ints or NumPy arrays computed from static shapes; nothing is traced.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

DATA_FORMATS = ("channels_last", "channels_first")


# ----------------------------------------------------------------------------- scalars


def is_int(v: Any) -> bool:
  return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def check_bool(fn: str, name: str, value: Any) -> bool:
  if not isinstance(value, (bool, np.bool_)):
    raise TypeError(f"{fn}: {name} must be a bool, got {value!r} ({type(value).__name__}).")
  return bool(value)


def int_tuple(fn: str, name: str, value: Any, d: int, minimum: int) -> tuple[int, ...]:
  """An int (broadcast to ``d``) or ``d`` ints, each ``>= minimum``."""
  if is_int(value):
    out = (int(value),) * d
  elif isinstance(value, Sequence) and not isinstance(value, str):
    if not all(is_int(v) for v in value):
      raise TypeError(f"{fn}: {name} must be an int or a sequence of {d} ints, got {value!r}.")
    if len(value) != d:
      raise ValueError(
          f"{fn}: {name} must have {d} entries (one per spatial dim), got {len(value)}: "
          f"{value!r}.")
    out = tuple(int(v) for v in value)
  else:
    raise TypeError(f"{fn}: {name} must be an int or a sequence of {d} ints, got {value!r}.")
  for i, v in enumerate(out):
    if v < minimum:
      raise ValueError(f"{fn}: {name} must be >= {minimum} on every spatial dim, got "
                       f"{name}={value!r} ({v} on spatial dim {i}).")
  return out


def shape_tuple(fn: str, name: str, value: Any, minimum: int = 1,
                allow_none: bool = False, ndim: int | None = None) -> tuple[int | None, ...]:
  """A non-empty sequence of ints (the length fixes the number of spatial dims).

  A bare int (PyTorch's shorthand) is refused: its meaning depends on a guess of the
  number of spatial dims. The message shows the tuple to write for an input of ``ndim``
  dims with one batch and one channel axis.
  """
  if is_int(value):
    guess = (int(value),) * min(3, max(1, (ndim or 4) - 2))
    raise TypeError(f"{fn}: {name} must be a sequence of ints, one per spatial dim (their "
                    f"number is its length), got the bare int {value!r}; did you mean "
                    f"{guess}?")
  if not isinstance(value, Sequence) or isinstance(value, str) or not value:
    raise TypeError(f"{fn}: {name} must be a non-empty sequence of ints (its length is the "
                    f"number of spatial dims), got {value!r}.")
  out = []
  for i, v in enumerate(value):
    if v is None and allow_none:
      out.append(None)
      continue
    if not is_int(v):
      raise TypeError(f"{fn}: {name} must hold ints{' or None' if allow_none else ''}, "
                      f"got {value!r}.")
    if v < minimum:
      raise ValueError(f"{fn}: {name} entries must be >= {minimum}, got {name}={value!r} "
                       f"({v} on spatial dim {i}).")
    out.append(int(v))
  return tuple(out)


# ----------------------------------------------------------------------------- layout


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where the spatial and channel axes of ``x`` are."""

  ndim: int
  spatial_axes: tuple[int, ...]
  channel_axis: int

  @property
  def num_spatial(self) -> int:
    return len(self.spatial_axes)

  def spatial_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(shape[a] for a in self.spatial_axes)

  def with_spatial(self, shape: Sequence[int], spatial: Sequence[int]) -> tuple[int, ...]:
    out = list(shape)
    for a, n in zip(self.spatial_axes, spatial):
      out[a] = n
    return tuple(out)


def layout(fn: str, shape: Sequence[int], num_spatial: int, data_format: Any) -> Layout:
  if data_format not in DATA_FORMATS:
    raise ValueError(f"{fn}: data_format must be one of {DATA_FORMATS}, got {data_format!r}.")
  ndim = len(shape)
  if ndim < num_spatial + 1:
    raise ValueError(
        f"{fn}: input must have at least {num_spatial + 1} dims ({num_spatial} spatial + "
        f"channel) for {num_spatial} spatial dims, got shape {tuple(shape)}.")
  if data_format == "channels_last":
    spatial = tuple(range(ndim - 1 - num_spatial, ndim - 1))
    channel = ndim - 1
  else:
    spatial = tuple(range(ndim - num_spatial, ndim))
    channel = ndim - 1 - num_spatial
  return Layout(ndim, spatial, channel)


# ----------------------------------------------------------------------------- taps


def adaptive_bounds(size: int, out: int) -> tuple[np.ndarray, np.ndarray]:
  """PyTorch's adaptive bins of an axis of ``size`` into ``out``: bin ``o`` reads
  ``[starts[o], ends[o])``, ``starts = o * size // out``, ``ends = ceil((o + 1) * size /
  out)``."""
  o = np.arange(out)
  return (o * size) // out, -((-(o + 1) * size) // out)


@dataclasses.dataclass(frozen=True)
class AxisTaps:
  """Which input positions each output position reads along one spatial axis.

  Regular windows (``starts`` is None) read ``-pad_lo + i*stride + j*dilation`` for
  ``j < window``; irregular ones (adaptive bins) read ``starts[i] + min(j, widths[i]-1)``.
  Positions outside ``[0, size)`` are padding.
  """

  size: int
  out: int
  window: int
  stride: int = 1
  dilation: int = 1
  pad_lo: int = 0
  pad_hi: int = 0
  starts: tuple[int, ...] | None = None
  widths: tuple[int, ...] | None = None

  @property
  def regular(self) -> bool:
    return self.starts is None

  @property
  def span(self) -> int:
    return self.dilation * (self.window - 1) + 1

  @property
  def identity(self) -> bool:
    return (self.regular and self.window == 1 and self.stride == 1 and self.pad_lo == 0
            and self.out == self.size)

  def positions(self) -> np.ndarray:
    """``(out, window)`` input positions, padding included (may be < 0 or >= size)."""
    j = np.arange(self.window)
    if self.regular:
      i = np.arange(self.out)
      return -self.pad_lo + i[:, None] * self.stride + j[None, :] * self.dilation
    starts = np.asarray(self.starts)[:, None]
    widths = np.asarray(self.widths)[:, None]
    return starts + np.minimum(j[None, :], widths - 1)

  def real(self) -> np.ndarray:
    """``(out, window)`` bool: the tap reads a real input element (not padding)."""
    pos = self.positions()
    real = (pos >= 0) & (pos < self.size)
    if not self.regular:
      real &= np.arange(self.window)[None, :] < np.asarray(self.widths)[:, None]
    return real

  def count_of(self, o, include_pad: bool):
    """:meth:`count` as integer arithmetic on output positions ``o`` (NumPy or traced).

    Computed in the graph from an iota, a divisor costs nothing to load: a broadcast
    constant divisor array measured 4x slower than the division it feeds on CPU.
    """
    if not self.regular:
      return ((o + 1) * self.size + self.out - 1) // self.out - (o * self.size) // self.out
    lo, hi = (-self.pad_lo, self.size + self.pad_hi) if include_pad else (0, self.size)
    first = o * self.stride - self.pad_lo
    d = self.dilation
    j_min = jnp.maximum(0, -((first - lo) // d))          # ceil((lo - first) / d)
    j_max = jnp.minimum(self.window - 1, (hi - 1 - first) // d)
    return jnp.maximum(j_max - j_min + 1, 0)

  def count(self, include_pad: bool) -> np.ndarray:
    """Per output position, the avg-pool divisor along this axis (PyTorch's rule)."""
    if not include_pad or not self.regular:
      return self.real().sum(axis=1)
    pos = self.positions()
    return ((pos >= -self.pad_lo) & (pos < self.size + self.pad_hi)).sum(axis=1)


# ----------------------------------------------------------------------------- windows


def parse_padding(fn: str, padding: Any, window: tuple[int, ...], strides: tuple[int, ...],
             dilation: tuple[int, ...], sizes: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
  d = len(window)
  if isinstance(padding, str):
    mode = padding.upper()
    if mode == "VALID":
      return ((0, 0),) * d
    if mode == "SAME":
      pads = []
      for n, k, s, r in zip(sizes, window, strides, dilation):
        total = max((-(-n // s) - 1) * s + r * (k - 1) + 1 - n, 0)
        pads.append((total // 2, total - total // 2))
      return tuple(pads)
    raise ValueError(f"{fn}: padding string must be 'VALID' or 'SAME', got {padding!r}.")
  given = padding
  if is_int(padding):
    padding = (int(padding),) * d
  if not isinstance(padding, Sequence) or len(padding) != d:
    raise TypeError(f"{fn}: padding must be an int, {d} ints, {d} (lo, hi) pairs, 'VALID' or "
                    f"'SAME', got {padding!r}.")
  pads = []
  for i, p in enumerate(padding):
    if is_int(p):
      if p < 0:
        raise ValueError(f"{fn}: padding must be >= 0, got padding={given!r} ({p} on spatial "
                         f"dim {i}).")
      if p > window[i] // 2:
        raise ValueError(
            f"{fn}: padding={given!r} exceeds window_shape // 2 = "
            f"{tuple(k // 2 for k in window)} on spatial dim {i} (pad {p} > limit "
            f"{window[i] // 2}); pass explicit (lo, hi) pairs for larger padding.")
      pads.append((int(p), int(p)))
    elif (isinstance(p, Sequence) and not isinstance(p, str) and len(p) == 2
          and all(is_int(q) for q in p)):
      if p[0] < 0 or p[1] < 0:
        raise ValueError(f"{fn}: padding pairs must be >= 0, got padding={padding!r} "
                         f"({tuple(p)} on spatial dim {i}).")
      pads.append((int(p[0]), int(p[1])))
    else:
      raise TypeError(f"{fn}: padding must be an int, {d} ints, {d} (lo, hi) pairs, 'VALID' "
                      f"or 'SAME', got {padding!r}.")
  return tuple(pads)


def output_length(size: int, window: int, stride: int, dilation: int, lo: int, hi: int,
                  ceil_mode: bool) -> int:
  """PyTorch's ``pooling_output_shape_pad_lr``."""
  span = dilation * (window - 1) + 1
  num = size + lo + hi - span + (stride - 1 if ceil_mode else 0)
  out = num // stride + 1
  if ceil_mode and (out - 1) * stride >= size + lo:
    out -= 1
  return out


def window_taps(fn: str, spatial: tuple[int, ...], window_shape: Any, strides: Any,
                padding: Any, dilation: Any, ceil_mode: Any) -> tuple[AxisTaps, ...]:
  """Validate window arguments for an input of spatial shape ``spatial``."""
  d = len(spatial)
  window = int_tuple(fn, "window_shape", window_shape, d, 1)
  stride = window if strides is None else int_tuple(fn, "strides", strides, d, 1)
  dil = int_tuple(fn, "dilation", dilation, d, 1)
  ceil_mode = check_bool(fn, "ceil_mode", ceil_mode)
  pads = parse_padding(fn, padding, window, stride, dil, spatial)
  taps = []
  for i, (n, k, s, r, (lo, hi)) in enumerate(zip(spatial, window, stride, dil, pads)):
    out = output_length(n, k, s, r, lo, hi, ceil_mode)
    if out < 1:
      raise ValueError(
          f"{fn}: output size would be {out} < 1 on spatial dim {i}: input size {n}, "
          f"window {k} (dilation {r}, effective {r * (k - 1) + 1}), stride {s}, padding "
          f"({lo}, {hi}). Use a smaller window or more padding.")
    # One window reads the same positions at any stride: its taps take the stride of
    # non-overlapping windows, so that every such geometry plans alike. (At stride 1,
    # XLA:CPU turns a whole-axis reduce_window into a reduce that drops NaN.)
    t = AxisTaps(n, out, k, s, r, lo, hi)
    t = dataclasses.replace(t, stride=max(s, t.span)) if out == 1 else t
    empty = np.flatnonzero(~t.real().any(axis=1))
    if empty.size:
      raise ValueError(
          f"{fn}: output position {int(empty[0])} on spatial dim {i} reads only padding "
          f"(input size {n}, window {k}, stride {s}, dilation {r}, padding ({lo}, {hi})); "
          f"reduce the padding or the dilation.")
    taps.append(t)
  return tuple(taps)


def window_geometry(fn: str, shape: Sequence[int], window_shape: Any, strides: Any,
                    padding: Any, dilation: Any, ceil_mode: Any,
                    data_format: Any) -> tuple[Layout, tuple[AxisTaps, ...]]:
  window = shape_tuple(fn, "window_shape", window_shape, ndim=len(shape))
  lay = layout(fn, shape, len(window), data_format)
  taps = window_taps(fn, lay.spatial_shape(shape), window, strides, padding, dilation,
                     ceil_mode)
  return lay, taps


def spatial_volume(fn: str, spatial: Sequence[int]) -> int:
  vol = math.prod(spatial)
  if vol > np.iinfo(np.int32).max:
    raise ValueError(f"{fn}: spatial volume {' x '.join(map(str, spatial))} = {vol} does not fit "
                     f"the int32 indices (max {np.iinfo(np.int32).max}).")
  return vol


def row_major_strides(spatial: Sequence[int]) -> tuple[int, ...]:
  out, acc = [], 1
  for n in reversed(spatial):
    out.append(acc)
    acc *= n
  return tuple(reversed(out))



def as_array(fn: str, x, kinds: str = "float"):
  """``x`` as a ``jax.Array``; ``kinds`` is "float" (inexact only) or "any" (also int/bool)."""
  if not hasattr(x, "shape") or not hasattr(x, "dtype"):
    x = jnp.asarray(x)
  dtype = np.dtype(x.dtype)
  if jnp.issubdtype(dtype, jnp.complexfloating) or (
      kinds == "float" and not jnp.issubdtype(dtype, jnp.floating)):
    wanted = "a floating dtype" if kinds == "float" else "a real (float, int or bool) dtype"
    raise TypeError(f"{fn}: input must have {wanted}, got dtype {dtype}.")
  return jnp.asarray(x)


def accum_dtype(dtype) -> np.dtype:
  """float16/bfloat16 accumulate in float32; wider floats keep their precision."""
  dtype = np.dtype(dtype)
  return np.dtype(np.float32) if dtype.itemsize < 4 else dtype
