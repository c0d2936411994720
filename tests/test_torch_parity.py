"""Parity with PyTorch: recorded fixtures (always) and live torch (when installed)."""

import json
import pathlib

import numpy as np
import pytest
from torch_cases import OPS, compare, make_input, run_torch, sample_case
from util import LAYOUTS

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "torch_pooling.npz"


def _recorded():
  data = np.load(FIXTURES)
  meta = json.loads(str(data["meta"]))
  for i, m in enumerate(meta["cases"]):
    prefix = f"{i}/"
    out = {k[len(prefix):]: data[k] for k in data.files if k.startswith(prefix) and k != f"{i}/x"}
    if m["rejected"] is not None:
      out = {"rejected": m["rejected"]}
    # each case in one layout, alternating, so both layouts see every op (a case
    # compiles a program per layout, and compiling is most of this suite's time)
    layout = LAYOUTS[i % 2]
    yield pytest.param(m["case"], data[f"{i}/x"], out, layout,
                       id=f"{m['case']['op']}-{i}-{layout}")


RECORDED = list(_recorded())


def test_fixtures_cover_every_op_and_rejections():
  ops = {p.values[0]["op"] for p in RECORDED}
  assert ops == set(OPS)
  assert sum("rejected" in p.values[2] for p in RECORDED) >= 5
  assert json.loads(str(np.load(FIXTURES)["meta"]))["torch"].startswith("2.13.0")


@pytest.mark.parametrize("case,x,torch_out,data_format", RECORDED)
def test_recorded_pytorch_parity(case, x, torch_out, data_format):
  compare(case, x, torch_out, data_format)


@pytest.mark.parametrize("op", OPS)
def test_live_pytorch_parity(op):
  pytest.importorskip("torch", exc_type=ImportError)
  rng = np.random.default_rng(7)  # other cases than the recording
  outcomes = []
  for i in range(16):
    case = sample_case(rng, op)
    x = make_input(case, seed=10_000 + i)
    outcomes.append(compare(case, x, run_torch(case, x), LAYOUTS[i % 2]))
  assert outcomes.count("equal") >= len(outcomes) // 2, outcomes
