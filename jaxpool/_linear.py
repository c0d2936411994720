"""Linear maps, their transposes, and custom derivatives built from them.

Every custom derivative in jaxpool is a ``jax.custom_jvp`` (forward mode, ``jacfwd``,
``hessian`` and ``linearize`` work) whose tangent map is the transpose of a fast
backward: reverse mode transposes the tangent map back into that backward.

Inside ``shard_map`` (``check_vma=True``) every value carries the mesh axes it varies
over, and a transpose must be typed with them: :func:`transpose` takes the input's type
from a value of that type and casts the cotangent to the varying axes the map's output
has. Outside ``shard_map`` both are no-ops.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def _varying(a) -> frozenset:
  """The manual mesh axes that ``a`` (a value or an abstract value) varies over."""
  typeof = getattr(jax, "typeof", None)  # absent before JAX tracked varying axes
  aval = a if isinstance(a, jax.ShapeDtypeStruct) or typeof is None else typeof(a)
  mat = getattr(aval, "manual_axis_type", None)
  if mat is not None:
    return frozenset(mat.varying)
  return frozenset(getattr(aval, "vma", None) or ())


def vary_like(a: jax.Array, *refs) -> jax.Array:
  """``a`` marked as varying over every manual mesh axis that any of ``refs`` varies over.

  A value made from constants (``jnp.zeros``) does not vary; combining it with a value
  that does is fine, but a transpose or a custom rule must state the type exactly.
  """
  names = frozenset().union(*map(_varying, refs)) - _varying(a)
  if not names:
    return a
  names = tuple(sorted(names))
  if hasattr(lax, "pcast"):
    return lax.pcast(a, names, to="varying")
  return lax.pvary(a, names)  # the same cast, before its rename


def transpose(fn: Callable, like: jax.Array, ct: jax.Array) -> jax.Array:
  """``fn``'s transpose applied to ``ct``, for ``fn`` linear in one input typed as ``like``.

  ``like`` only lends its type (shape, dtype, varying axes); it is not read.
  """
  out = jax.eval_shape(fn, like)
  return jax.linear_transpose(fn, like)(vary_like(ct, out))[0]


def transposed_jvp(primal: Callable, backward: Callable, *, operands: int = 0,
                   static: int = 0) -> Callable:
  """A ``jax.custom_jvp`` of ``primal(x, *operands, *static)`` whose tangent map (in
  ``x``) is the transpose of the linear map ``backward(x, operands, out, *static)``
  returns (``g -> dx``, ``g`` shaped as the first output).

  ``operands`` are integer arrays (indices) that get no derivative; ``static`` are
  hashable arguments. ``primal`` returns one array, or a tuple whose entries after the
  first are integer (no derivative). ``backward`` runs in the primal computation, so
  what it reads of ``x`` and the outputs (offsets, indices) is computed once and kept
  for reverse mode, as a ``custom_vjp``'s residual would be. Higher derivatives work:
  the rule calls the rule-bearing function itself, and the tangent map is linear.
  """
  first = 1 + operands
  rule = jax.custom_jvp(primal, nondiff_argnums=tuple(range(first, first + static)))

  @rule.defjvp
  def _jvp(*args):
    statics, (primals, tangents) = args[:-2], args[-2:]
    out = rule(*primals, *statics)
    y = out[0] if isinstance(out, tuple) else out
    if jnp.issubdtype(y.dtype, jnp.inexact):
      dy = transpose(backward(primals[0], primals[1:], out, *statics), y, tangents[0])
    else:
      dy = _no_tangent(y)
    if not isinstance(out, tuple):
      return out, dy
    return out, (dy, *map(_no_tangent, out[1:]))

  return rule


def primal_form(fast: Callable, differentiated: Callable, *, static: int = 0) -> Callable:
  """A ``jax.custom_jvp`` of ``fast(x, *static)`` whose rule is ``differentiated``'s JVP.

  The two compute the same outputs: ``fast`` is a form without a derivative of the
  convention's kind, run where the op is not differentiated; ``differentiated`` (a
  planned form with its own rule) runs where it is, and what reverse mode keeps is its
  residuals. A loss that reads only some outputs lets XLA drop the rest of
  ``differentiated``'s work, as it would without this rule.
  """
  rule = jax.custom_jvp(fast, nondiff_argnums=tuple(range(1, 1 + static)))

  @rule.defjvp
  def _jvp(*args):
    statics, (primals, tangents) = args[:-2], args[-2:]
    return jax.jvp(lambda x: differentiated(x, *statics), primals, tangents)

  return rule


def _no_tangent(a) -> jax.Array:
  """The (zero) tangent of an integer output, varying like it."""
  return vary_like(np.zeros(a.shape, jax.dtypes.float0), a)


def computed_once(a: jax.Array, key: jax.Array) -> jax.Array:
  """``a``, computed into memory once rather than fused into each of its readers.

  XLA:CPU drops ``lax.optimization_barrier`` before fusing, so a value computed by an
  expensive map (``lp_pool``'s cotangent, made from the window sums) is recomputed in
  every tap of a window-sum transpose that reads it, or inside a serial scatter loop.
  A conditional is a fusion boundary: ``a`` passes through one whose predicate is
  always true, read at run time from the bits of ``key``'s first element so that it
  cannot be folded (the other branch, never taken, negates; equal branches would be
  merged). Linear in ``a``. Under ``vmap`` the predicate stays one scalar for the whole
  batch (:func:`_runtime_true`), so the conditional stays one: a batched predicate
  would turn it into a select, which XLA fuses again, and whose operands JAX wraps in
  ``stop_gradient``, which a transpose cannot cross.
  """
  if key.size == 0:
    return a
  return lax.cond(_runtime_true(key), lambda v: v, lax.neg, a)


def _runtime_true(key: jax.Array) -> jax.Array:
  """A boolean scalar that is always true but that XLA cannot know is: computed from the
  bits of ``key``'s first element (non-empty) at run time; under ``vmap``, from the
  batch's first element, unbatched. ``key`` is a constant to autodiff."""
  return _first_bits_set(lax.stop_gradient(key))


@jax.custom_batching.custom_vmap
def _first_bits_set(key: jax.Array) -> jax.Array:
  first = lax.reshape(key, (key.size,))[0]
  bits = lax.bitcast_convert_type(first, np.dtype(f"uint{8 * first.dtype.itemsize}"))
  return (bits | np.ones((), bits.dtype)) != 0


@_first_bits_set.def_vmap
def _first_bits_set_vmap(axis_size, in_batched, key):
  return _first_bits_set(key), False  # true for every element: one for the batch


def unfolded(a: jax.Array, key: jax.Array) -> jax.Array:
  """``a``, times a one that XLA cannot fold (read at run time from the bits of ``key``'s
  first element, as :func:`computed_once` reads its predicate).

  XLA folds every instruction whose operands are all constants, in its slow evaluator.
  A constant cotangent (the gradient of ``sum(avg_pool(x))``) would be folded through a
  window-sum transpose's pads and window sums, which can take minutes of compiling
  (benchmarks/README.md, "Constant cotangents"). One scalar multiply, fused into the
  first reader of ``a``, keeps it a value. Linear in ``a``.
  """
  if key.size == 0:
    return a
  one = np.ones((), a.dtype)
  return a * lax.select(_runtime_true(key), one, -one)


@jax.custom_jvp
def fence_cotangent(y: jax.Array) -> jax.Array:
  """``y`` unchanged; its tangent, and so its cotangent in reverse mode, goes through
  :func:`computed_once` (keyed by ``y``)."""
  return y


@fence_cotangent.defjvp
def _fence_jvp(primals, tangents):
  (y,), (t,) = primals, tangents
  return fence_cotangent(y), computed_once(t, y)


@jax.custom_jvp
def unfold_cotangent(y: jax.Array, key: jax.Array) -> jax.Array:
  """``y`` unchanged; its tangent, and so its cotangent in reverse mode, goes through
  :func:`unfolded` (keyed by ``key``, the op's input: always computed, unlike ``y``,
  which XLA may fuse into its readers). ``key`` gets no derivative."""
  return y


@unfold_cotangent.defjvp
def _unfold_jvp(primals, tangents):
  (y, key), (t, _) = primals, tangents
  return unfold_cotangent(y, key), unfolded(t, key)
