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


def _run_example(*code):
  import subprocess
  return subprocess.run([sys.executable, *code], capture_output=True, text=True, timeout=600,
                        check=False, cwd=EXAMPLES.parent)


def test_port_from_pytorch_agrees_in_float64():
  pytest.importorskip("torch")
  # A subprocess: the example turns on float64 for its whole process.
  out = _run_example(str(EXAMPLES / "port_from_pytorch.py"), "--batch", "2")
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  table = out.stdout.split("quantity", 1)[1].splitlines()[1:]
  rows = {line[:16].strip(): line.split() for line in table if line.strip()[-3:] == "yes"}
  assert {"logits", "input gradient", "unpool", "lp_pool", "adaptive_max"} <= set(rows)
  assert all(float(r[-2]) <= 1e-12 for r in rows.values())
  assert "every quantity agrees to 1e-12" in out.stdout


def test_port_from_pytorch_without_torch_says_what_to_install():
  out = _run_example("-c", "import runpy, sys; sys.modules['torch'] = None; "
                           f"runpy.run_path({str(EXAMPLES / 'port_from_pytorch.py')!r}, "
                           "run_name='__main__')")
  assert out.returncode == 1
  assert "needs PyTorch: pip install torch==2.13.0" in out.stderr
