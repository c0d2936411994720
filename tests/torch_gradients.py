"""Gradients where PyTorch defines them at ties and at zero windows: each case is a
PyTorch call and the jaxpool call it ports to, on the same channels_first input.

Used by ``fixtures/make_gradient_fixtures.py`` (records PyTorch's gradients) and by
``test_gradient_parity.py`` (replays them, or asks a live torch).
"""

from __future__ import annotations

import numpy as np


def _ties(shape, seed):
  """Few distinct values and whole zero blocks: ties everywhere, zero windows."""
  x = np.random.default_rng(seed).integers(-2, 3, size=shape).astype(np.float64)
  x[..., : shape[-2] // 2, : shape[-1] // 2] = 0.0
  return x


def _zero_windows(shape, seed):
  """Positive values with whole zero blocks (a ReLU's output)."""
  x = np.abs(np.random.default_rng(seed).standard_normal(shape)) + 0.1
  x[..., : shape[-2] // 2, :] = 0.0
  return x


# name: (input maker, shape, torch call, jaxpool call); both channels_first
CASES = {
    "max2d_2x2_ties": (_ties, (2, 3, 6, 8), "F.max_pool2d(x, 2)",
                       "J.max_pool(x, (2, 2), data_format=CF)"),
    "max2d_3x3s1p1_ties": (_ties, (2, 3, 7, 6), "F.max_pool2d(x, 3, 1, 1)",
                           "J.max_pool(x, (3, 3), 1, 1, data_format=CF)"),
    "max2d_3x3s2p1_ceil_ties": (_ties, (2, 2, 8, 7),
                                "F.max_pool2d(x, 3, 2, 1, ceil_mode=True)",
                                "J.max_pool(x, (3, 3), 2, 1, ceil_mode=True, data_format=CF)"),
    "max2d_5x5s1p2_ties": (_ties, (1, 2, 7, 7), "F.max_pool2d(x, 5, 1, 2)",
                           "J.max_pool(x, (5, 5), 1, 2, data_format=CF)"),
    "max1d_dilated_ties": (_ties, (2, 3, 4, 9), "F.max_pool1d(x.flatten(1, 2), 2, 1, 0, 2)",
                           "J.max_pool(x.reshape(2, 12, 9), (2,), 1, 0, dilation=2, "
                           "data_format=CF)"),
    "max3d_2x2x2_ties": (_ties, (1, 2, 4, 4, 6), "F.max_pool3d(x, 2)",
                         "J.max_pool(x, (2, 2, 2), data_format=CF)"),
    "adaptive_max_4x3_ties": (_ties, (2, 3, 7, 5), "F.adaptive_max_pool2d(x, (4, 3))",
                              "J.adaptive_max_pool(x, (4, 3), data_format=CF)"),
    "adaptive_max_1_ties": (_ties, (2, 3, 5, 6), "F.adaptive_max_pool2d(x, 1)",
                            "J.global_max_pool(x, 2, keepdims=True, data_format=CF)"),
    "channel_max_ties": (_ties, (2, 5, 4, 4), "torch.max(x, dim=1, keepdim=True).values",
                         "J.channel_pool(x, 'max', data_format=CF, num_spatial_dims=2)"),
    "unpool_2x2_ties": (_ties, (2, 3, 6, 8),
                        "F.max_unpool2d(*F.max_pool2d(x, 2, return_indices=True), 2)",
                        "J.max_unpool(*J.max_pool_with_indices(x, (2, 2), data_format=CF), "
                        "(2, 2), data_format=CF)"),
    "lp2_zero_windows": (_zero_windows, (2, 3, 6, 6), "F.lp_pool2d(x, 2.0, 2)",
                         "J.lp_pool(x, 2.0, (2, 2), data_format=CF)"),
    "lp3_zero_windows": (_zero_windows, (2, 3, 6, 6), "F.lp_pool2d(x, 3.0, 3, 1)",
                         "J.lp_pool(x, 3.0, (3, 3), 1, data_format=CF)"),
    "lp1.5_zero_windows": (_zero_windows, (2, 3, 6, 6), "F.lp_pool2d(x, 1.5, 2)",
                           "J.lp_pool(x, 1.5, (2, 2), data_format=CF)"),
    "avg_3x3s1p1_nopad_zero_windows": (
        _zero_windows, (2, 3, 6, 6), "F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)",
        "J.avg_pool(x, (3, 3), 1, 1, count_include_pad=False, data_format=CF)"),
}


def case_input(name: str) -> np.ndarray:
  make, shape = CASES[name][:2]
  return make(shape, seed=sorted(CASES).index(name))


def cotangent(shape) -> np.ndarray:
  return np.random.default_rng(99).standard_normal(shape)


def run_torch(name: str) -> dict:
  """PyTorch's output and input gradient (float64) for a random cotangent."""
  import torch
  import torch.nn.functional as F

  x = torch.tensor(case_input(name), requires_grad=True)
  y = eval(CASES[name][2], {"F": F, "torch": torch, "x": x})  # noqa: S307 - our own table
  g = torch.tensor(cotangent(tuple(y.shape)))
  (y * g).sum().backward()
  return {"y": y.detach().numpy(), "dx": x.grad.numpy()}


def run_jaxpool(name: str) -> dict:
  import jax
  import jax.numpy as jnp

  import jaxpool

  x = case_input(name)

  def f(v):
    return eval(CASES[name][3], {"J": jaxpool, "CF": "channels_first", "x": v})  # noqa: S307

  with jax.enable_x64(True):
    y, pullback = jax.vjp(f, jnp.asarray(x))
    (dx,) = pullback(jnp.asarray(cotangent(y.shape)))
    return {"y": np.asarray(y), "dx": np.asarray(dx).reshape(x.shape)}
