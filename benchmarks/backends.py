"""Plans per backend: on the backend this process runs on, time each benchmark case as
jaxpool plans it for that backend, with the CPU-tuned plan forced instead, with
``reduce_window`` values plus the CPU plans' max/min derivative forms, with flax (where
it has the op) and with PyTorch on the same device.

    python -m benchmarks.backends [--only NAME ...] [--batch N] [--rounds K] [--json PATH]
    python -m benchmarks.backends --plans    # which plan each case gets, per backend

It is how a plan for GPU or TPU gets the measurement the planner asks for
(``jaxpool/_engine/plan.py``); run it there. Each timing is a batch of ``--batch``
back-to-back calls with one synchronisation at the end (per-call dispatch is not what a
training step pays), the median over ``--rounds`` batches, the contenders interleaved.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import statistics
import sys

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.run import (
    _batch_time,
    _first,
    _jax_callable,
    _torch,
    _torch_callable,
    _torch_device,
    cases,
)
from jaxpool._engine import plan as planner


def _cpu_plan(op, taps, dtype, **kw):
  return planner.plan(op, taps, dtype, planner.Target("cpu", True), **kw)


def _canonical(op, taps, dtype, **kw):
  return planner.plan(op, taps, dtype, planner.Target("accelerator", True), **kw)


def _window_custom(op, taps, dtype, **kw):
  """reduce_window values in the input dtype, with the CPU plans' max/min derivative
  forms at every window size (no flat scatter: those need a lone CPU device)."""
  p = planner.plan(op, taps, dtype, planner.Target("accelerator", True), **kw)
  if op not in ("max", "min", "indices") or p.backward != "jax":
    return p
  cpu = planner.plan(op, taps, dtype, planner.Target("cpu", False), size=kw.get("size", 0))
  return dataclasses.replace(p, residual=cpu.residual, backward=cpu.backward,
                             address=cpu.address)


VARIANTS = {"canonical": _canonical, "cpu_plan": _cpu_plan, "window_custom": _window_custom}


@contextlib.contextmanager
def forced_plans(variant):
  """While tracing: every op gets the plan ``variant`` names, on any backend."""
  original = planner.plans

  def forced(op, taps, dtype, **kw):
    p = variant(op, taps, dtype, **kw)
    return dict.fromkeys(planner.PLATFORMS, p)

  planner.plans = forced
  jax.clear_caches()
  try:
    yield
  finally:
    planner.plans = original
    jax.clear_caches()


def measure(case, batch: int, rounds: int, rng) -> dict:
  dtype = jnp.bfloat16 if case.dtype == "bfloat16" else jnp.float32
  x = jnp.asarray(rng.standard_normal(case.shape, dtype=np.float32), dtype)
  out = jax.eval_shape(lambda v: _first(case.jaxpool(v)), x)
  g = jnp.asarray(rng.standard_normal(out.shape, dtype=np.float32), dtype)
  args = (x, g) if case.backward else (x,)
  wrap = (lambda fn: (lambda v: _first(fn(v)))) if case.backward else (lambda fn: fn)
  contenders = {}
  f = _jax_callable(wrap(case.jaxpool), case.backward)
  contenders["planned"] = (f.lower(*args).compile(), args, jax.block_until_ready)
  for name, variant in VARIANTS.items():
    with forced_plans(variant):
      f = _jax_callable(wrap(case.jaxpool), case.backward)
      contenders[name] = (f.lower(*args).compile(), args, jax.block_until_ready)
  if case.flax is not None:
    f = _jax_callable(wrap(case.flax), case.backward)
    try:
      contenders["flax"] = (f.lower(*args).compile(), args, jax.block_until_ready)
    except NotImplementedError:
      pass
  torch = _torch()
  device = _torch_device(torch)
  if torch is not None and case.torch is not None:
    tdtype = torch.bfloat16 if case.dtype == "bfloat16" else torch.float32
    to = [torch.from_numpy(np.moveaxis(np.asarray(a, np.float32), -1, 1).copy())
          .to(device=device, dtype=tdtype) for a in args]
    fmts = {4: torch.channels_last, 5: torch.channels_last_3d}
    to = [t.contiguous(memory_format=fmts[t.ndim]) if t.ndim in fmts else t for t in to]
    sync = (lambda o: torch.cuda.synchronize()) if device == "cuda" else (lambda o: o)
    contenders["torch"] = (_torch_callable(torch, case.torch, case.backward), tuple(to), sync)
  times = {name: [] for name in contenders}
  for f, a, sync in contenders.values():
    sync(f(*a))
  names = list(contenders)
  for r in range(rounds):
    for name in names[r % len(names):] + names[:r % len(names)]:
      f, a, sync = contenders[name]
      times[name].append(_batch_time(f, a, sync, batch))
  ms = {name: statistics.median(ts) * 1e3 for name, ts in times.items()}
  row = {"case": case.name, "pass": "fwd+bwd" if case.backward else "fwd",
         "dtype": case.dtype, "shape": list(case.shape), "ms": ms,
         }
  for other in CONTENDERS[1:]:
    if other in ms:
      row[f"planned_vs_{other}"] = ms["planned"] / ms[other]
  return row


def _short(p) -> str:
  return ", ".join(f"{k}={v}" for k, v in vars(p).items() if v not in (None, False)) or "–"


def plan_table(case_list) -> str:
  """Which plan each case's ops get on each backend (traced, nothing run)."""
  lines = ["| case | op | cpu | cuda | tpu and others |", "| --- | --- | --- | --- | --- |"]
  original = planner.plans
  done = set()
  for case in case_list:
    if (case.name, case.dtype) in done:
      continue
    done.add((case.name, case.dtype))
    seen = []

    def recording(op, taps, dtype, seen=seen, **kw):
      out = original(op, taps, dtype, **kw)
      seen.append((op, out))
      return out

    planner.plans = recording
    jax.clear_caches()
    try:
      dtype = jnp.bfloat16 if case.dtype == "bfloat16" else jnp.float32
      jax.eval_shape(case.jaxpool, jax.ShapeDtypeStruct(case.shape, dtype))
    finally:
      planner.plans = original
    name = case.name + (" bf16" if case.dtype == "bfloat16" else "")
    for op, ps in seen:
      lines.append(f"| {name} | {op} | {_short(ps['cpu'])} | {_short(ps['cuda'])} | "
                   f"{_short(ps['default'])} |")
  jax.clear_caches()
  return "\n".join(lines)


