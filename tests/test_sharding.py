"""SPMD on 8 virtual CPU devices (in a subprocess: the device count is fixed at JAX start)."""

import json
import pathlib
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).parent / "sharding_check.py"


def test_spmd_on_eight_devices():
  """One test, so that the subprocess (the suite's longest item) runs once: xdist would
  run a module fixture once per worker that takes one of several tests."""
  proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                        timeout=900, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]

  # every function and layout is checked
  fns = {r["fn"] for r in results}
  assert len(fns) == 20 + 5 and len(results) == 59 + 20 + 2 * 5
  assert len([r for r in results if r["sharded"] == "shard_map"]) == 20 + 5
  # batch and channel sharding need no collectives
  strict = [r for r in results if r["expect_no_collectives"]]
  assert len(strict) == 29 + 9 + 5
  assert [r for r in strict if r["collectives"]] == []
  # every sharding matches the unsharded computation
  assert [r for r in results if not r["correct"]] == []
  # vmap of every op inside shard_map (default check_vma): forward and gradient run
  done = [r for r in results if r["sharded"] == "shard_map"]
  assert [r for r in done if "error" in r or not r["correct"]] == []
