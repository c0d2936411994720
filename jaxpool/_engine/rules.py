"""Derivative rules and the engine's entry points.

Each entry point takes static geometry, asks the planner for the plan of each backend
and carries it out (:func:`~jaxpool._engine.dispatch.on_backends`); ``plan=`` forces one
plan on every backend (tests use it to reach every form on CPU). The entry points are
jitted with static geometry, so an eager call runs one compiled program.

Custom rules exist only where a plan's backward is not JAX's own: each is a
``jax.custom_jvp`` whose tangent map is the transpose of the fast backward
(:func:`jaxpool._linear.transposed_jvp`), so both modes of autodiff work.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxpool._engine import plan as planner
from jaxpool._engine.dispatch import on_backends
from jaxpool._engine.plan import Plan
from jaxpool._engine.select import (
  block_back,
  block_first_index,
  block_rows_first,
  chain_back,
  chain_flat_index,
  first_index,
  flat_index,
  offset_of,
  offsets,
  planes_back,
  scatter_add_at,
  window_argmax,
)
from jaxpool._engine.values import (
  axis_sum_transpose,
  mean_values,
  pool_values,
  sliced_sum,
  sum_transpose,
)
from jaxpool._engine.views import Windows
from jaxpool._geometry import AxisTaps
from jaxpool._linear import (
  computed_once,
  fence_cotangent,
  primal_form,
  transposed_jvp,
  unfold_cotangent,
)


def _inner(x, axes) -> int:
  """The element count after the last pooled axis (the planner's ``inner``)."""
  return math.prod(x.shape[max(axes) + 1:])


def _run(op, taps, x, run, plan: Plan | None, dtype=None, **kw):
  if plan is not None:
    return run(planner.forced(plan, op, taps))(x)
  return on_backends(run, planner.plans(op, taps, x.dtype if dtype is None else dtype, **kw),
                     x)


# ----------------------------------------------------------------------------- sums


def _mean_backward(x, operands, y, axes, taps, rule, form, bins):
  return functools.partial(sum_transpose, axes=axes, taps=taps, rule=rule)


def _axis_mean_backward(x, operands, y, axes, taps, rule, form, bins):
  return functools.partial(axis_sum_transpose, axes=axes, taps=taps, rule=rule)


# Window sums whose reverse mode is :func:`sum_transpose` (a tiled pool of the cotangent,
# the divisor read per tap) instead of JAX's transpose of the tiles; and the same one
# axis at a time.
def _mean(x, axes, taps, rule, form, bins):  # no defaulted argument: custom_jvp binds those
  return mean_values(x, axes, taps, rule, form, bins)


_mean_pool = transposed_jvp(_mean, _mean_backward, static=5)
_axis_mean_pool = transposed_jvp(_mean, _axis_mean_backward, static=5)


@functools.partial(jax.jit, static_argnums=(1, 2, 3),
                   static_argnames=("mapped", "source", "plan"))
def sum_pool(x: jax.Array, axes: tuple[int, ...], taps: tuple[AxisTaps, ...],
             rule: tuple[bool, int | None] | None = None, *, mapped: bool = False,
             source=None, plan: Plan | None = None) -> jax.Array:
  """Sum over the windows (padding contributes 0), divided by the avg divisor when
  ``rule = (include_pad, override)`` is given. ``mapped``: the caller maps the result
  by an expensive elementwise function (see :func:`jaxpool._engine.plan.plan`).
  ``source``: the dtype the caller widened ``x`` from (a 16-bit input summed in
  float32), which the planner reads instead of ``x``'s."""

  def run(p):
    if p.backward == "planes":
      pool = lambda x: _mean_pool(x, axes, taps, rule, p.values, p.bins)  # noqa: E731
    elif p.backward == "axis_planes":
      pool = lambda x: _axis_mean_pool(x, axes, taps, rule, p.values, p.bins)  # noqa: E731
    else:
      pool = lambda x: mean_values(x, axes, taps, rule, p.values, p.bins, p.fold)  # noqa: E731
    if p.fence:
      return lambda x: fence_cotangent(pool(x))
    if p.unfold:
      return lambda x: unfold_cotangent(pool(x), x)
    return pool

  return _run("sum", taps, x, run, plan, mapped=mapped, inner=_inner(x, axes),
              dtype=source)


@functools.partial(jax.jit, static_argnums=(1,))
def axis_sum(x: jax.Array, axis: int) -> jax.Array:
  """Sum over the whole ``axis`` (kept as size 1), in the form
  :func:`~jaxpool._engine.plan.axis_sum_form` names for each backend."""
  inner = math.prod(x.shape[axis + 1:])
  merged = (math.prod(x.shape[:axis]), x.shape[axis], inner)
  kept = x.shape[:axis] + (1,) + x.shape[axis + 1:]

  def run(form):
    if form == "folds":  # on the (outer, axis, inner) view: faster than on more dims
      return lambda x: sliced_sum(x.reshape(merged), (1,), 0).reshape(kept)
    return lambda x: jnp.sum(x, axis=axis, keepdims=True)

  return on_backends(run, planner.axis_sum_forms(x.shape[axis], inner), x)


# ----------------------------------------------------------------------------- max / min


def _select_values(x, axes, taps, kind, p):
  return pool_values(x, axes, taps, kind, p.values, p.bins, p.fold)


def _select_backward(x, operands, y, axes, taps, kind, p):
  """The max/min VJP ``g -> dx``: each window's ``g`` to its first max."""
  if p.backward == "chain":
    return functools.partial(chain_back, x, axes, taps, kind, fence=p.fence, bins=p.bins,
                             fold=p.fold)
  if p.backward == "chain_scatter":
    idx = chain_flat_index(x, axes, taps, kind, y.shape, p.fence, p.bins, p.fold, p.order,
                           p.segments)
    return functools.partial(scatter_add_at, idx=idx, axes=axes, taps=taps,
                             address=p.address)
  w = Windows(x.ndim, axes, taps)
  if p.backward == "scatter":
    # match_real: the expression of the "match" indices, so that with indices XLA
    # computes it once for both (as two expressions it computed both: pool+unpool
    # 5x5/1 p2 forward+backward took 2.3x; benchmarks/README.md, "A regression the
    # final sweep caught")
    spatial = tuple(t.size for t in taps)
    idx = (first_index(w, x, y, kind, spatial) if p.residual == "match_real" else
           flat_index(w, offsets(x, y, axes, taps, kind, p.residual), spatial))
    if p.fence:
      idx = computed_once(idx, y)
    return functools.partial(scatter_add_at, idx=idx, axes=axes, taps=taps,
                             address=p.address)
  off = offsets(x, y, axes, taps, kind, p.residual)
  if p.fence:
    off = computed_once(off, y)
  if p.backward == "block":
    return lambda g: block_back(w, g, off, x)
  return functools.partial(planes_back, w, off=off)


# Max/min pooling whose derivative routes each window's tangent from, and cotangent to,
# its first max.
_select_pool = transposed_jvp(_select_values, _select_backward, static=4)


def _in_float32(fn, x, p: Plan):
  """``fn(x, p)`` computed in float32 when the plan upcasts a 16-bit input (values,
  offsets and cotangent routing alike; XLA:CPU emulates 16-bit arithmetic op by op),
  the float outputs cast back: exact for max/min."""
  if not p.upcast:
    return fn(x, p)
  out = fn(x.astype(np.float32), dataclasses.replace(p, upcast=False))
  if isinstance(out, tuple):
    return (out[0].astype(x.dtype), *out[1:])
  return out.astype(x.dtype)


def _select(x, axes, taps, kind, p: Plan) -> jax.Array:
  if p.upcast:  # with indices, _with_indices has cast already
    return _in_float32(lambda x, p: _select(x, axes, taps, kind, p), x, p)
  if jnp.issubdtype(x.dtype, jnp.inexact) and p.residual == "block_rows":
    return _select_by_rows(x, axes, taps, kind, p)
  if jnp.issubdtype(x.dtype, jnp.inexact) and p.backward != "jax":
    return _select_pool(x, axes, taps, kind, p)
  return _select_values(x, axes, taps, kind, p)


@functools.partial(jax.jit, static_argnums=(1, 2, 3), static_argnames=("plan",))
def select_pool(x: jax.Array, axes: tuple[int, ...], taps: tuple[AxisTaps, ...], kind: str,
                *, plan: Plan | None = None) -> jax.Array:
  """Max/min pooling whose gradient sends each window's cotangent to its first max."""
  return _run(kind, taps, x, lambda p: functools.partial(_select, axes=axes, taps=taps,
                                                         kind=kind, p=p),
              plan, size=x.size, inner=_inner(x, axes))


# ----------------------------------------------------------------------------- indices


def _block_argmax_values(x, axes, taps, spatial, upcast):
  return window_argmax(x, Windows(x.ndim, axes, taps), spatial, upcast)


def _block_argmax_backward(x, operands, out, axes, taps, spatial, upcast):
  w = Windows(x.ndim, axes, taps)
  off = offset_of(w, out[1], spatial)
  return lambda g: block_back(w, g, off, x)


# :func:`window_argmax` whose values route their (co)tangent through the index.
_block_argmax = transposed_jvp(_block_argmax_values, _block_argmax_backward, static=4)


def _rows_first_values(x, axes, taps, kind):
  return block_rows_first(x, Windows(x.ndim, axes, taps), tuple(t.size for t in taps), kind)


def _rows_first_backward(x, operands, out, axes, taps, kind):
  # into memory once: fused into the routing, XLA:CPU found each window's column again
  # for every element of the cotangent (20x slower)
  off = computed_once(out[2], out[0])
  w = Windows(x.ndim, axes, taps)
  return lambda g: block_back(w, g, off, x)


# Values, flat indices and window offsets two-level by rows, the values' (co)tangent
# routed through the offsets (``residual="block_rows"``).
_rows_first = transposed_jvp(_rows_first_values, _rows_first_backward, static=3)


def _rows_selected(x, axes, taps, kind, p):
  return _rows_first(x, axes, taps, kind)[0]


# Max/min by the planned values where not differentiated; where differentiated, the
# values and their first extremes two-level by rows, found together.
_select_by_rows = primal_form(_select_values, _rows_selected, static=4)


def _rows_values(x, axes, taps, spatial, p):
  return _in_float32(lambda x, p: _rows_first_values(x, axes, taps, "max")[:2], x, p)


def _rows_differentiated(x, axes, taps, spatial, p):
  return _with_indices(x, axes, taps, spatial, planner.differentiated(p, taps, x.dtype))


# Values and indices two-level by rows where they are not differentiated; where they
# are, the plan's other index form with its values' derivative.
_block_rows = primal_form(_rows_values, _rows_differentiated, static=4)


def _with_indices(x, axes, taps, spatial, p: Plan):
  if p.indices == "block_rows":  # each of its forms casts for itself
    if p.residual == "block_rows":  # the same form, with the values' derivative
      return _in_float32(lambda x, p: _rows_first(x, axes, taps, "max")[:2], x, p)
    return _block_rows(x, axes, taps, spatial, p)
  if p.upcast and p.indices != "block":
    return _in_float32(lambda x, p: _with_indices(x, axes, taps, spatial, p), x, p)
  if p.indices == "block":
    if jnp.issubdtype(x.dtype, jnp.inexact):
      return _block_argmax(x, axes, taps, spatial, p.upcast)
    return _block_argmax_values(x, axes, taps, spatial, p.upcast)
  values = _select(x, axes, taps, "max", p)
  xs = lax.stop_gradient(x)
  if p.indices == "chain":
    return values, chain_flat_index(xs, axes, taps, "max", values.shape, p.fence, p.bins,
                                    p.fold, p.order, p.segments)
  w = Windows(x.ndim, axes, taps)
  if p.indices in ("block_match", "block_chain"):
    return values, block_first_index(xs, w, lax.stop_gradient(values), spatial,
                                     chained=p.indices == "block_chain")
  if p.indices == "match":
    idx = first_index(w, xs, lax.stop_gradient(values), "max", spatial)
  else:
    idx = flat_index(w, offsets(xs, None, axes, taps, "max", p.indices), spatial)
  return values, jnp.broadcast_to(idx, values.shape).astype(jnp.int32)


@functools.partial(jax.jit, static_argnums=(1, 2, 3), static_argnames=("plan",))
def pool_with_indices(x: jax.Array, axes: tuple[int, ...], taps: tuple[AxisTaps, ...],
                      spatial: tuple[int, ...], *,
                      plan: Plan | None = None) -> tuple[jax.Array, jax.Array]:
  """Differentiable max values and int32 flat indices of the first maxima."""
  return _run("indices", taps, x, lambda p: functools.partial(
      _with_indices, axes=axes, taps=taps, spatial=spatial, p=p), plan, size=x.size,
      inner=_inner(x, axes))
