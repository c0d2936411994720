"""SPMD on 8 virtual CPU devices (in a subprocess: the device count is fixed at JAX start)."""

import json
import pathlib
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).parent / "sharding_check.py"


@pytest.fixture(scope="module")
def results():
  proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                        timeout=900, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_every_function_and_layout_checked(results):
  fns = {r["fn"] for r in results}
  assert len(fns) == 19 + 5 and len(results) == 56 + 19 + 2 * 5
  assert len([r for r in results if r["sharded"] == "shard_map"]) == 19 + 5


def test_batch_and_channel_sharding_needs_no_collectives(results):
  strict = [r for r in results if r["expect_no_collectives"]]
  assert len(strict) == 27 + 9 + 5
  assert [r for r in strict if r["collectives"]] == []


def test_all_shardings_match_unsharded(results):
  assert [r for r in results if not r["correct"]] == []


def test_shard_map_forward_and_gradient(results):
  """vmap of every op inside shard_map (default check_vma): forward and gradient run and
  match the unsharded computation."""
  done = [r for r in results if r["sharded"] == "shard_map"]
  assert [r for r in done if "error" in r or not r["correct"]] == []
