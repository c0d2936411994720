"""Padded and packed batches, run through PyTorch the way its users do it (one example or
row at a time) and through jaxpool in one call.

Used by ``fixtures/make_extents_fixtures.py`` (records PyTorch's answers) and by
``test_extents.py`` (replays the recording, or asks a live torch). Inputs of the lengths
cases are channels_first ``(N, C, *spatial)``; segment cases are ``(*lead, L, C)``.
"""

from __future__ import annotations

import numpy as np

OPS = ("adaptive_avg", "adaptive_max", "global_avg", "global_max", "segment")
SEGMENT_OPS = ("avg", "max", "min", "sum")


def sample_case(rng: np.random.Generator, op: str) -> dict:
  if op == "segment":
    lead = [] if rng.random() < 0.3 else [int(rng.integers(1, 4))]
    num = int(rng.integers(1, 6))
    length = int(rng.integers(1, 13))
    return {"op": op, "reduce": str(rng.choice(SEGMENT_OPS)), "shape": lead + [length, 3],
            "num_segments": num, "ties": bool(rng.random() < 0.5),
            # ids in [-1, num]: both ends are dropped
            "ids": rng.integers(-1, num + 1, size=lead + [length]).tolist()}
  d = int(rng.integers(1, 4))
  spatial = [int(rng.integers(1, 10 if d < 3 else 7)) for _ in range(d)]
  case = {"op": op, "d": d, "shape": [3, 2] + spatial, "ties": bool(rng.random() < 0.4),
          "lengths": [[int(rng.integers(1, n + 1)) for n in spatial] for _ in range(3)]}
  if op.startswith("adaptive"):
    case["output_size"] = [int(rng.integers(1, 2 * n + 2)) for n in spatial]
  return case


