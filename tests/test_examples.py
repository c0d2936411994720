"""Smoke runs of the examples: a short training on a subset, and the loss must fall."""

import pathlib
import sys

import numpy as np
import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))


@pytest.mark.parametrize("api", [[], ["--nnx"]], ids=["linen", "nnx"])
def test_digits_cnn_learns(api):
  pytest.importorskip("sklearn")
  import digits_cnn

  out = digits_cnn.main(["--epochs", "5", "--subset", "500", "--quiet"] + api)
  losses = out["losses"]
  assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])
  assert out["accuracy"] > 0.5


def test_segnet_reconstruction_improves(tmp_path):
  pytest.importorskip("sklearn")
  import segnet_digits

  png = tmp_path / "grid.png"
  out = segnet_digits.main(["--epochs", "2", "--subset", "400", "--quiet", "--out", str(png)])
  assert out["after"] < 0.7 * out["before"]
  assert png.stat().st_size > 1000
