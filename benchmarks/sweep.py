"""A generated geometry sweep: every pooling op across geometry classes, jaxpool against
PyTorch (channels_last, its fast CPU layout) and Flax where it has the op, forward and
forward+backward.

    python -m benchmarks.sweep [--only OP ...] [--min-time S] [--rounds K] [--batch N]
                               [--scale N] [--out DIR]

The grid is ops x classes. Each class is one realistic shape of one kind of geometry:
window against stride (non-overlapping, overlapping, gapped), window size (small,
medium, spanning the whole axis), padding (none, symmetric, ``ceil_mode`` overhang),
dilation, adaptive bins (divisible, non-divisible, output 1, output larger than the
input), 1-D/2-D/3-D, bfloat16, and the channels_first layout (where jaxpool transposes).
A cell PyTorch cannot compute (Lp or average pooling with dilation, Lp with padding) has
no ratio. Per cell: medians of interleaved blocks of calls, the jaxpool/PyTorch and
jaxpool/Flax ratios and jaxpool's compiled temp memory relative to the input.

Writes the table to stdout (per-op worst and median ratio, the worst 10 cells),
``benchmarks/results/sweep.json`` and ``benchmarks/results/sweep.png`` (a heat map of
the ratio to PyTorch, op x class, forward and forward+backward). Not part of the test
command; it takes about 10 minutes on 2 CPU cores.

On a GPU (JAX's default backend ``gpu`` and a CUDA build of PyTorch) both sides run on
the device: PyTorch's tensors move there, each sample is ``--batch`` back-to-back calls
with one synchronisation (default 10 there, 1 on CPU), so the launch queue, not one
round trip, is what is timed. ``--scale N`` multiplies every shape's batch axis by N: the
CPU shapes (about 6.4 MB) are too small for a GPU, whose forward cells would time
launches rather than kernels.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import statistics
import time
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxpool
from benchmarks.backends import VARIANTS, forced_plans
from benchmarks.run import (
    RESULTS,
    _batch_time,
    _first,
    _jax_callable,
    _time,
    _to_torch,
    _torch,
    _torch_callable,
    _torch_device,
)

SHAPE2 = (8, 56, 56, 64)       # NHWC: a ResNet stage
SHAPE1 = (16, 1024, 64)        # NLC: a sequence batch
SHAPE3 = (4, 16, 28, 28, 32)   # NTHWC: a video clip


@dataclasses.dataclass(frozen=True)
class Geometry:
  """One windowed class: the jaxpool arguments and the input it runs on."""

  window: tuple[int, ...]
  strides: tuple[int, ...] | int | None = None
  padding: int = 0
  dilation: int = 1
  ceil_mode: bool = False
  shape: tuple[int, ...] = SHAPE2
  dtype: str = "float32"
  layout: str = "channels_last"


WINDOWED = {
    "2x2/2 non-overlapping": Geometry((2, 2)),
    "3x3/2 p1 overlapping": Geometry((3, 3), 2, 1),
    "3x3/1 p1 dense": Geometry((3, 3), 1, 1),
    "2x2/3 gapped": Geometry((2, 2), 3),
    "5x5/1 p2 medium": Geometry((5, 5), 1, 2),
    "8x8/8 large blocks": Geometry((8, 8)),
    "whole axis 56x56": Geometry((56, 56)),
    "3x3/2 ceil overhang": Geometry((3, 3), 2, 0, ceil_mode=True, shape=(8, 57, 57, 64)),
    "3x3/1 p1 dilation 2": Geometry((3, 3), 1, 1, dilation=2),
    "1-D 3/2 p1": Geometry((3,), 2, 1, shape=SHAPE1),
    "3-D 2x2x2/2": Geometry((2, 2, 2), shape=SHAPE3),
    "bf16 3x3/2 p1": Geometry((3, 3), 2, 1, dtype="bfloat16"),
    "channels_first 3x3/2 p1": Geometry((3, 3), 2, 1, layout="channels_first"),
}
ADAPTIVE = {
    "divisible 56->7": Geometry((7, 7)),
    "non-divisible 56->5": Geometry((5, 5)),
    "output 1": Geometry((1, 1)),
    "output > input 56->80": Geometry((80, 80), shape=(8, 56, 56, 16)),
    "1-D 1024->50": Geometry((50,), shape=SHAPE1),
    "3-D ->(4, 7, 7)": Geometry((4, 7, 7), shape=SHAPE3),
    "bf16 56->7": Geometry((7, 7), dtype="bfloat16"),
    "channels_first 56->5": Geometry((5, 5), layout="channels_first"),
}
WHOLE = {
    "2-D": Geometry((), shape=(32, 14, 14, 512)),
    "3-D": Geometry((), shape=SHAPE3),
    "bf16": Geometry((), shape=(32, 14, 14, 512), dtype="bfloat16"),
    "channels_first": Geometry((), shape=(32, 14, 14, 512), layout="channels_first"),
}


# The least work any program for a cell does on its input, per pass: a forward reads the
# whole input once (the faster of a sum and a max over all of it); a forward+backward
# also writes a gradient of the input's size (an elementwise map, one read and one write).
# Each as (jax fn, torch fn) of the input, in the cell's layout and dtype.
FLOORS = {
    "fwd": {"sum": (jnp.sum, lambda t: t.sum()), "max": (jnp.max, lambda t: t.amax())},
    "fwd+bwd": {"map": (lambda x: x * 2, lambda t: t * 2)},
}


@dataclasses.dataclass
class Cell:
  op: str
  cls: str
  geometry: Geometry
  jaxpool: Callable                 # x (in the cell's layout) -> output
  torch: Callable | None            # NC* tensor -> output
  flax: Callable | None = None      # x (channels_last) -> output


def _kw(g: Geometry) -> dict:
  return dict(window_shape=g.window, strides=g.strides, padding=g.padding,
              dilation=g.dilation, ceil_mode=g.ceil_mode, data_format=g.layout)


def _flax_pool(kind: str, g: Geometry) -> Callable | None:
  """Flax's pooling where it computes the same thing (no dilation, no ceil_mode; its
  avg counts padding)."""
  if g.dilation != 1 or g.ceil_mode or g.layout != "channels_last":
    return None
  strides = g.strides if g.strides is not None else g.window
  strides = (strides,) * len(g.window) if isinstance(strides, int) else strides
  pad = tuple((g.padding, g.padding) for _ in g.window)
  if kind == "max":
    return lambda x: nn.max_pool(x, g.window, strides, pad)
  if kind == "avg_pad":
    return lambda x: nn.avg_pool(x, g.window, strides, pad, count_include_pad=True)
  return None


def _torch_fns():
  torch = _torch()
  if torch is None:
    return None, None
  return torch, torch.nn.functional


def windowed_cells() -> list[Cell]:
  torch, F = _torch_fns()
  cells = []
  for cls, g in WINDOWED.items():
    d = len(g.window)
    kw = _kw(g)
    s = g.strides if g.strides is not None else g.window
    tk = dict(kernel_size=g.window, stride=s, padding=g.padding, ceil_mode=g.ceil_mode)
    tmax = getattr(F, f"max_pool{d}d", None) if F else None
    tavg = getattr(F, f"avg_pool{d}d", None) if F else None
    tlp = getattr(F, f"lp_pool{d}d", None) if F else None
    tunpool = getattr(F, f"max_unpool{d}d", None) if F else None
    plain = g.dilation == 1
    ops = {
        "max": (lambda x, kw=kw: jaxpool.max_pool(x, **kw),
                tmax and (lambda t, tk=tk, g=g, f=tmax: f(t, dilation=g.dilation, **tk))),
        "min": (lambda x, kw=kw: jaxpool.min_pool(x, **kw),
                tmax and (lambda t, tk=tk, g=g, f=tmax: -f(-t, dilation=g.dilation, **tk))),
        "avg_pad": (lambda x, kw=kw: jaxpool.avg_pool(x, **kw),
                    tavg and plain and (lambda t, tk=tk, f=tavg: f(t, **tk))),
        "avg_nopad": (lambda x, kw=kw: jaxpool.avg_pool(x, count_include_pad=False, **kw),
                      tavg and plain and (lambda t, tk=tk, f=tavg: f(
                          t, count_include_pad=False, **tk))),
        "lp": (lambda x, kw=kw: jaxpool.lp_pool(x, 2.0, **kw),
               tlp and plain and g.padding == 0 and (
                   lambda t, g=g, s=s, f=tlp: f(t, 2.0, g.window, s, ceil_mode=g.ceil_mode))),
        "indices": (lambda x, kw=kw: jaxpool.max_pool_with_indices(x, **kw),
                    tmax and (lambda t, tk=tk, g=g, f=tmax: f(
                        t, dilation=g.dilation, return_indices=True, **tk))),
        "pool+unpool": (lambda x, kw=kw, g=g: jaxpool.max_unpool(
            *jaxpool.max_pool_with_indices(x, **kw), g.window, g.strides, g.padding,
            output_size=x.shape, data_format=g.layout),
            tunpool and plain and (lambda t, tk=tk, g=g, f=tmax, u=tunpool: u(
                *f(t, return_indices=True, **tk), g.window, tk["stride"], g.padding,
                output_size=t.shape[2:]))),
    }
    for op, (jfn, tfn) in ops.items():
      if op == "pool+unpool" and (g.dilation != 1 or g.ceil_mode):
        continue  # max_unpool takes no dilation; an overhang window has no inverse size
      if op == "lp" and g.window == (56, 56):
        continue  # a 3136-element power sum: covered by the large-block class
      kind = {"max": "max", "avg_pad": "avg_pad"}.get(op)  # Flax has no min_pool
      cells.append(Cell(op, cls, g, jfn, tfn or None, _flax_pool(kind, g) if kind else None))
  return cells


def adaptive_cells() -> list[Cell]:
  torch, F = _torch_fns()
  cells = []
  for cls, g in ADAPTIVE.items():
    d = len(g.window)
    out = g.window
    for op, jfn, tname in (
        ("adaptive_avg", lambda x, g=g: jaxpool.adaptive_avg_pool(x, g.window,
                                                                  data_format=g.layout),
         f"adaptive_avg_pool{d}d"),
        ("adaptive_max", lambda x, g=g: jaxpool.adaptive_max_pool(x, g.window,
                                                                  data_format=g.layout),
         f"adaptive_max_pool{d}d")):
      tf = getattr(F, tname, None) if F else None
      cells.append(Cell(op, cls, g, jfn, tf and (lambda t, f=tf, out=out: f(t, out))))
  for cls, g in WHOLE.items():
    d = len(g.shape) - 2
    dims = tuple(range(2, 2 + d))
    for op, jfn, tfn in (
        ("global_avg", lambda x, g=g, d=d: jaxpool.global_avg_pool(x, d, data_format=g.layout),
         lambda t, dims=dims: t.mean(dims)),
        ("global_max", lambda x, g=g, d=d: jaxpool.global_max_pool(x, d, data_format=g.layout),
         lambda t, dims=dims: t.amax(dims)),
        ("channel_max", lambda x, g=g, d=d: jaxpool.channel_pool(
            x, "max", data_format=g.layout, num_spatial_dims=d),
         lambda t: t.max(1, keepdim=True).values),
        ("channel_avg", lambda x, g=g, d=d: jaxpool.channel_pool(
            x, "avg", data_format=g.layout, num_spatial_dims=d),
         lambda t: t.mean(1, keepdim=True))):
      flax = None
      if op == "global_avg" and g.layout == "channels_last":
        flax = lambda x, d=d: x.mean(tuple(range(1, 1 + d)))  # noqa: E731
      cells.append(Cell(op, cls, g, jfn, tfn if F else None, flax))
  return cells


def measure(cell: Cell, backward: bool, rng, min_time: float, rounds: int,
            batch: int = 1, scale: int = 1, variants: tuple[str, ...] = (),
            floors: bool = False) -> dict:
  """One cell timed against PyTorch (and Flax, and forced plans), interleaved. With
  ``floors``, also the one-pass floors of the cell's input (:data:`FLOORS`)."""
  g = cell.geometry
  g = dataclasses.replace(g, shape=(g.shape[0] * scale, *g.shape[1:]))
  torch = _torch()
  device = _torch_device(torch)
  torch_sync = (lambda o: torch.cuda.synchronize()) if device == "cuda" else (lambda o: o)
  dtype = jnp.bfloat16 if g.dtype == "bfloat16" else jnp.float32
  x_cl = rng.standard_normal(g.shape, dtype=np.float32)
  x = jnp.asarray(np.moveaxis(x_cl, -1, 1) if g.layout == "channels_first" else x_cl, dtype)
  out = jax.eval_shape(lambda v: _first(cell.jaxpool(v)), x)
  gy = jnp.asarray(rng.standard_normal(out.shape, dtype=np.float32), out.dtype)
  runs, args = {}, {}
  jfn = (lambda v: _first(cell.jaxpool(v))) if backward else cell.jaxpool
  f = _jax_callable(jfn, backward)
  jargs = (x, gy) if backward else (x,)
  start = time.perf_counter()
  compiled = f.lower(*jargs).compile()
  compile_s = time.perf_counter() - start
  mem = compiled.memory_analysis()
  temp = None if mem is None else mem.temp_size_in_bytes / x.nbytes
  runs["jaxpool"], args["jaxpool"] = compiled, jargs
  for name in variants:  # the same op with another backend's plan forced
    with forced_plans(VARIANTS[name]):
      try:
        runs[name] = _jax_callable(jfn, backward).lower(*jargs).compile()
        args[name] = jargs
      except Exception as e:  # noqa: BLE001 - a plan this backend cannot lower: no time
        print(f"  {name} plan fails for {cell.op} {cell.cls}: {str(e).splitlines()[0][:80]}")
  if cell.flax is not None:
    ff = _jax_callable((lambda v: _first(cell.flax(v))) if backward else cell.flax, backward)
    try:
      jax.block_until_ready(ff(*jargs))
      runs["flax"], args["flax"] = ff, jargs
    except NotImplementedError:
      pass
  if torch is not None and cell.torch is not None:
    tdtype = torch.bfloat16 if g.dtype == "bfloat16" else torch.float32
    tx = _to_torch(torch, x_cl, tdtype).to(device)
    try:
      ty = _first(cell.torch(tx))
    except (RuntimeError, ValueError, TypeError) as e:
      print(f"  torch refuses {cell.op} {cell.cls}: {str(e).splitlines()[0][:80]}")
    else:
      tg = torch.from_numpy(np.array(gy, np.float32)).to(device=device, dtype=tdtype)
      tg = tg.reshape(ty.shape) if tg.numel() == ty.numel() else None
      if not backward or tg is not None:
        runs["torch"] = _torch_callable(torch, cell.torch, backward)
        args["torch"] = (tx, tg) if backward else (tx,)
  if floors:
    for name, (jfn_floor, tfn_floor) in FLOORS["fwd+bwd" if backward else "fwd"].items():
      runs[f"xla {name}"], args[f"xla {name}"] = jax.jit(jfn_floor), (x,)
      if "torch" in runs:
        runs[f"torch {name}"] = _torch_callable(torch, tfn_floor, False)
        args[f"torch {name}"] = args["torch"][:1]
  times = {k: [] for k in runs}
  for r in range(rounds):
    names = list(runs)
    names = names[r % len(names):] + names[:r % len(names)]
    for name in names:
      sync = torch_sync if name == "torch" else jax.block_until_ready
      _time(runs[name], args[name], sync)  # one untimed call in the block
      spent, count = 0.0, 0
      while count < 3 or (spent < min_time and count < 200):
        t = _batch_time(runs[name], args[name], sync, batch)
        times[name].append(t)
        spent, count = spent + t * batch, count + 1
  ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
  row = {"op": cell.op, "class": cell.cls, "pass": "fwd+bwd" if backward else "fwd",
         "shape": list(g.shape), "dtype": g.dtype, "layout": g.layout,
         "input_bytes": x.nbytes, "ms": ms,
         "compile_s": compile_s, "temp_ratio": temp}
  if "torch" in ms:
    row["vs_torch"] = ms["jaxpool"] / ms["torch"]
  if "flax" in ms:
    row["vs_flax"] = ms["jaxpool"] / ms["flax"]
  for name in variants:
    if name in ms:
      row[f"vs_{name}"] = ms["jaxpool"] / ms[name]
  return row


