"""Fractional max, GeM, average+max and blur pooling, run through PyTorch/kornia and
through jaxpool.

Used by ``fixtures/make_layer_fixtures.py`` (records the answers of PyTorch's formula
for timm's layers and of kornia 0.9.0) and by ``test_layers.py`` (replays them, or asks
a live torch/kornia). Inputs are channels_first ``(N, C, *spatial)``.
"""

from __future__ import annotations

import numpy as np

OPS = ("gem", "avgmax", "catavgmax", "blur", "max_blur", "fractional2d", "fractional3d")


def sample_case(rng: np.random.Generator, op: str) -> dict:
  if op.startswith("fractional"):
    d = int(op[-2])
    spatial = [int(rng.integers(3, 12 if d == 2 else 8)) for _ in range(d)]
    # PyTorch's 3-D kernel refuses o + k - 1 == L; its 2-D one accepts it
    slack = 1 if d == 2 else 0
    window = [int(rng.integers(1, min(3, n - 1 + slack) + 1)) for n in spatial]
    out = [int(rng.integers(1, n - k + slack + 1)) for n, k in zip(spatial, window)]
    return {"op": op, "shape": [2, 3] + spatial, "window": window, "output_size": out,
            "ties": bool(rng.random() < 0.5),
            "samples": rng.random((2, 3, d)).astype(np.float32).tolist()}
  shape = [2, 3, int(rng.integers(3, 12)), int(rng.integers(3, 12))]
  case = {"op": op, "shape": shape}
  if op == "gem":
    case.update(p=float(rng.choice([1.0, 2.0, 3.0, 4.5])), eps=float(rng.choice([1e-6, 0.1])))
  elif op in ("avgmax", "catavgmax"):
    case["output_size"] = [int(rng.integers(1, 2 * n + 1)) for n in shape[2:]]
  else:
    case.update(kernel=int(rng.integers(1, 6)), stride=int(rng.integers(1, 4)),
                max_pool_size=int(rng.integers(1, 4)))
  return case


def make_input(case: dict, seed: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  if case.get("ties"):
    return rng.integers(-2, 3, size=case["shape"]).astype(np.float32)
  return rng.standard_normal(case["shape"]).astype(np.float32)


def cotangent(shape) -> np.ndarray:
  return np.random.default_rng(1).standard_normal(shape).astype(np.float32)


def run_torch(case: dict, x: np.ndarray) -> dict:
  """Outputs and input gradients (GeM: also the gradient with respect to p)."""
  import torch
  import torch.nn.functional as F

  op, t = case["op"], torch.tensor(x, requires_grad=True)
  extra = {}
  if op == "gem":  # timm's GeM: avg_pool2d(x.clamp(min=eps).pow(p), (H, W)).pow(1/p)
    p = torch.tensor(case["p"], requires_grad=True)
    y = F.avg_pool2d(t.clamp(min=case["eps"]).pow(p), tuple(x.shape[2:])).pow(1.0 / p)
    y = y.flatten(1)
    extra["p"] = p
  elif op.startswith("fractional"):
    fn = getattr(F, f"fractional_max_pool{op[-2]}d")
    y, idx = fn(t, case["window"], output_size=case["output_size"], return_indices=True,
                _random_samples=torch.tensor(np.asarray(case["samples"], np.float32)))
    extra["indices"] = idx
  elif op in ("avgmax", "catavgmax"):  # timm's adaptive_(cat)avgmax_pool2d
    size = tuple(case["output_size"])
    avg, mx = F.adaptive_avg_pool2d(t, size), F.adaptive_max_pool2d(t, size)
    y = 0.5 * (avg + mx) if op == "avgmax" else torch.cat((avg, mx), 1)
  else:
    import kornia

    k, s = case["kernel"], case["stride"]
    if op == "blur":
      y = kornia.filters.blur_pool2d(t, k, s)
    else:
      y = kornia.filters.max_blur_pool2d(t, k, s, max_pool_size=case["max_pool_size"])
  g = torch.tensor(cotangent(tuple(y.shape)))
  (y * g).sum().backward()
  out = {"y": y.detach().numpy(), "g": g.numpy(), "dx": t.grad.numpy()}
  if "p" in extra:
    out["dp"] = np.array(extra["p"].grad.numpy(), np.float32)
  if "indices" in extra:
    out["indices"] = extra["indices"].numpy().astype(np.int32)
  return out


def run_jaxpool(case: dict, x: np.ndarray, data_format: str, g: np.ndarray) -> dict:
  import jax
  import jax.numpy as jnp

  import jaxpool

  cf = data_format == "channels_first"
  to = (lambda a: a) if cf else (lambda a: np.moveaxis(a, 1, -1))
  back = (lambda a: np.asarray(a)) if cf else (lambda a: np.moveaxis(np.asarray(a), -1, 1))
  op = case["op"]
  if op == "gem":
    def f(v, p):
      return jaxpool.gem_pool(v, 2, p, eps=case["eps"], data_format=data_format)
    y, pullback = jax.vjp(f, to(x), jnp.float32(case["p"]))
    dx, dp = pullback(jnp.asarray(g))
    return {"y": np.asarray(y), "dx": back(dx), "dp": np.asarray(dp)}
  if op.startswith("fractional"):
    samples = np.asarray(case["samples"], np.float32)

    def both(v, u):
      return jaxpool.fractional_max_pool_with_indices(
          v, tuple(case["window"]), tuple(case["output_size"]), samples=u,
          data_format=data_format)

    @jax.jit
    def run(v, u, w):
      (y, idx), pullback = jax.vjp(lambda a: both(a, u), v)
      return y, idx, pullback((w, np.zeros(idx.shape, jax.dtypes.float0)))[0]

    y, idx, dx = run(to(x), samples, to(g))
    return {"y": back(y), "indices": back(idx), "dx": back(dx)}
  if op in ("avgmax", "catavgmax"):
    fn = getattr(jaxpool, f"adaptive_{op}_pool")

    def f(v):
      return fn(v, tuple(case["output_size"]), data_format=data_format)
  elif op == "blur":
    def f(v):
      return jaxpool.blur_pool(v, case["kernel"], case["stride"], data_format=data_format)
  else:
    def f(v):
      return jaxpool.max_blur_pool(v, case["kernel"], case["stride"],
                                   max_pool_size=case["max_pool_size"],
                                   data_format=data_format)
  y, pullback = jax.jit(lambda v, w: (lambda yv: (yv[0], yv[1](w)[0]))(jax.vjp(f, v)))(
      to(x), to(g))
  return {"y": back(y), "dx": back(pullback)}


def compare(case: dict, x: np.ndarray, torch_out: dict, data_format: str) -> None:
  got = run_jaxpool(case, x, data_format, torch_out["g"])
  for key, want in torch_out.items():
    if key == "indices" or (key == "y" and case["op"].startswith("fractional")):
      np.testing.assert_array_equal(got[key], want, err_msg=f"{key} {case}")
    elif key != "g":
      np.testing.assert_allclose(got[key], want, rtol=1e-5, atol=1e-5, err_msg=f"{key} {case}")
