"""Data and training-loop helpers shared by the examples (scikit-learn's bundled digits)."""

from __future__ import annotations

import numpy as np


def load_digits(seed: int, subset: int | None = None):
  """(train_x, train_y, test_x, test_y): 8x8 images as (N, 8, 8, 1) float32 in [0, 1]."""
  from sklearn.datasets import load_digits as sk_digits  # bundled with sklearn, no download

  data = sk_digits()
  x = (data.images / 16.0).astype(np.float32)[..., None]
  y = data.target.astype(np.int32)
  order = np.random.default_rng(seed).permutation(len(x))
  if subset:
    order = order[:subset]
  x, y = x[order], y[order]
  cut = int(0.8 * len(x))
  return x[:cut], y[:cut], x[cut:], y[cut:]


def batches(n: int, batch_size: int, rng: np.random.Generator):
  order = rng.permutation(n)
  for i in range(0, n - batch_size + 1, batch_size):
    yield order[i:i + batch_size]


def epoch_batches(n: int, batch_size: int, epochs: int, seed: int, quiet: bool):
  """Index batches for every epoch, shuffled, with a per-epoch progress bar."""
  rng = np.random.default_rng(seed)
  for epoch in range(epochs):
    it = batches(n, batch_size, rng)
    if not quiet:
      from tqdm import tqdm

      it = tqdm(it, total=n // batch_size, desc=f"epoch {epoch + 1}/{epochs}", leave=False)
    yield from it
