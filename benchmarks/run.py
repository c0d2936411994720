"""jaxpool vs flax.linen (or plain JAX) vs PyTorch on real-model pooling shapes.

    python -m benchmarks.run [--quick] [--only NAME ...] [--repeats N] [--rounds K]
                             [--min-time S]

For each case: compile first, then time the contenders interleaved in one process
(call order rotated every round), report medians, the jaxpool/PyTorch and
jaxpool/flax ratios, jaxpool's compile time and its compiled temp memory relative to the
input. PyTorch gets ``channels_last``/``channels_last_3d`` tensors (its fast CPU layout).
Backward passes take a random cotangent as an argument (a constant one would let XLA
fold the gradient away at compile time). Writes a markdown table to stdout,
``benchmarks/results/latest.json`` and ``benchmarks/results/ratios.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import platform
import statistics
import time
from collections.abc import Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxpool

RESULTS = pathlib.Path(__file__).parent / "results"


@dataclasses.dataclass
class Case:
  name: str
  shape: tuple[int, ...]              # channels_last
  jaxpool: Callable                   # x -> pytree
  flax: Callable | None               # x -> pytree, JAX's default way, if one exists
  torch: Callable | None              # channels_first torch tensor -> tensor
  backward: bool = False
  dtype: str = "float32"


def _torch():
  try:
    import torch
  except ImportError:
    return None
  return torch


def cases() -> list[Case]:
  torch = _torch()
  F = torch.nn.functional if torch else None
  pad1 = ((1, 1), (1, 1))

  def t(fn):
    return fn if torch else None

  stem = dict(window_shape=(3, 3), strides=2, padding=1)
  out = [
      Case("resnet_stem_max_3x3s2p1", (32, 112, 112, 64),
           lambda x: jaxpool.max_pool(x, **stem),
           lambda x: nn.max_pool(x, (3, 3), (2, 2), pad1),
           t(lambda x: F.max_pool2d(x, 3, 2, 1))),
      Case("resnet_stem_max_3x3s2p1", (32, 112, 112, 64),
           lambda x: jaxpool.max_pool(x, **stem),
           lambda x: nn.max_pool(x, (3, 3), (2, 2), pad1),
           t(lambda x: F.max_pool2d(x, 3, 2, 1)), backward=True),
      Case("resnet_stem_max_3x3s2p1", (32, 112, 112, 64),
           lambda x: jaxpool.max_pool(x, **stem),
           lambda x: nn.max_pool(x, (3, 3), (2, 2), pad1),
           t(lambda x: F.max_pool2d(x, 3, 2, 1)), dtype="bfloat16"),
      Case("vgg_max_2x2s2", (32, 56, 56, 128),
           lambda x: jaxpool.max_pool(x, (2, 2)),
           lambda x: nn.max_pool(x, (2, 2), (2, 2)),
           t(lambda x: F.max_pool2d(x, 2))),
      Case("vgg_max_2x2s2", (32, 56, 56, 128),
           lambda x: jaxpool.max_pool(x, (2, 2)),
           lambda x: nn.max_pool(x, (2, 2), (2, 2)),
           t(lambda x: F.max_pool2d(x, 2)), backward=True),
      Case("inception_avg_3x3s1p1_nopad", (32, 35, 35, 192),
           lambda x: jaxpool.avg_pool(x, (3, 3), 1, 1, count_include_pad=False),
           lambda x: nn.avg_pool(x, (3, 3), (1, 1), pad1, count_include_pad=False),
           t(lambda x: F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))),
      Case("inception_avg_3x3s1p1_nopad", (32, 35, 35, 192),
           lambda x: jaxpool.avg_pool(x, (3, 3), 1, 1, count_include_pad=False),
           lambda x: nn.avg_pool(x, (3, 3), (1, 1), pad1, count_include_pad=False),
           t(lambda x: F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)), backward=True),
      Case("global_avg", (64, 7, 7, 2048),
           lambda x: jaxpool.global_avg_pool(x, 2),
           lambda x: jnp.mean(x, axis=(1, 2)),
           t(lambda x: F.adaptive_avg_pool2d(x, 1).flatten(1))),
      Case("resnet_head_adaptive_avg_1x1", (64, 7, 7, 2048),
           lambda x: jaxpool.adaptive_avg_pool(x, (1, 1)),
           lambda x: jnp.mean(x, axis=(1, 2), keepdims=True),
           t(lambda x: F.adaptive_avg_pool2d(x, 1))),
      Case("avg_10x10_nonoverlapping", (8, 60, 60, 512),
           lambda x: jaxpool.avg_pool(x, (10, 10)),
           lambda x: nn.avg_pool(x, (10, 10), (10, 10)),
           t(lambda x: F.avg_pool2d(x, 10))),
      Case("avg_10x10_nonoverlapping", (8, 60, 60, 512),
           lambda x: jaxpool.avg_pool(x, (10, 10)),
           lambda x: nn.avg_pool(x, (10, 10), (10, 10)),
           t(lambda x: F.avg_pool2d(x, 10)), backward=True),
      Case("alexnet_adaptive_avg_13to6", (64, 13, 13, 256),
           lambda x: jaxpool.adaptive_avg_pool(x, (6, 6)), None,
           t(lambda x: F.adaptive_avg_pool2d(x, 6))),
      Case("alexnet_adaptive_avg_13to6", (64, 13, 13, 256),
           lambda x: jaxpool.adaptive_avg_pool(x, (6, 6)), None,
           t(lambda x: F.adaptive_avg_pool2d(x, 6)), backward=True),
      Case("adaptive_max_56to5", (32, 56, 56, 64),
           lambda x: jaxpool.adaptive_max_pool(x, (5, 5)), None,
           t(lambda x: F.adaptive_max_pool2d(x, 5))),
      Case("adaptive_max_56to5", (32, 56, 56, 64),
           lambda x: jaxpool.adaptive_max_pool(x, (5, 5)), None,
           t(lambda x: F.adaptive_max_pool2d(x, 5)), backward=True),
      Case("alexnet_max_3x3s2", (64, 27, 27, 64),
           lambda x: jaxpool.max_pool(x, (3, 3), 2),
           lambda x: nn.max_pool(x, (3, 3), (2, 2)),
           t(lambda x: F.max_pool2d(x, 3, 2)), backward=True),
      Case("segnet_max_with_indices_2x2", (16, 128, 128, 64),
           lambda x: jaxpool.max_pool_with_indices(x, (2, 2)), None,
           t(lambda x: F.max_pool2d(x, 2, return_indices=True))),
      Case("segnet_pool_unpool_2x2", (16, 128, 128, 64),
           lambda x: jaxpool.max_unpool(*jaxpool.max_pool_with_indices(x, (2, 2)), (2, 2)), None,
           t(lambda x: F.max_unpool2d(*F.max_pool2d(x, 2, return_indices=True), 2))),
      Case("segnet_pool_unpool_2x2", (16, 128, 128, 64),
           lambda x: jaxpool.max_unpool(*jaxpool.max_pool_with_indices(x, (2, 2)), (2, 2)), None,
           t(lambda x: F.max_unpool2d(*F.max_pool2d(x, 2, return_indices=True), 2)),
           backward=True),
      _unpool_only_case(torch),
      _unpool_only_case(torch, indices_in_window=True),
      Case("segnet_pool_unpool_in_window_2x2", (16, 128, 128, 64),
           lambda x: jaxpool.max_unpool(*jaxpool.max_pool_with_indices(x, (2, 2)), (2, 2),
                                        indices_in_window=True), None,
           t(lambda x: F.max_unpool2d(*F.max_pool2d(x, 2, return_indices=True), 2)),
           backward=True),
      Case("video_max3d_1x3x3_s1x2x2", (4, 16, 56, 56, 64),
           lambda x: jaxpool.max_pool(x, (1, 3, 3), (1, 2, 2), (0, 1, 1)),
           lambda x: nn.max_pool(x, (1, 3, 3), (1, 2, 2), ((0, 0), (1, 1), (1, 1))),
           t(lambda x: F.max_pool3d(x, (1, 3, 3), (1, 2, 2), (0, 1, 1)))),
      Case("seq1d_avg_3s2p1", (32, 1024, 256),
           lambda x: jaxpool.avg_pool(x, (3,), 2, 1),
           lambda x: nn.avg_pool(x, (3,), (2,), ((1, 1),), count_include_pad=True),
           t(lambda x: F.avg_pool1d(x, 3, 2, 1))),
      Case("yolo_sppf_max_5x5s1p2_x3", (16, 20, 20, 512),
           lambda x: _sppf(lambda v: jaxpool.max_pool(v, (5, 5), 1, 2))(x),
           lambda x: _sppf(lambda v: nn.max_pool(v, (5, 5), (1, 1), ((2, 2), (2, 2))))(x),
           t(lambda x: _sppf(lambda v: F.max_pool2d(v, 5, 1, 2))(x))),
      Case("yolo_max_5x5s1p2", (16, 20, 20, 512),
           lambda x: jaxpool.max_pool(x, (5, 5), 1, 2),
           lambda x: nn.max_pool(x, (5, 5), (1, 1), ((2, 2), (2, 2))),
           t(lambda x: F.max_pool2d(x, 5, 1, 2)), backward=True),
      Case("large_window_max_k28", (64, 28, 28, 128),
           lambda x: jaxpool.max_pool(x, (28, 28)),
           lambda x: nn.max_pool(x, (28, 28), (28, 28)),
           t(lambda x: F.max_pool2d(x, 28))),
  ]
  out += _layer_cases(torch)
  return out


def _layer_cases(torch) -> list[Case]:
  """GeM (timm's formula), avg+max (timm's) and blur pools (kornia's, when installed)."""
  F = torch.nn.functional if torch else None
  try:
    import kornia
  except ImportError:
    kornia = None

  def gem_torch(x):
    return F.avg_pool2d(x.clamp(min=1e-6).pow(3.0), tuple(x.shape[-2:])).pow(1.0 / 3.0).flatten(1)

  def catavgmax_torch(x):
    return torch.cat((F.adaptive_avg_pool2d(x, 1), F.adaptive_max_pool2d(x, 1)), 1)

  def flat_mean(x):
    return jnp.mean(jnp.maximum(x, 1e-6) ** 3, axis=(1, 2)) ** (1 / 3)

  gem = dict(jaxpool=lambda x: jaxpool.gem_pool(x, 2), flax=flat_mean,
             torch=gem_torch if torch else None)
  # the same samples for both: the same windows
  samples = np.random.default_rng(3).random((16, 64, 2)).astype(np.float32)
  frac_torch = None
  if torch:
    samples_t = torch.from_numpy(samples)

    def frac_torch(x):
      return F.fractional_max_pool2d(x, 2, output_size=(28, 28),
                                     _random_samples=_on(samples_t, x.device))

  frac = dict(jaxpool=lambda x: jaxpool.fractional_max_pool(x, (2, 2), (28, 28),
                                                            samples=samples),
              flax=None, torch=frac_torch)
  return [
      Case("fractional_max_2x2_to_28", (16, 56, 56, 64), **frac),
      Case("fractional_max_2x2_to_28", (16, 56, 56, 64), **frac, backward=True),
      Case("retrieval_gem_p3", (32, 14, 14, 2048), **gem),
      Case("retrieval_gem_p3", (32, 14, 14, 2048), **gem, backward=True),
      Case("timm_catavgmax_1x1", (32, 7, 7, 2048),
           lambda x: jaxpool.adaptive_catavgmax_pool(x, (1, 1)), None,
           catavgmax_torch if torch else None),
      Case("timm_catavgmax_1x1", (32, 7, 7, 2048),
           lambda x: jaxpool.adaptive_catavgmax_pool(x, (1, 1)), None,
           catavgmax_torch if torch else None, backward=True),
      Case("video_global_max_3d", (4, 16, 28, 28, 256),
           lambda x: jaxpool.global_max_pool(x, 3), lambda x: jnp.max(x, axis=(1, 2, 3)),
           (lambda x: F.adaptive_max_pool3d(x, 1).flatten(1)) if torch else None),
      Case("video_global_max_3d", (4, 16, 28, 28, 256),
           lambda x: jaxpool.global_max_pool(x, 3), lambda x: jnp.max(x, axis=(1, 2, 3)),
           (lambda x: F.adaptive_max_pool3d(x, 1).flatten(1)) if torch else None, backward=True),
      Case("blurpool_3_s2", (16, 56, 56, 128), lambda x: jaxpool.blur_pool(x, 3), None,
           (lambda x: kornia.filters.blur_pool2d(x, 3, 2)) if kornia else None),
      Case("blurpool_3_s2", (16, 56, 56, 128), lambda x: jaxpool.blur_pool(x, 3), None,
           (lambda x: kornia.filters.blur_pool2d(x, 3, 2)) if kornia else None,
           backward=True),
      Case("max_blurpool_3_s2_m2", (16, 56, 56, 128), lambda x: jaxpool.max_blur_pool(x, 3),
           None, (lambda x: kornia.filters.max_blur_pool2d(x, 3, 2, 2)) if kornia else None),
  ]


def _unpool_only_case(torch, indices_in_window: bool = False) -> Case:
  """max_unpool alone, on indices of a real 2x2 max pooling (SegNet decoder)."""
  x = np.random.default_rng(1).standard_normal((16, 128, 128, 64), dtype=np.float32)
  _, idx = jax.jit(lambda v: jaxpool.max_pool_with_indices(v, (2, 2)))(x)
  tidx = None
  if torch is not None:
    tidx = torch.from_numpy(np.moveaxis(np.asarray(idx), -1, 1).astype(np.int64).copy())
    tidx = tidx.contiguous(memory_format=torch.channels_last)
  name = "segnet_unpool_in_window_2x2" if indices_in_window else "segnet_unpool_only_2x2"
  return Case(name, (16, 64, 64, 64),
              lambda v: jaxpool.max_unpool(v, idx, (2, 2), indices_in_window=indices_in_window),
              None,
              (lambda v: torch.nn.functional.max_unpool2d(v, _on(tidx, v.device), 2))
              if torch else None)


_ON_DEVICE: dict = {}


def _on(t, device):
  """``t`` on ``device``, copied once (benchmarks.backends runs PyTorch on a GPU)."""
  key = (id(t), str(device))
  if key not in _ON_DEVICE:
    _ON_DEVICE[key] = t.to(device)
  return _ON_DEVICE[key]


def _sppf(pool):
  def f(x):
    y1 = pool(x)
    y2 = pool(y1)
    return (y1, y2, pool(y2))
  return f


def _jax_callable(fn, backward: bool):
  if not backward:
    return jax.jit(fn)

  def fwd_bwd(x, g):
    y, vjp = jax.vjp(fn, x)
    return y, vjp(g)[0]

  return jax.jit(fwd_bwd)


def _first(tree):
  return tree[0] if isinstance(tree, (tuple, list)) else tree


def _torch_callable(torch, fn, backward: bool):
  if not backward:
    def run(x):
      with torch.no_grad():
        return fn(x)
    return run

  def run(x, g):
    x = x.detach().requires_grad_(True)
    y = _first(fn(x))
    y.backward(g)
    return x.grad
  return run


def _to_torch(torch, a, dtype):
  """NHWC array -> NCHW tensor in PyTorch's fast CPU layout (channels_last memory)."""
  t = torch.from_numpy(np.moveaxis(np.asarray(a, np.float32), -1, 1).copy()).to(dtype)
  if t.ndim == 4:
    return t.contiguous(memory_format=torch.channels_last)
  if t.ndim == 5:
    return t.contiguous(memory_format=torch.channels_last_3d)
  return t


def _time(f, args, sync) -> float:
  start = time.perf_counter()
  sync(f(*args))
  return time.perf_counter() - start


def _batch_time(f, args, sync, batch: int) -> float:
  """Seconds per call over ``batch`` back-to-back calls and one synchronisation (on a GPU
  the launch queue, not one round trip, is what a training step pays)."""
  start = time.perf_counter()
  out = None
  for _ in range(batch):
    out = f(*args)
  sync(out)
  return (time.perf_counter() - start) / batch


def _torch_device(torch) -> str:
  """Where PyTorch runs beside JAX: ``"cuda"`` when JAX's backend is a GPU and PyTorch has
  CUDA, else ``"cpu"``."""
  on_gpu = torch is not None and torch.cuda.is_available() and jax.default_backend() == "gpu"
  return "cuda" if on_gpu else "cpu"


MAX_REPEATS_FACTOR = 20


class Trial:
  """One case, compiled and warmed up; :meth:`round` adds timings, :meth:`row` reports."""

  def __init__(self, case: Case, rng: np.random.Generator):
    self.case, torch = case, _torch()
    dtype = jnp.bfloat16 if case.dtype == "bfloat16" else jnp.float32
    x = jnp.asarray(rng.standard_normal(case.shape, dtype=np.float32), dtype)
    out_shape = jax.eval_shape(lambda v: _first(case.jaxpool(v)), x)
    g = jnp.asarray(rng.standard_normal(out_shape.shape, dtype=np.float32), dtype)
    jax_args = (x, g) if case.backward else (x,)
    self.contenders, self.args = {}, {}
    self.compile_s, self.temp_ratio = None, None
    for name, fn in {"jaxpool": case.jaxpool, "flax": case.flax}.items():
      if fn is None or (case.backward and name == "flax" and "segnet" in case.name):
        continue
      f = _jax_callable((lambda v, fn=fn: _first(fn(v))) if case.backward else fn,
                        case.backward)
      if name == "jaxpool":
        start = time.perf_counter()
        compiled = f.lower(*jax_args).compile()
        self.compile_s = time.perf_counter() - start
        mem = compiled.memory_analysis()
        if mem is not None:
          self.temp_ratio = mem.temp_size_in_bytes / x.nbytes
      try:
        jax.block_until_ready(f(*jax_args))
      except NotImplementedError as e:  # e.g. JAX's max-pool VJP with dilation
        print(f"  {name}: {e}")
        continue
      self.contenders[name], self.args[name] = f, jax_args
    if torch is not None and case.torch is not None:
      tdtype = torch.bfloat16 if case.dtype == "bfloat16" else torch.float32
      tx, tg = (_to_torch(torch, a, tdtype) for a in (x, g))
      self.contenders["torch"] = _torch_callable(torch, case.torch, case.backward)
      self.args["torch"] = (tx, tg) if case.backward else (tx,)
      self.contenders["torch"](*self.args["torch"])
    self.times = {name: [] for name in self.contenders}
    self.rounds = 0

  def round(self, repeats: int, min_time: float = 0.0, interleave: str = "block") -> None:
    """At least ``repeats`` timed calls of each contender, and more (up to
    ``MAX_REPEATS_FACTOR`` times) until each has run ``min_time`` seconds: a 1 ms case
    then gets hundreds of timings, and its median stops wandering.

    ``interleave="block"``: each contender in turn (the order rotated every round) makes
    one untimed call, then its timed calls back to back, so each library is timed in its
    own steady state. ``"call"``: one call of each contender in turn; every call then
    starts right after another library's, in that library's wake (its worker threads
    still spinning, the caches holding its buffers)."""
    names = list(self.contenders)
    start = self.rounds % len(names)
    order = names[start:] + names[:start]
    self.rounds += 1
    if interleave == "block":
      for name in order:
        self._call(name, timed=False)
        spent, count = 0.0, 0
        while count < repeats or (spent < min_time and count < MAX_REPEATS_FACTOR * repeats):
          spent += self._call(name)
          count += 1
      return
    spent = dict.fromkeys(names, 0.0)
    r = 0
    while r < repeats or (min(spent.values()) < min_time
                          and r < MAX_REPEATS_FACTOR * repeats):
      for name in order[r % len(order):] + order[:r % len(order)]:
        spent[name] += self._call(name)
      r += 1

  def _call(self, name: str, timed: bool = True) -> float:
    sync = (lambda o: o) if name == "torch" else jax.block_until_ready
    seconds = _time(self.contenders[name], self.args[name], sync)
    if timed:
      self.times[name].append(seconds)
    return seconds

  def row(self) -> dict:
    case = self.case
    med = {name: statistics.median(ts) * 1e3 for name, ts in self.times.items()}
    row = {"case": case.name, "pass": "fwd+bwd" if case.backward else "fwd",
           "dtype": case.dtype, "shape": list(case.shape), "ms": med,
           "compile_s": self.compile_s, "temp_ratio": self.temp_ratio}
    if "torch" in med:
      row["vs_torch"] = med["jaxpool"] / med["torch"]
    if "flax" in med:
      row["vs_flax"] = med["jaxpool"] / med["flax"]
    return row


def run_case(case: Case, repeats: int, rng: np.random.Generator,
             min_time: float = 0.0, interleave: str = "block") -> dict:
  trial = Trial(case, rng)
  trial.round(repeats, min_time, interleave)
  return trial.row()


def markdown(rows: list[dict]) -> str:
  lines = ["| case | pass | dtype | jaxpool ms | flax/jnp ms | torch ms | jaxpool/torch | "
           "jaxpool/flax | compile s | temp mem / input |",
           "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]

  def f(v, fmt):
    return "–" if v is None else format(v, fmt)

  for r in rows:
    ms = r["ms"]
    lines.append(
        f"| {r['case']} {tuple(r['shape'])} | {r['pass']} | {r['dtype']} | "
        f"{f(ms.get('jaxpool'), '.2f')} | {f(ms.get('flax'), '.2f')} | "
        f"{f(ms.get('torch'), '.2f')} | {f(r.get('vs_torch'), '.2f')}× | "
        f"{f(r.get('vs_flax'), '.2f')}× | {f(r['compile_s'], '.2f')} | "
        f"{f(r['temp_ratio'], '.2f')} |")
  return "\n".join(lines)


def environment() -> dict:
  torch = _torch()
  return {"backend": jax.default_backend(), "devices": str(jax.devices()),
          "cpu_count": __import__("os").cpu_count(), "platform": platform.platform(),
          "python": platform.python_version(), "jax": jax.__version__, "flax": flax.__version__,
          "torch": torch.__version__ if torch else None,
          "torch_threads": torch.get_num_threads() if torch else None}


def plot(rows: list[dict], path: pathlib.Path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  labels = [f"{r['case']} {r['pass']}{' bf16' if r['dtype'] == 'bfloat16' else ''}"
            for r in rows]
  ratios = [r.get("vs_torch", np.nan) for r in rows]
  fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1))
  ax.barh(labels, ratios, color=["tab:green" if v <= 1.0 else "tab:orange" if v <= 1.5
                                 else "tab:red" for v in ratios])
  ax.axvline(1.0, color="k", lw=0.8)
  ax.axvline(1.5, color="k", lw=0.8, ls="--")
  ax.set_xlabel("jaxpool time / PyTorch time (lower is better)")
  ax.invert_yaxis()
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=15)
  parser.add_argument("--only", nargs="*", help="run cases whose name contains any of these")
  parser.add_argument("--quick", action="store_true", help="5 repeats")
  parser.add_argument("--backward", action="store_true", help="only the fwd+bwd cases")
  parser.add_argument("--rounds", type=int, default=1,
                      help="time every case in this many rounds of --repeats calls, spread "
                           "over the run (a slow spell of the machine then hits all cases)")
  parser.add_argument("--min-time", type=float, default=0.25,
                      help="seconds each contender runs per case and round, at least "
                           "(fast cases get more than --repeats calls)")
  parser.add_argument("--interleave", choices=("block", "call"), default="block",
                      help="block: each contender's calls back to back after an untimed "
                           "one, contenders taking turns; call: contenders take turns every "
                           "call (each call then runs in the other library's wake)")
  args = parser.parse_args(argv)
  torch = _torch()
  if torch is not None:
    torch.set_num_threads(__import__("os").cpu_count())
  repeats = 5 if args.quick else args.repeats
  min_time = 0.0 if args.quick else args.min_time
  env = environment()
  print(f"backend={env['backend']} jax={env['jax']} flax={env['flax']} torch={env['torch']} "
        f"cpus={env['cpu_count']}")
  rng = np.random.default_rng(0)
  selected = [c for c in cases() if not args.only or any(s in c.name for s in args.only)]
  selected = [c for c in selected if c.backward or not args.backward]
  rows = []
  if args.rounds == 1:  # one case at a time: only its inputs in memory
    for case in selected:
      rows.append(run_case(case, repeats, rng, min_time, args.interleave))
      print(markdown([rows[-1]]).splitlines()[-1], flush=True)
  else:
    trials = [Trial(case, rng) for case in selected]
    for r in range(args.rounds):
      for trial in trials:
        trial.round(repeats, min_time, args.interleave)
      print(f"round {r + 1}/{args.rounds} done", flush=True)
    rows = [trial.row() for trial in trials]
  table = markdown(rows)
  print("\n" + table)
  RESULTS.mkdir(exist_ok=True)
  (RESULTS / "latest.json").write_text(json.dumps({"env": env, "rows": rows}, indent=1))
  if rows and any("vs_torch" in r for r in rows):
    plot(rows, RESULTS / "ratios.png")
  return rows


if __name__ == "__main__":
  main()