def make_input(case: dict, seed: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  if case["ties"]:
    return rng.integers(-2, 3, size=case["shape"]).astype(np.float32)
  return rng.standard_normal(case["shape"]).astype(np.float32)


def cotangent(shape) -> np.ndarray:
  return np.random.default_rng(1).standard_normal(shape).astype(np.float32)


def _segment_torch(case, x):
  import torch

  reduce = {"avg": "mean", "max": "amax", "min": "amin", "sum": "sum"}[case["reduce"]]
  ids, num = np.asarray(case["ids"]).reshape(-1, x.shape[-2]), case["num_segments"]
  rows = x.reshape(ids.shape + x.shape[-1:])
  t = torch.tensor(rows, requires_grad=True)
  outs = []
  for r in range(ids.shape[0]):  # one row at a time, as a PyTorch user writes it
    keep = torch.tensor((ids[r] >= 0) & (ids[r] < num))
    index = torch.tensor(ids[r]).long()[keep][:, None].expand(-1, x.shape[-1])
    out = torch.zeros(num, x.shape[-1]).scatter_reduce(0, index, t[r][keep], reduce,
                                                       include_self=False)
    outs.append(out)
  y = torch.stack(outs)
  g = torch.tensor(cotangent(tuple(y.shape)))
  (y * g).sum().backward()
  shape = tuple(case["shape"][:-2]) + (num, x.shape[-1])
  result = {"y": y.detach().numpy().reshape(shape), "g": g.numpy().reshape(shape)}
  if case["reduce"] in ("avg", "sum"):  # scatter_reduce splits max/min ties: not the contract
    result["dx"] = t.grad.numpy().reshape(x.shape)
  return result


def run_torch(case: dict, x: np.ndarray) -> dict:
  """PyTorch's outputs: per example on its valid region (indices moved to the padded
  volume, gradients padded with zeros), or per packed row with ``scatter_reduce``."""
  import torch
  import torch.nn.functional as F

  if case["op"] == "segment":
    return _segment_torch(case, x)
  d, op = case["d"], case["op"]
  size = case.get("output_size", [1] * d)
  kind = "avg" if op.endswith("avg") else "max"
  pool = getattr(F, f"adaptive_{kind}_pool{d}d")
  t = torch.tensor(x, requires_grad=True)
  ys, idxs = [], []
  for n, lengths in enumerate(case["lengths"]):
    region = t[(n, slice(None)) + tuple(slice(0, v) for v in lengths)][None]
    if kind == "avg":
      ys.append(pool(region, size)[0])
      continue
    y, i = pool(region, size, return_indices=True)
    ys.append(y[0])
    coords = np.unravel_index(i[0].numpy(), lengths)
    idxs.append(np.ravel_multi_index(coords, x.shape[2:]).astype(np.int32))
  y = torch.stack(ys)
  g = torch.tensor(cotangent(tuple(y.shape)))
  (y * g).sum().backward()
  out = {"y": y.detach().numpy(), "g": g.numpy(), "dx": t.grad.numpy()}
  if op == "adaptive_max":  # jaxpool has no global max with indices
    out["indices"] = np.stack(idxs)
  if op.startswith("global"):
    out = {k: v.reshape(v.shape[:2]) if k != "dx" else v for k, v in out.items()}
  return out


def run_jaxpool(case: dict, x: np.ndarray, data_format: str, torch_out: dict) -> dict:
  """jaxpool's outputs for the case, in one jitted call (channels_first results)."""
  import jax
  import jax.numpy as jnp

  import jaxpool

  op = case["op"]
  if op == "segment":
    ids, num, reduce = np.asarray(case["ids"]), case["num_segments"], case["reduce"]

    @jax.jit
    def segment_and_grad(v, ids, g):
      def f(u):
        return jaxpool.segment_pool(u, ids, num, reduce)
      y, pullback = jax.vjp(f, v)
      return y, pullback(g)[0]

    y, dx = segment_and_grad(x, ids, torch_out["g"])
    return {"y": np.asarray(y), "dx": np.asarray(dx)}

  cf = data_format == "channels_first"
  to = (lambda a: a) if cf else (lambda a: np.moveaxis(a, 1, -1))
  back = (lambda a: np.asarray(a)) if cf else (lambda a: np.moveaxis(np.asarray(a), -1, 1))
  lengths = np.asarray(case["lengths"])
  if op.startswith("global"):
    fn = getattr(jaxpool, f"{op}_pool")

    def pooled(v, n):
      return fn(v, case["d"], lengths=n, data_format=data_format), None
    back_y = np.asarray  # (N, C) in both layouts
  else:
    size = tuple(case["output_size"])

    def pooled(v, n):
      if op == "adaptive_avg":
        return jaxpool.adaptive_avg_pool(v, size, lengths=n, data_format=data_format), None
      return jaxpool.adaptive_max_pool_with_indices(v, size, lengths=n,
                                                    data_format=data_format)
    back_y = back

  g = torch_out["g"] if op.startswith("global") else to(torch_out["g"])

  @jax.jit
  def pool_and_grad(v, n, g):
    y, idx = pooled(v, n)
    dx = jax.grad(lambda u: jnp.sum(pooled(u, n)[0] * g))(v)
    return y, idx, dx

  y, idx, dx = pool_and_grad(to(x), lengths, g)
  out = {"y": back_y(y), "dx": back(dx)}
  if idx is not None:
    out["indices"] = back(idx)
  return out


def compare(case: dict, x: np.ndarray, torch_out: dict, data_format: str) -> None:
  got = run_jaxpool(case, x, data_format, torch_out)
  exact = case["op"].endswith("max") or case.get("reduce") in ("max", "min")
  for key, want in torch_out.items():
    if key == "g":
      continue
    if key == "indices" or (exact and key == "y"):
      np.testing.assert_array_equal(got[key], want, err_msg=f"{key} {case}")
    else:
      np.testing.assert_allclose(got[key], want, rtol=1e-5, atol=1e-5, err_msg=f"{key} {case}")
