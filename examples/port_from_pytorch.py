"""Port a PyTorch CNN that uses every kind of torch pooling to Flax, in one call per layer.

The PyTorch model below has a ResNet-style stem max pool with ``ceil_mode``, an
Inception-style average pool with ``count_include_pad=False``, a SegNet max pool with
indices feeding ``MaxUnpool2d``, an ``LPPool2d``, a CBAM-style attention map built from
the channel max and channel mean, an ``AdaptiveMaxPool2d`` to a size that does not divide
the input, and ``AdaptiveAvgPool2d((1, 1))``. Each torch pooling layer becomes a jaxpool
linen module through ``jaxpool.linen.from_torch``; the convolution and linear weights are
copied across. Both models then run in float64 on the same input, and the script prints
how far apart every pooling layer's output, the logits and the input gradients are. They
agree to about 1e-12 (in practice to a few float64 ulps); the script exits non-zero if
any quantity is further apart than that.

    python examples/port_from_pytorch.py      # needs torch==2.13.0 (pip install, pinned)
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

TOLERANCE = 1e-12  # largest |torch - jax| allowed, relative to max(1, max |torch|)


def torch_model():
  import torch
  from torch import nn

  class TorchNet(nn.Module):
    def __init__(self):
      super().__init__()
      self.stem = nn.Conv2d(3, 8, 3, padding=1)
      self.stem_pool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
      self.branch_conv = nn.Conv2d(8, 8, 1)
      self.branch_pool = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
      self.enc_pool = nn.MaxPool2d(2, stride=2, return_indices=True)
      self.enc_conv = nn.Conv2d(16, 16, 3, padding=1)
      self.unpool = nn.MaxUnpool2d(2, stride=2)
      self.lp_pool = nn.LPPool2d(2, 2)
      self.attn_conv = nn.Conv2d(2, 1, 7, padding=3)
      self.adaptive_max = nn.AdaptiveMaxPool2d((3, 3))
      self.adaptive_avg = nn.AdaptiveAvgPool2d((1, 1))
      self.fc = nn.Linear(16 * 9 + 16, 10)

    def forward(self, x):
      seen = {}
      x = seen["stem_pool"] = self.stem_pool(torch.tanh(self.stem(x)))  # ceil_mode: 32 -> 17
      seen["branch_pool"] = self.branch_pool(x)                          # Inception branch
      x = torch.cat([self.branch_conv(x), seen["branch_pool"]], 1)
      v, seen["enc_indices"] = self.enc_pool(x)                         # SegNet encoder
      seen["unpool"] = self.unpool(torch.tanh(self.enc_conv(v)), seen["enc_indices"],
                                   output_size=x.shape[-2:])            # SegNet decoder
      x = seen["lp_pool"] = self.lp_pool(x + seen["unpool"])
      seen["channel_stats"] = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)
      x = x * torch.sigmoid(self.attn_conv(seen["channel_stats"]))      # CBAM spatial map
      seen["adaptive_max"] = self.adaptive_max(x)                       # 8 -> 3: uneven bins
      seen["adaptive_avg"] = self.adaptive_avg(x)                       # the ResNet head
      head = torch.cat([seen["adaptive_max"].flatten(1), seen["adaptive_avg"].flatten(1)], 1)
      return self.fc(head), seen

  torch.manual_seed(0)
  return TorchNet().double()


def flax_model(torch_net):
  """The same network in flax.linen, its pooling layers ported with ``from_torch``."""
  import flax.linen as nn
  import jax.numpy as jnp

  from jaxpool import linen as pool

  def conv(features, k, name):
    return nn.Conv(features, (k, k), padding=k // 2, name=name, dtype=jnp.float64,
                   param_dtype=jnp.float64, precision="highest")

  def nchw(a):  # how torch flattens and how the comparison reads a feature map
    return jnp.moveaxis(a, -1, 1)

  class FlaxNet(nn.Module):
    stem_pool: nn.Module
    branch_pool: nn.Module
    enc_pool: nn.Module
    unpool: nn.Module
    lp_pool: nn.Module
    adaptive_max: nn.Module
    adaptive_avg: nn.Module

    @nn.compact
    def __call__(self, x):                                             # x: NHWC
      seen = {}
      x = self.stem_pool(jnp.tanh(conv(8, 3, "stem")(x)))
      seen["stem_pool"] = nchw(x)
      branch = self.branch_pool(x)
      seen["branch_pool"] = nchw(branch)
      x = jnp.concatenate([conv(8, 1, "branch_conv")(x), branch], -1)
      v, indices = self.enc_pool(x)
      seen["enc_indices"] = nchw(indices)
      up = self.unpool(jnp.tanh(conv(16, 3, "enc_conv")(v)), indices, x.shape[1:3])
      seen["unpool"] = nchw(up)
      x = self.lp_pool(x + up)
      seen["lp_pool"] = nchw(x)
      stats = jnp.concatenate([pool.ChannelPool("max")(x), pool.ChannelPool("avg")(x)], -1)
      seen["channel_stats"] = nchw(stats)
      x = x * nn.sigmoid(conv(1, 7, "attn_conv")(stats))
      a, g = self.adaptive_max(x), self.adaptive_avg(x)
      seen["adaptive_max"], seen["adaptive_avg"] = nchw(a), nchw(g)
      head = jnp.concatenate([nchw(a).reshape(len(x), -1), nchw(g).reshape(len(x), -1)], -1)
      return nn.Dense(10, name="fc", dtype=jnp.float64, param_dtype=jnp.float64,
                      precision="highest")(head), seen

  ported = {name: pool.from_torch(getattr(torch_net, name))
            for name in ("stem_pool", "branch_pool", "enc_pool", "unpool", "lp_pool",
                         "adaptive_max", "adaptive_avg")}
  return FlaxNet(**ported), ported


def flax_params(torch_net):
  """torch's weights in Flax's layout: conv OIHW -> HWIO, linear (out, in) -> (in, out)."""
  params = {}
  for name, layer in torch_net.named_children():
    if hasattr(layer, "weight"):
      w = layer.weight.detach().numpy()
      kernel = w.transpose(2, 3, 1, 0) if w.ndim == 4 else w.T
      params[name] = {"kernel": kernel, "bias": layer.bias.detach().numpy()}
  return {"params": params}


def describe(module):
  """``Name(arg=value, ...)`` with the arguments that differ from their defaults."""
  import dataclasses

  args = [f"{f.name}={getattr(module, f.name)!r}" for f in dataclasses.fields(module)
          if f.name not in ("parent", "name") and (
              f.default is dataclasses.MISSING or getattr(module, f.name) != f.default)]
  return f"{type(module).__name__}({', '.join(args)})"


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=4)
  args = parser.parse_args(argv)
  try:
    import torch
  except ImportError:
    sys.exit("port_from_pytorch.py needs PyTorch: pip install torch==2.13.0 (pinned: an "
             "unpinned torch pulls a multi-GB CUDA build)")
  import jax

  jax.config.update("jax_enable_x64", True)  # float64, to compare at ~1e-12
  import jax.numpy as jnp

  torch_net = torch_model()
  model, ported = flax_model(torch_net)
  params = flax_params(torch_net)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(args.batch, 3, 32, 32))
  cotangent = rng.normal(size=(args.batch, 10))

  xt = torch.from_numpy(x).requires_grad_(True)
  logits_t, seen_t = torch_net(xt)
  (logits_t * torch.from_numpy(cotangent)).sum().backward()

  def loss(x_nchw):
    logits, seen = model.apply(params, jnp.moveaxis(x_nchw, 1, -1))
    return (logits * cotangent).sum(), (logits, seen)

  grad_j, (logits_j, seen_j) = jax.jit(jax.grad(loss, has_aux=True))(jnp.asarray(x))

  print("ported modules (jaxpool arguments that differ from the defaults):")
  for name, m in ported.items():
    print(f"  {name:<13} {type(getattr(torch_net, name)).__name__:<18} -> {describe(m)}")
  rows = [(f"{name}", seen_t[name], seen_j[name]) for name in seen_t]
  rows += [("logits", logits_t, logits_j), ("input gradient", xt.grad, grad_j)]
  print(f"\n{'quantity':<16} {'shape':<18} {'max |torch - jax|':>18} {'relative':>10}  ok")
  report, ok = {}, True
  for name, want, got in rows:
    want, got = want.detach().numpy(), np.asarray(got)
    diff = float(np.max(np.abs(want - got.astype(want.dtype))))
    relative = diff / max(1.0, float(np.max(np.abs(want))))
    report[name] = relative
    ok &= relative <= TOLERANCE
    print(f"{name:<16} {str(want.shape):<18} {diff:>18.2e} {relative:>10.2e}  "
          f"{'yes' if relative <= TOLERANCE else 'NO'}")
  print(f"\n{'every' if ok else 'NOT every'} quantity agrees to {TOLERANCE:g}")
  if not ok:
    sys.exit(1)
  return report


if __name__ == "__main__":
  main()
