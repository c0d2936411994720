"""Randomized comparison with PyTorch, run by hand (not collected by pytest).

    python tests/fuzz_torch.py --seed 1 --cases 300

Each case draws an op (max/min/avg with both ``count_include_pad``/lp/indices/unpool/
adaptive avg and max), a geometry (1-3 spatial dims, windows from 1 to the whole axis,
strides, padding, dilation, ``ceil_mode``, output sizes up to twice the input), a
layout and a dtype (float32, bfloat16, int32), with NaN in some max/min inputs. It
checks values and indices against ``torch.nn.functional`` and, for finite float32
input, the gradient of a random cotangent against PyTorch's and ``jvp`` against
``vjp``. Needs ``torch==2.13.0``. Prints the failing cases (none: ``fails 0``).

In session 26 this found max/min over one whole-axis window at stride 1 returning a
finite value for a window holding NaN (``tests/test_window.py::
test_a_single_window_propagates_nan_at_every_stride``).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F
from reference import out_len  # tests/reference.py: PyTorch's output length

import jaxpool

OPS = ("max", "min", "avg", "avg_nopad", "lp", "indices", "unpool", "adaptive_avg",
       "adaptive_max", "adaptive_indices")
INTEGER_OPS = ("max", "min", "indices", "unpool", "adaptive_max", "adaptive_indices")


def torch_fn(d: int, name: str):
  return getattr(F, f"{name}{d}d")


class Case:
  """One random case: draws its geometry from ``rng`` and runs both libraries."""

  def __init__(self, rng: np.random.Generator):
    self.rng = rng
    self.d = int(rng.choice([1, 2, 2, 3]))
    self.size = [int(rng.choice([rng.integers(1, 12), rng.integers(12, 70)]))
                 for _ in range(self.d)]
    self.window, self.stride, self.pad, self.dil = [], [], [], []
    for n in self.size:
      k = int(rng.choice([rng.integers(1, min(n, 5) + 1), n, rng.integers(1, n + 1),
                          max(1, n - int(rng.integers(0, 3)))]))
      s = int(rng.choice([k, 1, 2, rng.integers(1, k + 2)]))
      dil = 1 if rng.random() < .75 or k == 1 else 2
      while dil > 1 and dil * (k - 1) + 1 > n:
        dil -= 1
      self.window.append(k)
      self.stride.append(s)
      self.pad.append(int(rng.integers(0, k // 2 + 1)) if rng.random() < .4 else 0)
      self.dil.append(dil)
    self.ceil = bool(rng.random() < .3)
    self.op = str(rng.choice(OPS))
    self.dtype = "float32" if rng.random() < .8 else str(rng.choice(["bfloat16", "int32"]))
    if self.dtype == "int32" and self.op not in INTEGER_OPS or (
        self.dtype == "bfloat16" and self.op == "unpool"):
      self.dtype = "float32"
    if self.op in ("avg", "avg_nopad", "lp", "unpool"):
      self.dil = [1] * self.d
    if self.op in ("lp", "unpool"):
      self.ceil = False
    if self.op == "lp":
      self.pad = [0] * self.d
    self.channels_first = bool(rng.random() < .35)
    self.shape = (int(rng.integers(1, 4)), *self.size, int(rng.choice([1, 3, 16, 64])))
    self.output_size = [int(rng.integers(1, 2 * n + 1)) if rng.random() < .3
                        else int(rng.integers(1, n + 1)) for n in self.size]

  def runnable(self) -> bool:
    return (np.prod(self.shape) <= 2_000_000 and not (self.op == "lp" and self.d == 3)
            and all(dil * (k - 1) + 1 <= n + 2 * p and out_len(n, k, s, dil, p, p, self.ceil) >= 1
                    for n, k, s, p, dil in zip(
                        self.size, self.window, self.stride, self.pad, self.dil)))

  def __str__(self):
    layout = "channels_first" if self.channels_first else "channels_last"
    return (f"{self.op} {self.dtype} {layout} shape={self.shape} window={self.window} "
            f"strides={self.stride} padding={self.pad} dilation={self.dil} "
            f"ceil_mode={self.ceil} output_size={self.output_size}")

  def input(self) -> np.ndarray:
    """Distinct values (no ties), channels_last; NaN in some max/min inputs."""
    n = int(np.prod(self.shape))
    x = self.rng.permutation(n).reshape(self.shape)
    if self.dtype == "int32":
      return x.astype(np.int32) - 1000
    x = x.astype(np.float32) / n * 4 - 2
    if self.dtype == "bfloat16":
      x = np.array(jnp.asarray(x, jnp.bfloat16).astype(jnp.float32))
    if self.op in ("max", "min", "indices", "adaptive_max", "adaptive_indices") and (
        self.rng.random() < .35):
      x.reshape(-1)[self.rng.integers(0, n, 3)] = np.nan
    if self.op == "lp":
      x = np.abs(x) + .1
    return x

  def fns(self):
    """(jaxpool fn of the input in its layout, torch fn of an NC* tensor)."""
    w, s, p, dil, ceil, d = self.window, self.stride, self.pad, self.dil, self.ceil, self.d
    kw = {"data_format": "channels_first" if self.channels_first else "channels_last"}
    tf = torch_fn
    if self.op in ("max", "min"):
      fn = jaxpool.max_pool if self.op == "max" else jaxpool.min_pool
      sign = 1 if self.op == "max" else -1
      return (lambda x: fn(x, tuple(w), s, p, dilation=dil, ceil_mode=ceil, **kw),
              lambda t: sign * tf(d, "max_pool")(sign * t, w, s, p, dil, ceil))
    if self.op in ("avg", "avg_nopad"):
      include = self.op == "avg"
      return (lambda x: jaxpool.avg_pool(x, tuple(w), s, p, ceil_mode=ceil,
                                         count_include_pad=include, **kw),
              lambda t: tf(d, "avg_pool")(t, w, s, p, ceil, include))
    if self.op == "lp":
      power = float(self.rng.choice([1.0, 1.5, 2.0, 3.0]))
      one = (lambda v: v[0]) if d == 1 else (lambda v: v)
      return (lambda x: jaxpool.lp_pool(x, power, tuple(w), s, **kw),
              lambda t: tf(d, "lp_pool")(t, power, one(w), one(s), False))
    if self.op == "indices":
      return (lambda x: jaxpool.max_pool_with_indices(x, tuple(w), s, p, dilation=dil,
                                                      ceil_mode=ceil, **kw),
              lambda t: tf(d, "max_pool")(t, w, s, p, dil, ceil, True))
    if self.op == "unpool":
      def pooled(x):
        return jaxpool.max_unpool(*jaxpool.max_pool_with_indices(x, tuple(w), s, p, **kw),
                                  tuple(w), s, p, output_size=tuple(self.size), **kw)

      def torch_pooled(t):
        v, i = tf(d, "max_pool")(t, w, s, p, 1, False, True)
        return tf(d, "max_unpool")(v, i, w, s, p, output_size=self.size)
      return pooled, torch_pooled
    out = tuple(self.output_size)
    if self.op == "adaptive_avg":
      return (lambda x: jaxpool.adaptive_avg_pool(x, out, **kw),
              lambda t: tf(d, "adaptive_avg_pool")(t, list(out)))
    indices = self.op == "adaptive_indices"
    fn = jaxpool.adaptive_max_pool_with_indices if indices else jaxpool.adaptive_max_pool
    return (lambda x: fn(x, out, **kw),
            lambda t: tf(d, "adaptive_max_pool")(t, list(out), indices))

  def check(self) -> str | None:
    """Why the case fails, or None."""
    xa = self.input()
    cf = self.channels_first
    to_layout = (lambda a: np.moveaxis(a, -1, 1)) if cf else (lambda a: a)
    from_layout = (lambda a: np.moveaxis(a, 1, -1)) if cf else (lambda a: a)
    xj = jnp.asarray(to_layout(xa), self.dtype)
    integer = self.dtype == "int32"
    # integer max via float64 (PyTorch's CPU max pool has no int kernel); exact here
    xt = torch.tensor(np.moveaxis(xa, -1, 1).astype(np.float64))
    xt = xt if integer else xt.float()
    differentiable = not integer and not np.isnan(xa).any()
    xt.requires_grad_(differentiable)
    fn, torch_fn_ = self.fns()
    ys = jax.jit(fn)(xj)
    ts = torch_fn_(xt)
    ys, ts = (ys if isinstance(ys, tuple) else (ys,)), (ts if isinstance(ts, tuple) else (ts,))
    tol = 2e-2 if self.dtype == "bfloat16" else 1e-5
    nan_windows = np.isnan(np.moveaxis(ts[0].detach().double().numpy(), 1, -1))
    for got, want in zip(ys, ts):
      got = from_layout(np.asarray(got.astype(jnp.float32) if got.dtype == jnp.bfloat16
                                   else got))
      want = np.moveaxis(want.detach().double().numpy(), 1, -1)
      if got.shape != want.shape:
        return f"shape {got.shape}, PyTorch {want.shape}"
      if got.dtype == np.int32:  # indices (PyTorch CPU picks the last NaN, jaxpool the first)
        bad = (got != want) & ~nan_windows
      else:
        bad = ~np.isclose(got, want, rtol=tol, atol=tol * 10, equal_nan=True)
      if bad.any():
        return f"values differ at {int(bad.sum())} of {bad.size}"
    if not differentiable:
      return None
    g = self.rng.standard_normal(tuple(ts[0].shape)).astype(np.float32)
    gj = jnp.asarray(to_layout(np.moveaxis(g, 1, -1)), xj.dtype)

    def first(x):
      y = fn(x)
      return y[0] if isinstance(y, tuple) else y
    _, vjp = jax.vjp(first, xj)
    (dx,) = vjp(gj)
    (ts[0] * torch.tensor(g)).sum().backward()
    got = from_layout(np.asarray(dx.astype(jnp.float32)))
    want = np.moveaxis(xt.grad.double().numpy(), 1, -1)
    if not np.allclose(got, want, rtol=max(tol, 1e-4), atol=max(tol, 1e-4) * 4):
      return f"gradient differs by up to {np.abs(got - want).max():.3g}"
    t = jnp.asarray(self.rng.standard_normal(xj.shape), xj.dtype)
    _, jv = jax.jvp(first, (xj,), (t,))
    lhs = float(jnp.vdot(jv.astype(jnp.float32), gj.astype(jnp.float32)))
    rhs = float(jnp.vdot(t.astype(jnp.float32), dx.astype(jnp.float32)))
    if not np.isclose(lhs, rhs, rtol=5e-2 if self.dtype == "bfloat16" else 1e-3, atol=1e-2):
      return f"<jvp, g> = {lhs:.6g} but <t, vjp> = {rhs:.6g}"
    return None


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--cases", type=int, default=200)
  args = parser.parse_args()
  rng = np.random.default_rng(args.seed)
  fails, ran = [], 0
  for _ in range(args.cases):
    case = Case(rng)
    if not case.runnable():
      continue
    ran += 1
    try:
      why = case.check()
    except Exception as e:  # report every failure, then go on
      why = f"raised {e!r}"[:300]
    if why:
      fails.append(f"{case}: {why}")
  print(f"cases {ran} fails {len(fails)}")
  print("\n".join(fails))


if __name__ == "__main__":
  main()
