"""Random pooling configurations, run through PyTorch and through jaxpool.

Used by ``fixtures/make_torch_fixtures.py`` (records PyTorch's answers) and by the
parity tests (replay the recording, or ask a live torch). A case is a JSON-able dict;
inputs are channels_first ``(N, C, *spatial)``, as PyTorch takes them.
"""

from __future__ import annotations

import numpy as np

OPS = ("max", "avg", "lp", "adaptive_avg", "adaptive_max", "unpool")


def sample_case(rng: np.random.Generator, op: str) -> dict:
  d = int(rng.integers(1, 4))
  spatial = [int(rng.integers(1, 10 if d < 3 else 7)) for _ in range(d)]
  case = {"op": op, "d": d, "shape": [2, 3] + spatial, "ties": bool(rng.random() < 0.4)}
  if op.startswith("adaptive"):
    case["output_size"] = [int(rng.integers(1, 2 * n + 2)) for n in spatial]
    return case
  k = [int(rng.integers(1, 5)) for _ in range(d)]
  case.update(
      window=k,
      stride=[int(rng.integers(1, 5)) for _ in range(d)],
      # occasionally over PyTorch's limit of window // 2: both must reject it
      padding=[int(rng.integers(0, kk // 2 + 1 + (rng.random() < 0.1))) for kk in k],
      dilation=[int(rng.integers(1, 4)) if op == "max" else 1 for _ in range(d)],
      ceil_mode=bool(rng.random() < 0.5) if op != "lp" else False,
      count_include_pad=bool(rng.random() < 0.5),
      divisor_override=(int(rng.integers(1, 6)) if op == "avg" and d > 1
                        and rng.random() < 0.3 else None),
      p=float(rng.choice([1.0, 2.0, 3.0])),
  )
  if op in ("lp", "unpool"):
    case["padding"] = [0] * d if op == "lp" else case["padding"]
  return case


def make_input(case: dict, seed: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  shape = case["shape"]
  if case["ties"]:
    x = rng.integers(-2, 3, size=shape).astype(np.float32)
  else:
    x = rng.standard_normal(shape).astype(np.float32)
  if case["op"] == "lp":
    x = np.abs(x) + 0.25
  return x


def run_torch(case: dict, x: np.ndarray) -> dict:
  """PyTorch's outputs, or ``{"rejected": message}``."""
  import torch
  import torch.nn.functional as F

  d, op = case["d"], case["op"]
  t = torch.tensor(x, requires_grad=op in ("max", "adaptive_max"))
  try:
    if op == "max" or op == "unpool":
      y, idx = getattr(F, f"max_pool{d}d")(t, case["window"], case["stride"], case["padding"],
                                           case["dilation"], case["ceil_mode"],
                                           return_indices=True)
      if op == "unpool":
        out = getattr(F, f"max_unpool{d}d")(y, idx, case["window"], case["stride"],
                                            case["padding"], output_size=x.shape[2:])
        return {"values": y.detach().numpy(), "indices": idx.numpy().astype(np.int32),
                "y": out.detach().numpy()}
      g = torch.tensor(np.random.default_rng(1).standard_normal(y.shape).astype(np.float32))
      (y * g).sum().backward()
      return {"y": y.detach().numpy(), "indices": idx.numpy().astype(np.int32),
              "g": g.numpy(), "dx": t.grad.numpy()}
    if op == "avg":
      kw = dict(ceil_mode=case["ceil_mode"], count_include_pad=case["count_include_pad"])
      if d > 1:
        kw["divisor_override"] = case["divisor_override"]
      y = getattr(F, f"avg_pool{d}d")(t, case["window"], case["stride"], case["padding"], **kw)
      return {"y": y.numpy()}
    if op == "lp":
      k, s = case["window"], case["stride"]
      if d == 1:  # lp_pool1d multiplies by kernel_size: it must be an int
        k, s = k[0], s[0]
      y = getattr(F, f"lp_pool{d}d")(t, case["p"], k, s, case["ceil_mode"])
      return {"y": y.numpy()}
    if op == "adaptive_avg":
      return {"y": getattr(F, f"adaptive_avg_pool{d}d")(t, case["output_size"]).numpy()}
    if op == "adaptive_max":
      y, idx = getattr(F, f"adaptive_max_pool{d}d")(t, case["output_size"],
                                                     return_indices=True)
      g = torch.tensor(np.random.default_rng(1).standard_normal(y.shape).astype(np.float32))
      (y * g).sum().backward()
      return {"y": y.detach().numpy(), "indices": idx.numpy().astype(np.int32),
              "g": g.numpy(), "dx": t.grad.numpy()}
  except RuntimeError as e:
    return {"rejected": str(e).splitlines()[0]}
  raise ValueError(op)


def run_jaxpool(case: dict, x: np.ndarray, data_format: str, torch_out: dict) -> dict:
  """jaxpool's outputs for the same case (channels_first results); may raise ValueError."""
  import jax
  import jax.numpy as jnp

  import jaxpool

  def to(a):
    return a if data_format == "channels_first" else np.moveaxis(a, 1, -1)

  def back(a):
    a = np.asarray(a)
    return a if data_format == "channels_first" else np.moveaxis(a, -1, 1)

  op, xs = case["op"], to(x)
  win = dict(window_shape=tuple(case.get("window", ())), strides=case.get("stride"),
             padding=case.get("padding"), data_format=data_format)
  # One jitted program per case: far cheaper than eager op-by-op compilation.
  if op == "max":
    win.update(dilation=case["dilation"], ceil_mode=case["ceil_mode"])

    @jax.jit
    def pool_and_grad(v, g):
      y, idx = jaxpool.max_pool_with_indices(v, **win)
      dx = jax.grad(lambda u: jnp.sum(jaxpool.max_pool(u, **win) * g))(v)
      return y, idx, dx

    g = to(torch_out["g"]) if "g" in torch_out else None
    if g is None:
      g = np.ones(jax.eval_shape(lambda v: jaxpool.max_pool(v, **win), xs).shape, np.float32)
    y, idx, dx = pool_and_grad(xs, g)
    return {"y": back(y), "indices": back(idx), "dx": back(dx)}
  if op == "unpool":
    y, idx = jax.jit(lambda v: jaxpool.max_pool_with_indices(
        v, ceil_mode=case["ceil_mode"], **win))(xs)
    values, indices = to(torch_out.get("values", back(y))), to(torch_out.get("indices",
                                                                               back(idx)))
    out = jaxpool.max_unpool(values, indices, output_size=tuple(x.shape[2:]), **win)
    return {"values": back(y), "indices": back(idx), "y": back(out)}
  if op == "avg":
    y = jax.jit(lambda v: jaxpool.avg_pool(v, ceil_mode=case["ceil_mode"],
                                           count_include_pad=case["count_include_pad"],
                                           divisor_override=case["divisor_override"], **win))(xs)
    return {"y": back(y)}
  if op == "lp":
    return {"y": back(jaxpool.lp_pool(xs, case["p"], ceil_mode=case["ceil_mode"], **win))}
  size = tuple(case["output_size"])
  if op == "adaptive_avg":
    return {"y": back(jaxpool.adaptive_avg_pool(xs, size, data_format=data_format))}

  @jax.jit
  def adaptive_and_grad(v, g):
    y, idx = jaxpool.adaptive_max_pool_with_indices(v, size, data_format=data_format)
    dx = jax.grad(lambda u: jnp.sum(jaxpool.adaptive_max_pool(
        u, size, data_format=data_format) * g))(v)
    return y, idx, dx

  y, idx, dx = adaptive_and_grad(xs, to(torch_out["g"]))
  return {"y": back(y), "indices": back(idx), "dx": back(dx)}


def compare(case: dict, x: np.ndarray, torch_out: dict, data_format: str) -> str:
  """Assert jaxpool agrees with PyTorch on this case; returns what was checked."""
  if "rejected" in torch_out:
    if "smaller than kernel size" in torch_out["rejected"]:
      # Only avg_pool3d checks the unpadded size against the kernel (2-D accepts the same
      # geometry); jaxpool applies one N-D rule, so check it against the reference.
      import reference

      try:
        got = run_jaxpool(case, x, data_format, torch_out)["y"]
      except ValueError as e:
        assert "output size" in str(e) or "only padding" in str(e), e
        return "rejected by both"
      want = reference.avg_pool(x, case["window"], case["stride"], case["padding"], 1,
                                case["ceil_mode"], case["count_include_pad"],
                                case["divisor_override"])
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
      return "avg_pool3d-only rejection; matches the reference"
    try:
      run_jaxpool(case, x, data_format, torch_out)
    except ValueError:
      return "rejected by both"
    raise AssertionError(f"PyTorch rejects {case} ({torch_out['rejected']}), jaxpool did not")
  try:
    got = run_jaxpool(case, x, data_format, torch_out)
  except ValueError as e:
    # The contract rejects windows that read only padding; PyTorch returns -inf there.
    assert "only padding" in str(e), (case, e)
    assert np.isneginf(torch_out["y"]).any(), case
    return "rejected by jaxpool (window in padding)"
  for key, want in torch_out.items():
    if key == "g":
      continue
    if key in ("indices",) or case["op"] in ("max", "adaptive_max", "unpool") and key != "dx":
      np.testing.assert_array_equal(got[key], want, err_msg=f"{key} {case}")
    else:
      np.testing.assert_allclose(got[key], want, rtol=1e-5, atol=1e-5, err_msg=f"{key} {case}")
  return "equal"
