"""A SegNet-style encoder/decoder: pooling indices carry "where" to the decoder.

Encoder: conv -> jaxpool MaxPoolWithIndices -> conv -> MaxPoolWithIndices; decoder:
MaxUnpool (with the encoder's indices) -> conv -> MaxUnpool -> conv. Trained to
reconstruct scikit-learn's digits; prints the reconstruction error before and after
training and writes a PNG grid (inputs above, reconstructions below).

    python examples/segnet_digits.py --out examples/out/segnet_digits.png
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from common import epoch_batches, load_digits  # noqa: E402

from jaxpool import linen as pool  # noqa: E402


class SegNet(nn.Module):
  @nn.compact
  def __call__(self, x):
    size0 = x.shape[1:3]
    x = nn.relu(nn.Conv(16, (3, 3))(x))
    x, idx1 = pool.MaxPoolWithIndices((2, 2))(x)            # 8x8 -> 4x4
    x = nn.relu(nn.Conv(32, (3, 3))(x))
    size1 = x.shape[1:3]
    x, idx2 = pool.MaxPoolWithIndices((2, 2))(x)            # 4x4 -> 2x2
    # indices_in_window: these indices come from the same 2x2 pooling, so the unpool
    # can skip the scatter (a compare-and-select per window)
    unpool = pool.MaxUnpool((2, 2), indices_in_window=True)
    x = unpool(x, idx2, output_size=size1)                   # back to 4x4, maxima in place
    x = nn.relu(nn.Conv(16, (3, 3))(x))
    x = unpool(x, idx1, output_size=size0)                   # back to 8x8
    return nn.sigmoid(nn.Conv(1, (3, 3))(x))


def save_grid(path: pathlib.Path, inputs: np.ndarray, outputs: np.ndarray) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  n = len(inputs)
  fig, axes = plt.subplots(2, n, figsize=(n, 2.2))
  for i in range(n):
    for row, img in enumerate((inputs[i], outputs[i])):
      axes[row, i].imshow(img[..., 0], cmap="gray", vmin=0, vmax=1)
      axes[row, i].axis("off")
  axes[0, 0].set_title("input", fontsize=8, loc="left")
  axes[1, 0].set_title("output", fontsize=8, loc="left")
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=80, bbox_inches="tight")
  plt.close(fig)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--epochs", type=int, default=15)
  parser.add_argument("--batch-size", type=int, default=32)
  parser.add_argument("--lr", type=float, default=3e-3)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--subset", type=int, default=None)
  parser.add_argument("--out", type=pathlib.Path,
                      default=pathlib.Path(__file__).parent / "out" / "segnet_digits.png")
  parser.add_argument("--quiet", action="store_true")
  args = parser.parse_args(argv)

  xtr, _, xte, _ = load_digits(args.seed, args.subset)
  model = SegNet()
  params = model.init(jax.random.key(args.seed), xtr[:1])["params"]
  opt = optax.adam(args.lr)
  state = opt.init(params)

  def mse(p, x):
    return jnp.mean((model.apply({"params": p}, x) - x) ** 2)

  @jax.jit
  def step(params, state, x):
    loss, grads = jax.value_and_grad(mse)(params, x)
    updates, state = opt.update(grads, state)
    return optax.apply_updates(params, updates), state, loss

  before = float(jax.jit(mse)(params, xte))
  losses = []
  for idx in epoch_batches(len(xtr), args.batch_size, args.epochs, args.seed, args.quiet):
    params, state, loss = step(params, state, xtr[idx])
    losses.append(float(loss))
  after = float(jax.jit(mse)(params, xte))
  print(f"test reconstruction MSE: {before:.4f} before training -> {after:.4f} after "
        f"{args.epochs} epochs")
  recon = np.asarray(model.apply({"params": params}, xte[:10]))
  save_grid(args.out, xte[:10], recon)
  print(f"wrote {args.out}")
  return {"before": before, "after": after, "losses": losses}


if __name__ == "__main__":
  main()
