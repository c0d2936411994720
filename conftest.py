"""Root pytest hooks, for the tests and the docstring examples alike.

- XLA:CPU compiles the suite's thousands of small programs with LLVM's cheaper
  optimisation (``--xla_backend_optimization_level=0``, no expensive passes): about a
  quarter less compile time. It changes how hard LLVM optimises the machine code, not
  what the program computes beyond float rounding inside a fusion, which every float
  comparison's tolerance covers. Benchmarks and users keep XLA's
  defaults. Set ``XLA_FLAGS`` yourself to override (subprocess tests inherit it).
- The 8-device SPMD subprocess test (about a minute) is collected first: with two
  workers stealing work, a long test collected late leaves one worker idle at the end
  while the other finishes it.
- The ``from_torch`` docstring examples need torch, an optional package; without it they
  are skipped, like the live-PyTorch tests.
"""

import importlib.util
import os

import pytest

_FAST_COMPILE = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true")
if "XLA_FLAGS" not in os.environ:
  os.environ["XLA_FLAGS"] = " ".join(_FAST_COMPILE)


_FIRST = "tests/test_sharding.py::"


def pytest_collection_modifyitems(config, items):
  items.sort(key=lambda item: not item.nodeid.startswith(_FIRST))  # stable: the rest keep order
  if importlib.util.find_spec("torch") is not None:
    return
  skip = pytest.mark.skip(reason="torch is not installed (the example ports a torch module)")
  for item in items:
    if isinstance(item, pytest.DoctestItem) and item.name.endswith(".from_torch"):
      item.add_marker(skip)
