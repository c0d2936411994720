"""NaN through every sweep cell of the max family: each op on the cell's input with 20
NaNs, its NaN outputs compared with the windows that hold a NaN (found by pooling the NaN
mask itself, 0/1 values). A check for XLA backends whose max/min reductions drop NaN
(XLA:CPU's YNNPACK fusion does), not a timing.

    python -m benchmarks.nan_scan

Prints one line per cell, ``OK`` or ``WRONG``, and exits 1 if any cell is wrong.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.run import _first
from benchmarks.sweep import adaptive_cells, windowed_cells

OPS = {"max", "min", "indices", "adaptive_max", "global_max", "channel_max", "pool+unpool"}


def main() -> int:
  wrong = 0
  for cell in windowed_cells() + adaptive_cells():
    if cell.op not in OPS:
      continue
    g = cell.geometry
    dtype = jnp.bfloat16 if g.dtype == "bfloat16" else jnp.float32
    shape = g.shape if g.layout == "channels_last" else (g.shape[0], g.shape[-1],
                                                         *g.shape[1:-1])
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    x.reshape(-1)[rng.choice(x.size, 20, replace=False)] = np.nan
    fn = jax.jit(cell.jaxpool)
    y = np.asarray(_first(fn(jnp.asarray(x, dtype))), np.float32)
    mask = jnp.asarray(np.isnan(x), dtype)
    if cell.op == "pool+unpool":  # the NaN maxima land back in the output
      ok, want = bool(np.isnan(y).any()), "> 0"
    else:
      pooled = fn(mask) if cell.op != "min" else -jax.jit(lambda v, f=cell.jaxpool: f(-v))(mask)
      holds = np.asarray(_first(pooled), np.float32) > 0
      ok, want = bool(np.array_equal(np.isnan(y), holds)), int(holds.sum())
    wrong += not ok
    print(f"{'OK   ' if ok else 'WRONG'} {cell.op} | {cell.cls} | NaN outputs "
          f"{int(np.isnan(y).sum())}, windows holding a NaN {want}", flush=True)
  return 1 if wrong else 0


if __name__ == "__main__":
  sys.exit(main())
