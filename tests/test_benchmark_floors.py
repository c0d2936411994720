"""The floors report's arithmetic (``benchmarks/floors.py``): which part of the input a
cell's windows read, and the verdict it draws from the timings."""

import pytest

from benchmarks.floors import coverage, floor_row
from benchmarks.sweep import WINDOWED, Geometry


@pytest.mark.parametrize("cls", ["2x2/2 non-overlapping", "3x3/2 p1 overlapping",
                                 "3x3/2 ceil overhang", "whole axis 56x56", "3-D 2x2x2/2"])
def test_windows_that_tile_the_input_cover_it(cls):
  assert coverage(WINDOWED[cls]) == 1.0


def test_gapped_windows_cover_what_they_read():
  # 2x2 windows every 3 elements of 56: 19 windows read 38 of each axis's 56 positions
  assert coverage(WINDOWED["2x2/3 gapped"]) == pytest.approx((38 / 56) ** 2)
  # 1x1 windows every 4th element of 10: positions 0, 4, 8
  assert coverage(Geometry((1,), 4, shape=(2, 10, 3))) == pytest.approx(3 / 10)


def _row(jaxpool, torch, xla_sum, xla_max):
  return {"op": "avg_pad", "class": "c", "pass": "fwd", "input_bytes": 6_400_000,
          "ms": {"jaxpool": jaxpool, "torch": torch, "xla sum": xla_sum, "xla max": xla_max,
                 "torch sum": 0.05}}


def test_a_floor_over_the_target_bounds_the_cell():
  r = floor_row(_row(0.30, 0.10, 0.20, 0.25), over=1.5)
  assert r["xla_floor_ms"] == 0.20 and r["torch_floor_ms"] == 0.05
  assert r["floor_vs_torch"] == pytest.approx(2.0)
  assert r["verdict"] == "XLA floor > target"
  assert r["gbps"]["jaxpool"] == pytest.approx(6.4 / 0.30)


def test_a_floor_within_the_target_counts_passes():
  r = floor_row(_row(0.30, 0.20, 0.20, 0.25), over=1.5)
  assert r["verdict"] == "1.5 passes"
  assert r["passes"] == pytest.approx(1.5)


def test_gapped_cells_get_no_floor():
  r = floor_row(_row(0.30, 0.10, 0.20, 0.25), over=1.5, covered=0.46)
  assert r["verdict"].startswith("windows read 46%")
