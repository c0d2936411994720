"""Gradients match PyTorch at ties and at zero windows: recorded PyTorch 2.13.0 gradients
(always) and live torch (when installed)."""

import json
import pathlib

import numpy as np
import pytest
from torch_gradients import CASES, run_jaxpool, run_torch

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "torch_gradients.npz"


def _recorded():
  data = np.load(FIXTURES)
  return json.loads(str(data["meta"])), {k: data[k] for k in data.files if k != "meta"}


def test_recording_covers_every_case():
  meta, arrays = _recorded()
  assert meta["torch"].startswith("2.13.0")
  assert meta["cases"] == sorted(CASES)


def _compare(name, want):
  got = run_jaxpool(name)
  np.testing.assert_allclose(got["y"], want["y"], rtol=1e-12, atol=1e-12, err_msg=name)
  np.testing.assert_allclose(got["dx"], want["dx"], rtol=1e-12, atol=1e-12, err_msg=name)
  assert np.isfinite(got["dx"]).all(), name


@pytest.mark.parametrize("name", sorted(CASES))
def test_recorded_gradient_parity(name):
  _, arrays = _recorded()
  _compare(name, {"y": arrays[f"{name}/y"], "dx": arrays[f"{name}/dx"]})


@pytest.mark.parametrize("name", sorted(CASES))
def test_live_gradient_parity(name):
  pytest.importorskip("torch", exc_type=ImportError)
  _compare(name, run_torch(name))