CONTENDERS = ("planned", "canonical", "cpu_plan", "window_custom", "flax", "torch")


def markdown(rows) -> str:
  others = CONTENDERS[1:]
  lines = ["| case | pass | dtype | " + " | ".join(f"{c} ms" for c in CONTENDERS) + " | "
           + " | ".join(f"planned/{c}" for c in others) + " |",
           "| --- | --- | --- | " + " | ".join(["---:"] * (len(CONTENDERS) + len(others)))
           + " |"]
  for r in rows:
    ms = [r["ms"].get(c) for c in CONTENDERS]
    ratios = [r.get(f"planned_vs_{c}") for c in others]
    cells = ["–" if v is None else f"{v:.3f}" for v in ms]
    cells += ["–" if v is None else f"{v:.2f}×" for v in ratios]
    lines.append(f"| {r['case']} | {r['pass']} | {r['dtype']} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--only", nargs="*", default=None)
  parser.add_argument("--batch", type=int, default=20)
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument("--json", default=None)
  parser.add_argument("--plans", action="store_true",
                      help="print each case's plan per backend instead of timing")
  args = parser.parse_args(argv)
  if args.plans:
    print(plan_table(c for c in cases() if not args.only or c.name in args.only))
    return []
  rng = np.random.default_rng(0)
  env = {"backend": jax.default_backend(), "devices": str(jax.devices()),
         "jax": jax.__version__}
  print(env, file=sys.stderr)
  rows = []
  for case in cases():
    if args.only and case.name not in args.only:
      continue
    rows.append(measure(case, args.batch, args.rounds, rng))
    print(markdown(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
  print(markdown(rows))
  if args.json:
    with open(args.json, "w") as fh:
      json.dump({"environment": env, "rows": rows}, fh, indent=1)
  return rows


if __name__ == "__main__":
  main()