def summary(rows: list[dict]) -> str:
  lines = ["| op | cells with PyTorch | worst | median | worst cell |",
           "| --- | ---: | ---: | ---: | --- |"]
  for op in dict.fromkeys(r["op"] for r in rows):
    rs = [r for r in rows if r["op"] == op and "vs_torch" in r]
    if not rs:
      lines.append(f"| {op} | 0 | – | – | – |")
      continue
    worst = max(rs, key=lambda r: r["vs_torch"])
    lines.append(f"| {op} | {len(rs)} | {worst['vs_torch']:.2f}x | "
                 f"{statistics.median(r['vs_torch'] for r in rs):.2f}x | "
                 f"{worst['class']} {worst['pass']} |")
  ratios = [r["vs_torch"] for r in rows if "vs_torch" in r]
  lines.append(f"| **all** | {len(ratios)} | {max(ratios):.2f}x | "
               f"{statistics.median(ratios):.2f}x | |")
  return "\n".join(lines)


def table(rows: list[dict]) -> str:
  def f(v, fmt):
    return "–" if v is None else format(v, fmt)

  lines = ["| op | class | pass | jaxpool ms | torch ms | flax ms | jaxpool/torch | "
           "jaxpool/flax | temp mem / input |", "| --- | --- | --- | ---: | ---: | ---: | "
           "---: | ---: | ---: |"]
  for r in rows:
    ms = r["ms"]
    lines.append(f"| {r['op']} | {r['class']} | {r['pass']} | {f(ms.get('jaxpool'), '.3f')} | "
                 f"{f(ms.get('torch'), '.3f')} | {f(ms.get('flax'), '.3f')} | "
                 f"{f(r.get('vs_torch'), '.2f')}x | {f(r.get('vs_flax'), '.2f')}x | "
                 f"{f(r['temp_ratio'], '.2f')} |")
  return "\n".join(lines)


