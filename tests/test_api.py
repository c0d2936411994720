"""The exported names are exactly the contract's (shared/API.md)."""

import pathlib
import re

import pytest

import jaxpool
import jaxpool.linen
import jaxpool.nnx

FUNCTIONS = {
    "max_pool", "min_pool", "avg_pool", "lp_pool", "max_pool_with_indices", "max_unpool",
    "adaptive_avg_pool", "adaptive_max_pool", "adaptive_max_pool_with_indices",
    "global_avg_pool", "global_max_pool", "channel_pool", "segment_pool", "gem_pool",
    "adaptive_avgmax_pool", "adaptive_catavgmax_pool", "blur_pool", "max_blur_pool",
    "fractional_max_pool", "fractional_max_pool_with_indices",
}
MODULES = {"MaxPool", "MinPool", "AvgPool", "LPPool", "MaxPoolWithIndices", "MaxUnpool",
           "AdaptiveAvgPool", "AdaptiveMaxPool", "GlobalAvgPool", "GlobalMaxPool", "ChannelPool"}
# Named by shared/API.md's second-round sections, not built yet (open issues): listed
# here so that the contract and the exports cannot drift apart silently.
PENDING: set[str] = set()
# The modules the later sections add to the first section's list.
LATER_MODULES = {"SegmentPool", "GeMPool", "AdaptiveAvgMaxPool", "AdaptiveCatAvgMaxPool",
                 "BlurPool", "MaxBlurPool", "FractionalMaxPool"}
# Not in shared/API.md: the porting issue's one-call converter, beside the modules.
PORTING = {"from_torch"}


def _api_md():
  for parent in pathlib.Path(__file__).resolve().parents:
    p = parent / "shared" / "API.md"
    if p.exists():
      return p.read_text()
  return None


def test_exports_match_the_list():
  assert set(jaxpool.__all__) == FUNCTIONS
  assert set(jaxpool.linen.__all__) == MODULES | LATER_MODULES | PORTING
  assert set(jaxpool.nnx.__all__) == MODULES | LATER_MODULES | PORTING
  for name in FUNCTIONS:
    assert callable(getattr(jaxpool, name))


def test_exports_match_shared_api_md():
  text = _api_md()
  if text is None:
    pytest.skip("shared/API.md is not beside this checkout")
  functions = set(re.findall(r"^([a-z_]+)\(", text, flags=re.M))
  modules = set(re.search(r"`(MaxPool, .*?)`", text, flags=re.S).group(1).replace("\n", " ")
                .replace(" ", "").split(","))
  assert functions - PENDING == FUNCTIONS
  assert PENDING <= functions
  assert modules == MODULES
  for name in LATER_MODULES:
    assert f"`{name}`" in text, name


def _python(*args):
  import subprocess
  import sys
  return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300,
                        check=False)


def test_linen_and_nnx_load_on_first_use():
  out = _python("-c", "import sys, jaxpool; assert 'flax' not in sys.modules; "
                      "print(jaxpool.linen.MaxPool.__name__, jaxpool.nnx.MaxPool.__name__); "
                      "assert 'torch' not in sys.modules")
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.split() == ["MaxPool", "MaxPool"]


def test_import_under_python_OO():
  """-OO strips docstrings: nothing at import may rely on them."""
  out = _python("-OO", "-c", "import jaxpool, jaxpool.linen, jaxpool.nnx; print('ok')")
  assert out.returncode == 0, out.stderr[-2000:]
