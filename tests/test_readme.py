"""The README's Python examples run as written (4 virtual CPU devices, in a subprocess);
those that port a torch module run when torch is installed."""

import importlib.util
import pathlib
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_blocks_run():
  blocks = [b.split("```")[0] for b in README.read_text().split("```python")[1:]]
  assert len(blocks) >= 4
  if importlib.util.find_spec("torch") is None:
    blocks = [b for b in blocks if "import torch" not in b]
  program = "\n\n".join(
      ["import os", "os.environ['XLA_FLAGS'] = os.environ.get('XLA_FLAGS', '') + "
       "' --xla_force_host_platform_device_count=4'"]
      + blocks + ["print('ok', w.shape)"])
  out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                       timeout=600, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip().endswith("ok (3, 10)")
