"""Reading a ``torch.nn`` pooling module: the translation that ``jaxpool.linen.from_torch``
and ``jaxpool.nnx.from_torch`` share.

:func:`module_spec` turns a torch pooling module instance into the name of the jaxpool
module that computes the same thing and that module's arguments. torch is imported
inside the call only; jaxpool never depends on it.

A module is recognised by its exact class: a subclass may override ``forward``, so it is
refused rather than ported by its parent's arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

# torch class name -> (number of spatial dims, reader of its arguments)
_Reader = Callable[[Any, int], tuple[str, dict[str, Any]]]


def _dims(value: Any, d: int, cast: type = int) -> tuple[Any, ...]:
  """torch's ``_single/_pair/_triple``: a number (or a 1-sequence) broadcast to ``d``;
  ``None`` entries (adaptive output sizes) stay."""
  values = tuple(value) if isinstance(value, Sequence) else (value,)
  if len(values) == 1:
    values = values * d
  return tuple(None if v is None else cast(v) for v in values)


def _strides(m: Any, d: int) -> tuple[int, ...] | None:
  # torch keeps a stride of None (LPPool) or () (the functional default) as "the window".
  stride = m.stride
  if stride is None or (isinstance(stride, Sequence) and len(stride) == 0):
    return None
  return _dims(stride, d)


def _max_pool(m: Any, d: int) -> tuple[str, dict[str, Any]]:
  name = "MaxPoolWithIndices" if m.return_indices else "MaxPool"
  return name, {"window_shape": _dims(m.kernel_size, d), "strides": _strides(m, d),
                "padding": _dims(m.padding, d), "dilation": _dims(m.dilation, d),
                "ceil_mode": bool(m.ceil_mode)}


def _avg_pool(m: Any, d: int) -> tuple[str, dict[str, Any]]:
  divisor = getattr(m, "divisor_override", None)  # AvgPool1d has none
  return "AvgPool", {"window_shape": _dims(m.kernel_size, d), "strides": _strides(m, d),
                     "padding": _dims(m.padding, d), "ceil_mode": bool(m.ceil_mode),
                     "count_include_pad": bool(m.count_include_pad),
                     "divisor_override": None if divisor is None else int(divisor)}


def _lp_pool(m: Any, d: int) -> tuple[str, dict[str, Any]]:
  if m.ceil_mode:
    # Porting it would be a silent difference wherever the input leaves a partial window.
    raise ValueError(
        f"from_torch: {type(m).__name__}(ceil_mode=True) rescales the sum of a partial "
        "(overhanging) window by window size / elements inside, and jaxpool's lp_pool "
        "deliberately does not; where your input sizes leave no partial window, build "
        "LPPool(p, window_shape, strides, ceil_mode=True) yourself")
  return "LPPool", {"p": float(m.norm_type), "window_shape": _dims(m.kernel_size, d),
                    "strides": _strides(m, d), "ceil_mode": bool(m.ceil_mode)}


def _adaptive_avg_pool(m: Any, d: int) -> tuple[str, dict[str, Any]]:
  return "AdaptiveAvgPool", {"output_size": _dims(m.output_size, d)}


def _adaptive_max_pool(m: Any, d: int) -> tuple[str, dict[str, Any]]:
  return "AdaptiveMaxPool", {"output_size": _dims(m.output_size, d),
                             "return_indices": bool(m.return_indices)}


def _max_unpool(m: Any, d: int) -> tuple[str, dict[str, Any]]:
  return "MaxUnpool", {"window_shape": _dims(m.kernel_size, d), "strides": _strides(m, d),
                       "padding": _dims(m.padding, d)}


def _fractional_max_pool(m: Any, d: int) -> tuple[str, dict[str, Any]]:
  if getattr(m, "_random_samples", None) is not None:
    raise ValueError(
        f"from_torch: {type(m).__name__} holds fixed _random_samples of shape "
        f"{tuple(m._random_samples.shape)}; jaxpool's FractionalMaxPool draws its samples "
        "per call: port the module without them and pass "
        "samples=jnp.asarray(m._random_samples.numpy()) at call time")
  ratio = m.output_ratio
  return "FractionalMaxPool", {
      "window_shape": _dims(m.kernel_size, d),
      "output_size": None if m.output_size is None else _dims(m.output_size, d),
      "output_ratio": None if ratio is None else _dims(ratio, d, float),
      "return_indices": bool(m.return_indices)}


_READERS: dict[str, tuple[int, _Reader]] = {
    **{f"MaxPool{d}d": (d, _max_pool) for d in (1, 2, 3)},
    **{f"AvgPool{d}d": (d, _avg_pool) for d in (1, 2, 3)},
    **{f"LPPool{d}d": (d, _lp_pool) for d in (1, 2, 3)},
    **{f"AdaptiveAvgPool{d}d": (d, _adaptive_avg_pool) for d in (1, 2, 3)},
    **{f"AdaptiveMaxPool{d}d": (d, _adaptive_max_pool) for d in (1, 2, 3)},
    **{f"MaxUnpool{d}d": (d, _max_unpool) for d in (1, 2, 3)},
    **{f"FractionalMaxPool{d}d": (d, _fractional_max_pool) for d in (2, 3)},
}


def supported() -> tuple[str, ...]:
  """The torch class names :func:`module_spec` ports."""
  return tuple(_READERS)


def module_spec(m: Any, data_format: str) -> tuple[str, dict[str, Any]]:
  """The jaxpool module name and arguments equivalent to torch module ``m``.

  Raises:
    TypeError: ``m`` is not an instance of one of torch's pooling classes (exactly), or
      ``data_format`` is not a string.
    ValueError: ``m`` holds state jaxpool's module takes elsewhere (fixed fractional
      samples), or is an ``LPPool`` with ``ceil_mode=True`` (PyTorch rescales partial
      windows there and jaxpool does not).
  """
  if data_format not in ("channels_last", "channels_first"):
    raise ValueError("from_torch: data_format must be 'channels_last' or 'channels_first', "
                     f"got {data_format!r}")
  cls = type(m)
  what = f"{cls.__module__}.{cls.__qualname__}"
  try:
    import torch.nn
  except ImportError:
    raise TypeError(f"from_torch: expected a torch.nn pooling module, got {what} "
                    "(and torch is not installed)") from None
  entry = _READERS.get(cls.__name__)
  if entry is None or getattr(torch.nn, cls.__name__, None) is not cls:
    base = next((b.__name__ for b in cls.__mro__[1:] if b.__name__ in _READERS
                 and getattr(torch.nn, b.__name__, None) is b), None)
    hint = (f" (a subclass of torch.nn.{base}: its forward may differ, so port the "
            "module you mean explicitly)" if base else "")
    raise TypeError(f"from_torch: {what} is not a torch.nn pooling module jaxpool can port"
                    f"{hint}; supported: {', '.join(_READERS)}")
  d, reader = entry
  name, kwargs = reader(m, d)
  return name, {**kwargs, "data_format": data_format}
