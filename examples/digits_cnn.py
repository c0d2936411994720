"""Train a small CNN with jaxpool layers on scikit-learn's digits (no download).

conv -> jaxpool MaxPool(ceil_mode=True) -> conv -> jaxpool AdaptiveAvgPool -> Dense,
trained with optax. ``--nnx`` runs the same model written with ``jaxpool.nnx``.

    python examples/digits_cnn.py            # flax.linen
    python examples/digits_cnn.py --nnx      # flax.nnx
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from common import epoch_batches, load_digits  # noqa: E402


def linen_model():
  import flax.linen as nn

  from jaxpool import linen as pool

  class CNN(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.relu(nn.Conv(32, (3, 3))(x))                   # (8, 8, 32)
      x = pool.MaxPool((3, 3), strides=2, ceil_mode=True)(x)  # (4, 4, 32): ceil keeps edges
      x = nn.relu(nn.Conv(64, (3, 3))(x))
      x = pool.AdaptiveAvgPool((2, 2))(x)                    # (2, 2, 64)
      return nn.Dense(10)(x.reshape(x.shape[0], -1))

  return CNN()


def nnx_model(seed: int):
  from flax import nnx

  from jaxpool import nnx as pool

  class CNN(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
      self.conv1 = nnx.Conv(1, 32, (3, 3), rngs=rngs)
      self.pool1 = pool.MaxPool((3, 3), strides=2, ceil_mode=True)
      self.conv2 = nnx.Conv(32, 64, (3, 3), rngs=rngs)
      self.pool2 = pool.AdaptiveAvgPool((2, 2))
      self.head = nnx.Linear(2 * 2 * 64, 10, rngs=rngs)

    def __call__(self, x):
      x = self.pool1(nnx.relu(self.conv1(x)))
      x = self.pool2(nnx.relu(self.conv2(x)))
      return self.head(x.reshape(x.shape[0], -1))

  return CNN(nnx.Rngs(seed))


def loss_fn(logits, y):
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def train_linen(args, data):
  xtr, ytr, xte, yte = data
  model = linen_model()
  params = model.init(jax.random.key(args.seed), xtr[:1])["params"]
  opt = optax.adam(args.lr)
  state = opt.init(params)

  @jax.jit
  def step(params, state, x, y):
    loss, grads = jax.value_and_grad(lambda p: loss_fn(model.apply({"params": p}, x), y))(params)
    updates, state = opt.update(grads, state)
    return optax.apply_updates(params, updates), state, loss

  predict = jax.jit(lambda p, x: model.apply({"params": p}, x).argmax(-1))
  losses = []
  for idx in epoch_batches(len(xtr), args.batch_size, args.epochs, args.seed, args.quiet):
    params, state, loss = step(params, state, xtr[idx], ytr[idx])
    losses.append(float(loss))
  return losses, float((predict(params, xte) == yte).mean())


def train_nnx(args, data):
  from flax import nnx

  xtr, ytr, xte, yte = data
  model = nnx_model(args.seed)
  optimizer = nnx.Optimizer(model, optax.adam(args.lr), wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(lambda m: loss_fn(m(x), y))(model)
    optimizer.update(model, grads)
    return loss

  predict = nnx.jit(lambda m, x: m(x).argmax(-1))
  losses = []
  for idx in epoch_batches(len(xtr), args.batch_size, args.epochs, args.seed, args.quiet):
    losses.append(float(step(model, optimizer, jnp.asarray(xtr[idx]), jnp.asarray(ytr[idx]))))
  return losses, float((predict(model, jnp.asarray(xte)) == yte).mean())


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--epochs", type=int, default=12)
  parser.add_argument("--batch-size", type=int, default=32)
  parser.add_argument("--lr", type=float, default=3e-3)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--subset", type=int, default=None, help="use only N images (smoke runs)")
  parser.add_argument("--nnx", action="store_true", help="the flax.nnx version of the model")
  parser.add_argument("--quiet", action="store_true", help="no progress bar")
  args = parser.parse_args(argv)
  data = load_digits(args.seed, args.subset)
  start = time.perf_counter()
  losses, accuracy = (train_nnx if args.nnx else train_linen)(args, data)
  seconds = time.perf_counter() - start
  api = "flax.nnx" if args.nnx else "flax.linen"
  print(f"[{api}] {args.epochs} epochs in {seconds:.1f}s: loss {np.mean(losses[:5]):.3f} -> "
        f"{np.mean(losses[-5:]):.3f}, test accuracy {accuracy:.1%} on {len(data[3])} images")
  return {"losses": losses, "accuracy": accuracy, "seconds": seconds}


if __name__ == "__main__":
  main()