def heatmap(rows: list[dict], path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  ops = list(dict.fromkeys(r["op"] for r in rows))
  classes = list(dict.fromkeys(r["class"] for r in rows))
  fig, axes = plt.subplots(1, 2, figsize=(2 + 0.55 * len(classes) * 2, 1.5 + 0.45 * len(ops)))
  for ax, which in zip(axes, ("fwd", "fwd+bwd")):
    grid = np.full((len(ops), len(classes)), np.nan)
    for r in rows:
      if r["pass"] == which and "vs_torch" in r:
        grid[ops.index(r["op"]), classes.index(r["class"])] = r["vs_torch"]
    im = ax.imshow(np.log2(grid), cmap="RdYlGn_r", vmin=-2, vmax=2, aspect="auto")
    for (i, j), v in np.ndenumerate(grid):
      if not np.isnan(v):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6)
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(ops)), ops, fontsize=8)
    ax.set_title(f"{which}: jaxpool time / PyTorch time", fontsize=9)
  fig.colorbar(im, ax=axes, shrink=0.6, label="log2 ratio (green: jaxpool faster)")
  fig.savefig(path, dpi=90, bbox_inches="tight")
  plt.close(fig)


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--only", nargs="*", default=None, help="ops to run")
  parser.add_argument("--min-time", type=float, default=0.04)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--batch", type=int, default=None,
                      help="calls per timed sample (default: 10 on a GPU, 1 on CPU)")
  parser.add_argument("--scale", type=int, default=1,
                      help="multiply every shape's batch axis (larger shapes for a GPU)")
  parser.add_argument("--variants", nargs="*", default=(), choices=sorted(VARIANTS),
                      help="also time each cell with these plans forced "
                           "(benchmarks.backends): the planned/variant ratio per cell")
  parser.add_argument("--out", default=str(RESULTS), help="folder for sweep.json/png")
  args = parser.parse_args(argv)
  batch = args.batch or (10 if _torch_device(_torch()) == "cuda" else 1)
  out = pathlib.Path(args.out)
  cells = windowed_cells() + adaptive_cells()
  if args.only:
    cells = [c for c in cells if c.op in args.only]
  rng = np.random.default_rng(0)
  rows, start = [], time.perf_counter()
  out.mkdir(parents=True, exist_ok=True)
  for cell in cells:
    for backward in (False, True):
      rows.append(measure(cell, backward, rng, args.min_time, args.rounds, batch,
                          args.scale, tuple(args.variants)))
      jax.clear_caches()
      r = rows[-1]
      print(f"  {r['op']:12s} {r['class']:26s} {r['pass']:8s} "
            f"{r.get('vs_torch', float('nan')):6.2f}x  ({time.perf_counter() - start:.0f} s)",
            flush=True)
    (out / "sweep.json").write_text(json.dumps(rows, indent=1))  # what a cut run has
  print(f"{len(rows)} cells in {time.perf_counter() - start:.0f} s on {jax.default_backend()}\n")
  print(summary(rows))
  worst = sorted((r for r in rows if "vs_torch" in r), key=lambda r: -r["vs_torch"])[:10]
  print("\nWorst 10:\n\n" + table(worst))
  print("\nEvery cell:\n\n" + table(rows))
  heatmap(rows, out / "sweep.png")
  return rows


if __name__ == "__main__":
  main()
