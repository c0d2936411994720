"""Random geometries against PyTorch: the cliffs the sweep's named classes do not have.

    python -m benchmarks.scan [--seed S] [--cases N] [--over R] [--json PATH]

Draws ``--cases`` pooling calls at random (op, 1-D/2-D/3-D, window, stride, padding,
dilation, ``ceil_mode``, adaptive output sizes below and above the input, channel
counts from 3 to 128; each input about 8 MB of float32, channels_last) and times each
forward and forward+backward against PyTorch (channels_last, its fast CPU layout), the
two interleaved in one process. The same seed draws the same cases. Prints one line per
case and, at the end, the cases over ``--over`` (default 2.0) in either pass.

Needs PyTorch. Not part of the test command; 40 cases take about 4 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import statistics

import jax
import jax.numpy as jnp
import numpy as np

import jaxpool
from benchmarks.run import _batch_time, _first, _jax_callable, _to_torch, _torch, _torch_callable

OPS = ("max", "max", "min", "avg", "indices", "adaptive_max", "adaptive_avg")
JAX_OPS = {"max": jaxpool.max_pool, "min": jaxpool.min_pool, "avg": jaxpool.avg_pool,
           "indices": jaxpool.max_pool_with_indices}


def draw(rng) -> dict | None:
  """One random case: its description, input shape and keyword arguments, or ``None``
  when the drawn window does not fit its input."""
  d = int(rng.choice([1, 2, 2, 2, 3]))
  size = {1: int(rng.integers(64, 2048)), 2: int(rng.integers(8, 96)),
          3: int(rng.integers(6, 24))}[d]
  channels = int(rng.choice([3, 16, 64, 128]))
  shape = (max(1, 2_000_000 // (size ** d * channels)),) + (size,) * d + (channels,)
  op = str(rng.choice(OPS))
  if op.startswith("adaptive"):
    out = int(rng.integers(1, 2 * size))
    return dict(op=op, shape=shape, kw=dict(output_size=(out,) * d),
                desc=f"{op} {size}->{out} {d}-D")
  k = int(rng.integers(2, min(size, 24) + 1))
  stride, pad = int(rng.integers(1, k + 2)), int(rng.integers(0, k // 2 + 1))
  dilation = int(rng.choice([1, 1, 1, 2])) if op != "avg" else 1
  ceil = bool(rng.random() < 0.2)
  if (k - 1) * dilation + 1 > size + 2 * pad:
    return None
  kw = dict(window_shape=(k,) * d, strides=stride, padding=pad, ceil_mode=ceil)
  if op != "avg":
    kw["dilation"] = dilation
  return dict(op=op, shape=shape, kw=kw, desc=f"{op} {k}/{stride} p{pad} d{dilation}"
              f"{' ceil' if ceil else ''} on {size} {d}-D")


def _fns(case: dict, torch):
  """``(jax fn, torch fn)`` of a case; the torch fn takes an NC* tensor."""
  F = torch.nn.functional
  op, kw, d = case["op"], case["kw"], len(case["shape"]) - 2
  if op.startswith("adaptive"):
    kind = op.split("_")[1]
    jfn = {"max": jaxpool.adaptive_max_pool, "avg": jaxpool.adaptive_avg_pool}[kind]
    tfn = getattr(F, f"adaptive_{kind}_pool{d}d")
    return (lambda x: jfn(x, kw["output_size"])), (lambda t: tfn(t, kw["output_size"]))
  tk = dict(kernel_size=kw["window_shape"], stride=kw["strides"], padding=kw["padding"],
            ceil_mode=kw["ceil_mode"])
  if op == "avg":
    tfn = getattr(F, f"avg_pool{d}d")
    return (lambda x: jaxpool.avg_pool(x, **kw)), (lambda t: tfn(t, **tk))
  tmax = getattr(F, f"max_pool{d}d")
  tk["dilation"] = kw["dilation"]
  if op == "min":
    return (lambda x: jaxpool.min_pool(x, **kw)), (lambda t: -tmax(-t, **tk))
  return ((lambda x: JAX_OPS[op](x, **kw)),
          (lambda t: tmax(t, return_indices=op == "indices", **tk)))


def _median_ms(fn, args, sync, rounds: int = 5, calls: int = 3) -> float:
  sync(fn(*args))
  return statistics.median(_batch_time(fn, args, sync, calls) for _ in range(rounds)) * 1e3


def measure(case: dict, rng, torch) -> dict | None:
  jfn, tfn = _fns(case, torch)
  x = jnp.asarray(rng.standard_normal(case["shape"], dtype=np.float32))
  try:
    out = jax.eval_shape(lambda v: _first(jfn(v)), x)
  except ValueError:
    return None  # an output size below 1 (a window PyTorch also refuses)
  g = jnp.asarray(rng.standard_normal(out.shape, dtype=np.float32))
  tx, tg = _to_torch(torch, x, torch.float32), _to_torch(torch, g, torch.float32)
  try:
    with torch.no_grad():
      tfn(tx)
  except RuntimeError:
    return None  # a window PyTorch refuses (padding over half the window)
  row = dict(case=case["desc"], shape=list(case["shape"]))
  for name, backward in (("fwd", False), ("fwd+bwd", True)):
    compiled = _jax_callable(jfn if not backward else (lambda v: _first(jfn(v))),
                             backward).lower(*((x, g) if backward else (x,))).compile()
    run_t = _torch_callable(torch, tfn, backward)
    targs = (tx, tg) if backward else (tx,)
    jargs = (x, g) if backward else (x,)
    ms_j, ms_t = [], []
    for _ in range(2):  # interleaved
      ms_j.append(_median_ms(compiled, jargs, jax.block_until_ready))
      ms_t.append(_median_ms(run_t, targs, lambda o: o))
    row[name] = dict(jaxpool=min(ms_j), torch=min(ms_t), ratio=min(ms_j) / min(ms_t))
  return row


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--cases", type=int, default=40)
  parser.add_argument("--over", type=float, default=2.0)
  parser.add_argument("--json", default=None, help="write the rows here")
  args = parser.parse_args(argv)
  torch = _torch()
  if torch is None:
    raise SystemExit("benchmarks.scan needs PyTorch (pip install torch==2.13.0)")
  rng = np.random.default_rng(args.seed)
  rows = []
  for _ in range(args.cases):
    case = draw(rng)
    row = case and measure(case, rng, torch)
    if row is None:
      continue
    rows.append(row)
    f, b = row["fwd"], row["fwd+bwd"]
    print(f"{row['case']:46s} {str(tuple(row['shape'])):20s} fwd {f['jaxpool']:8.2f} / "
          f"{f['torch']:8.2f} ms = {f['ratio']:5.2f}x   fwd+bwd {b['jaxpool']:8.2f} / "
          f"{b['torch']:8.2f} ms = {b['ratio']:5.2f}x", flush=True)
    jax.clear_caches()
  slow = [r for r in rows if max(r["fwd"]["ratio"], r["fwd+bwd"]["ratio"]) > args.over]
  ratios = [r[p]["ratio"] for r in rows for p in ("fwd", "fwd+bwd")]
  print(f"\n{len(rows)} cases, median jaxpool/torch {statistics.median(ratios):.2f}x; "
        f"{len(slow)} over {args.over}x:")
  for r in slow:
    print(f"  {r['case']} {tuple(r['shape'])}: fwd {r['fwd']['ratio']:.2f}x, "
          f"fwd+bwd {r['fwd+bwd']['ratio']:.2f}x")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=1)
  return rows


if __name__ == "__main__":
  main()
