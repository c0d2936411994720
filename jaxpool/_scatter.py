"""Scatters and gathers along one axis, in three address forms.

``flat``: one index into the flattened array (XLA:CPU's serial scatter loop is fastest
so, and only a lone device may use it: the SPMD partitioner would all-gather it);
``batched``: every other axis a batching dimension (keeps batch and channel shards local
under SPMD); ``iota``: the other axes addressed by iota coordinates. Which one a program
uses is the planner's choice (:mod:`jaxpool._engine.plan`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def _batching_numbers(ndim: int, axis: int):
  """Every axis but ``axis`` is a batching dimension (as in ``vmap``, without transposes)."""
  others = tuple(a for a in range(ndim) if a != axis)
  return others, (axis,)


def scatter_batched(v: jax.Array, idx: jax.Array, m: int, axis: int,
                    add: bool = False, iota: bool = False) -> jax.Array:
  """``out[..., idx[..., n, ...], ...] = v[..., n, ...]`` per slice of the other axes
  (``+=`` with ``add``).

  Every other axis is a batching dimension, which keeps batch and channel shards local
  under SPMD partitioning; with ``iota`` they are addressed by iota coordinates instead
  (for a process with one device, which cannot be partitioned: ``checkify``'s bounds
  check of a scatter cannot read batching dimensions, while the partitioner all-gathers
  the iota form).
  """
  shape = v.shape[:axis] + (m,) + v.shape[axis + 1:]
  if iota:
    every = tuple(range(v.ndim))
    dn = jax.lax.ScatterDimensionNumbers(
        update_window_dims=(), inserted_window_dims=every, scatter_dims_to_operand_dims=every)
    idx = jax.lax.concatenate(
        [idx[..., None] if a == axis else
         jax.lax.broadcasted_iota(idx.dtype, idx.shape + (1,), a) for a in every], v.ndim)
  else:
    batch, axis_t = _batching_numbers(v.ndim, axis)
    dn = jax.lax.ScatterDimensionNumbers(
        update_window_dims=(), inserted_window_dims=axis_t,
        scatter_dims_to_operand_dims=axis_t, operand_batching_dims=batch,
        scatter_indices_batching_dims=batch)
    idx = idx[..., None]
  # lax.scatter does not wrap negative indices: FILL_OR_DROP drops every index outside
  # [0, m) (jnp's .at[] would wrap them first).
  op = jax.lax.scatter_add if add else jax.lax.scatter
  return op(jnp.zeros(shape, v.dtype), idx, v, dn, mode=jax.lax.GatherScatterMode.FILL_OR_DROP)


def gather_batched(g: jax.Array, idx: jax.Array, axis: int) -> jax.Array:
  batch, axis_t = _batching_numbers(g.ndim, axis)
  dn = jax.lax.GatherDimensionNumbers(
      offset_dims=(), collapsed_slice_dims=axis_t, start_index_map=axis_t,
      operand_batching_dims=batch, start_indices_batching_dims=batch)
  return jax.lax.gather(g, idx[..., None], dn, (1,) * g.ndim,
                        mode=jax.lax.GatherScatterMode.FILL_OR_DROP, fill_value=0)


def _flat_positions(idx: jax.Array, m: int, axis: int) -> jax.Array:
  """Each index as a position in the whole flattened output, ``(n, 1)``; -1 if invalid."""
  pre, post = math.prod(idx.shape[:axis]), math.prod(idx.shape[axis + 1:])
  shape = (pre, idx.shape[axis], post)
  i = idx.reshape(shape)
  outer = jax.lax.broadcasted_iota(np.int32, shape, 0)
  inner = jax.lax.broadcasted_iota(np.int32, shape, 2)
  flat = (outer * m + i) * post + inner
  return jnp.where((i >= 0) & (i < m), flat, -1).reshape(-1, 1)


_FLAT_SCATTER = jax.lax.ScatterDimensionNumbers(
    update_window_dims=(), inserted_window_dims=(0,), scatter_dims_to_operand_dims=(0,))
_FLAT_GATHER = jax.lax.GatherDimensionNumbers(
    offset_dims=(), collapsed_slice_dims=(0,), start_index_map=(0,))


def scatter_flat(v: jax.Array, idx: jax.Array, m: int, axis: int,
                 add: bool = False) -> jax.Array:
  """The same scatter on the flattened output: one index component instead of ``ndim``."""
  shape = v.shape[:axis] + (m,) + v.shape[axis + 1:]
  op = jax.lax.scatter_add if add else jax.lax.scatter
  out = op(jnp.zeros((math.prod(shape),), v.dtype), _flat_positions(idx, m, axis),
           v.reshape(-1), _FLAT_SCATTER, mode=jax.lax.GatherScatterMode.FILL_OR_DROP)
  return out.reshape(shape)


def gather_flat(g: jax.Array, idx: jax.Array, axis: int) -> jax.Array:
  pos = _flat_positions(idx, g.shape[axis], axis)
  out = jax.lax.gather(g.reshape(-1), pos, _FLAT_GATHER, (1,),
                       mode=jax.lax.GatherScatterMode.FILL_OR_DROP, fill_value=0)
  return out.reshape(idx.shape)


def scatter(v: jax.Array, idx: jax.Array, m: int, axis: int, address: str,
            add: bool = False) -> jax.Array:
  """``out[..., idx[..., n, ...], ...] = v[..., n, ...]`` (``+=`` with ``add``) into zeros
  ``m`` long on ``axis``, indices outside ``[0, m)`` dropped, addressed as the plan's
  ``address`` says (``"flat"``, ``"iota"`` or ``"batched"``)."""
  if address == "flat":
    return scatter_flat(v, idx, m, axis, add)
  return scatter_batched(v, idx, m, axis, add, iota=address == "iota")


def gather(g: jax.Array, idx: jax.Array, axis: int, address: str) -> jax.Array:
  """``g`` read at ``idx`` along ``axis``; 0 for indices outside ``g``'s extent."""
  if address == "flat":
    return gather_flat(g, idx, axis)
  return gather_batched(g, idx, axis)


def flat_spatial(a: jax.Array, axes: tuple[int, ...]) -> jax.Array:
  """The spatial axes (contiguous in both layouts) merged into one, at ``axes[0]``."""
  first, last = axes[0], axes[-1] + 1
  return a.reshape(a.shape[:first] + (math.prod(a.shape[first:last]),) + a.shape[last:])
