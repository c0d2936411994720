"""What bounds the sweep's slow cells: each cell against the one-pass floors of its input,
XLA's and PyTorch's, timed interleaved in one process.

    python -m benchmarks.floors [--sweep PATH] [--over R] [--only OP ...] [--rounds K]

Takes the cells of a sweep run (``--sweep``, default ``benchmarks/results/sweep.json``)
whose jaxpool/PyTorch ratio is over ``--over`` (default 1.5) and times each again with
the floors of :data:`benchmarks.sweep.FLOORS` beside it: a forward cell's floor is the
faster of a jitted sum and a jitted max over the whole input (one read of it); a
forward+backward cell's is a jitted ``x * 2`` (one read and one write of the input's
size, which any gradient of it costs). Bytes are the input's; GB/s is those bytes over
the time, for each contender.

The verdict column reads the target (``--over``) against XLA's floor:

* ``XLA floor > target``: XLA:CPU's fastest single pass over the input already takes
  longer than the target allows (``floor > over * torch``). No program XLA compiles
  for this cell can meet the target; PyTorch reads the input faster than XLA can.
* ``N passes``: the floor is within the target, and jaxpool takes N of XLA's floor
  passes (jaxpool ms / floor ms): the work beyond one pass is what keeps it over.
* ``windows read P% of the input: no floor``: gapped windows skip part of the input,
  so one read of all of it is no lower bound there.

Writes a markdown table to stdout and ``floors.json`` beside the sweep file.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics

import jax
import numpy as np

from benchmarks.run import RESULTS
from benchmarks.sweep import Geometry, adaptive_cells, measure, windowed_cells
from jaxpool import _geometry as geo


def coverage(g: Geometry) -> float:
  """The fraction of the input that any window of a windowed cell reads (gapped windows
  skip some; adaptive bins and whole-axis pools read all of it): the real positions of
  the pooling's own taps (:func:`jaxpool._geometry.window_geometry`)."""
  _, taps = geo.window_geometry("coverage", g.shape, g.window, g.strides, g.padding,
                                g.dilation, g.ceil_mode, "channels_last")
  frac = 1.0
  for t in taps:
    p = t.positions()
    frac *= np.unique(p[(p >= 0) & (p < t.size)]).size / t.size
  return frac


def floor_row(row: dict, over: float, covered: float = 1.0) -> dict:
  """The floor columns of one measured row (``measure(..., floors=True)``); ``covered``:
  the fraction of the input the cell's windows read."""
  ms = row["ms"]
  xla = min(v for k, v in ms.items() if k.startswith("xla "))
  torch_floor = min((v for k, v in ms.items() if k.startswith("torch ")), default=None)
  mb = row["input_bytes"] / 1e6
  out = dict(row, xla_floor_ms=xla, torch_floor_ms=torch_floor,
             passes=ms["jaxpool"] / xla, gbps={k: mb / v for k, v in ms.items()})
  out["covered"] = covered
  if "torch" in ms:
    out["floor_vs_torch"] = xla / ms["torch"]
    if covered < 1:  # the floor reads what the windows skip: not a floor of this cell
      out["verdict"] = f"windows read {covered:.0%} of the input: no floor"
    else:
      out["verdict"] = ("XLA floor > target" if xla > over * ms["torch"]
                        else f"{ms['jaxpool'] / xla:.1f} passes")
  return out


def table(rows: list[dict]) -> str:
  lines = ["| op | class | pass | input MB | jaxpool ms | torch ms | XLA floor ms | "
           "torch floor ms | jaxpool/torch | XLA floor/torch | verdict |",
           "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
  for r in rows:
    ms, tf = r["ms"], r["torch_floor_ms"]
    lines.append(
        f"| {r['op']} | {r['class']} | {r['pass']} | {r['input_bytes'] / 1e6:.1f} | "
        f"{ms['jaxpool']:.3f} | {ms.get('torch', float('nan')):.3f} | "
        f"{r['xla_floor_ms']:.3f} | {'–' if tf is None else format(tf, '.3f')} | "
        f"{r.get('vs_torch', float('nan')):.2f}x | "
        f"{r.get('floor_vs_torch', float('nan')):.2f}x | {r.get('verdict', '–')} |")
  return "\n".join(lines)


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sweep", default=str(RESULTS / "sweep.json"),
                      help="a sweep.json whose slow cells to time")
  parser.add_argument("--over", type=float, default=1.5, help="the target ratio")
  parser.add_argument("--only", nargs="*", default=None, help="ops to run")
  parser.add_argument("--min-time", type=float, default=0.04)
  parser.add_argument("--rounds", type=int, default=5)
  args = parser.parse_args(argv)
  swept = json.loads(pathlib.Path(args.sweep).read_text())
  slow = {(r["op"], r["class"], r["pass"]) for r in swept
          if r.get("vs_torch", 0) > args.over and (not args.only or r["op"] in args.only)}
  rng = np.random.default_rng(0)
  rows = []
  cells = [(c, coverage(c.geometry)) for c in windowed_cells()]
  for cell, covered in cells + [(c, 1.0) for c in adaptive_cells()]:
    for backward in (False, True):
      if (cell.op, cell.cls, "fwd+bwd" if backward else "fwd") not in slow:
        continue
      row = measure(cell, backward, rng, args.min_time, args.rounds, floors=True)
      jax.clear_caches()
      rows.append(floor_row(row, args.over, covered))
      r = rows[-1]
      print(f"  {r['op']:12s} {r['class']:26s} {r['pass']:8s} {r.get('vs_torch', 0):5.2f}x "
            f"floor {r.get('floor_vs_torch', 0):5.2f}x  {r.get('verdict', '')}", flush=True)
  print(f"\n{len(rows)} cells over {args.over}x in {args.sweep}\n")
  print(table(rows))
  bounded = [r for r in rows if r.get("verdict") == "XLA floor > target"]
  if rows:
    print(f"\n{len(bounded)} of {len(rows)} cells: XLA's one-pass floor alone is over "
          f"{args.over}x PyTorch; median jaxpool/floor "
          f"{statistics.median(r['passes'] for r in rows):.2f}")
  out = pathlib.Path(args.sweep).with_name("floors.json")
  out.write_text(json.dumps(rows, indent=1))
  return rows


if __name__ == "__main__":
  main()
